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

static PROGRAM: OnceLock<Vec<u8>> = OnceLock::new();

/// Remembers the program's name and where the titles go; in the setup
/// run, before its first fork.
pub(crate) fn prepare() {
    PROGRAM.get_or_init(|| {
        std::env::args_os()
            .next()
            .map(|a| a.as_bytes().to_vec())
            .unwrap_or_default()
    });
    sys::title::prepare();
}

/// Shows `PROGRAM [role]`, or just `PROGRAM` for an executor's call;
/// where that does not fit, the program's file name without its
/// directory (the role says more than the directory does).
pub(crate) fn show(role: Option<&str>) {
    let Some(program) = PROGRAM.get() else {
        return;
    };
    let suffix = role.map_or(Vec::new(), |role| [b" [", role.as_bytes(), b"]"].concat());
    let mut title = [program.as_slice(), &suffix].concat();
    if !sys::title::fits(&title) {
        let base = program.rsplit(|&b| b == b'/').next().unwrap_or(program);
        title = [base, &suffix].concat();
    }
    sys::title::set(&title);
}
