//! The monitor: one per call, forked by the server, talking to the client.
//!
//! ```text
//! monitor (own process group; forwardable signals ignored)
//!   │  greeting (advertising `signals`) ──> client
//!   │  <── 0x00 or 0x01 (extended), fd 0, fd 1, fd 2, u32be length, env, args
//!   ├─fork─> executor (see `executor`): returns into the script
//!   │  extended: executor says "ready" (its dispositions restored) on a
//!   │    socketpair; we send 'P' pid, then let it go: no forwarded signal
//!   │    can reach it while it still ignores them as we do
//!   │  wait (poll) for either:
//!   │    pidfd readable: the executor is gone. Reap it FIRST, so the status
//!   │       is its real one, then SIGINT what is left of the group
//!   │       (children it left behind), then send the status.
//!   │    call socket readable: extended, an 'S' frame: deliver that signal
//!   │       to the group, and wait again. Otherwise (EOF, or any data in
//!   │       v1) the client is gone (killed, ^C): SIGINT the group, reap the
//!   │       executor, log its fate.
//!   └─ _exit(0)
//! ```
//!
//! The original watched an EXECTERM pipe for the executor's end and took
//! its EOF as death; a script that closes fds while still exiting (Perl
//! does) was then SIGINTed mid-exit and reported as killed. Watching the
//! pidfd avoids that race: its readiness means the process has exited.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use crate::executor;
use crate::protocol;
use crate::server::Invocation;
use crate::sys::{self, Forked, log};

/// The server's counters when it forked this monitor (for `--list`).
pub(crate) struct ServerStats {
    pub served: u64,
    pub running: u64,
}

/// Serves one call on `call`, offering the extensions `offered`. Returns
/// only in the executor.
pub(crate) fn serve(call: OwnedFd, offered: &[&str], stats: ServerStats) -> Invocation {
    match handle(UnixStream::from(call), offered, stats) {
        Ok(Some(invocation)) => invocation,
        Ok(None) => sys::exit_now(0),
        Err(e) => {
            log::error(&format!("call failed: {e}"));
            sys::exit_now(1)
        }
    }
}

/// A client that hangs up before sending its request is not an error
/// worth a log line beyond info: it was killed or lost interest.
fn hung_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

fn handle(
    mut call: UnixStream,
    offered: &[&str],
    stats: ServerStats,
) -> io::Result<Option<Invocation>> {
    let _ = nix::unistd::setpgid(sys::Pid::from_raw(0), sys::Pid::from_raw(0));
    // We deliver these to our group; they must not hurt us. The executor
    // gets back what the server had.
    let saved = sys::ignore_signals(&protocol::FORWARDED_SIGNALS);
    let sock = call.as_raw_fd();

    let request = (|| {
        let caps = if offered.is_empty() {
            Vec::new()
        } else {
            let mut xdata = protocol::encode_caps(offered);
            xdata.extend(protocol::encode_stats(stats.served, stats.running));
            xdata
        };
        sys::send_all(sock, &protocol::encode_greeting(&caps))?;
        let mut byte = [0u8; 1];
        call.read_exact(&mut byte)?;
        let kind = protocol::check_request_byte(byte[0]).map_err(invalid)?;
        let mut stdio = Vec::with_capacity(3);
        for _ in 0..3 {
            stdio.push(sys::recv_byte_with_fd(sock)?.1);
        }
        let mut len = [0u8; 4];
        call.read_exact(&mut len)?;
        let len = protocol::decode_payload_len(len).map_err(invalid)?;
        let mut payload = vec![0u8; len as usize];
        call.read_exact(&mut payload)?;
        let context = if kind.context {
            let (_, cwd) = sys::recv_byte_with_fd(sock)?;
            let mut umask = [0u8; 4];
            call.read_exact(&mut umask)?;
            Some(executor::CallerContext {
                cwd,
                umask: u32::from_be_bytes(umask),
            })
        } else {
            None
        };
        Ok::<_, io::Error>((kind.extended, stdio, payload, context))
    })();
    let (extended, stdio, payload, context) = match request {
        Ok(r) => r,
        Err(e) if hung_up(&e) => {
            log::info("client went away before sending its call");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };

    let request = protocol::decode_payload(&payload).map_err(invalid)?;
    let handshake = if extended {
        Some(UnixStream::pair()?)
    } else {
        None
    };
    let executor = match sys::fork()? {
        Forked::Child => {
            let handshake = handshake.map(|(_, theirs)| theirs);
            return Ok(Some(executor::enter(
                call, stdio, &request, context, &saved, handshake,
            )));
        }
        Forked::Parent(pid) => pid,
    };
    // The caller's stdio and directory are the executor's business.
    drop((stdio, context));
    let pidfd = sys::pidfd_open(executor)?;
    if let Some((mut ours, theirs)) = handshake {
        drop(theirs);
        // EOF instead of "ready": it died already; its status says how.
        let mut ready = [0u8; 1];
        let _ = ours.read(&mut ready);
        let pid_frame =
            protocol::encode_frame(protocol::FRAME_EXECUTOR_PID, executor.as_raw() as u32);
        send_to_client(sock, &pid_frame)?;
        let _ = sys::send_all(ours.as_raw_fd(), b"g");
    }

    let executor_gone = loop {
        let [gone, client] = sys::wait_readable([pidfd.as_fd(), call.as_fd()])?;
        if gone {
            break true;
        }
        if !client {
            continue;
        }
        if !extended {
            break false; // v1: the client has nothing more to say; it left
        }
        let mut frame = [0u8; protocol::FRAME_LEN];
        match call.read_exact(&mut frame) {
            Ok(()) => forward(protocol::decode_frame(frame)),
            Err(e) if hung_up(&e) => break false,
            Err(e) => return Err(e),
        }
    };

    if executor_gone {
        let status = sys::wait_status(executor, 0)?.unwrap_or(0);
        interrupt_group();
        let message = if extended {
            protocol::encode_frame(protocol::FRAME_STATUS, status as u32).to_vec()
        } else {
            protocol::encode_status(status).to_vec()
        };
        send_to_client(sock, &message)?;
    } else {
        interrupt_group();
        let status = sys::wait_status(executor, 0)?.unwrap_or(0);
        log::info(&format!(
            "client went away; script interrupted, it {}",
            sys::describe_status(status)
        ));
    }
    Ok(None)
}

/// Acts on a frame from the client: a signal for our group. Anything else
/// (a kind from a later version) is ignored.
fn forward((kind, value): (u8, u32)) {
    let signal = value as i32;
    if kind == protocol::FRAME_SIGNAL && protocol::FORWARDED_SIGNALS.contains(&signal) {
        signal_group(signal);
    }
}

/// Sends to the client; one that has just left needs nothing more.
fn send_to_client(sock: std::os::fd::RawFd, data: &[u8]) -> io::Result<()> {
    match sys::send_all(sock, data) {
        Err(e) if !hung_up(&e) => Err(e),
        _ => Ok(()),
    }
}

/// SIGINT to our process group: the executor and anything it left behind.
/// We ignore SIGINT ourselves.
fn interrupt_group() {
    signal_group(libc::SIGINT);
}

/// A signal to our process group (the executor and what it started).
fn signal_group(signal: libc::c_int) {
    // SAFETY: kill(2) on our own process group.
    unsafe { libc::killpg(libc::getpgrp(), signal) };
}

fn invalid(e: protocol::ProtocolError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
