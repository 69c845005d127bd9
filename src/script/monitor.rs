//! The monitor: one per call, forked by the server *before* the call
//! arrives, together with its executor, so that no fork is left on a
//! call's critical path.
//!
//! ```text
//! server ══control══ monitor (own process group; forwardable signals
//!    ║                 │      ignored)
//!    ╚════hand-over════╪═══ executor-to-be (see `executor`): forked by
//!                      │    the monitor, dispositions restored; waits
//!                      │    for the call on the hand-over socket
//!   idle: wait for either
//!     control socket: 0x00 + the call socket (the server has greeted the
//!        caller; it hands the same socket to the executor next), or EOF: the
//!        server is gone or has no more use for us: exit (the executor
//!        sees EOF too, and exits)
//!     pidfd: the executor died while idle: exit; the server forks
//!        another pair
//!   <── 'r', request byte, from the executor once it has read the request
//!        (and, extended, sent 'P' with its pid); EOF instead: bad
//!        request or client gone, logged by the executor: close the call
//!        without a status
//!   wait (poll) for either:
//!     pidfd readable: the executor is gone. Reap it FIRST, so the status
//!        is its real one, then SIGINT what is left of the group
//!        (children it left behind), then send the status.
//!     call socket readable: extended, an 'S' frame: deliver that signal
//!        to the group, and wait again. Otherwise (EOF, or any data in
//!        v1) the client is gone (killed, ^C): SIGINT the group, reap the
//!        executor, log its fate.
//!   _exit(0)
//! ```
//!
//! The call's critical path is client → server (accept, greeting, two
//! sends) → executor (request, 'P', 'r') → the script; the monitor wakes
//! alongside, and only its status message follows the script's exit.
//!
//! The original watched an EXECTERM pipe for the executor's end and took
//! its EOF as death; a script that closes fds while still exiting (Perl
//! does) was then SIGINTed mid-exit and reported as killed. Watching the
//! pidfd avoids that race: its readiness means the process has exited.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::getpgrp;

use super::executor;
use super::invocation::Invocation;
use super::log;
use crate::protocol;
use crate::protocol::io::{hung_up, recv_fd, send_all};
use crate::sys::{self, Forked, Pidfd};

/// Runs in a freshly forked child of the server: becomes a monitor,
/// forks its executor-to-be (which keeps `handover`), and serves the call
/// handed over on `control`. Returns only in the executor.
pub(crate) fn run(control: UnixStream, handover: UnixStream) -> Invocation {
    let _ = nix::unistd::setpgid(sys::Pid::from_raw(0), sys::Pid::from_raw(0));
    // We deliver these to our group; they must not hurt us. The executor
    // gets back what the server had.
    let forwarded: Vec<Signal> = protocol::FORWARDED_SIGNALS
        .iter()
        .filter_map(|&sig| Signal::try_from(sig).ok())
        .collect();
    let saved = sys::ignore_signals(&forwarded);
    let (from_executor, theirs) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            log::error(&format!("cannot make a socket pair: {e}"));
            sys::exit_now(1)
        }
    };
    let monitor = nix::unistd::getpid();
    // SAFETY: forked from the single-threaded server, we are too.
    let executor = match unsafe { sys::fork() } {
        Ok(Forked::Child) => {
            drop((control, from_executor));
            return executor::run(handover, theirs, &saved, monitor);
        }
        Ok(Forked::Parent(pid)) => pid,
        Err(e) => {
            log::error(&format!("cannot fork an executor: {e}"));
            sys::exit_now(1)
        }
    };
    drop((theirs, handover));
    match handle(control, from_executor, executor) {
        Ok(()) => sys::exit_now(0),
        Err(e) => {
            log::error(&format!("call failed: {e}"));
            // Whatever happened, the executor must not outlive us unseen.
            interrupt_group();
            let _ = sys::wait_status(executor);
            sys::exit_now(1)
        }
    }
}

fn handle(
    control: UnixStream,
    mut from_executor: UnixStream,
    executor: sys::Pid,
) -> io::Result<()> {
    let pidfd = Pidfd::open(executor)?;

    // Idle until the server hands us a call.
    // (Both may be ready: the server hands us the call before the
    // executor, which can finish it before we look. Only an executor gone
    // with no call handed over died idle.)
    let [called, executor_died] = sys::wait_readable([control.as_fd(), pidfd.as_fd()])?;
    if executor_died && !called {
        let status = sys::wait_status(executor)?;
        log::error(&format!(
            "idle executor {executor} {}",
            sys::describe_status(status)
        ));
        return Ok(());
    }
    let call = match recv_fd(&control) {
        Ok((_, call)) => UnixStream::from(call),
        Err(e) if hung_up(&e) => {
            // Not needed any more: our executor leaves on its own EOF.
            let _ = sys::wait_status(executor);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    drop(control);

    let mut ready = [0u8; 2];
    if from_executor.read_exact(&mut ready).is_err() {
        // It could not read the request (and logged why) or died.
        let status = sys::wait_status(executor)?;
        if status != 0 {
            log::error(&format!(
                "executor {executor} failed before its call: it {}",
                sys::describe_status(status)
            ));
        }
        return Ok(());
    }
    drop(from_executor);
    let kind = protocol::decode_executor_ready(ready)?;
    watch(call, pidfd, executor, kind.extended)
}

/// Waits for the executor's end or the client's, relaying signal frames.
fn watch(call: UnixStream, pidfd: Pidfd, executor: sys::Pid, extended: bool) -> io::Result<()> {
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
        match protocol::io::read_frame(&call) {
            Ok(frame) => forward(frame),
            Err(e) if hung_up(&e) => break false,
            Err(e) => return Err(e),
        }
    };

    if executor_gone {
        let status = sys::wait_status(executor)?;
        interrupt_group();
        let message = if extended {
            protocol::encode_frame(protocol::FRAME_STATUS, status as u32).to_vec()
        } else {
            protocol::encode_status(status).to_vec()
        };
        send_to_client(call.as_fd(), &message)?;
    } else {
        interrupt_group();
        let status = sys::wait_status(executor)?;
        log::info(&format!(
            "client went away; script interrupted, it {}",
            sys::describe_status(status)
        ));
    }
    Ok(())
}

/// Acts on a frame from the client: a signal for our group. Anything else
/// (a kind from a later version) is ignored.
fn forward((kind, value): (u8, u32)) {
    let signal = value as i32;
    if kind == protocol::FRAME_SIGNAL
        && protocol::FORWARDED_SIGNALS.contains(&signal)
        && let Ok(signal) = Signal::try_from(signal)
    {
        signal_group(signal);
    }
}

/// Sends to the client; one that has just left needs nothing more.
fn send_to_client(sock: BorrowedFd<'_>, data: &[u8]) -> io::Result<()> {
    match send_all(sock, data) {
        Err(e) if !hung_up(&e) => Err(e),
        _ => Ok(()),
    }
}

/// SIGINT to our process group: the executor and anything it left behind.
/// We ignore SIGINT ourselves.
fn interrupt_group() {
    signal_group(Signal::SIGINT);
}

/// A signal to our process group (the executor and what it started).
fn signal_group(signal: Signal) {
    let _ = killpg(getpgrp(), signal);
}
