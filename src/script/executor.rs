//! The executor: the script itself again, one per call. Forked by the
//! monitor before the call arrives (a spare) and waits on its hand-over
//! socket. Once it has read the request it leads a process group of its
//! own (what it starts is signalled with it). On a call that brings a
//! pseudo-terminal of its own it leads a new session instead, with that
//! terminal as its controlling terminal, and forks the script's process,
//! which leads the terminal's foreground group; the executor stays as
//! the session's keeper (`keep_session`).
//!
//! ```text
//! fd 0, 1, 2   the caller's stdin, stdout, stderr (received by SCM_RIGHTS)
//! environment  the caller's, then what the script's initialisation did
//!              to its own (set, changed, removed: `init_env`) on top
//! signals      what the server had when initialisation completed (the
//!              monitor ignores the forwardable ones), except SIGINT:
//!              default (a server that chiark's client started inherits
//!              its first caller's; our client starts servers with no
//!              signal ignored); then, with `dispositions`, the caller's
//!              ignored signals (where those are at their default) and
//!              blocked ones laid over, as a direct run inherits them
//! ```
//!
//! The monitor hands it the call socket (greeting sent). It reads the
//! request itself, sends an extended call's 'P' frame with its own pid
//! (so the client knows it before any per-call code runs), and tells its
//! monitor 'r' with the request byte: from then on only the monitor reads
//! from, or writes to, the call socket.
//!
//! With capability `context`, it runs in the caller's current directory
//! (received as an fd; fchdir) with the caller's umask.
//!
//! If its monitor dies, it gets SIGINT (PR_SET_PDEATHSIG), as when its
//! client goes: no call runs on unwatched.
//!
//! No protocol fd survives into it: the monitor closed the server's fds
//! when it started, and its own (control socket, other executors'
//! sockets and pidfds, calls in flight) in the fork; here the call
//! socket, the hand-over socket and the received copies go.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;

use nix::sys::signal::Signal;
use nix::sys::stat::{Mode, umask};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, fchdir};

use super::init_env;
use super::invocation::Invocation;
use super::keeper;
use super::log;
use super::title;
use crate::protocol::io::{Request, hung_up, read_request, recv_fd, send_all};
use crate::protocol::{self, Frame};
use crate::sys::{self, Forked};

/// Turns this freshly forked child of the monitor into an executor: waits
/// for a call, and returns into the script with the caller's fds,
/// arguments and environment. Leaves quietly if the monitor goes first.
pub(crate) fn run(
    handover: UnixStream,
    monitor: UnixStream,
    saved: &sys::SavedSignals,
    monitor_pid: sys::Pid,
) -> Invocation {
    // A monitor killed mid-call leaves the call with nobody to report its
    // end: it ends as when its client goes, with SIGINT.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGINT);
    if nix::unistd::getppid() != monitor_pid {
        sys::exit_now(0); // it died before we could ask
    }
    saved.restore();
    sys::default_signal(libc::SIGINT);
    title::show(title::Role::Handler);
    let (call, request) = take_call(&handover);
    title::show(title::Role::Call);
    let payload = protocol::decode_payload(&request.payload).unwrap_or_else(|e| {
        log::error(&format!("call failed: {e}"));
        sys::exit_now(1)
    });
    // A terminal's signals may come as soon as our group is its
    // foreground: they wait until the monitor knows the call is running,
    // so that it reports a stop and sees a death as the call's.
    let unblock = block_terminal_signals(request.kind);
    match request.kind.pty.iter().position(|&on| on) {
        Some(fd) => keep_session(&request.stdio[fd], &monitor, request.kind.pty_background),
        None => {
            let _ = nix::unistd::setpgid(sys::Pid::from_raw(0), sys::Pid::from_raw(0));
        }
    }
    announce(&call, &monitor, request.kind);
    unblock();
    drop((call, monitor, handover));
    become_the_call(&request, &payload)
}

/// Waits for the call the monitor hands over and reads its request. Any
/// failure ends this process: a call that cannot start leaves nothing of
/// the script running.
fn take_call(handover: &UnixStream) -> (UnixStream, Request) {
    let Ok((_, call)) = recv_fd(handover) else {
        sys::exit_now(0) // the monitor lets us go: not needed
    };
    let call = UnixStream::from(call);
    match read_request(&call) {
        Ok(request) => (call, request),
        Err(e) if hung_up(&e) => {
            log::info("client went away before sending its call");
            sys::exit_now(0)
        }
        Err(e) => {
            log::error(&format!("call failed: {e}"));
            sys::exit_now(1)
        }
    }
}

/// Blocks the signals a terminal sends its foreground group, on a call
/// with a pseudo-terminal of its own; returns what gives the mask back.
fn block_terminal_signals(kind: protocol::RequestKind) -> impl FnOnce() {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    let mut old = None;
    if kind.on_pty() {
        let mut set = SigSet::empty();
        for sig in [
            Signal::SIGINT,
            Signal::SIGQUIT,
            Signal::SIGTSTP,
            Signal::SIGTTIN,
            Signal::SIGTTOU,
            Signal::SIGWINCH,
            Signal::SIGHUP,
            // The keeper's, from a signalfd.
            Signal::SIGCHLD,
        ] {
            set.add(sig);
        }
        let mut was = SigSet::empty();
        if pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut was)).is_ok() {
            old = Some(was);
        }
    }
    move || {
        if let Some(was) = old {
            let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&was), None);
        }
    }
}

