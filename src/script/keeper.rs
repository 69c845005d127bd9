//! The session's keeper, on a call with a pseudo-terminal of its own:
//! the session's leader, as a shell is, with the script's process its
//! child (why two processes: `executor::keep_session`).
//!
//! ```text
//! monitor ── socket ── keeper   the session's leader (the terminal is its
//!                        │      controlling terminal): 't' stops, 'x' end;
//!                        │      'f' moves the script's group on the terminal
//!                        └── script   leads the terminal's foreground group
//! ```
//!
//! The executor that forked the script is the keeper. Here it keeps the
//! session as it is (`keep`). Perl's, Python's and Ruby's executors,
//! when the client that started the server named itself in
//! `PREFORK_INTERP` (`pfi-keeper`), exec that program as `PROGRAM --session-keeper
//! SCRIPT_PID` (`run_program`, which runs `keep`), so that the keeper
//! holds none of the interpreter's memory: an interpreter writes all over
//! its heap (reference counts, its exit's finalisation), and every page
//! still shared with a keeper is copied first. A Rust program writes only
//! what it uses, and the exec would cost more than it saves: the keeper's
//! start-up can outlast a short script, whose status then waits for it
//! (`./bench tty`: the Rust agent on a terminal went from 1.12x to 1.49x
//! its call without one).
//!
//! The program's world: fd 0 the monitor's socket, fd 1 the terminal, fd
//! 2 as the executor had it (its other fds it closes); SIGCHLD blocked,
//! so that the script's changes wait for its signalfd; PR_SET_PDEATHSIG
//! as the executor had it (exec keeps it): the monitor's death ends it.

use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::signal::{Signal, killpg};

use super::log;
use crate::protocol::io::send_all;
use crate::protocol::{self, Frame, WaitStatus};
use crate::sys;

/// The keeper as a program of its own (see the module docs); `script` is
/// its one argument after `--session-keeper`, the script's pid. A
/// misuse (not the script side's exec: no such child, fd 0 no socket, fd
/// 1 no terminal) gets one line on stderr and status 127.
///
/// # Safety
/// Only as a process's program, before anything else has used its fds:
/// it takes fds 0 and 1 as its own, and closes every fd from 3 up.
pub unsafe fn run_program(script: &OsStr) -> ! {
    let fail = |why: &str| -> ! {
        eprintln!(
            "prefork-interp: --session-keeper {}: {why}",
            script.display()
        );
        sys::exit_now(127)
    };
    // SAFETY: nothing of ours uses an fd from 3 up (the caller's promise).
    if let Err(e) = unsafe { sys::close_from(3) } {
        fail(&format!("cannot close the executor's fds: {e}"));
    }
    let Some(script) = script
        .to_str()
        .and_then(|pid| pid.parse::<i32>().ok())
        .filter(|&pid| pid > 0)
        .map(sys::Pid::from_raw)
    else {
        fail("not a process id (it is for a script side's executor to run: see prefork-interp(7))")
    };
    // SAFETY: fd 0 and 1 are ours alone (the caller's promise); checked
    // below to be what they must be before either is used.
    let (monitor, terminal) = unsafe { (BorrowedFd::borrow_raw(0), BorrowedFd::borrow_raw(1)) };
    if !sys::has_file_type(monitor, nix::sys::stat::SFlag::S_IFSOCK) {
        fail("fd 0 is not the monitor's socket");
    }
    if !nix::unistd::isatty(terminal).unwrap_or(false) {
        fail("fd 1 is not the call's terminal");
    }
    if !sys::is_child(script) {
        fail("not a child of ours");
    }
    // SAFETY: fds 0 and 1 checked; those from 3 up closed above.
    unsafe { keep_from_stdio(script) }
}

/// The Rust executor's keeping of its session, once it has forked the
/// script: with the world the keeper program has (`run_program`), and so
/// none of the call's fds (a copy of a pipe that was the caller's stdout
/// would keep its reader from the end).
///
/// # Safety
/// Only where no frame that owns an fd from 3 up (but `monitor` and
/// `terminal`, which it takes over) is returned to: it closes them.
pub(super) unsafe fn keep_here(script: sys::Pid, monitor: &UnixStream, terminal: &OwnedFd) -> ! {
    if let Err(e) = nix::unistd::dup2_stdin(monitor).and(nix::unistd::dup2_stdout(terminal)) {
        log::error(&format!("keeper of {script}: {e}"));
        sys::exit_now(127);
    }
    // SAFETY: the caller's promise, for every fd from 3 up.
    if let Err(e) = unsafe { sys::close_from(3) } {
        log::error(&format!("keeper of {script}: {e}"));
        sys::exit_now(127);
    }
    // SAFETY: fd 0 is the monitor's socket, 1 the terminal, both ours.
    unsafe { keep_from_stdio(script) }
}

