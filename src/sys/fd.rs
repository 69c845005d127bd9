//! File descriptors: polling, close-on-exec, closing from a number up,
//! /dev/null as stdio, a Unix socket's peer.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};

/// A poll(2) timeout of `left`, rounded up to whole milliseconds: poll
/// must not wake just before the time it waits for.
pub(crate) fn poll_timeout(left: std::time::Duration) -> nix::poll::PollTimeout {
    let millis = left.as_nanos().div_ceil(1_000_000);
    nix::poll::PollTimeout::try_from(millis).unwrap_or(nix::poll::PollTimeout::MAX)
}

/// Blocks until at least one of `fds` is readable or hung up, and says
/// which (level-triggered `poll`). Retries on EINTR.
pub(crate) fn wait_readable<const N: usize>(fds: [BorrowedFd<'_>; N]) -> io::Result<[bool; N]> {
    poll_readable(fds, None).map(|ready| ready.expect("no deadline, no timeout"))
}

/// Whether `fd` becomes readable (or hangs up) within `patience`. An
/// error counts as readable: the read that follows reports it.
pub(crate) fn readable_within(fd: BorrowedFd<'_>, patience: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + patience;
    !matches!(poll_readable([fd], Some(deadline)), Ok(None))
}

/// [`wait_readable`], up to `deadline` if there is one: `None` once it
/// has passed with nothing readable. Retries on EINTR, with what is left.
fn poll_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    deadline: Option<std::time::Instant>,
) -> io::Result<Option<[bool; N]>> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut polled = fds.map(|fd| PollFd::new(fd, PollFlags::POLLIN));
    loop {
        let timeout = deadline.map_or(PollTimeout::NONE, |deadline| {
            poll_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        });
        match poll(&mut polled, timeout) {
            Ok(0) if deadline.is_some() => return Ok(None),
            Ok(_) => return Ok(Some(polled.each_ref().map(|p| p.any().unwrap_or(false)))),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// close_range(first, ~0, flags).
fn close_range(first: RawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: close_range on a range of integers; what closing them means
    // for their owners is the callers' to vouch for.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            flags,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes every fd from `first` up (close_range, Linux 5.9).
///
/// # Safety
/// No `OwnedFd` (or `File`, socket ...) at or above `first` may be used or
/// dropped afterwards: the caller never returns to the frames that own
/// them (a daemon that was just forked, on its way to its own loop).
pub(crate) unsafe fn close_from(first: RawFd) -> io::Result<()> {
    close_range(first, 0)
}

/// Marks every fd from `first` up close-on-exec (close_range, Linux 5.11).
/// Changes flags only, so ownership is untouched. Async-signal-safe.
pub(crate) fn cloexec_from(first: RawFd) -> io::Result<()> {
    close_range(first, libc::CLOSE_RANGE_CLOEXEC)
}

/// Sets or clears close-on-exec. Async-signal-safe: usable between fork
/// and exec.
pub(crate) fn set_cloexec(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, FcntlArg::F_SETFD(flags))?;
    Ok(())
}

/// Sets `O_NONBLOCK`.
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Whether `fd` is of this file type (`S_IFSOCK`, `S_IFIFO`, ...).
pub(crate) fn has_file_type(fd: BorrowedFd<'_>, kind: nix::sys::stat::SFlag) -> bool {
    use nix::sys::stat::{SFlag, fstat};
    fstat(fd).is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind)
}

/// Is fd number `fd` open? (For fds handed to us by number: stdio, the
/// setup's fds.)
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on a number we do not own has no effect on it.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Points stdin, stdout and stderr at /dev/null.
pub(crate) fn null_stdio() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    nix::unistd::dup2_stdin(&null)?;
    nix::unistd::dup2_stdout(&null)?;
    nix::unistd::dup2_stderr(&null)?;
    Ok(())
}

/// The uid and pid of the process at the other end of a Unix socket, as
/// the kernel recorded them at connect() or listen() (SO_PEERCRED).
pub(crate) fn peer_credentials(sock: impl AsFd) -> io::Result<(u32, i32)> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(&sock, PeerCredentials)?;
    Ok((cred.uid(), cred.pid()))
}
