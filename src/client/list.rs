//! `prefork-interp --list`: this user's servers, one line each.
//!
//! ```text
//! IDENT  PID  STARTED  SERVED  RUNNING  PROTOCOL  ENV  COMMAND
//! ```
//!
//! What every server shows, v1 ones included: the identity (the socket's
//! name; `--kill -g IDENT` takes it), the start (the socket's mtime), the
//! server's pid (the process holding the listening socket, found through
//! /proc/net/unix and /proc/PID/fd: SO_PEERCRED would name the client that
//! called listen(), long gone) and its command line (a server of ours
//! shows its title there: the script, not the first call's arguments).
//! Servers of this project add, in their greeting, how many connections
//! they had accepted and how many calls were running, and the environment
//! variables their initialisation read (ENV; `-` for none). A server at its call limit answers no
//! greeting for now ("busy"); a socket nobody listens on is "stale".
//!
//! Looking costs each live server one monitor that finds no request and
//! quits.

use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::exit::Failure;
use crate::protocol;
use crate::sys::procfs;

/// How long a live server may take to greet us before it counts as busy.
const GREETING_WAIT: Duration = Duration::from_millis(500);

enum State {
    Stale,
    Busy,
    /// Greeted; our servers' xdata says more.
    Live {
        xdata: Vec<u8>,
    },
}

/// Prints the table for the run directory `base`.
pub(crate) fn print(base: &Path) -> Result<(), Failure> {
    let fail = |e: io::Error| Failure::new(format!("cannot list {}: {e}", base.display()));
    let mut sockets: Vec<(String, PathBuf, i64)> = std::fs::read_dir(base)
        .map_err(fail)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let ident = name.strip_prefix('s')?.to_string();
            let meta = e.metadata().ok()?;
            meta.file_type()
                .is_socket()
                .then(|| (ident, e.path(), meta.mtime()))
        })
        .collect();
    sockets.sort();
    let listening = procfs::listening_sockets();
    let mut out = io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<64}  {:>7}  {:<20}  {:>6}  {:>7}  {:<33}  {:<12}  COMMAND",
        "IDENT", "PID", "STARTED", "SERVED", "RUNNING", "PROTOCOL", "ENV"
    );
    for (ident, path, mtime) in sockets {
        let pid = listening
            .get(&path)
            .and_then(|&inode| procfs::socket_holder(inode));
        let command = pid.map(procfs::command_line).unwrap_or_default();
        let (served, running, protocol, env) = match probe(&path) {
            State::Stale => ("-".into(), "-".into(), "stale".to_string(), "-".into()),
            State::Busy => ("?".into(), "?".into(), "busy".into(), "?".into()),
            State::Live { xdata } => {
                let number = |name| {
                    protocol::decode_xdata_number(&xdata, name)
                        .map_or_else(|| "?".to_string(), |n| n.to_string())
                };
                let caps = protocol::decode_caps(&xdata);
                let protocol = if caps.is_empty() {
                    "v1".to_string()
                } else {
                    caps.join(",")
                };
                // What its initialisation read: callers with other values
                // of these have servers of their own.
                let env = protocol::decode_env_dependency(&xdata).map_or_else(
                    || "-".to_string(),
                    |env| {
                        let names: Vec<_> = env
                            .names
                            .iter()
                            .map(|n| String::from_utf8_lossy(n))
                            .collect();
                        names.join(",")
                    },
                );
                (number("served"), number("running"), protocol, env)
            }
        };
        let pid = pid.map_or_else(|| "-".to_string(), |p| p.to_string());
        let _ = writeln!(
            out,
            "{ident:<64}  {pid:>7}  {:<20}  {served:>6}  {running:>7}  {protocol:<33}  {env:<12}  {command}",
            utc(mtime)
        );
    }
    out.flush().map_err(fail)
}

/// Connects and reads the greeting, then hangs up.
fn probe(path: &Path) -> State {
    let Ok(conn) = UnixStream::connect(path) else {
        return State::Stale;
    };
    let _ = conn.set_read_timeout(Some(GREETING_WAIT));
    match protocol::io::read_greeting(&conn) {
        Ok(xdata) => State::Live { xdata },
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            State::Busy
        }
        Err(_) => State::Stale,
    }
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
fn utc(secs: i64) -> String {
    // SAFETY: gmtime_r with valid pointers.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::gmtime_r(&secs, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_467_572), "2026-11-23T20:59:32Z");
    }
}
