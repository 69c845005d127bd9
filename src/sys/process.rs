//! Processes: fork with its contract stated, pidfds, wait statuses (raw,
//! as the wire carries them) and a child's stop or end seen without
//! reaping it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::unistd::Pid;

use super::fd::wait_readable;
use super::signal::signal_name;
use crate::protocol::WaitStatus;

/// Which side of a fork we are on.
pub(crate) enum Forked {
    Parent(Pid),
    Child,
}

/// `fork(2)`.
///
/// # Safety
/// The process must be single-threaded: the child then has consistent
/// copies of every lock and may run ordinary code.
pub(crate) unsafe fn fork() -> io::Result<Forked> {
    // SAFETY: the caller guarantees a single-threaded process.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Ends this process at once: no atexit handlers, no stdio flushing, no
/// destructors. For server, monitor and intermediate processes, whose
/// copies of the script's state must not run its exit-time code.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}

/// A pidfd: readable once its process has exited (Linux 5.3).
#[derive(Debug)]
pub(crate) struct Pidfd(OwnedFd);

impl Pidfd {
    /// A pidfd for `pid`: our own child (not yet reaped, so the pid cannot
    /// have been reused), or ourselves.
    pub(crate) fn open(pid: Pid) -> io::Result<Self> {
        // SAFETY: plain system call; on success the result is a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this fd; nothing else owns it.
        Ok(Pidfd(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// Blocks until the process has exited (it is not reaped).
    pub(crate) fn wait_for_exit(&self) {
        let _ = wait_readable([self.as_fd()]);
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Waits for child `pid` and returns its raw wait status. Retries on
/// EINTR.
pub(crate) fn wait_status(pid: Pid) -> io::Result<WaitStatus> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid pointer. (nix's waitpid decodes the
        // status; we need it raw, as the wire carries it.)
        if unsafe { libc::waitpid(pid.as_raw(), &mut status, 0) } > 0 {
            return Ok(WaitStatus::from_raw(status));
        }
        if Errno::last() != Errno::EINTR {
            return Err(io::Error::last_os_error());
        }
    }
}

/// What [`child_state`] found.
pub(crate) enum ChildState {
    /// Stopped by this signal (reported once per stop).
    Stopped(i32),
    /// Exited or killed; still a zombie, for [`wait_status`] to reap.
    Exited,
}

/// Whether child `pid` has stopped or ended, without waiting and without
/// reaping it: `waitid(P_PID, pid, WSTOPPED | WEXITED | WNOWAIT |
/// WNOHANG)`, then consuming a stop's report. `None`: neither, yet.
/// Retries on EINTR.
pub(crate) fn child_state(pid: Pid) -> io::Result<Option<ChildState>> {
    loop {
        // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid with a valid pointer to a siginfo_t.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid.as_raw() as libc::id_t,
                &mut info,
                libc::WSTOPPED | libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
            )
        };
        if r < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return Err(io::Error::last_os_error());
        }
        // SAFETY: si_pid and si_status are set when waitid reported a
        // child (and left zero, as we zeroed them, when it did not).
        let (child, signal) = unsafe { (info.si_pid(), info.si_status()) };
        if child == 0 {
            return Ok(None);
        }
        if info.si_code != libc::CLD_STOPPED {
            return Ok(Some(ChildState::Exited));
        }
        // Consume this stop's report (WNOWAIT left it), so the next wait
        // sees what comes after it; without WEXITED, which never reaps.
        // SAFETY: as above.
        unsafe {
            libc::waitid(
                libc::P_PID,
                pid.as_raw() as libc::id_t,
                &mut info,
                libc::WSTOPPED | libc::WNOHANG,
            )
        };
        return Ok(Some(ChildState::Stopped(signal)));
    }
}

/// Whether `pid` is a child of ours (ended or not), asked without
/// reaping it or consuming a report of its state.
pub(crate) fn is_child(pid: Pid) -> bool {
    // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waitid with a valid pointer to a siginfo_t.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid.as_raw() as libc::id_t,
                &mut info,
                libc::WSTOPPED | libc::WEXITED | libc::WCONTINUED | libc::WNOWAIT | libc::WNOHANG,
            )
        };
        if r == 0 || Errno::last() != Errno::EINTR {
            return r == 0;
        }
    }
}

/// Describes a raw wait status for messages: "exited with status 3",
/// "was killed by SIGSEGV (core dumped)".
pub(crate) fn describe_status(status: WaitStatus) -> String {
    if let Some(code) = status.exit_code() {
        format!("exited with status {code}")
    } else if let Some(signal) = status.signal() {
        let core = if status.core_dumped() {
            " (core dumped)"
        } else {
            ""
        };
        format!("was killed by {}{core}", signal_name(signal))
    } else {
        format!("has wait status {:#x}", status.raw())
    }
}