/// On a call with a pseudo-terminal of its own: starts a session with
/// that terminal as its controlling terminal and forks the script's
/// process, which leads the terminal's foreground group; returns only in
/// that process. We stay, as a shell would, the session's leader: its
/// keeper (see [`keep`]).
///
/// Why two processes: a process group none of whose members has a parent
/// in its session but outside the group is orphaned, and the kernel
/// discards the stop signals a terminal sends such a group. A script
/// that led its session itself (its parent, the monitor, is elsewhere)
/// would ignore ^Z.
fn keep_session(terminal: &OwnedFd, monitor: &UnixStream, background: bool) {
    if let Err(e) = sys::take_controlling_terminal(terminal) {
        log::error(&format!("call failed: cannot take its terminal: {e}"));
        sys::exit_now(127);
    }
    // SAFETY: we are single-threaded, as the server was.
    match unsafe { sys::fork() } {
        Ok(Forked::Child) => {
            // Our keeper gone (the monitor killed): the call ends.
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGINT);
            let us = nix::unistd::getpid();
            let _ = nix::unistd::setpgid(us, us);
            // From the background: SIGTTOU is blocked, so it is allowed.
            if !background && let Err(e) = nix::unistd::tcsetpgrp(terminal, us) {
                log::error(&format!("call failed: cannot take its terminal: {e}"));
                sys::exit_now(127);
            }
        }
        // SAFETY: `keep_here` never returns to the frames that own our
        // other fds (the call's, the hand-over socket), which it closes.
        Ok(Forked::Parent(script)) => unsafe { keeper::keep_here(script, monitor, terminal) },
        Err(e) => {
            log::error(&format!(
                "call failed: cannot fork the script's process: {e}"
            ));
            sys::exit_now(127);
        }
    }
}

/// Tells the client (extended: 'P', our pid) and the monitor ('r') that
/// the call is ours; from then on only the monitor uses the call socket.
fn announce(call: &UnixStream, monitor: &UnixStream, kind: protocol::RequestKind) {
    if kind.extended {
        let pid_frame = Frame::ExecutorPid(std::process::id()).encode();
        if send_all(call, &pid_frame).is_err() {
            log::info("client went away before its call started");
            sys::exit_now(0);
        }
    }
    // Failure means the monitor is gone: nobody could report our status.
    if send_all(
        monitor,
        &protocol::encode_executor_ready(kind, std::process::id()),
    )
    .is_err()
    {
        sys::exit_now(127);
    }
}

/// Takes on the caller's directory and umask (with `context`), fds 0..2
/// and environment (with initialisation's changes on top); returns what
/// the script gets.
fn become_the_call(request: &Request, payload: &protocol::Payload<'_>) -> Invocation {
    if let Some(context) = &request.context {
        if fchdir(&context.cwd).is_err() {
            sys::exit_now(127);
        }
        umask(Mode::from_bits_truncate(context.umask as libc::mode_t));
    }
    let [stdin, stdout, stderr] = &request.stdio;
    if dup2_stdin(stdin)
        .and_then(|()| dup2_stdout(stdout))
        .and_then(|()| dup2_stderr(stderr))
        .is_err()
    {
        sys::exit_now(127);
    }
    // A caller's closed fd (`request.kind.closed`) stays the /dev/null the
    // client sent in its place: a Rust program run directly gets exactly
    // that, since std's start-up opens /dev/null on a closed fd 0, 1, 2.
    // What a direct run would inherit beyond fds: said on the caller's
    // stderr (ours now) if it cannot be, and the call does not run.
    if let Some(limits) = &request.limits
        && let Err(e) = sys::take_limits(limits)
    {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("prefork-interp: {e}\n").as_bytes(),
        );
        sys::exit_now(127);
    }
    if let Some(signals) = &request.caller_signals {
        sys::take_caller_signals(signals);
    }
    // The server's syslog connection, if it had one, is not the script's.
    log::close();
    // SAFETY: this process is single-threaded (checked at initialisation).
    if unsafe { nix::env::clearenv() }.is_err() {
        sys::exit_now(127);
    }
    let mut env = Vec::with_capacity(payload.env.len());
    for entry in &payload.env {
        // setenv cannot express a name holding '='; such entries (which
        // only a hand-made environment has) are left out.
        if let Some((name, value)) = protocol::split_env_entry(entry)
            && !name.contains(&b'=')
        {
            let (name, value) = (OsStr::from_bytes(name), OsStr::from_bytes(value));
            // SAFETY: single-threaded, as above.
            unsafe { std::env::set_var(name, value) };
            env.push((name.to_owned(), value.to_owned()));
        }
    }
    init_env::apply(&mut env);
    let args: Vec<OsString> = payload
        .args
        .iter()
        .map(|a| OsStr::from_bytes(a).to_owned())
        .collect();
    Invocation {
        args,
        env,
        served: true,
    }
}
