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
//! What each server costs is shown with it: its memory, and the inotify
//! instances it holds (of the 128 a user has by default): its fds that
//! are one, in the server, its monitor, its spare handlers and its
//! watcher if it has one (a process of ours titled
//! `prefork-interp [watcher] SCRIPT` whose fd 0 is a pipe the server
//! holds beyond its stdio: WATCHI, whose write end only the server
//! has). Under each server's row an indented line says how many; another
//! says what it does without, if its greeting has a `degraded` line; a
//! last line gives the totals. `--json` gives each object `inotify`,
//! `watcher` and `degraded`, and `totals`, the same in every object (the
//! array stays an array of servers, as its readers expect).
//!
//! The processes are this uid's, looked at once; a server's listening
//! socket is looked for in every network namespace they are in
//! (/proc/net/unix shows only the reader's own), so a server started in
//! another (`unshare -n`) shows its pid and memory.
//!
//! Table cells escape what would break a line or a terminal: control
//! characters C-style (`\n`, `\t`, `\r`, else `\xHH` per byte), a
//! backslash as `\\`, and bytes that are not UTF-8 as `\xHH`. In JSON,
//! `script` is text (a byte that is not UTF-8 shows as U+FFFD) and
//! `script_hex` its exact bytes.
//!
//! Looking costs each live server one monitor that finds no request and
//! quits; it does not count as a call (the server's idle time goes on).

