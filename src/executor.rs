//! The executor: the script itself again, one per call.
//!
//! ```text
//! fd 0, 1, 2   the caller's stdin, stdout, stderr (received by SCM_RIGHTS)
//! environment  exactly the caller's
//! signals      what the server had (the monitor ignored the forwardable
//!              ones), except SIGINT: default (the first caller may have
//!              ignored it; we must not inherit that: a killed client's
//!              executor must die)
//! ```
//!
//! With capability `context`, it runs in the caller's current directory
//! (received as an fd; fchdir) with the caller's umask.
//!
//! For an extended call, once its signals are in place it tells the
//! monitor "ready" and waits to be let go, so that the client knows its
//! pid before any per-call code runs, and no forwarded signal is lost.
//!
//! No protocol fd survives into it: the server closed the listening socket
//! and watcher pipes in the monitor, and here the call socket and the
//! received copies go.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;

use crate::protocol;
use crate::server::Invocation;
use crate::sys;

/// The caller's current directory and umask (capability `context`).
pub(crate) struct CallerContext {
    pub cwd: OwnedFd,
    pub umask: u32,
}

/// Turns this freshly forked child of a monitor into the call's executor.
pub(crate) fn enter(
    call: UnixStream,
    stdio: Vec<OwnedFd>,
    request: &protocol::Payload,
    context: Option<CallerContext>,
    saved: &sys::SavedSignals,
    handshake: Option<UnixStream>,
) -> Invocation {
    saved.restore();
    if let Some(context) = context {
        // SAFETY: fchdir and umask on values we own.
        unsafe {
            if libc::fchdir(context.cwd.as_raw_fd()) != 0 {
                sys::exit_now(127);
            }
            libc::umask(context.umask as libc::mode_t);
        }
    }
    sys::default_signal(libc::SIGINT);
    if let Some(mut monitor) = handshake {
        let mut go = [0u8; 1];
        // Failure means the monitor is gone; the call is over anyway.
        if sys::send_all(monitor.as_raw_fd(), b"r").is_err() || monitor.read(&mut go).is_err() {
            sys::exit_now(127);
        }
    }
    for (target, fd) in stdio.iter().enumerate() {
        if sys::dup2(fd.as_raw_fd(), target as i32).is_err() {
            sys::exit_now(127);
        }
    }
    drop((stdio, call));

    // SAFETY: this process is single-threaded (checked at initialisation).
    unsafe { libc::clearenv() };
    let mut env = Vec::with_capacity(request.env.len());
    for entry in &request.env {
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
    let args: Vec<OsString> = request
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
