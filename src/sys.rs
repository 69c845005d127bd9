//! Thin wrappers over the system calls the process roles share.
//!
//! Every `fork` in this crate happens in a process that is single-threaded
//! by design (the client; a script-side server that checked it has no other
//! threads), so the child may go on to run ordinary Rust code.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

pub use nix::unistd::Pid;

/// Which side of a fork we are on.
pub enum Forked {
    Parent(Pid),
    Child,
}

/// `fork(2)`. Callers are single-threaded (see the module docs).
pub fn fork() -> io::Result<Forked> {
    // SAFETY: the process is single-threaded at every call site, so the
    // child has consistent copies of all locks and may run normal code.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Ends this process at once: no atexit handlers, no stdio flushing, no
/// destructors. For server, monitor and intermediate processes, whose
/// copies of the script's state must not run its exit-time code.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}

/// A pidfd for our own child `pid` (it cannot have been reaped yet).
pub fn pidfd_open(pid: Pid) -> io::Result<OwnedFd> {
    // SAFETY: plain system call; on success the result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits for child `pid` and returns its raw wait status.
pub fn wait_status(pid: Pid, options: libc::c_int) -> io::Result<Option<i32>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid pointer.
        let r = unsafe { libc::waitpid(pid.as_raw(), &mut status, options) };
        if r > 0 {
            return Ok(Some(status));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Duplicates `from` onto `to` (which loses close-on-exec).
pub fn dup2(from: RawFd, to: RawFd) -> io::Result<()> {
    // SAFETY: dup2 on integers; the kernel validates them.
    if unsafe { libc::dup2(from, to) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Closes a raw fd we own but do not hold as an `OwnedFd`.
pub fn close(fd: RawFd) {
    // SAFETY: the caller owns fd and nothing else uses it after this.
    unsafe { libc::close(fd) };
}

/// Closes every fd from `first` up.
pub fn close_from(first: RawFd) {
    // SAFETY: close_range on a range of integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if r != 0 {
        // Very old kernels: close them one by one.
        let max = nix::unistd::sysconf(nix::unistd::SysconfVar::OPEN_MAX)
            .ok()
            .flatten()
            .unwrap_or(1024) as RawFd;
        for fd in first..max {
            close(fd);
        }
    }
}

/// Marks every fd from `first` up close-on-exec. Async-signal-safe.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with the CLOEXEC flag only changes fd flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Points stdin, stdout and stderr at /dev/null.
pub fn null_stdio() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        dup2(null.as_raw_fd(), fd)?;
    }
    Ok(())
}

/// Blocks until at least one of `fds` is readable or hung up, and says
/// which. Retries on EINTR.
pub fn wait_readable<const N: usize>(fds: [BorrowedFd<'_>; N]) -> io::Result<[bool; N]> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut polled = fds.map(|fd| PollFd::new(fd, PollFlags::POLLIN));
    loop {
        match poll(&mut polled, PollTimeout::NONE) {
            Ok(_) => return Ok(polled.each_ref().map(|p| p.any().unwrap_or(false))),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an integer fd.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clears close-on-exec so that `fd` survives into an exec'd program.
/// Async-signal-safe: usable between fork and exec.
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer fd.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Is `fd` open?
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on an integer fd has no effect.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Gives a signal its default disposition, and unblocks it.
pub fn default_signal(sig: libc::c_int) {
    // SAFETY: installing SIG_DFL and changing our own mask.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// How many threads this process has (from /proc/self/task).
pub fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// The name of a signal, e.g. "SIGTERM", or its number.
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

/// Describes a raw wait status for messages.
pub fn describe_status(status: i32) -> String {
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

// ------------------------------------------------------------------ syslog

/// Script-side logging: syslog with the configured facility, or nothing.
pub mod log {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    static ENABLED: AtomicBool = AtomicBool::new(false);

    /// Maps a facility name ("user", "daemon", "local0".."local7", ...).
    pub fn facility(name: &str) -> Option<libc::c_int> {
        Some(match name {
            "auth" => libc::LOG_AUTH,
            "authpriv" => libc::LOG_AUTHPRIV,
            "cron" => libc::LOG_CRON,
            "daemon" => libc::LOG_DAEMON,
            "ftp" => libc::LOG_FTP,
            "lpr" => libc::LOG_LPR,
            "mail" => libc::LOG_MAIL,
            "news" => libc::LOG_NEWS,
            "syslog" => libc::LOG_SYSLOG,
            "user" => libc::LOG_USER,
            "uucp" => libc::LOG_UUCP,
            "local0" => libc::LOG_LOCAL0,
            "local1" => libc::LOG_LOCAL1,
            "local2" => libc::LOG_LOCAL2,
            "local3" => libc::LOG_LOCAL3,
            "local4" => libc::LOG_LOCAL4,
            "local5" => libc::LOG_LOCAL5,
            "local6" => libc::LOG_LOCAL6,
            "local7" => libc::LOG_LOCAL7,
            _ => return None,
        })
    }

    /// Opens syslog under `ident` (kept alive for the process's life).
    pub fn open(ident: &str, facility: libc::c_int) {
        let ident = CString::new(ident.replace('\0', "")).unwrap_or_default();
        // openlog keeps the pointer: leak it deliberately.
        let ident: &'static std::ffi::CStr = Box::leak(ident.into_boxed_c_str());
        // SAFETY: ident lives for the rest of the process.
        unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, facility) };
        ENABLED.store(true, Ordering::Relaxed);
    }

    /// Drops the syslog connection (reopened on the next message). Called
    /// before fds are shuffled so that syslog never writes to a reused fd.
    pub fn close() {
        if ENABLED.load(Ordering::Relaxed) {
            // SAFETY: closelog is always safe.
            unsafe { libc::closelog() };
        }
    }

    fn emit(priority: libc::c_int, msg: &str) {
        if !ENABLED.load(Ordering::Relaxed) {
            return;
        }
        let msg = CString::new(msg.replace('\0', "\\0")).unwrap_or_default();
        // SAFETY: format string and argument are valid C strings.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr()) };
    }

    pub fn error(msg: &str) {
        emit(libc::LOG_ERR, msg)
    }

    pub fn info(msg: &str) {
        emit(libc::LOG_INFO, msg)
    }
}

/// Sets close-on-exec, so that an fd stays out of programs an executor runs.
pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an integer fd.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

// --------------------------------------------------------------- signals

/// Dispositions taken away from a set of signals, to be given back.
pub struct SavedSignals(Vec<(libc::c_int, libc::sigaction)>);

/// Ignores `signals`, remembering what they were. A monitor does this so
/// that signals it forwards to its process group do not hurt it.
pub fn ignore_signals(signals: &[libc::c_int]) -> SavedSignals {
    let mut saved = Vec::with_capacity(signals.len());
    for &sig in signals {
        // SAFETY: sigaction with valid pointers; SIG_IGN needs no handler.
        unsafe {
            let mut ignore: libc::sigaction = std::mem::zeroed();
            ignore.sa_sigaction = libc::SIG_IGN;
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, &ignore, &mut old) == 0 {
                saved.push((sig, old));
            }
        }
    }
    SavedSignals(saved)
}

impl SavedSignals {
    /// Gives the signals back what they had (an executor does this).
    pub fn restore(&self) {
        for (sig, old) in &self.0 {
            // SAFETY: reinstating a disposition sigaction gave us.
            unsafe { libc::sigaction(*sig, old, std::ptr::null_mut()) };
        }
    }
}

/// This process's umask (set and put back: single-threaded callers).
pub fn current_umask() -> u32 {
    // SAFETY: umask always succeeds; we restore the value at once.
    unsafe {
        let mask = libc::umask(0o022);
        libc::umask(mask);
        mask as u32
    }
}

// ------------------------------------------------------------ huge pages

/// Size of a transparent huge page (x86-64, arm64 with 4 KB pages).
const HUGE_PAGE: usize = 2 << 20;

/// The 2 MB-aligned interiors of the private anonymous writable mappings
/// in `smaps` (the text of /proc/self/smaps) that are at least 3/4
/// resident: worth mapping by huge pages, and no great cost in memory.
pub fn huge_page_ranges(smaps: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            let perms = words.next().unwrap_or("");
            let inode = words.nth(2).unwrap_or("");
            let name = words.next().unwrap_or("");
            let anonymous = inode == "0" && (name.is_empty() || name == "[heap]");
            current = (perms.starts_with("rw") && perms.ends_with('p') && anonymous)
                .then_some((start, end));
        } else if first == "Rss:"
            && let Some((start, end)) = current.take()
            && let Some(rss_kb) = words.next().and_then(|w| w.parse::<usize>().ok())
        {
            let (from, to) = (
                start.next_multiple_of(HUGE_PAGE),
                end / HUGE_PAGE * HUGE_PAGE,
            );
            if to > from && rss_kb * 1024 * 4 >= (end - start) * 3 {
                ranges.push((from, to - from));
            }
        }
    }
    ranges
}

/// Asks the kernel to back this process's resident heap by transparent
/// huge pages now (MADV_COLLAPSE, Linux 6.1; elsewhere nothing happens).
/// A server does this once, when it alone maps its pages: each fork then
/// copies one page-table entry per 2 MB instead of 512, and each exit
/// tears down as few. Returns the bytes collapsed.
pub fn collapse_into_huge_pages() -> usize {
    const MADV_COLLAPSE: libc::c_int = 25;
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut collapsed = 0;
    for (start, len) in huge_page_ranges(&smaps) {
        // SAFETY: madvise on mappings of our own; MADV_COLLAPSE changes how
        // they are backed, never their contents.
        if unsafe { libc::madvise(start as *mut libc::c_void, len, MADV_COLLAPSE) } == 0 {
            collapsed += len;
        }
    }
    collapsed
}

/// Waits until the process behind `pidfd` has exited.
pub fn wait_for_exit(pidfd: OwnedFd) {
    let _ = wait_readable([pidfd.as_fd()]);
}

/// The uid and pid of the process at the other end of a Unix socket, as
/// the kernel recorded them at connect() or listen() (SO_PEERCRED).
pub fn peer_credentials(sock: RawFd) -> io::Result<(u32, i32)> {
    // SAFETY: getsockopt with a correctly sized ucred buffer.
    unsafe {
        let mut cred: libc::ucred = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        if libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok((cred.uid, cred.pid))
    }
}

#[cfg(test)]
mod tests {
    use super::huge_page_ranges;

    #[test]
    fn huge_page_ranges_are_resident_private_anonymous_interiors() {
        let smaps = "\
55d591000000-55d592100000 rw-p 00000000 00:00 0                          [heap]
Size:              17408 kB
Rss:               16000 kB
7f0000100000-7f0000900000 rw-p 00000000 00:00 0 
Size:               8192 kB
Rss:                 100 kB
7f1000000000-7f1000400000 r--p 00000000 08:01 1234                       /usr/lib/libperl.so
Size:               4096 kB
Rss:                4096 kB
7f2000000000-7f2000400000 rw-s 00000000 00:01 99                         /dev/zero (deleted)
Size:               4096 kB
Rss:                4096 kB
7f3000000000-7f3000300000 rw-p 00000000 00:00 0 
Size:               3072 kB
Rss:                3072 kB
7ffc00000000-7ffc00400000 rw-p 00000000 00:00 0                          [stack]
Size:               4096 kB
Rss:                4096 kB
";
        assert_eq!(
            huge_page_ranges(smaps),
            vec![
                // The heap's aligned interior; the sparse mapping, the
                // file, the shared one and the stack are left alone.
                (0x55d591000000, 0x1000000),
                (0x7f3000000000, 0x200000),
            ]
        );
    }
}
