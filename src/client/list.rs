//! `prefork-interp --list`: this user's servers, one line each, or with
//! `--json` one object each.
//!
//! ```text
//! IDENT  PID  STARTED  SERVED  RUNNING  IDLE  MEMORY  PROTOCOL  ENV  COMMAND
//! ```
//!
//! What every server shows, v1 ones included: the identity (the socket's
//! name; `--kill -g IDENT` takes it), the start (the socket's mtime), the
//! server's pid (the process holding the listening socket, found through
//! /proc/net/unix and /proc/PID/fd: SO_PEERCRED would name the client that
//! called listen(), long gone), its command line (a server of ours shows
//! its title there: the script, not the first call's arguments) and the
//! memory it and its spare handlers really use (PSS from
//! /proc/PID/smaps_rollup, summed: each shared page counted once).
//! Servers of this project add, in their greeting, how many connections
//! they had accepted, how many calls were running, how long they have
//! been idle, and the environment variables their initialisation read
//! (ENV; `-` for none). The identity's lock file holds what the client
//! that created the server recorded (man 7, THE LOCK FILE): script,
//! interpreter, what the identity depends on, and why the server before
//! it quit. A server at its call limit answers no greeting for now
//! ("busy"); a socket nobody listens on is "stale".
//!
//! Looking costs each live server one monitor that finds no request and
//! quits; it does not count as a call (the server's idle time goes on).

use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::exit::Failure;
use super::rundir;
use crate::protocol;
use crate::sys::procfs::{self, MemoryKib};

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

/// The memory of a server and its spare handlers (its monitor, and the
/// executors that wait for calls), each process's own.
struct Memory {
    /// (pid, role, sizes), the server first.
    processes: Vec<(u32, &'static str, MemoryKib)>,
}

impl Memory {
    /// Walks down from the server: its children are monitors (it forks
    /// nothing else), theirs are executors: the spare handlers, and a
    /// running call's, which is left out (its memory is the call's). An
    /// executor shows `[handler]` while it waits, or still its monitor's
    /// title just after its fork; a running call's shows the script.
    fn of_server(pid: u32) -> Option<Memory> {
        let mut processes = vec![(pid, "server", procfs::memory_kib(pid)?)];
        for monitor in procfs::children(pid) {
            let Some(sizes) = procfs::memory_kib(monitor) else {
                continue;
            };
            processes.push((monitor, "monitor", sizes));
            for executor in procfs::children(monitor) {
                let title = procfs::command_line(executor);
                if !(title.ends_with("[handler]") || title.ends_with("[monitor]")) {
                    continue;
                }
                if let Some(sizes) = procfs::memory_kib(executor) {
                    processes.push((executor, "handler", sizes));
                }
            }
        }
        Some(Memory { processes })
    }

    fn total(&self) -> MemoryKib {
        self.processes
            .iter()
            .fold(MemoryKib::default(), |sum, (_, _, m)| MemoryKib {
                rss: sum.rss + m.rss,
                pss: sum.pss + m.pss,
            })
    }

    fn json(&self) -> Value {
        let total = self.total();
        json!({
            "pss_kib": total.pss,
            "rss_kib": total.rss,
            "processes": self.processes.iter().map(|(pid, role, m)| json!({
                "pid": pid, "role": role, "pss_kib": m.pss, "rss_kib": m.rss,
            })).collect::<Vec<_>>(),
        })
    }
}

/// One server, as far as it can be seen.
struct Entry {
    ident: String,
    socket: PathBuf,
    started: i64,
    pid: Option<u32>,
    command: String,
    state: State,
    memory: Option<Memory>,
    /// What its creating client recorded in the lock file.
    record: Option<Value>,
}

impl Entry {
    fn number(&self, name: &str) -> Option<u64> {
        match &self.state {
            State::Live { xdata } => protocol::decode_xdata_number(xdata, name),
            _ => None,
        }
    }

    /// The capabilities offered; empty for v1 (no xdata).
    fn caps(&self) -> Option<Vec<String>> {
        match &self.state {
            State::Live { xdata } => Some(protocol::decode_caps(xdata)),
            _ => None,
        }
    }

    /// The names its initialisation read, from the greeting.
    fn env_read(&self) -> Option<Vec<String>> {
        self.dependency_names(protocol::decode_env_dependency)
    }

    /// The names its interpreter read as it started (Perl's and Python's
    /// own variables, the locale), from the greeting.
    fn interpreter_read(&self) -> Option<Vec<String>> {
        self.dependency_names(protocol::decode_start_dependency)
    }

    fn dependency_names(
        &self,
        decode: fn(&[u8]) -> Option<protocol::EnvDependency>,
    ) -> Option<Vec<String>> {
        let State::Live { xdata } = &self.state else {
            return None;
        };
        let names = decode(xdata).map(|env| env.names);
        Some(
            names
                .unwrap_or_default()
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect(),
        )
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            State::Stale => "stale",
            State::Busy => "busy",
            State::Live { .. } => "live",
        }
    }

