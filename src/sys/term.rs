//! Terminals: the controlling terminal of a new session, window sizes,
//! settings as the wire carries them.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::termios::{SetArg, Termios, tcgetattr, tcsetattr};

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

/// A terminal's settings as the wire carries them ('R', capability
/// `restore`): what `termios` says of it. (On Linux the speeds are the
/// CBAUD bits of the control flags, as glibc's cfgetispeed reads them.)
pub(crate) fn terminal_settings(termios: &Termios) -> crate::protocol::TerminalSettings {
    let termios = libc::termios::from(termios.clone());
    let speed = termios.c_cflag & (libc::CBAUD | libc::CBAUDEX);
    crate::protocol::TerminalSettings {
        iflag: termios.c_iflag,
        oflag: termios.c_oflag,
        cflag: termios.c_cflag,
        lflag: termios.c_lflag,
        ispeed: speed,
        ospeed: speed,
        cc: termios.c_cc.to_vec(),
    }
}

/// Puts `settings` on `terminal` at once (TCSANOW), if it still has the
/// settings `left` (flags and control characters): what a client found
/// there before it made it raw, unless its shell has set the terminal
/// since. Fields the wire does not carry keep their current values;
/// control characters beyond ours are ignored. (The speeds travel in the
/// control flags' CBAUD bits too, on Linux.) Whether it put them back.
pub(crate) fn put_back_terminal_settings(
    terminal: &impl AsFd,
    settings: &crate::protocol::TerminalSettings,
    left: &crate::protocol::TerminalSettings,
) -> io::Result<bool> {
    let current = tcgetattr(terminal)?;
    let now = terminal_settings(&current);
    let flags = |t: &crate::protocol::TerminalSettings| (t.iflag, t.oflag, t.cflag, t.lflag);
    if flags(&now) != flags(left) || now.cc.iter().zip(&left.cc).any(|(a, b)| a != b) {
        return Ok(false);
    }
    let mut termios = libc::termios::from(current);
    termios.c_iflag = settings.iflag;
    termios.c_oflag = settings.oflag;
    termios.c_cflag = settings.cflag;
    termios.c_lflag = settings.lflag;
    for (ours, theirs) in termios.c_cc.iter_mut().zip(&settings.cc) {
        *ours = *theirs;
    }
    tcsetattr(terminal, SetArg::TCSANOW, &Termios::from(termios))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_of(fd: &impl AsFd) -> crate::protocol::TerminalSettings {
        terminal_settings(&tcgetattr(fd).unwrap())
    }

    /// The monitor's put-back: only onto the settings the client left; a
    /// terminal its shell has set since keeps the shell's.
    #[test]
    fn settings_put_back_only_where_the_client_left_them() {
        use nix::sys::termios::cfmakeraw;
        let pty = nix::pty::openpty(None, None).unwrap();
        let cooked = settings_of(&pty.slave);
        let mut raw = tcgetattr(&pty.slave).unwrap();
        cfmakeraw(&mut raw);
        tcsetattr(&pty.slave, SetArg::TCSANOW, &raw).unwrap();
        let left = settings_of(&pty.slave);
        assert_ne!(left, cooked);
        assert!(put_back_terminal_settings(&pty.slave, &cooked, &left).unwrap());
        assert_eq!(settings_of(&pty.slave), cooked);

        // Raw again, then the shell's own mode (echo off, signals on).
        tcsetattr(&pty.slave, SetArg::TCSANOW, &raw).unwrap();
        let mut shells = tcgetattr(&pty.slave).unwrap();
        shells.local_flags |= nix::sys::termios::LocalFlags::ISIG;
        tcsetattr(&pty.slave, SetArg::TCSANOW, &shells).unwrap();
        let shells = settings_of(&pty.slave);
        assert!(!put_back_terminal_settings(&pty.slave, &cooked, &left).unwrap());
        assert_eq!(settings_of(&pty.slave), shells);
    }
}
