//! The process title: what /proc/PID/cmdline shows (`ps`, `pgrep -f`,
//! `top -c`).
//!
//! Linux has no system call for it that an unprivileged process may make
//! (PR_SET_MM_ARG_START needs CAP_SYS_RESOURCE). The kernel shows the
//! bytes between the process's `arg_start` and `arg_end`: the argument
//! strings it copied to the top of the stack at exec. A process may write
//! over them, as Perl's `$0 = ...` and setproctitle(3) do; the title must
//! then fit in the first exec's arguments, and is cut to fit.
//!
//! A server forked from the first call's setup run would otherwise show,
//! for its whole life, that call's arguments (a secret passed as an
//! argument, to every local user).

use std::sync::OnceLock;

use super::procfs;

/// The argument strings' place in memory, read once from /proc/self/stat
/// (inherited by forks, whose stacks are copies at the same addresses).
#[derive(Debug, Clone, Copy)]
struct ArgvArea {
    start: usize,
    len: usize,
}

static AREA: OnceLock<Option<ArgvArea>> = OnceLock::new();

/// Finds the argument strings; call before the first fork whose child sets
/// a title. Best effort: without /proc, titles stay as they are.
pub(crate) fn prepare() {
    AREA.get_or_init(|| {
        let (start, end) = procfs::own_argv_area()?;
        (end > start).then(|| ArgvArea {
            start,
            len: end - start,
        })
    });
}

/// Whether `title` fits whole (with its NUL) where [`set`] puts it.
pub(crate) fn fits(title: &[u8]) -> bool {
    matches!(AREA.get(), Some(Some(area)) if title.len() < area.len)
}

/// Shows `title` as this process's command line, cut to the room the
/// first exec's arguments left (keeping a NUL at the end); the rest of
/// that room becomes NULs, so nothing of the old arguments remains. Does
/// nothing before [`prepare`] or without room.
pub(crate) fn set(title: &[u8]) {
    let Some(Some(area)) = AREA.get().copied() else {
        return;
    };
    let shown = title.len().min(area.len - 1);
    // SAFETY: [start, start + len) is this process's own argument strings
    // (the kernel's arg_start..arg_end, on our stack, writable), which no
    // Rust reference points into: std keeps only raw pointers to them and
    // copies on every std::env::args() (which, after this, yields the
    // title). The processes that call this are single-threaded.
    unsafe {
        let base = area.start as *mut u8;
        std::ptr::copy_nonoverlapping(title.as_ptr(), base, shown);
        std::ptr::write_bytes(base.add(shown), 0, area.len - shown);
    }
}

/// Forgets the environment exec gave this process, where /proc/PID/environ
/// shows it (any process of the same user may read it): a long-lived
/// process forked from a call's process must not keep that caller's
/// variables, a token or a password, for its whole life. The variables
/// stay ours, copied first (libc's `environ` then points to copies, not
/// into the area); the area becomes NULs. Single-threaded processes only.
/// Best effort: without /proc, nothing changes.
pub(crate) fn forget_initial_environ() {
    let Some((start, end)) = procfs::own_environ_area() else {
        return;
    };
    if end <= start {
        return;
    }
    let vars: Vec<_> = std::env::vars_os().collect();
    // SAFETY: single-threaded (the caller's promise), so nothing reads
    // the environment meanwhile; clearenv and setenv leave libc's environ
    // pointing at copies of its own.
    unsafe {
        if nix::env::clearenv().is_err() {
            return;
        }
        for (name, value) in vars {
            std::env::set_var(name, value);
        }
        // [start, end) is the environment strings exec copied to our
        // stack, which nothing points into any more.
        std::ptr::write_bytes(start as *mut u8, 0, end - start);
    }
}
