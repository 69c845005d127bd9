//! The client's one error type, and how a wait status becomes our exit.

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

/// Dies of the signal that killed the script, so that the caller sees
/// what a direct run would have shown (the shell's message, 128+N):
/// every signal, a core-dumping one too (without a core of our own: the
/// script's, if its limits allowed one, is written by the script).
pub(crate) fn die_of_same_signal(status: WaitStatus) {
    if let Some(signal) = status.signal() {
        crate::sys::die_of(signal);
    }
}
