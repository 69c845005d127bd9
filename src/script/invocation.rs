//! What one call of the script gets: [`Invocation`].

use std::ffi::OsString;

/// What one call of the script gets: the caller's arguments and
/// environment. File descriptors 0, 1 and 2 are already the caller's, and
/// the process environment is already replaced by `env`: the caller's
/// environment with what the program's start-up (before
/// [`initialisation_complete`](crate::initialisation_complete)) did to its
/// own laid over it (variables it set or changed have its values, those it
/// removed are absent), as in a direct run.
///
/// `std::env::args()` cannot be changed after start-up: in an executor it
/// still shows the arguments of the run that started the server. Use
/// [`Invocation::args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The caller's arguments: under prefork-interp, those after the
    /// script; run standalone, those after the program name.
    pub args: Vec<OsString>,
    /// The caller's environment, in order, with initialisation's changes:
    /// a changed variable keeps its place, a new one comes last.
    pub env: Vec<(OsString, OsString)>,
    /// `true` in an executor forked by a server, `false` standalone.
    pub served: bool,
}

impl Invocation {
    /// A run without prefork-interp: this process's own arguments and
    /// environment.
    pub(crate) fn standalone() -> Self {
        Invocation {
            args: std::env::args_os().skip(1).collect(),
            env: std::env::vars_os().collect(),
            served: false,
        }
    }
}
