//! A call on a greeted connection: the request, then (extended) the
//! signal relay, then the script's status as our own.
//!
//! When the greeting advertises `signals`, the request opens with 0x01
//! and the call goes on in frames: the forwardable signals sent to us are
//! blocked, read from a signalfd and passed on ('S'); the executor tells
//! us its pid ('P') and the monitor, last, its status ('X'). SIGTSTP is
//! passed on and then stops us too, so the shell sees a stopped job; the
//! SIGCONT of `fg` is passed on in turn.

use std::ffi::CStr;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, Signal, raise};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::cli::ClientArgs;
use super::connect::Greeted;
use super::exit::{Failure, report_status};
use super::terminal::{CallTerminal, read_signals, send_frame};
use crate::protocol::{self, Frame, WaitStatus};
use crate::sys;

/// The caller's environment, entry by entry, exactly as the kernel gave it.
fn environ_entries() -> Vec<&'static [u8]> {
    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }
    let mut entries = Vec::new();
    // SAFETY: environ is a NULL-terminated array of C strings that nothing
    // in this single-threaded client modifies.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = CStr::from_ptr(*p).to_bytes();
            if !entry.is_empty() {
                entries.push(entry);
            }
            p = p.add(1);
        }
    }
    entries
}

/// Sends the request on a greeted connection and reports the status.
/// `closed` says which of fds 0, 1, 2 the caller had closed (/dev/null
/// holds their places).
pub(crate) fn call(server: Greeted, args: &ClientArgs, closed: [bool; 3]) -> Result<i32, Failure> {
    let extended = server.offers(protocol::CAP_SIGNALS);
    let context = extended && server.offers(protocol::CAP_CONTEXT);
    let server_offers_tty = extended && server.offers(protocol::CAP_TTY);
    let limits = extended && server.offers(protocol::CAP_LIMITS);
    // Without the capability, /dev/null stands in for a closed fd.
    let says_closed = extended && server.offers(protocol::CAP_CLOSED);
    let takes_signals = extended && server.offers(protocol::CAP_DISPOSITIONS);
    let monitor_restores = server_offers_tty && server.offers(protocol::CAP_RESTORE);
    let mut conn = server.conn;
    if args.caller_dir && !context {
        return Err(Failure::new(
            "--caller-dir needs a script side that runs each call in its caller's directory \
             (capability \"context\", this project's libraries); this server does not offer it",
        ));
    }
    // What a direct run would inherit, read before we block anything.
    let caller_signals = sys::own_signals();
    // Before the request: from now on no forwardable signal kills us.
    let signals = if extended {
        Some(ForwardedSignals::block()?)
    } else {
        None
    };
    let mut terminal = if extended && server_offers_tty {
        CallTerminal::open(stops_on_terminal_use(&caller_signals), monitor_restores)
    } else {
        None
    };
    let kind = protocol::RequestKind {
        extended,
        context,
        pty: terminal.as_ref().map_or([false; 3], CallTerminal::on_pty),
        pty_background: terminal
            .as_ref()
            .is_some_and(CallTerminal::starts_in_background),
        limits,
        closed: closed.map(|c| c && says_closed),
        caller_signals: takes_signals && !caller_signals.is_empty(),
    };
    let stdio = [0, 1, 2].map(|fd| match &terminal {
        Some(terminal) => terminal.stdio(fd),
        // SAFETY: fds 0..2 were checked open at start and stay open.
        None => unsafe { BorrowedFd::borrow_raw(fd as i32) },
    });
    if let Err(e) = send_request(&conn, kind, stdio, args, &caller_signals) {
        return Err(Failure::new(format!(
            "cannot send the call to the server: {e}"
        )));
    }

    let status = match (signals, &mut terminal) {
        (None, _) => {
            let mut status = [0u8; 4];
            conn.read_exact(&mut status)
                .map(|()| protocol::decode_status(status))
        }
        (Some(signals), None) => relay(&conn, &signals),
        (Some(signals), Some(terminal)) => terminal.relay(&conn, &signals.fd),
    };
    // The caller's terminal as it was, before we exit or die of the
    // script's signal.
    drop(terminal);
    match status {
        Ok(status) => report_status(status),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Failure::new(
            "monitor quit unexpectedly (no exit status for the script)",
        )),
        Err(e) => Err(Failure::new(format!(
            "cannot read the script's exit status: {e}"
        ))),
    }
}

