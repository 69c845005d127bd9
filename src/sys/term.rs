//! Terminals: the controlling terminal of a new session, window sizes.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

/// Starts a session of our own (setsid) and makes `terminal` its
/// controlling terminal (TIOCSCTTY); our process group is then the
/// terminal's foreground group. We must not lead a process group.
pub(crate) fn take_controlling_terminal(terminal: &impl AsFd) -> io::Result<()> {
    nix::unistd::setsid()?;
    // SAFETY: an ioctl with an integer argument on an fd we borrow.
    if unsafe { libc::ioctl(terminal.as_fd().as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A terminal's window size (TIOCGWINSZ).
pub(crate) fn window_size(terminal: &impl AsFd) -> io::Result<libc::winsize> {
    // SAFETY: winsize is plain data; all zeroes is a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through a valid pointer.
    if unsafe { libc::ioctl(terminal.as_fd().as_raw_fd(), libc::TIOCGWINSZ, &mut size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

/// Sets a terminal's window size (TIOCSWINSZ); if it changed, the kernel
/// sends SIGWINCH to the terminal's foreground process group.
pub(crate) fn set_window_size(terminal: &impl AsFd, size: &libc::winsize) -> io::Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize through a valid pointer.
    if unsafe { libc::ioctl(terminal.as_fd().as_raw_fd(), libc::TIOCSWINSZ, size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Which of fds 0, 1, 2 are terminals: bit N for fd N (a greeting's
/// `terminals` line; the client's own, to compare).
pub(crate) fn stdio_terminals() -> u8 {
    (0..3).fold(0, |bits, fd| {
        // SAFETY: isatty only asks the kernel about a number.
        if unsafe { libc::isatty(fd) } == 1 {
            bits | 1 << fd
        } else {
            bits
        }
    })
}
