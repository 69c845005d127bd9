//! What the script's initialisation did to its environment, kept for
//! every call.
//!
//! A program's start-up may put things in its own environment (a library
//! setting a search path when it loads); run directly, every run has
//! them. Under prefork-interp that happens once, in the setup run, so
//! each executor lays the same changes over the caller's environment:
//!
//! ```text
//! setup run   exec-time environment (/proc/self/environ)
//!             vs. the environment at initialisation_complete
//!             = the delta: variables set or changed (their values),
//!               variables removed (PREFORK_INTERP, ours, left out)
//! executor    the caller's environment, then the delta on top
//! ```
//!
//! It also keeps what initialisation *read* through [`env_var_os`] and
//! [`env_var`]: a server whose start-up depends on `LANG` or `CONFIG_PATH`
//! is right only for callers with the same values, so its greeting names
//! them (with a digest of their values at exec), and a caller with other
//! values goes to a server of its own (`man prefork-interp`, "The
//! environment initialisation read"). std::env cannot be hooked, so a
//! Rust program says which reads matter by making them through these.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Mutex, OnceLock};

use crate::protocol;
use crate::sys::procfs;

/// One change: a variable and its new value, or `None` for removed.
type Change = (OsString, Option<OsString>);

/// The delta, recorded once in the setup run and inherited by every fork.
static DELTA: OnceLock<Vec<Change>> = OnceLock::new();

/// Names read through [`env_var_os`] before initialisation completed.
static READ: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// What initialisation read, fixed when it completes (and reads stop
/// being recorded).
static DEPENDENCY: OnceLock<Option<protocol::EnvDependency>> = OnceLock::new();

/// `std::env::var_os`, and, until [`initialisation_complete`], a note
/// that the program's start-up depends on this variable: a caller whose
/// value differs from the first caller's then gets a server of its own,
/// initialised with its value, instead of sharing this one. Read through
/// here what start-up uses to set itself up (a configuration path, a
/// locale); a value used only per call needs no such care.
///
/// [`initialisation_complete`]: crate::initialisation_complete
pub fn env_var_os(name: impl AsRef<OsStr>) -> Option<OsString> {
    let name = name.as_ref();
    if DEPENDENCY.get().is_none() {
        READ.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.as_bytes().to_vec());
    }
    std::env::var_os(name)
}

/// `std::env::var`, noted as [`env_var_os`] notes it.
pub fn env_var(name: impl AsRef<OsStr>) -> Result<String, std::env::VarError> {
    match env_var_os(name) {
        Some(value) => value.into_string().map_err(std::env::VarError::NotUnicode),
        None => Err(std::env::VarError::NotPresent),
    }
}

/// What initialisation read, for the greeting: set by [`record`].
pub(crate) fn dependency() -> Option<&'static protocol::EnvDependency> {
    DEPENDENCY.get().and_then(Option::as_ref)
}

/// Records what initialisation changed (the exec-time environment against
/// the current one) and what it read. Called in the setup run, before the
/// server forks.
pub(crate) fn record() -> io::Result<()> {
    let initial = procfs::initial_environ().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("prefork-interp: cannot read /proc/self/environ: {e}"),
        )
    })?;
    let at_exec = ExecEnviron::parse(&initial);
    let current: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let _ = DELTA.set(delta(&at_exec, &current));
    let read = std::mem::take(&mut *READ.lock().unwrap_or_else(|e| e.into_inner()));
    let _ = DEPENDENCY.set(protocol::env_dependency(
        read.iter().map(Vec::as_slice),
        |name| at_exec.values.get(name).map(|v| v.to_vec()),
    ));
    Ok(())
}

/// The environment at exec (/proc/self/environ's text): each name's
/// value, and the names in their order. The first of two entries with one
/// name is what getenv sees.
struct ExecEnviron<'a> {
    values: HashMap<&'a [u8], &'a [u8]>,
    order: Vec<&'a [u8]>,
}

impl<'a> ExecEnviron<'a> {
    fn parse(initial: &'a [u8]) -> Self {
        let mut values = HashMap::new();
        let mut order = Vec::new();
        for entry in initial.split(|&b| b == 0) {
            if let Some((name, value)) = protocol::split_env_entry(entry)
                && !values.contains_key(name)
            {
                values.insert(name, value);
                order.push(name);
            }
        }
        ExecEnviron { values, order }
    }
}

/// The changes from `before` (the exec-time environment) to `current`:
/// set or changed variables in `current`'s order, then removed ones in
/// `before`'s. `PREFORK_INTERP` is never part of it.
fn delta(before: &ExecEnviron<'_>, current: &[(OsString, OsString)]) -> Vec<Change> {
    let ours = protocol::ENV_VAR.as_bytes();
    let mut changes: Vec<Change> = current
        .iter()
        .filter(|(name, value)| {
            name.as_bytes() != ours && before.values.get(name.as_bytes()) != Some(&value.as_bytes())
        })
        .map(|(name, value)| (name.clone(), Some(value.clone())))
        .collect();
    let now: HashSet<&[u8]> = current.iter().map(|(n, _)| n.as_bytes()).collect();
    changes.extend(
        before
            .order
            .iter()
            .filter(|name| **name != ours && !now.contains(*name))
            .map(|name| (OsStr::from_bytes(name).to_owned(), None)),
    );
    changes
}

/// Lays the recorded delta over the process environment and over `env`
/// (the caller's, in order: a changed variable keeps its place, a new one
/// goes at the end, a removed one goes).
pub(crate) fn apply(env: &mut Vec<(OsString, OsString)>) {
    for (name, value) in DELTA.get().map(Vec::as_slice).unwrap_or_default() {
        let place = env.iter().position(|(n, _)| n == name);
        match (value, place) {
            (Some(value), Some(i)) => env[i].1 = value.clone(),
            (Some(value), None) => env.push((name.clone(), value.clone())),
            (None, Some(i)) => {
                env.remove(i);
            }
            (None, None) => {}
        }
        // SAFETY: executors are single-threaded (checked at
        // initialisation).
        unsafe {
            match value {
                Some(value) => std::env::set_var(name, value),
                None => std::env::remove_var(name),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter().map(|(n, v)| (n.into(), v.into())).collect()
    }

    #[test]
    fn set_changed_and_removed_variables() {
        let initial = b"KEPT=1\0CHANGED=old\0GONE=x\0PREFORK_INTERP=v1,...\0NOEQUALS\0";
        let current = pairs(&[("KEPT", "1"), ("CHANGED", "new"), ("ADDED", "")]);
        assert_eq!(
            delta(&ExecEnviron::parse(initial), &current),
            vec![
                ("CHANGED".into(), Some("new".into())),
                ("ADDED".into(), Some("".into())),
                ("GONE".into(), None),
            ]
        );
    }

    #[test]
    fn prefork_interp_is_never_part_of_it() {
        let current = pairs(&[("PREFORK_INTERP", "set again")]);
        assert_eq!(delta(&ExecEnviron::parse(b""), &current), vec![]);
    }

    #[test]
    fn first_of_duplicate_entries_counts() {
        let current = pairs(&[("A", "1")]);
        assert_eq!(delta(&ExecEnviron::parse(b"A=1\0A=2\0"), &current), vec![]);
    }
}
