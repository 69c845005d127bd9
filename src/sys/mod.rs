//! Thin, fd-typed wrappers over the system calls both the client and the
//! script side make, where nix has no safe form: fork with its contract
//! stated, pidfds, close_range, signal dispositions, wait statuses as text.
//! Everything else is called through nix directly. [`procfs`] reads /proc;
//! [`title`] sets what /proc/PID/cmdline shows.
//!
//! Every `fork` in this crate happens in a process that is single-threaded
//! by design (the client once its lock announcer has been joined; a
//! script-side server that checked it has no other threads), so the child
//! may go on to run ordinary Rust code.

pub(crate) mod procfs;
pub(crate) mod title;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
pub(crate) use nix::unistd::Pid;

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
pub(crate) fn wait_status(pid: Pid) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid pointer. (nix's waitpid decodes the
        // status; we need it raw, as the wire carries it.)
        if unsafe { libc::waitpid(pid.as_raw(), &mut status, 0) } > 0 {
            return Ok(status);
        }
        if Errno::last() != Errno::EINTR {
            return Err(io::Error::last_os_error());
        }
    }
}

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

/// Linux's resource numbers, RLIMIT_CPU (0) to RLIMIT_RTTIME (15), with
/// their names for messages.
pub(crate) const RESOURCES: [&str; 16] = [
    "CPU",
    "FSIZE",
    "DATA",
    "STACK",
    "CORE",
    "RSS",
    "NPROC",
    "NOFILE",
    "MEMLOCK",
    "AS",
    "LOCKS",
    "SIGPENDING",
    "MSGQUEUE",
    "NICE",
    "RTPRIO",
    "RTTIME",
];

/// This process's resource limits, nice value and OOM score adjustment,
/// as a direct run of the script would inherit them: read once, the
/// first time it is asked (a monitor asks before it forks executors, so
/// that theirs, the server's, cost a call nothing).
pub(crate) fn own_limits() -> &'static crate::protocol::CallerLimits {
    static OWN: std::sync::OnceLock<crate::protocol::CallerLimits> = std::sync::OnceLock::new();
    OWN.get_or_init(read_limits)
}

fn read_limits() -> crate::protocol::CallerLimits {
    let rlimits = (0..RESOURCES.len() as u8)
        .filter_map(|resource| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes one rlimit through a valid pointer.
            let r = unsafe { libc::getrlimit(resource as libc::__rlimit_resource_t, &mut limit) };
            (r == 0).then_some((resource, limit.rlim_cur, limit.rlim_max))
        })
        .collect();
    crate::protocol::CallerLimits {
        rlimits,
        nice: current_nice(),
        oom_score_adj: std::fs::read_to_string("/proc/self/oom_score_adj")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(crate::protocol::OOM_SCORE_UNKNOWN),
    }
}

/// Our nice value (getpriority, whose -1 may be a value, not an error).
fn current_nice() -> i32 {
    Errno::clear();
    // SAFETY: getpriority reads our own priority.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if nice == -1 && Errno::last_raw() != 0 {
        0
    } else {
        nice
    }
}

