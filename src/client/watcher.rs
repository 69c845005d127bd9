//! The watcher: a tiny daemon that ties a server's life to its socket path.
//!
//! ```text
//! fd 0  read end of a pipe whose write end only the server holds (WATCHI)
//! fd 1  /dev/null
//! fd 2  write end of a pipe whose read end only the server holds (WATCHE)
//! ```
//!
//! It exits when the socket path disappears or names another inode
//! (`--kill` removed it, `-f` or a stale-socket recovery replaced it), or
//! when fd 0 reaches EOF (the server is gone). Its exit closes fd 2, and the
//! server, seeing EOF there, quits: calls in flight finish on their own,
//! since monitors are separate processes. A problem of its own is written
//! to fd 2 as one line, which the server logs before quitting.
//!
//! The path is watched with inotify on its directory, so that unlink,
//! rename over it and re-creation are all seen without polling. Without
//! an inotify instance (the user's 128 are all taken) it looks at the path
//! every [`CHECK_INTERVAL`] instead, silently: chiark-utils' module, the
//! only server that still needs a watcher (ours watch their own socket,
//! capability `watch`), quits on any text from it.
//!
//! Started after the server's greeting, and only for a server that does
//! not offer `watch`.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::sys::inotify::{InitFlags, Inotify};
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout};

use crate::sys::{self, Forked};

/// Starts a watcher for `socket` (device `dev`, inode `ino`), fully
/// daemonised; reaps the intermediate process before returning.
pub(crate) fn spawn(
    socket: &Path,
    dev: u64,
    ino: u64,
    stdin: OwnedFd,
    stderr: OwnedFd,
    script: &OsStr,
) -> io::Result<()> {
    // Not the client's command line, with the first call's arguments.
    sys::title::prepare();
    let title = [&b"prefork-interp [watcher] "[..], script.as_bytes()].concat();
    // SAFETY: the client is single-threaded here (its lock announcer
    // thread, if any, has been joined).
    match unsafe { sys::fork() }? {
        Forked::Parent(intermediate) => {
            drop((stdin, stderr));
            let status = sys::wait_status(intermediate)?;
            if status.exit_code() != Some(0) {
                return Err(io::Error::other(format!(
                    "watcher's intermediate process {}",
                    sys::describe_status(status)
                )));
            }
            Ok(())
        }
        // SAFETY: as above; the intermediate process is a copy of it.
        Forked::Child => match unsafe { sys::fork() } {
            Ok(Forked::Child) => {
                sys::title::set(&title);
                // The first caller's variables are nothing of ours.
                sys::title::forget_initial_environ();
                become_watcher(socket, dev, ino, stdin, stderr)
            }
            Ok(Forked::Parent(_)) => sys::exit_now(0),
            Err(_) => sys::exit_now(1),
        },
    }
}

fn become_watcher(socket: &Path, dev: u64, ino: u64, stdin: OwnedFd, stderr: OwnedFd) -> ! {
    let _ = nix::unistd::setsid();
    // A daemon must not keep the caller's directory (or its mount) busy.
    let _ = std::env::set_current_dir("/");
    if plumb(stdin, stderr).is_err() {
        sys::exit_now(1);
    }
    // Everything else: the caller's fds, the client's lock and sockets.
    // SAFETY: we never return to the client's frames that own them
    // (this function ends the process).
    let _ = unsafe { sys::close_from(3) };
    let code = match watch(socket, dev, ino) {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(
                io::stderr(),
                "prefork-interp watcher: {}: {e}",
                socket.display()
            );
            1
        }
    };
    sys::exit_now(code)
}

/// fd 0 the server's pipe, fd 1 /dev/null, fd 2 the pipe to the server.
fn plumb(stdin: OwnedFd, stderr: OwnedFd) -> io::Result<()> {
    dup2_stdin(&stdin)?;
    dup2_stderr(&stderr)?;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    dup2_stdout(&null)?;
    Ok(())
}

/// How often the path is looked at without inotify.
const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

fn watch(socket: &Path, dev: u64, ino: u64) -> io::Result<()> {
    match dir_watch(socket) {
        Ok(inotify) => watch_with(inotify, socket, dev, ino),
        // The user's instances or watches are used up: look instead.
        Err(Errno::EMFILE | Errno::ENFILE | Errno::ENOSPC | Errno::ENOMEM) => {
            look_now_and_then(socket, dev, ino)
        }
        Err(e) => Err(e.into()),
    }
}

/// An inotify instance watching the socket's directory.
fn dir_watch(socket: &Path) -> nix::Result<Inotify> {
    let dir = socket.parent().unwrap_or(Path::new("."));
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
    inotify.add_watch(dir, sys::SOCKET_DIR_MASK)?;
    Ok(inotify)
}

/// Looks at the path every [`CHECK_INTERVAL`]; returns when it has gone or
/// fd 0 reaches EOF.
fn look_now_and_then(socket: &Path, dev: u64, ino: u64) -> io::Result<()> {
    // SAFETY: fd 0 stays open for the life of this process.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    loop {
        if !sys::still_names(socket, (dev, ino)) {
            return Ok(());
        }
        if sys::readable_within(stdin, CHECK_INTERVAL) && server_gone(stdin)? {
            return Ok(());
        }
    }
}

/// After fd 0 polled readable: whether it is at EOF (the server is gone).
fn server_gone(stdin: BorrowedFd<'_>) -> io::Result<bool> {
    let mut byte = [0u8; 64];
    match nix::unistd::read(stdin, &mut byte) {
        Ok(0) => Ok(true),
        Ok(_) | Err(Errno::EINTR) | Err(Errno::EAGAIN) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

fn watch_with(inotify: Inotify, socket: &Path, dev: u64, ino: u64) -> io::Result<()> {
    let name: &OsStr = socket.file_name().unwrap_or_default();
    // The path may have changed before the watch existed.
    if !sys::still_names(socket, (dev, ino)) {
        return Ok(());
    }
    // SAFETY: fd 0 stays open for the life of this process.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    loop {
        let [stdin_ready, inotify_ready] = sys::wait_readable([stdin, inotify.as_fd()])?;
        if stdin_ready && server_gone(stdin)? {
            return Ok(());
        }
        if inotify_ready {
            let check = match inotify.read_events() {
                Ok(events) => events.iter().any(|event| sys::may_mean_gone(event, name)),
                Err(Errno::EAGAIN) => false,
                Err(e) => return Err(e.into()),
            };
            if check && !sys::still_names(socket, (dev, ino)) {
                return Ok(());
            }
        }
    }
}
