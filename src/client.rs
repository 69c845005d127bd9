//! The client: what the kernel runs for a `#!/usr/bin/prefork-interp` line.
//!
//! ```text
//! connect BASE/s<ident>, read greeting ──ok──────────────────────────┐
//!   │ refused / missing / EOF (stale)                                 │
//! flock BASE/l<ident>                                                 │
//!   │ --kill: unlink socket and lock, exit 0                          │
//! connect again (someone may just have made it) ──ok── unlock ────────┤
//!   │ still nothing (or -f)                                           │
//! spawn::create_server: socket, watcher, setup run, greeting; unlock ─┤
//!                                                                     v
//! request: 0x00, fd 0, fd 1, fd 2 (SCM_RIGHTS), env and args ──> monitor
//! status <── monitor: exit with it, or die of the same signal
//! ```

use std::ffi::CStr;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::cli::{self, ClientArgs, EXIT_FAILURE, Mode, Parsed};
use crate::protocol;
use crate::rundir::{self, IdentityLock, IdentityPaths, IdentitySpec};
use crate::spawn;
use crate::sys;

/// A reason to stop, with the exit status that goes with it.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub exit_code: i32,
}

impl Failure {
    /// A failure of prefork-interp itself: exit status 127.
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            exit_code: EXIT_FAILURE,
        }
    }
}

/// The client's whole life; returns the exit status (or dies of the
/// script's signal).
pub fn main() -> i32 {
    match run() {
        Ok(code) => code,
        Err(f) => {
            let _ = writeln!(io::stderr(), "prefork-interp: {}", f.message);
            f.exit_code
        }
    }
}

fn run() -> Result<i32, Failure> {
    let args = match cli::parse(std::env::args_os().collect()).map_err(Failure::new)? {
        Parsed::Print(text) => {
            let mut out = io::stdout();
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
            return Ok(0);
        }
        Parsed::Run(args) => args,
    };
    if args.mode != Mode::Kill {
        // A closed fd 0..2 would be reused by our own sockets and sent on.
        for (fd, name) in [
            (0, "standard input"),
            (1, "standard output"),
            (2, "standard error"),
        ] {
            if !sys::fd_is_open(fd) {
                return Err(Failure::new(format!("{name} (fd {fd}) is closed")));
            }
        }
    }

    let base = rundir::base_dir().map_err(Failure::new)?;
    let paths = identity_paths(&base, &args)?;

    if args.mode == Mode::Normal
        && let Some(conn) = connect(&paths.socket)?
    {
        return call(conn, &args);
    }

    let lock = IdentityLock::acquire(&paths.lock)
        .map_err(|e| Failure::new(format!("cannot lock {}: {e}", paths.lock.display())))?;
    match args.mode {
        Mode::Kill => {
            for path in [&paths.socket, &paths.lock] {
                rundir::remove_if_exists(path)
                    .map_err(|e| Failure::new(format!("cannot remove {}: {e}", path.display())))?;
            }
            return Ok(0);
        }
        Mode::Normal => {
            if let Some(conn) = connect(&paths.socket)? {
                drop(lock);
                return call(conn, &args);
            }
        }
        Mode::Fresh => {}
    }

    // Best effort: a directory we cannot tidy fails clearly just below.
    let _ = rundir::preclean(&base, rundir::MAX_IDENTITIES);
    let conn = spawn::create_server(&paths, &args)?;
    drop(lock);
    call(conn, &args)
}

fn identity_paths(base: &Path, args: &ClientArgs) -> Result<IdentityPaths, Failure> {
    match &args.given_identity {
        Some(ident) => IdentityPaths::for_given(base, ident).map_err(Failure::new),
        None => {
            let hash = rundir::identity_hash(&IdentitySpec {
                items: &args.identity_items,
                interpreter: &args.interpreter,
                script: args.script.as_deref(),
            })
            .map_err(|e| Failure::new(format!("cannot compute the server identity: {e}")))?;
            IdentityPaths::for_hash(base, &hash).map_err(Failure::new)
        }
    }
}