    fn json(&self) -> Value {
        let record = |key: &str| {
            self.record
                .as_ref()
                .and_then(|r| r.get(key))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let world = match &self.state {
            State::Live { xdata } => protocol::decode_world(xdata),
            _ => None,
        };
        // Which of fds 0, 1, 2 its initialisation had as terminals.
        let terminals = match &self.state {
            State::Live { xdata } => protocol::decode_terminals(xdata)
                .map(|bits| (0..3).filter(|fd| bits & 1 << fd != 0).collect::<Vec<u8>>()),
            _ => None,
        };
        let mut depends_on = record("depends_on");
        if let Value::Object(map) = &mut depends_on {
            map.insert("environment_read".into(), json!(self.env_read()));
            map.insert("interpreter_read".into(), json!(self.interpreter_read()));
        }
        let caps = self.caps();
        json!({
            "ident": self.ident,
            "socket": self.socket.to_string_lossy(),
            "state": self.state_name(),
            "pid": self.pid,
            "command": self.command,
            "started": utc(self.started),
            "started_unix": self.started,
            "script": record("script"),
            "interpreter": record("interpreter"),
            "protocol": match &caps {
                None => Value::Null,
                Some(caps) if caps.is_empty() => json!("v1"),
                Some(_) => json!("pfi-caps 1"),
            },
            "capabilities": caps,
            "served": self.number("served"),
            "running": self.number("running"),
            "idle_seconds": self.number("idle").map(|ms| ms as f64 / 1000.0),
            "world": world,
            "terminals": terminals,
            "last_restart": record("last_restart"),
            "memory": self.memory.as_ref().map(Memory::json),
            "depends_on": depends_on,
        })
    }

    fn table_row(&self) -> String {
        let number = |name| {
            self.number(name)
                .map_or_else(|| self.unknown().to_string(), |n| n.to_string())
        };
        let protocol = match self.caps() {
            None => self.state_name().to_string(),
            Some(caps) if caps.is_empty() => "v1".to_string(),
            Some(caps) => caps.join(","),
        };
        // What its initialisation read: callers with other values of
        // these have servers of their own.
        let env = match self.env_read() {
            None => self.unknown().to_string(),
            Some(names) if names.is_empty() => "-".to_string(),
            Some(names) => names.join(","),
        };
        let idle = self
            .number("idle")
            .map_or_else(|| self.unknown().to_string(), human_duration);
        let memory = self
            .memory
            .as_ref()
            .map_or_else(|| "-".to_string(), |m| human_kib(m.total().pss));
        let pid = self.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
        format!(
            "{:<64}  {pid:>7}  {:<20}  {:>6}  {:>7}  {idle:>6}  {memory:>7}  {protocol:<33}  {env:<12}  {}",
            self.ident,
            utc(self.started),
            number("served"),
            number("running"),
            self.command
        )
    }

    /// What a column this state cannot know shows: `-` for a stale
    /// socket (nothing to know), `?` for a busy server or a v1 one (it
    /// does not say).
    fn unknown(&self) -> &'static str {
        match self.state {
            State::Stale => "-",
            _ => "?",
        }
    }
}

/// Prints the table (or, `json`, a JSON array) for the run directory
/// `base`.
pub(crate) fn print(base: &Path, json: bool) -> Result<(), Failure> {
    let fail = |e: io::Error| Failure::new(format!("cannot list {}: {e}", base.display()));
    let entries = entries(base).map_err(fail)?;
    let mut out = io::stdout().lock();
    if json {
        let all: Vec<Value> = entries.iter().map(Entry::json).collect();
        let text = serde_json::to_string_pretty(&all).map_err(|e| fail(io::Error::other(e)))?;
        let _ = writeln!(out, "{text}");
    } else {
        let _ = writeln!(
            out,
            "{:<64}  {:>7}  {:<20}  {:>6}  {:>7}  {:>6}  {:>7}  {:<33}  {:<12}  COMMAND",
            "IDENT", "PID", "STARTED", "SERVED", "RUNNING", "IDLE", "MEMORY", "PROTOCOL", "ENV"
        );
        for entry in &entries {
            let _ = writeln!(out, "{}", entry.table_row());
        }
    }
    out.flush().map_err(fail)
}

/// Every socket in `base`, looked at, in identity order.
fn entries(base: &Path) -> io::Result<Vec<Entry>> {
    let mut sockets: Vec<(String, PathBuf, i64)> = std::fs::read_dir(base)?
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
    Ok(sockets
        .into_iter()
        .map(|(ident, socket, started)| {
            let pid = listening
                .get(&socket)
                .and_then(|&inode| procfs::socket_holder(inode));
            // Before the probe, which takes a spare handler, whose
            // replacement may be mid-fork.
            let memory = pid.and_then(Memory::of_server);
            let state = probe(&socket);
            let record =
                protocol::lock_path_for_socket(&socket).and_then(|lock| rundir::read_record(&lock));
            Entry {
                command: pid.map(procfs::command_line).unwrap_or_default(),
                memory,
                ident,
                socket,
                started,
                pid,
                state,
                record,
            }
        })
        .collect())
}

/// `1234567` ms as `20m34s`: the largest two units.
fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// KiB as `12.3M` (MiB, one decimal), or `950K`.
fn human_kib(kib: u64) -> String {
    if kib < 1024 {
        format!("{kib}K")
    } else if kib < 1024 * 1024 {
        format!("{:.1}M", kib as f64 / 1024.0)
    } else {
        format!("{:.1}G", kib as f64 / (1024.0 * 1024.0))
    }
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
    fn human_units() {
        assert_eq!(human_duration(999), "0s");
        assert_eq!(human_duration(59_999), "59s");
        assert_eq!(human_duration(1_234_567), "20m34s");
        assert_eq!(human_duration(3_600_000 * 5 + 60_000 * 7), "5h07m");
        assert_eq!(human_duration(86_400_000 * 2 + 3_600_000), "2d01h");
        assert_eq!(human_kib(950), "950K");
        assert_eq!(human_kib(12_595), "12.3M");
        assert_eq!(human_kib(3 * 1024 * 1024), "3.0G");
    }

    #[test]
    fn utc_formats() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_467_572), "2026-11-23T20:59:32Z");
    }
}