/// [`keep`], with the monitor's socket as fd 0 and the terminal as fd 1,
/// and no fd from 3 up.
///
/// # Safety
/// Fds 0 and 1 are ours alone, and are the monitor's socket and the
/// terminal.
unsafe fn keep_from_stdio(script: sys::Pid) -> ! {
    // The terminal from 3 up, so that the end's close_from(3) closes it
    // before the status goes (see `keep`).
    // SAFETY: fd 1 is open (the caller's promise) for as long as this.
    let one = unsafe { BorrowedFd::borrow_raw(1) };
    let terminal = match nix::fcntl::fcntl(one, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)) {
        Ok(fd) => fd,
        Err(e) => {
            log::error(&format!(
                "keeper of {script}: cannot move the terminal: {e}"
            ));
            sys::exit_now(127)
        }
    };
    // SAFETY: fd 1 is ours (the caller's promise), its copy now `terminal`.
    drop(unsafe { OwnedFd::from_raw_fd(1) });
    // SAFETY: a fresh fd of our own, from fcntl.
    let terminal = unsafe { OwnedFd::from_raw_fd(terminal) };
    // SAFETY: fd 0 is ours, the monitor's socket (the caller's promise).
    let monitor = UnixStream::from(unsafe { OwnedFd::from_raw_fd(0) });
    // What the executor ignored is not ours to ignore (after an exec,
    // those it handled are at their defaults already).
    sys::default_ignored_signals();
    keep(script, &monitor, &terminal)
}

/// The session's keeper: tells the monitor when the script stops ('t')
/// and how it ended ('x'), then exits; moves the script's group to its
/// terminal's foreground or background when the client says so ('f',
/// from its 'F'), and then continues it. What the script left in its group
/// gets SIGINT while the script is a zombie (its group id cannot be
/// reused), as the monitor does for an executor. A hang-up of the
/// terminal, which the kernel signals to the session's leader, is the
/// monitor's to pass on (it sees the client go).
fn keep(script: sys::Pid, monitor: &UnixStream, terminal: &OwnedFd) -> ! {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::signal::SigSet;
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    sys::ignore_signals(&[Signal::SIGHUP]);
    // The monitor's death (PR_SET_PDEATHSIG) must still end us, and with
    // us the script (its own PR_SET_PDEATHSIG).
    let _ = SigSet::from(Signal::SIGINT).thread_unblock();
    // SIGCHLD is blocked (since before the fork): the script's changes
    // wait here.
    let children = SignalFd::with_flags(
        &SigSet::from(Signal::SIGCHLD),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )
    .unwrap_or_else(|e| {
        log::error(&format!("keeper of {script}: {e}"));
        sys::exit_now(127)
    });
    let mut monitor_open = true;
    loop {
        while let Some(state) = sys::child_state(script).unwrap_or_else(|e| {
            log::error(&format!("keeper of {script}: {e}"));
            sys::exit_now(127)
        }) {
            match state {
                sys::ChildState::Stopped(signal) => {
                    let message = Frame::KeeperStopped(signal).encode();
                    let _ = send_all(monitor, &message);
                }
                sys::ChildState::Exited => {
                    let _ = killpg(script, Signal::SIGINT);
                    let status = sys::wait_status(script).unwrap_or(WaitStatus::exited(0));
                    // Our copies of the terminal go before the status: the
                    // client waits for the last of them (its master's EIO)
                    // before it ends, and need not wait for our exit too.
                    // The monitor's socket alone stays, as fd 0.
                    let message = Frame::KeeperStatus(status).encode();
                    if nix::unistd::dup2_stdin(monitor).is_ok() {
                        // SAFETY: we exit right after; nothing here uses
                        // a closed fd again.
                        let _ = unsafe { sys::close_from(3) };
                        // SAFETY: fd 0 is the monitor's socket now.
                        let to_monitor = unsafe { std::os::fd::BorrowedFd::borrow_raw(0) };
                        let _ = send_all(to_monitor, &message);
                    } else {
                        let _ = send_all(monitor, &message);
                    }
                    sys::exit_now(0);
                }
            }
        }
        let mut fds = vec![PollFd::new(children.as_fd(), PollFlags::POLLIN)];
        if monitor_open {
            fds.push(PollFd::new(monitor.as_fd(), PollFlags::POLLIN));
        }
        if let Err(e) = poll(&mut fds, PollTimeout::NONE)
            && e != nix::errno::Errno::EINTR
        {
            log::error(&format!("keeper of {script}: poll: {e}"));
            sys::exit_now(127);
        }
        let heard = fds.get(1).is_some_and(|fd| fd.any().unwrap_or(false));
        while let Ok(Some(_)) = children.read_signal() {}
        if heard {
            match protocol::io::read_frame(monitor) {
                Ok(Frame::KeeperForeground(true)) => {
                    // SIGTTOU is blocked: allowed from the background.
                    let _ = nix::unistd::tcsetpgrp(terminal, script);
                    let _ = killpg(script, Signal::SIGCONT);
                }
                Ok(Frame::KeeperForeground(false)) => {
                    let _ = nix::unistd::tcsetpgrp(terminal, nix::unistd::getpgrp());
                    let _ = killpg(script, Signal::SIGCONT);
                }
                Ok(_) => {}
                Err(_) => monitor_open = false,
            }
        }
    }
}