use std::fmt::Write as _;
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

    /// The inotify instances these processes and `watcher` hold.
    fn inotify_count(&self, watcher: Option<u32>) -> usize {
        self.processes
            .iter()
            .map(|&(pid, ..)| pid)
            .chain(watcher)
            .map(procfs::inotify_count)
            .sum()
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
    /// Its command line as it is (words joined by spaces).
    command: Vec<u8>,
    state: State,
    memory: Option<Memory>,
    /// Its watcher's pid, if it has one.
    watcher: Option<u32>,
    /// The inotify instances its processes hold (none known if its
    /// processes were not seen).
    inotify: Option<usize>,
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

    /// What it does without, from its greeting's `degraded` line.
    fn degraded(&self) -> Option<String> {
        match &self.state {
            State::Live { xdata } => protocol::decode_degraded(xdata),
            _ => None,
        }
    }

    /// The script's exact bytes, as the record has them: `script_hex` if
    /// the client wrote it, else `script` when that lost nothing (no
    /// U+FFFD, which stands in for bytes that were not UTF-8).
    fn script_bytes(&self) -> Option<Vec<u8>> {
        let record = self.record.as_ref()?;
        if let Some(hex) = record.get("script_hex") {
            return protocol::decode_hex(hex.as_str()?.as_bytes());
        }
        let text = record.get("script")?.as_str()?;
        (!text.contains('\u{FFFD}')).then(|| text.as_bytes().to_vec())
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            State::Stale => "stale",
            State::Busy => "busy",
            State::Live { .. } => "live",
        }
    }

    fn json(&self, totals: &Value) -> Value {
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
            "command": String::from_utf8_lossy(&self.command),
            "started": utc(self.started),
            "started_unix": self.started,
            "script": record("script"),
            "script_hex": self.script_bytes().map(|b| protocol::hex_lower(&b)),
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
            "inotify": self.inotify,
            "watcher": self.watcher,
            "degraded": self.degraded(),
            "depends_on": depends_on,
            "totals": totals,
        })
    }

    /// Its row, then its indented lines: the inotify instances its
    /// processes hold (not for a stale socket), and what it does without
    /// (if it says).
    fn table_lines(&self) -> Vec<String> {
        let number = |name| {
            self.number(name)
                .map_or_else(|| self.unknown().to_string(), |n| n.to_string())
        };
        let protocol = match self.caps() {
            None => self.state_name().to_string(),
            Some(caps) if caps.is_empty() => "v1".to_string(),
            Some(caps) => cell(caps.join(",").as_bytes()),
        };
        // What its initialisation read: callers with other values of
        // these have servers of their own.
        let env = match &self.state {
            State::Live { xdata } => match protocol::decode_env_dependency(xdata) {
                Some(env) if !env.names.is_empty() => cell(&env.names.join(&b',')),
                _ => "-".to_string(),
            },
            _ => self.unknown().to_string(),
        };
        let idle = self
            .number("idle")
            .map_or_else(|| self.unknown().to_string(), human_duration);
        let memory = self
            .memory
            .as_ref()
            .map_or_else(|| "-".to_string(), |m| human_kib(m.total().pss));
        let pid = self.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
        let mut lines = vec![format!(
            "{:<64}  {pid:>7}  {:<20}  {:>6}  {:>7}  {idle:>6}  {memory:>7}  {protocol:<33}  {env:<12}  {}",
            cell(self.ident.as_bytes()),
            utc(self.started),
            number("served"),
            number("running"),
            cell(&self.command)
        )];
        if !matches!(self.state, State::Stale) {
            let inotify = self
                .inotify
                .map_or_else(|| "-".to_string(), |n| n.to_string());
            lines.push(format!("    inotify instances {inotify}"));
        }
        if let Some(text) = self.degraded() {
            lines.push(format!("    degraded: {}", cell(text.as_bytes())));
        }
        lines
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
    let totals = Totals::of(&entries);
    let mut out = io::stdout().lock();
    if json {
        let totals = totals.json();
        let all: Vec<Value> = entries.iter().map(|e| e.json(&totals)).collect();
        let text = serde_json::to_string_pretty(&all).map_err(|e| fail(io::Error::other(e)))?;
        let _ = writeln!(out, "{text}");
    } else {
        let _ = writeln!(
            out,
            "{:<64}  {:>7}  {:<20}  {:>6}  {:>7}  {:>6}  {:>7}  {:<33}  {:<12}  COMMAND",
            "IDENT", "PID", "STARTED", "SERVED", "RUNNING", "IDLE", "MEMORY", "PROTOCOL", "ENV"
        );
        for entry in &entries {
            for line in entry.table_lines() {
                let _ = writeln!(out, "{line}");
            }
        }
        let _ = writeln!(out, "{}", totals.table_line());
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
    let processes = procfs::own_processes();
    let listening = procfs::listening_sockets_everywhere(&processes);
    Ok(sockets
        .into_iter()
        .map(|(ident, socket, started)| {
            let pid = listening
                .get(&socket)
                .and_then(|inodes| procfs::socket_holder(&processes, inodes));
            // Before the probe, which takes a spare handler, whose
            // replacement may be mid-fork.
            let memory = pid.and_then(Memory::of_server);
            let watcher = pid.and_then(|pid| procfs::watcher_of(&processes, pid));
            let inotify = memory.as_ref().map(|m| m.inotify_count(watcher));
            let state = probe(&socket);
            let record =
                protocol::lock_path_for_socket(&socket).and_then(|lock| rundir::read_record(&lock));
            Entry {
                command: pid.map(procfs::command_line_bytes).unwrap_or_default(),
                memory,
                watcher,
                inotify,
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

/// What all the servers listed cost together.
struct Totals {
    /// Sockets listed that are not stale (live or busy servers).
    servers: usize,
    memory: MemoryKib,
    inotify: usize,
    /// Servers whose processes were not seen: not in the sums.
    unseen: usize,
}

impl Totals {
    fn of(entries: &[Entry]) -> Totals {
        let servers: Vec<&Entry> = entries
            .iter()
            .filter(|e| !matches!(e.state, State::Stale))
            .collect();
        let memory = servers
            .iter()
            .filter_map(|e| e.memory.as_ref())
            .map(Memory::total)
            .fold(MemoryKib::default(), |sum, m| MemoryKib {
                rss: sum.rss + m.rss,
                pss: sum.pss + m.pss,
            });
        Totals {
            servers: servers.len(),
            memory,
            inotify: servers.iter().filter_map(|e| e.inotify).sum(),
            unseen: servers.iter().filter(|e| e.memory.is_none()).count(),
        }
    }

    fn json(&self) -> Value {
        json!({
            "servers": self.servers,
            "pss_kib": self.memory.pss,
            "rss_kib": self.memory.rss,
            "inotify": self.inotify,
            "unseen": self.unseen,
        })
    }

    /// The table's last line: no number in its second word, which the
    /// PID column has in a server's row.
    fn table_line(&self) -> String {
        let mut line = format!(
            "TOTAL  servers {}  memory {}  inotify instances {}",
            self.servers,
            human_kib(self.memory.pss),
            self.inotify
        );
        if self.unseen > 0 {
            let _ = write!(line, "  ({} not seen, not counted)", self.unseen);
        }
        line
    }
}

/// `bytes` as a table cell: UTF-8 text as it is, but control characters
/// C-style (`\n`, `\t`, `\r`, any other as `\xHH` per byte), a backslash
/// as `\\`, and each byte that is not UTF-8 as `\xHH`: one line, nothing
/// a terminal acts on, and the bytes recoverable.
fn cell(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    for b in c.encode_utf8(&mut [0; 4]).bytes() {
                        let _ = write!(out, "\\x{b:02x}");
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
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
    fn cells_escape_control_characters_and_other_bytes() {
        assert_eq!(cell(b"/x/script [server]"), "/x/script [server]");
        assert_eq!(cell("/x/caf\u{e9}".as_bytes()), "/x/caf\u{e9}");
        assert_eq!(cell(b"/x/new\nline"), "/x/new\\nline");
        assert_eq!(cell(b"a\tb\rc\\d"), "a\\tb\\rc\\\\d");
        assert_eq!(cell(b"\x1b[31m\x7f"), "\\x1b[31m\\x7f");
        assert_eq!(cell("\u{9b}".as_bytes()), "\\xc2\\x9b");
        assert_eq!(cell(b"caf\xe9 \xff"), "caf\\xe9 \\xff");
    }

    #[test]
    fn utc_formats() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_795_467_572), "2026-11-23T20:59:32Z");
    }
}
