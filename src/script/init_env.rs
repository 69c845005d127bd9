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

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::OnceLock;

use crate::protocol;
use crate::sys::procfs;

/// One change: a variable and its new value, or `None` for removed.
type Change = (OsString, Option<OsString>);

/// The delta, recorded once in the setup run and inherited by every fork.
static DELTA: OnceLock<Vec<Change>> = OnceLock::new();

/// Records what initialisation changed: the exec-time environment against
/// the current one. Called in the setup run, before the server forks.
pub(crate) fn record() -> io::Result<()> {
    let initial = procfs::initial_environ().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("prefork-interp: cannot read /proc/self/environ: {e}"),
        )
    })?;
    let current: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let _ = DELTA.set(delta(&initial, &current));
    Ok(())
}

/// The changes from `initial` (/proc/self/environ's text) to `current`:
/// set or changed variables in `current`'s order, then removed ones in
/// `initial`'s. `PREFORK_INTERP` is never part of it.
fn delta(initial: &[u8], current: &[(OsString, OsString)]) -> Vec<Change> {
    let mut before: HashMap<&[u8], &[u8]> = HashMap::new();
    let mut order = Vec::new();
    for entry in initial.split(|&b| b == 0) {
        if let Some((name, value)) = protocol::split_env_entry(entry) {
            // The first of two entries with one name is what getenv sees.
            if !before.contains_key(name) {
                before.insert(name, value);
                order.push(name);
            }
        }
    }
    let ours = protocol::ENV_VAR.as_bytes();
    let mut changes: Vec<Change> = current
        .iter()
        .filter(|(name, value)| {
            name.as_bytes() != ours && before.get(name.as_bytes()) != Some(&value.as_bytes())
        })
        .map(|(name, value)| (name.clone(), Some(value.clone())))
        .collect();
    let now: HashSet<&[u8]> = current.iter().map(|(n, _)| n.as_bytes()).collect();
    changes.extend(
        order
            .into_iter()
            .filter(|name| *name != ours && !now.contains(name))
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
            delta(initial, &current),
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
        assert_eq!(delta(b"", &current), vec![]);
    }

    #[test]
    fn first_of_duplicate_entries_counts() {
        let current = pairs(&[("A", "1")]);
        assert_eq!(delta(b"A=1\0A=2\0", &current), vec![]);
    }
}