/// Connects to a server and reads its greeting. `None` when there is no
/// live server there (no socket, nobody listening, or EOF before the
/// greeting from a server that is quitting).
fn connect(socket: &Path) -> Result<Option<UnixStream>, Failure> {
    let conn = match UnixStream::connect(socket) {
        Ok(c) => c,
        Err(e) => {
            return match e.raw_os_error() {
                Some(libc::ECONNREFUSED) | Some(libc::ENOENT) => Ok(None),
                _ => Err(Failure::new(format!(
                    "cannot connect to {}: {e}",
                    socket.display()
                ))),
            };
        }
    };
    Ok(read_greeting(&conn, socket)?.then_some(conn))
}

/// Reads a greeting; `false` if the connection ended before it.
pub(crate) fn read_greeting(mut conn: &UnixStream, socket: &Path) -> Result<bool, Failure> {
    let stale = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
        )
    };
    let mut header = [0u8; protocol::GREETING_HEADER_LEN];
    match conn.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if stale(&e) => return Ok(false),
        Err(e) => {
            return Err(Failure::new(format!(
                "cannot read greeting from {}: {e}",
                socket.display()
            )));
        }
    }
    let xdata_len = protocol::decode_greeting_header(&header)
        .map_err(|e| Failure::new(format!("{}: {e}", socket.display())))?;
    // v1 defines no xdata: read it and let it go.
    let mut xdata = vec![0u8; xdata_len as usize];
    match conn.read_exact(&mut xdata) {
        Ok(()) => Ok(true),
        Err(e) if stale(&e) => Ok(false),
        Err(e) => Err(Failure::new(format!(
            "cannot read greeting from {}: {e}",
            socket.display()
        ))),
    }
}

/// The caller's environment, entry by entry, exactly as the kernel gave it.
fn environ_entries() -> Vec<&'static [u8]> {
    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }
    let mut entries = Vec::new();
    // SAFETY: environ is a NULL-terminated array of C strings that nothing
    // in this single-threaded client modifies.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let entry = CStr::from_ptr(*p).to_bytes();
            if !entry.is_empty() {
                entries.push(entry);
            }
            p = p.add(1);
        }
    }
    entries
}

/// Sends the request on a greeted connection and reports the status.
fn call(mut conn: UnixStream, args: &ClientArgs) -> Result<i32, Failure> {
    let sock = conn.as_raw_fd();
    let sent = (|| {
        sys::send_all(sock, &[protocol::REQUEST_BYTE])?;
        for fd in 0..3 {
            sys::send_byte_with_fd(sock, 0, fd)?;
        }
        let payload = protocol::encode_request_payload(
            environ_entries(),
            args.args
                .iter()
                .map(|a| std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())),
        );
        sys::send_all(sock, &payload)
    })();
    if let Err(e) = sent {
        return Err(Failure::new(format!(
            "cannot send the call to the server: {e}"
        )));
    }

    let mut status = [0u8; 4];
    match conn.read_exact(&mut status) {
        Ok(()) => report_status(protocol::decode_status(status)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Failure::new(
            "monitor quit unexpectedly (no exit status for the script)",
        )),
        Err(e) => Err(Failure::new(format!(
            "cannot read the script's exit status: {e}"
        ))),
    }
}

/// Signals we die of ourselves when the script died of them, so that the
/// caller sees what a direct run would have shown.
const RERAISED: [libc::c_int; 5] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGPIPE,
    libc::SIGKILL,
];

/// Turns a wait status into our exit status, or dies of its signal.
pub(crate) fn report_status(status: i32) -> Result<i32, Failure> {
    if libc::WIFEXITED(status) {
        return Ok(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        if !libc::WCOREDUMP(status) && RERAISED.contains(&sig) {
            sys::set_signal(sig, false);
            // SAFETY: raising a signal at ourselves.
            unsafe { libc::raise(sig) };
        }
    }
    Err(Failure::new(format!(
        "script {}",
        sys::describe_status(status)
    )))
}