/// Whether a direct run, started with these signals, would stop when it
/// used its terminal from the background (SIGTTIN, SIGTTOU): one that
/// ignores or blocks them gets EIO instead, or goes ahead, so it must be
/// in its terminal's foreground (inside `$(...)` it is: in the shell's
/// group).
fn stops_on_terminal_use(caller: &protocol::CallerSignals) -> bool {
    let either =
        protocol::CallerSignals::bit(libc::SIGTTIN) | protocol::CallerSignals::bit(libc::SIGTTOU);
    (caller.ignored | caller.blocked) & either == 0
}

/// Sends our request: `stdio` as fds 0, 1, 2 (ours, or the pseudo-terminal
/// in place of our terminal), the environment and arguments, with
/// `context` our directory and umask, with `limits` our resource
/// limits, nice value and OOM score adjustment, and with
/// `caller_signals` the signals we ignore and block.
fn send_request(
    conn: &UnixStream,
    kind: protocol::RequestKind,
    stdio: [BorrowedFd<'_>; 3],
    args: &ClientArgs,
    caller_signals: &protocol::CallerSignals,
) -> io::Result<()> {
    let payload = protocol::encode_request_payload(
        environ_entries(),
        args.args
            .iter()
            .map(|a| std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())),
    );
    let limits = kind.limits.then(sys::own_limits);
    let caller_signals = kind.caller_signals.then_some(caller_signals);
    if !kind.context {
        return protocol::io::send_request(
            conn,
            kind,
            stdio,
            &payload,
            None,
            limits,
            caller_signals,
        );
    }
    let cwd = std::fs::File::open(".").or_else(|_| {
        // Unreadable: O_PATH needs no permission on it.
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(".")
    })?;
    let umask = sys::current_umask();
    protocol::io::send_request(
        conn,
        kind,
        stdio,
        &payload,
        Some((cwd.as_fd(), umask)),
        limits,
        caller_signals,
    )
}

/// The forwardable signals, blocked and readable from a signalfd.
struct ForwardedSignals {
    fd: SignalFd,
}

impl ForwardedSignals {
    fn block() -> Result<Self, Failure> {
        let mut set = SigSet::empty();
        for &sig in &protocol::FORWARDED_SIGNALS {
            set.add(Signal::try_from(sig).expect("a real signal"));
        }
        let fail = |e: nix::Error| Failure::new(format!("cannot set up signal forwarding: {e}"));
        set.thread_block().map_err(fail)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(fail)?;
        Ok(ForwardedSignals { fd })
    }
}

/// An extended call's frames: passes our signals on until the status
/// comes.
fn relay(conn: &UnixStream, signals: &ForwardedSignals) -> io::Result<WaitStatus> {
    loop {
        let [signalled, from_monitor] = sys::wait_readable([signals.fd.as_fd(), conn.as_fd()])?;
        if signalled {
            for sig in read_signals(&signals.fd) {
                send_frame(conn, Frame::Signal(sig));
                if sig == libc::SIGTSTP {
                    // Stop as a direct run would; `fg` continues us, and
                    // the SIGCONT that brings is passed on in turn.
                    let _ = raise(Signal::SIGSTOP);
                }
            }
        }
        if from_monitor {
            // Other kinds: the executor's pid, or a kind from a later version.
            if let Frame::Status(status) = protocol::io::read_frame(conn)? {
                return Ok(status);
            }
        }
    }
}
