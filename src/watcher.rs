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
//! rename over it and re-creation are all seen without polling.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use inotify::{EventMask, Inotify, WatchMask};

use crate::sys::{self, Forked};

/// Starts a watcher for `socket` (device `dev`, inode `ino`), fully
/// daemonised; reaps the intermediate process before returning.
pub fn spawn(socket: &Path, dev: u64, ino: u64, stdin: OwnedFd, stderr: OwnedFd) -> io::Result<()> {
    match sys::fork()? {
        Forked::Parent(intermediate) => {
            drop((stdin, stderr));
            let status = sys::wait_status(intermediate, 0)?.unwrap_or(-1);
            if status != 0 {
                return Err(io::Error::other(format!(
                    "watcher's intermediate process {}",
                    sys::describe_status(status)
                )));
            }
            Ok(())
        }
        Forked::Child => match sys::fork() {
            Ok(Forked::Child) => become_watcher(socket, dev, ino, stdin, stderr),
            Ok(Forked::Parent(_)) => sys::exit_now(0),
            Err(_) => sys::exit_now(1),
        },
    }
}

fn become_watcher(socket: &Path, dev: u64, ino: u64, stdin: OwnedFd, stderr: OwnedFd) -> ! {
    let _ = nix::unistd::setsid();
    // A daemon must not keep the caller's directory (or its mount) busy.
    let _ = std::env::set_current_dir("/");
    let plumbed = (|| {
        sys::dup2(stdin.as_raw_fd(), 0)?;
        sys::dup2(stderr.as_raw_fd(), 2)?;
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
        sys::dup2(null.as_raw_fd(), 1)
    })();
    if plumbed.is_err() {
        sys::exit_now(1);
    }
    // Everything else (the caller's fds, the client's lock and sockets).
    sys::close_from(3);
    std::mem::forget((stdin, stderr));
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

fn still_there(socket: &Path, dev: u64, ino: u64) -> bool {
    matches!(std::fs::symlink_metadata(socket), Ok(m) if m.dev() == dev && m.ino() == ino)
}

fn watch(socket: &Path, dev: u64, ino: u64) -> io::Result<()> {
    let dir = socket.parent().unwrap_or(Path::new("."));
    let name: &OsStr = socket.file_name().unwrap_or_default();
    let mut inotify = Inotify::init()?;
    inotify.watches().add(
        dir,
        WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF,
    )?;
    // The path may have changed before the watch existed.
    if !still_there(socket, dev, ino) {
        return Ok(());
    }
    let mut buffer = [0u8; 4096];
    // SAFETY: fd 0 stays open for the life of this process.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    loop {
        let [stdin_ready, inotify_ready] = sys::wait_readable([stdin, inotify.as_fd()])?;
        if stdin_ready {
            let mut byte = [0u8; 64];
            match nix::unistd::read(stdin, &mut byte) {
                Ok(0) => return Ok(()),
                Ok(_) | Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if inotify_ready {
            let mut check = false;
            match inotify.read_events(&mut buffer) {
                Ok(events) => {
                    for event in events {
                        check |= event.name == Some(name)
                            || event.mask.intersects(
                                EventMask::Q_OVERFLOW
                                    | EventMask::DELETE_SELF
                                    | EventMask::MOVE_SELF
                                    | EventMask::IGNORED,
                            );
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if check && !still_there(socket, dev, ino) {
                return Ok(());
            }
        }
    }
}
