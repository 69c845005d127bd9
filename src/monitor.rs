//! The monitor: one per call, forked by the server, talking to the client.
//!
//! ```text
//! monitor (own process group; SIGINT ignored)
//!   │  greeting ──> client
//!   │  <── 0x00, fd 0, fd 1, fd 2, u32be length, env and args
//!   ├─fork─> executor (see `executor`): returns into the script
//!   │  wait (poll) for either:
//!   │    pidfd readable: the executor is gone. Reap it FIRST, so the status
//!   │       is its real one, then SIGINT what is left of the group
//!   │       (children it left behind), then send the status.
//!   │    call socket readable: the client is gone (killed, ^C). SIGINT the
//!   │       group, reap the executor, log its fate.
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

/// Serves one call on `call`. Returns only in the executor.
pub(crate) fn serve(call: OwnedFd) -> Invocation {
    match handle(UnixStream::from(call)) {
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

fn handle(mut call: UnixStream) -> io::Result<Option<Invocation>> {
    let _ = nix::unistd::setpgid(sys::Pid::from_raw(0), sys::Pid::from_raw(0));
    sys::set_signal(libc::SIGINT, true);
    let sock = call.as_raw_fd();

    let request = (|| {
        sys::send_all(sock, &protocol::encode_greeting(&[]))?;
        let mut byte = [0u8; 1];
        call.read_exact(&mut byte)?;
        protocol::check_request_byte(byte[0]).map_err(invalid)?;
        let mut stdio = Vec::with_capacity(3);
        for _ in 0..3 {
            stdio.push(sys::recv_byte_with_fd(sock)?.1);
        }
        let mut len = [0u8; 4];
        call.read_exact(&mut len)?;
        let len = protocol::decode_payload_len(len).map_err(invalid)?;
        let mut payload = vec![0u8; len as usize];
        call.read_exact(&mut payload)?;
        Ok::<_, io::Error>((stdio, payload))
    })();
    let (stdio, payload) = match request {
        Ok(r) => r,
        Err(e) if hung_up(&e) => {
            log::info("client went away before sending its call");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };

    let request = protocol::decode_payload(&payload).map_err(invalid)?;
    let executor = match sys::fork()? {
        Forked::Child => return Ok(Some(executor::enter(call, stdio, &request))),
        Forked::Parent(pid) => pid,
    };
    // The caller's stdio is the executor's business, not ours.
    drop(stdio);
    let pidfd = sys::pidfd_open(executor)?;

    let [executor_gone, _client_gone] = sys::wait_readable([pidfd.as_fd(), call.as_fd()])?;

    if executor_gone {
        let status = sys::wait_status(executor, 0)?.unwrap_or(0);
        interrupt_group();
        // A client that left just now needs no status.
        if let Err(e) = sys::send_all(sock, &protocol::encode_status(status))
            && !hung_up(&e)
        {
            return Err(e);
        }
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

/// SIGINT to our process group: the executor and anything it left behind.
/// We ignore SIGINT ourselves.
fn interrupt_group() {
    let _ = nix::sys::signal::killpg(nix::unistd::getpgrp(), nix::sys::signal::Signal::SIGINT);
}

fn invalid(e: protocol::ProtocolError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
