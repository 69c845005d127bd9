//! What `ps` shows for each of the script's processes: `PROGRAM [server]`,
//! `PROGRAM [monitor]`, `PROGRAM [handler]` (a spare executor waiting for
//! a call), and an executor with its call: `PROGRAM`. Never the first
//! call's arguments, which the setup run was exec'd with and every fork of
//! it would otherwise show for the server's life.
//!
//! PROGRAM is the program's argv[0] at exec: a Rust program cannot tell a
//! script path after it from its arguments.

use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use crate::sys;

/// Which process this is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    Server,
    Monitor,
    /// A spare executor, waiting for its call.
    Handler,
    /// An executor with its call.
    Call,
}

/// Each role's title, made once in the setup run: an executor sets one
/// on every call's path.
static TITLES: OnceLock<[Vec<u8>; 4]> = OnceLock::new();

/// Finds where the titles go and makes them; in the setup run, before its
/// first fork. Where `PROGRAM [role]` does not fit, the program's file
/// name without its directory (the role says more than the directory
/// does).
pub(crate) fn prepare() {
    sys::title::prepare();
    TITLES.get_or_init(|| {
        let program = std::env::args_os()
            .next()
            .map(|a| a.as_bytes().to_vec())
            .unwrap_or_default();
        let base = program.rsplit(|&b| b == b'/').next().unwrap_or(&program);
        ["server", "monitor", "handler", ""].map(|role| {
            let suffix = if role.is_empty() {
                Vec::new()
            } else {
                [b" [", role.as_bytes(), b"]"].concat()
            };
            let title = [program.as_slice(), &suffix].concat();
            if sys::title::fits(&title) {
                title
            } else {
                [base, &suffix].concat()
            }
        })
    });
}

/// Shows this process's title (nothing before [`prepare`]).
pub(crate) fn show(role: Role) {
    if let Some(titles) = TITLES.get() {
        sys::title::set(&titles[role as usize]);
    }
}
