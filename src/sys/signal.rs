//! Signal dispositions and names.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::protocol::{CallerSignals, MAX_SIGNAL};

/// Gives a signal its default disposition, and unblocks it. By number:
/// real-time signals too, which nix's `Signal` cannot name.
pub(crate) fn default_signal(signal: i32) {
    // SAFETY: sigaction installing SIG_DFL runs no code of ours;
    // pthread_sigmask on a signal set of our own.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(signal, &default, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// The signals this process ignores and blocks: what a process it
/// started would inherit. (A client reads its own before it blocks the
/// signals it forwards.)
pub(crate) fn own_signals() -> CallerSignals {
    let mut signals = CallerSignals::default();
    // SAFETY: pthread_sigmask only reads here, into a set of ours.
    let mask = unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
        mask
    };
    for sig in 1..=MAX_SIGNAL {
        if action_of(sig).is_some_and(|action| action.sa_sigaction == libc::SIG_IGN) {
            signals.ignored |= CallerSignals::bit(sig);
        }
        // SAFETY: reading a set of ours.
        if unsafe { libc::sigismember(&mask, sig) } == 1 {
            signals.blocked |= CallerSignals::bit(sig);
        }
    }
    signals
}

/// `sig`'s disposition; `None` for a number sigaction refuses (the C
/// library's own real-time signals, which are not ours). Async-signal-
/// safe.
fn action_of(sig: i32) -> Option<libc::sigaction> {
    // SAFETY: sigaction only reads here, into a zeroed structure of ours.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        (libc::sigaction(sig, std::ptr::null(), &mut action) == 0).then_some(action)
    }
}

/// Gives `sig` the handler `to` where its handler is `from` (SIG_DFL or
/// SIG_IGN: no code of ours), keeping its flags and mask; leaves any
/// other as it is. Async-signal-safe (sigaction only).
fn replace_handler(sig: i32, from: libc::sighandler_t, to: libc::sighandler_t) {
    if let Some(mut action) = action_of(sig).filter(|action| action.sa_sigaction == from) {
        action.sa_sigaction = to;
        // SAFETY: installing SIG_DFL or SIG_IGN runs no code of ours.
        unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) };
    }
}

/// Gives every ignored signal its default disposition: what a process
/// that should inherit none of its starter's ignored signals (a server)
/// does before exec. Async-signal-safe (sigaction only).
pub(crate) fn default_ignored_signals() {
    for sig in 1..=MAX_SIGNAL {
        replace_handler(sig, libc::SIG_IGN, libc::SIG_DFL);
    }
}

/// Takes on a caller's signals (an executor does this, last before the
/// script's per-call code), as a direct run would have inherited them
/// with initialisation's own changes laid over: a signal initialisation
/// left at its default is ignored if the caller ignores it (one it
/// handles or ignores keeps that); the caller's blocked signals join the
/// mask. What cannot be set (SIGKILL, SIGSTOP, the C library's own
/// signals) is left as it is.
pub(crate) fn take_caller_signals(caller: &CallerSignals) {
    for sig in CallerSignals::numbers(caller.ignored) {
        replace_handler(sig, libc::SIG_DFL, libc::SIG_IGN);
    }
    // SAFETY: the mask is a set of our own.
    unsafe {
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut mask);
        for sig in CallerSignals::numbers(caller.blocked) {
            libc::sigaddset(&mut mask, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
    }
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

/// Ends this process by `signal` (any number, real-time ones too), as the
/// death of a process by it shows to a shell: its message ("Quit",
/// "Segmentation fault"), status 128+N. We write no core of our own:
/// not dumpable, whatever RLIMIT_CORE (which a `core_pattern` pipe to
/// systemd-coredump ignores). Returns only if the signal does not end a
/// process by default (then the caller reports the status otherwise).
pub(crate) fn die_of(signal: i32) {
    // SAFETY: prctl with integer arguments. (Failing leaves us dumpable,
    // as a failed raise leaves us alive: the caller handles that.)
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    default_signal(signal);
    // SAFETY: raise(3) on ourselves.
    unsafe { libc::raise(signal) };
}
