//! The client's one error type, and how a wait status becomes our exit.

use nix::sys::signal::{Signal, raise};

use crate::protocol::WaitStatus;

/// Our own failures exit with this (as chiark-utils' client does).
pub(crate) const EXIT_FAILURE: i32 = 127;

/// A reason to stop, with the exit status that goes with it. Printed
/// once, by `client::main`.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) exit_code: i32,
}

impl Failure {
    /// A failure of prefork-interp itself: exit status 127.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            exit_code: EXIT_FAILURE,
        }
    }
}

/// Signals we die of ourselves when the script died of them, so that the
/// caller sees what a direct run would have shown: those whose default
/// action is to end the process without a core dump. (The original
/// re-raises the first five; with signal forwarding a script may die of
/// any forwarded signal.) Others, and core dumps: a message and 127.
const RERAISED: [Signal; 8] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGPIPE,
    Signal::SIGKILL,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
];

/// Turns the script's wait status into our exit status, or dies of its
/// signal; other deaths are a failure naming it.
pub(crate) fn report_status(status: WaitStatus) -> Result<i32, Failure> {
    if let Some(code) = status.exit_code() {
        return Ok(code);
    }
    die_of_same_signal(status);
    Err(Failure::new(format!(
        "script {}",
        crate::sys::describe_status(status)
    )))
}

/// Dies of the signal that killed the script, if it is one in
/// [`RERAISED`]; returns otherwise.
pub(crate) fn die_of_same_signal(status: WaitStatus) {
    if let Some(sig) = status.signal()
        && !status.core_dumped()
        && let Ok(sig) = Signal::try_from(sig)
        && RERAISED.contains(&sig)
    {
        crate::sys::default_signal(sig);
        let _ = raise(sig);
    }
}
