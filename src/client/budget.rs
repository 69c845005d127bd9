//! The user's budget of servers: how many may live at once, which goes
//! when a new one would pass that, and how long a folded identity's
//! server may idle.
//!
//! A server of ours costs three processes (server, monitor, a spare
//! executor), one inotify instance and its memory (7-15 MB of PSS for
//! the Perl and Python sides); a user has 128 inotify instances by
//! default, shared with every other program. Folding (a value of a
//! variable the initialisation read, a world, terminals) makes many
//! identities of one script, so the budget is per user, not per script:
//!
//! ```text
//! PREFORK_INTERP_SERVER_LIMIT  live servers in the run directory (32)
//! PREFORK_INTERP_FOLDED_IDLE   seconds a folded identity's server may
//!                              idle (3600; a base identity's: its own)
//! ```
//!
//! Before creating a server with the limit reached, the client evicts the
//! least recently used: idle ones first, the longest idle first (their
//! greetings say), under each one's identity lock. Eviction appends
//! `quit SECS evicted: ...` to the identity's lock file, for `--list` to
//! show as the reason of its next start, then removes the socket: the
//! server quits, its calls in flight finish (monitors are separate
//! processes), and its next caller starts a fresh one.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::connect;
use super::exit::Failure;
use super::rundir::{self, IdentityLock};
use crate::protocol;
use crate::sys::procfs;

/// The variable that sets the limit of live servers.
pub(crate) const SERVER_LIMIT_VAR: &str = "PREFORK_INTERP_SERVER_LIMIT";
/// The variable that sets a folded identity's idle timeout (seconds).
pub(crate) const FOLDED_IDLE_VAR: &str = "PREFORK_INTERP_FOLDED_IDLE";

const DEFAULT_SERVER_LIMIT: usize = 32;
const DEFAULT_FOLDED_IDLE: u64 = 3600;

/// How long an eviction waits for the live servers' greetings, all at
/// once: one that has not greeted by then is at its call limit (or too
/// slow to matter), so not a candidate.
const PROBE_PATIENCE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    pub(crate) server_limit: usize,
    pub(crate) folded_idle_secs: u64,
}

impl Budget {
    /// The budget the caller's environment sets (defaults where unset).
    pub(crate) fn from_env() -> Result<Budget, Failure> {
        Budget::from_values(
            std::env::var_os(SERVER_LIMIT_VAR).as_deref(),
            std::env::var_os(FOLDED_IDLE_VAR).as_deref(),
        )
    }

    fn from_values(limit: Option<&OsStr>, idle: Option<&OsStr>) -> Result<Budget, Failure> {
        let number = |name: &str, value: Option<&OsStr>, default: u64| match value {
            None => Ok(default),
            Some(v) => std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|&n| n >= 1)
                .ok_or_else(|| {
                    Failure::new(format!(
                        "{name} must be a whole number from 1 up, not {:?}",
                        v.to_string_lossy()
                    ))
                }),
        };
        Ok(Budget {
            server_limit: number(SERVER_LIMIT_VAR, limit, DEFAULT_SERVER_LIMIT as u64)?
                .try_into()
                .unwrap_or(usize::MAX),
            folded_idle_secs: number(FOLDED_IDLE_VAR, idle, DEFAULT_FOLDED_IDLE)?,
        })
    }
}

/// A live server that might be evicted, and how recently it was used.
struct Candidate {
    socket: PathBuf,
    /// (calls running, so not idle; how long idle, ms): the smallest
    /// goes last.
    key: (bool, std::cmp::Reverse<u64>),
}

/// Before a server is created at `ours`: if `base` holds `limit` live
/// servers or more, evicts the least recently used until the new one fits.
/// Best effort: a server that cannot be evicted (its lock is held) is
/// passed over.
pub(crate) fn make_room(base: &Path, ours: &Path, limit: usize) -> std::io::Result<()> {
    let mut sockets = Vec::new();
    for entry in fs::read_dir(base)? {
        let entry = entry?;
        let name = entry.file_name();
        let path = base.join(&name);
        if name.as_bytes().first() != Some(&b's') || path == ours {
            continue;
        }
        if let Ok(m) = entry.metadata()
            && m.file_type().is_socket()
        {
            sockets.push((path, m));
        }
    }
    // Under the limit even if all were live: no look at /proc.
    if sockets.len() < limit {
        return Ok(());
    }
    // Live: listened on, in any network namespace of ours (a server
    // started in another one is as live as ours).
    let listening = procfs::listening_sockets_of_ours();
    let live: Vec<_> = sockets
        .into_iter()
        .filter(|(path, _)| listening.contains_key(path))
        .collect();
    if live.len() < limit {
        return Ok(());
    }
    let excess = live.len() + 1 - limit;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let paths: Vec<&Path> = live.iter().map(|(path, _)| path.as_path()).collect();
    let greetings = connect::greet_all(&paths, PROBE_PATIENCE);
    let mut candidates: Vec<Candidate> = live
        .iter()
        .zip(greetings)
        .filter_map(|((socket, meta), greeting)| {
            // At its call limit (busy), or gone meanwhile: not a candidate.
            let server = greeting?;
            let key = match (server.running, server.idle_ms) {
                (Some(running), Some(idle)) => (running > 0, std::cmp::Reverse(idle)),
                // Not ours: idle, as far as its socket's atime says.
                _ => {
                    let idle = now.saturating_sub(meta.atime().max(0) as u64);
                    (false, std::cmp::Reverse(idle.saturating_mul(1000)))
                }
            };
            Some(Candidate {
                socket: socket.clone(),
                key,
            })
        })
        .collect();
    candidates.sort_by_key(|c| c.key);
    let total = candidates.len();
    let mut evicted = 0;
    for candidate in candidates {
        if evicted == excess {
            break;
        }
        if evict(&candidate.socket, limit, total, now)? {
            evicted += 1;
        }
    }
    Ok(())
}

/// Evicts the server at `socket` under its identity's lock; false if the
/// lock is held (the identity is being created or killed right now).
fn evict(socket: &Path, limit: usize, live: usize, now: u64) -> std::io::Result<bool> {
    let Some(lock_path) = protocol::lock_path_for_socket(socket) else {
        return Ok(false);
    };
    let Some(lock) = IdentityLock::try_acquire(&lock_path)? else {
        return Ok(false);
    };
    let why = format!(
        "evicted: least recently used of {live} live servers, the limit being {limit} \
         ({SERVER_LIMIT_VAR})"
    );
    // First the word, then the removal: the server, seeing its socket
    // gone, leaves a quit line dated since its start as it is.
    let _ = lock.append(&protocol::encode_quit_line(now, &why));
    rundir::remove_if_exists(socket)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_defaults_and_bad_values() {
        let ok = Budget::from_values(None, None).unwrap();
        assert_eq!(ok.server_limit, 32);
        assert_eq!(ok.folded_idle_secs, 3600);
        let set = Budget::from_values(Some(OsStr::new("5")), Some(OsStr::new("60"))).unwrap();
        assert_eq!((set.server_limit, set.folded_idle_secs), (5, 60));
        for bad in ["0", "-1", "x", "", "1.5"] {
            let e = Budget::from_values(Some(OsStr::new(bad)), None).unwrap_err();
            assert!(e.message.starts_with(SERVER_LIMIT_VAR), "{}", e.message);
            assert!(Budget::from_values(None, Some(OsStr::new(bad))).is_err());
        }
    }
}