/// Takes on a caller's resource limits, nice value and OOM score
/// adjustment. Each that differs from ours is set; one the kernel
/// refuses (raising a hard limit, or the priority, needs privilege) is an
/// error that names it: the script must not run with the wrong one.
pub(crate) fn take_limits(limits: &crate::protocol::CallerLimits) -> Result<(), String> {
    let mine = own_limits();
    for &(resource, soft, hard) in &limits.rlimits {
        let Some(name) = RESOURCES.get(usize::from(resource)) else {
            continue; // a resource this kernel has no name for here
        };
        if mine.rlimits.contains(&(resource, soft, hard)) {
            continue;
        }
        let limit = libc::rlimit {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads one rlimit through a valid pointer.
        if unsafe { libc::setrlimit(resource as libc::__rlimit_resource_t, &limit) } != 0 {
            let shown = |v: u64| match v {
                crate::protocol::RLIM_INFINITY => "unlimited".to_string(),
                v => v.to_string(),
            };
            return Err(format!(
                "cannot give the script the caller's RLIMIT_{name} (soft {}, hard {}): {} \
                 (a server started under lower limits cannot raise them: -f starts a fresh one)",
                shown(soft),
                shown(hard),
                Errno::last()
            ));
        }
    }
    if limits.nice != mine.nice {
        // SAFETY: setpriority on ourselves.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, limits.nice) } != 0 {
            return Err(format!(
                "cannot give the script the caller's nice value {}: {}",
                limits.nice,
                Errno::last()
            ));
        }
    }
    if limits.oom_score_adj != crate::protocol::OOM_SCORE_UNKNOWN
        && limits.oom_score_adj != mine.oom_score_adj
        && let Err(e) = std::fs::write("/proc/self/oom_score_adj", limits.oom_score_adj.to_string())
    {
        return Err(format!(
            "cannot give the script the caller's oom_score_adj {}: {e}",
            limits.oom_score_adj
        ));
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

/// A poll(2) timeout of `left`, rounded up to whole milliseconds: poll
/// must not wake just before the time it waits for.
pub(crate) fn poll_timeout(left: std::time::Duration) -> nix::poll::PollTimeout {
    let millis = left.as_nanos().div_ceil(1_000_000);
    nix::poll::PollTimeout::try_from(millis).unwrap_or(nix::poll::PollTimeout::MAX)
}

/// Blocks until at least one of `fds` is readable or hung up, and says
/// which (level-triggered `poll`). Retries on EINTR.
pub(crate) fn wait_readable<const N: usize>(fds: [BorrowedFd<'_>; N]) -> io::Result<[bool; N]> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut polled = fds.map(|fd| PollFd::new(fd, PollFlags::POLLIN));
    loop {
        match poll(&mut polled, PollTimeout::NONE) {
            Ok(_) => return Ok(polled.each_ref().map(|p| p.any().unwrap_or(false))),
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

/// Gives a signal its default disposition, and unblocks it.
pub(crate) fn default_signal(sig: Signal) {
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_DFL runs no code of ours.
    let _ = unsafe { sigaction(sig, &default) };
    let _ = SigSet::from(sig).thread_unblock();
}

/// Dispositions taken away from a set of signals, to be given back.
pub(crate) struct SavedSignals(Vec<(Signal, SigAction)>);

/// Ignores `signals`, remembering what they were. A monitor does this so
/// that signals it forwards to its process group do not hurt it.
pub(crate) fn ignore_signals(signals: &[Signal]) -> SavedSignals {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    let saved = signals
        .iter()
        // SAFETY: SIG_IGN runs no code.
        .filter_map(|&sig| Some((sig, unsafe { sigaction(sig, &ignore) }.ok()?)))
        .collect();
    SavedSignals(saved)
}

impl SavedSignals {
    /// Gives the signals back what they had (an executor does this).
    pub(crate) fn restore(&self) {
        for (sig, old) in &self.0 {
            // SAFETY: reinstating a disposition sigaction gave us, in a
            // single-threaded process.
            let _ = unsafe { sigaction(*sig, old) };
        }
    }
}

/// The name of a signal, e.g. "SIGTERM", or its number.
pub(crate) fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

/// Describes a raw wait status for messages: "exited with status 3",
/// "was killed by SIGSEGV (core dumped)".
pub(crate) fn describe_status(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        let core = if libc::WCOREDUMP(status) {
            " (core dumped)"
        } else {
            ""
        };
        format!(
            "was killed by {}{core}",
            signal_name(libc::WTERMSIG(status))
        )
    } else {
        format!("has wait status {status:#x}")
    }
}

/// The uid and pid of the process at the other end of a Unix socket, as
/// the kernel recorded them at connect() or listen() (SO_PEERCRED).
pub(crate) fn peer_credentials(sock: impl AsFd) -> io::Result<(u32, i32)> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(&sock, PeerCredentials)?;
    Ok((cred.uid(), cred.pid()))
}

/// This process's umask (set and put back: single-threaded callers).
pub(crate) fn current_umask() -> u32 {
    use nix::sys::stat::{Mode, umask};
    let mask = umask(Mode::from_bits_truncate(0o022));
    umask(mask);
    mask.bits()
}
