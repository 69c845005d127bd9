//! Resource limits, the nice value, oom_score_adj and the umask: what a
//! caller has that a direct run would inherit.

use nix::errno::Errno;

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
            let (soft, hard) = get_rlimit(resource)?;
            Some((resource, soft, hard))
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

/// The resources whose soft limit the client raises to its hard one for
/// its own work (sockets, pipes, the watcher's processes): a caller whose
/// soft limit leaves a direct run just enough must not be refused for
/// ours. The setup run, and so the script, gets the caller's back.
const CLIENT_RAISED: [u8; 2] = [libc::RLIMIT_NOFILE as u8, libc::RLIMIT_NPROC as u8];

/// The caller's (resource, soft, hard) of the limits
/// [`raise_soft_limits`] raised.
static RAISED: std::sync::OnceLock<Vec<(u8, u64, u64)>> = std::sync::OnceLock::new();

/// Raises the [`CLIENT_RAISED`] soft limits to their hard ones, having
/// read the caller's first ([`own_limits`], which the script gets).
pub(crate) fn raise_soft_limits() {
    let caller = RAISED.get_or_init(|| {
        own_limits()
            .rlimits
            .iter()
            .copied()
            .filter(|(resource, soft, hard)| CLIENT_RAISED.contains(resource) && soft < hard)
            .collect()
    });
    for &(resource, _, hard) in caller {
        set_rlimit(resource, hard, hard);
    }
}

/// Raises the [`CLIENT_RAISED`] soft limits to their hard ones for a
/// server of ours (its monitor and spares are its own work, not its
/// callers'), leaving [`own_limits`] unread: the monitor reads them after
/// this, so that each executor sees the raised ones as its own and takes
/// its caller's back.
pub(crate) fn raise_soft_limits_for_server() {
    for resource in CLIENT_RAISED {
        if let Some((soft, hard)) = get_rlimit(resource)
            && soft < hard
        {
            set_rlimit(resource, hard, hard);
        }
    }
}

/// Gives back the soft limits [`raise_soft_limits`] raised. Async-signal-
/// safe (setrlimit only, on what was read before): for a child, before
/// exec.
pub(crate) fn restore_soft_limits() {
    for &(resource, soft, hard) in RAISED.get().map_or(&[][..], Vec::as_slice) {
        set_rlimit(resource, soft, hard);
    }
}

/// The caller's soft limit of `resource`, if [`raise_soft_limits`]
/// raised ours above it.
pub(crate) fn caller_soft_limit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    RAISED
        .get()?
        .iter()
        .find(|(r, _, _)| libc::__rlimit_resource_t::from(*r) == resource)
        .map(|&(_, soft, _)| soft)
}

/// Our (soft, hard) limit of `resource` (getrlimit), if it can be read.
fn get_rlimit(resource: u8) -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    let r = unsafe { libc::getrlimit(resource as libc::__rlimit_resource_t, &mut limit) };
    (r == 0).then_some((limit.rlim_cur, limit.rlim_max))
}

/// Sets our limit of `resource` (setrlimit); whether the kernel took it.
/// Async-signal-safe.
fn set_rlimit(resource: u8, soft: u64, hard: u64) -> bool {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads one rlimit through a valid pointer.
    unsafe { libc::setrlimit(resource as libc::__rlimit_resource_t, &limit) == 0 }
}

/// What a failure for want of `e` says of the limit behind it: which
/// one, and its value, where the error is the kind a limit gives (EMFILE:
/// open files; EAGAIN from fork: processes). Empty otherwise.
pub(crate) fn limit_behind(e: &std::io::Error) -> String {
    let (resource, what, option) = match e.raw_os_error() {
        Some(libc::EMFILE) => (libc::RLIMIT_NOFILE, "open files", "-n"),
        Some(libc::EAGAIN) => (libc::RLIMIT_NPROC, "processes", "-u"),
        _ => return String::new(),
    };
    let Some((_, hard)) = get_rlimit(resource as u8) else {
        return String::new();
    };
    format!(
        " (the limit of {what}: ulimit -H{} is {hard})",
        &option[1..]
    )
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
        if !set_rlimit(resource, soft, hard) {
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

/// This process's umask (set and put back: single-threaded callers).
pub(crate) fn current_umask() -> u32 {
    use nix::sys::stat::{Mode, umask};
    let mask = umask(Mode::from_bits_truncate(0o022));
    umask(mask);
    mask.bits()
}
