//! Signal dispositions and names.

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

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
