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
//!
//! When the greeting advertises `signals`, the request opens with 0x01
//! and the call goes on in frames: the forwardable signals sent to us are
//! blocked, read from a signalfd and passed on ('S'); the monitor tells us
//! the executor's pid ('P') and, last, its status ('X'). SIGTSTP is
//! passed on and then stops us too, so the shell sees a stopped job; the
//! SIGCONT of `fg` is passed on in turn.

use std::ffi::CStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
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
    if !matches!(args.mode, Mode::Kill | Mode::List) {
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
    if args.mode == Mode::List {
        return crate::list::print(&base).map(|()| 0);
    }
    let paths = identity_paths(&base, &args)?;

    if args.mode == Mode::Normal
        && let Some((conn, caps)) = connect(&paths.socket)?
    {
        return call(conn, &caps, &args);
    }

    let lock = lock_identity(&paths.lock)?;
    match args.mode {
        Mode::Kill => {
            for path in [&paths.socket, &paths.lock] {
                rundir::remove_if_exists(path)
                    .map_err(|e| Failure::new(format!("cannot remove {}: {e}", path.display())))?;
            }
            return Ok(0);
        }
        Mode::Normal => {
            if let Some((conn, caps)) = connect(&paths.socket)? {
                drop(lock);
                return call(conn, &caps, &args);
            }
        }
        // (--list returned above.)
        Mode::Fresh | Mode::List => {}
    }

    // Best effort: a directory we cannot tidy fails clearly just below.
    let _ = rundir::preclean(&base, rundir::MAX_IDENTITIES);
    let (conn, caps) = spawn::create_server(&paths, &args)?;
    if args.caller_dir && !caps.iter().any(|c| c == protocol::CAP_CONTEXT) {
        // Useless to anyone: take the new server down again (we hold the
        // lock, so its file may go too).
        let _ = rundir::remove_if_exists(&paths.socket);
        let _ = rundir::remove_if_exists(&paths.lock);
    }
    drop(lock);
    call(conn, &caps, &args)
}

/// How long the lock may take before we say what we are waiting for.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes the identity lock. If that takes more than [`LOCK_PATIENCE`]
/// (another client is starting a slow server, or a stuck process holds
/// the lock) it says so once on stderr, naming the holder, and goes on
/// waiting: a caller is never left hanging without a word.
fn lock_identity(path: &Path) -> Result<IdentityLock, Failure> {
    let failed = |e: io::Error| Failure::new(format!("cannot lock {}: {e}", path.display()));
    if let Some(lock) = IdentityLock::try_acquire(path).map_err(failed)? {
        return Ok(lock);
    }
    let (done, patience) = std::sync::mpsc::channel::<()>();
    let shown = path.to_owned();
    let announcer = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            patience.recv_timeout(LOCK_PATIENCE)
        {
            let holder = match rundir::lock_holder(&shown) {
                Some((pid, name)) => format!("held by pid {pid} ({name})"),
                None => "held by another process".into(),
            };
            eprintln!(
                "prefork-interp: waiting for {}, {holder}: a server is starting; if it is stuck, \
                 kill that process or remove the lock",
                shown.display()
            );
        }
    });
    let lock = IdentityLock::acquire(path);
    // Single-threaded again before anything forks.
    drop(done);
    let _ = announcer.join();
    lock.map_err(failed)
}

fn identity_paths(base: &Path, args: &ClientArgs) -> Result<IdentityPaths, Failure> {
    match &args.given_identity {
        Some(ident) => IdentityPaths::for_given(base, ident).map_err(Failure::new),
        None => {
            let hash = rundir::identity_hash(&IdentitySpec {
                items: &args.identity_items,
                interpreter: &args.interpreter,
                script: args.script.as_deref(),
                include_cwd: !args.caller_dir,
            })
            .map_err(|e| Failure::new(format!("cannot compute the server identity: {e}")))?;
            IdentityPaths::for_hash(base, &hash).map_err(Failure::new)
        }
    }
}

/// Connects to a server and reads its greeting; returns the connection
/// and the capabilities it advertised. `None` when there is no live
/// server there (no socket, nobody listening, or EOF before the greeting
/// from a server that is quitting).
fn connect(socket: &Path) -> Result<Option<(UnixStream, Vec<String>)>, Failure> {
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
    // Our stdin, stdout and stderr go to our own servers only: a socket
    // someone else listens on (planted, or a directory we were pointed
    // at) gets nothing, not even a read of its greeting.
    let our_uid = nix::unistd::getuid().as_raw();
    match sys::peer_credentials(conn.as_raw_fd()) {
        Ok((uid, _)) if uid == our_uid => {}
        Ok((uid, pid)) => {
            return Err(Failure::new(format!(
                "{} belongs to a server of uid {uid} (pid {pid}), not ours ({our_uid}): nothing sent",
                socket.display()
            )));
        }
        Err(e) => {
            return Err(Failure::new(format!(
                "cannot check who listens on {}: {e}",
                socket.display()
            )));
        }
    }
    Ok(read_greeting(&conn, socket)?.map(|caps| (conn, caps)))
}

/// Reads a greeting and returns the capabilities it advertises; `None` if
/// the connection ended before it.
pub(crate) fn read_greeting(
    conn: &UnixStream,
    socket: &Path,
) -> Result<Option<Vec<String>>, Failure> {
    match protocol::io::read_greeting(conn) {
        Ok(xdata) => Ok(Some(protocol::decode_caps(&xdata))),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
            ) =>
        {
            Ok(None)
        }
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Err(Failure::new(format!("{}: {e}", socket.display())))
        }
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
fn call(mut conn: UnixStream, caps: &[String], args: &ClientArgs) -> Result<i32, Failure> {
    let offered = |cap: &str| caps.iter().any(|c| c == cap);
    let extended = offered(protocol::CAP_SIGNALS);
    let context = extended && offered(protocol::CAP_CONTEXT);
    if args.caller_dir && !context {
        return Err(Failure::new(
            "--caller-dir needs a script side that runs each call in its caller's directory \
             (capability \"context\", this project's libraries); this server does not offer it",
        ));
    }
    // Before the request: from now on no forwardable signal kills us.
    let signals = if extended {
        Some(ForwardedSignals::block()?)
    } else {
        None
    };
    if let Err(e) = send_request(&conn, protocol::RequestKind { extended, context }, args) {
        return Err(Failure::new(format!(
            "cannot send the call to the server: {e}"
        )));
    }

    let status = match signals {
        None => {
            let mut status = [0u8; 4];
            conn.read_exact(&mut status)
                .map(|()| protocol::decode_status(status))
        }
        Some(signals) => relay(&conn, &signals),
    };
    match status {
        Ok(status) => report_status(status),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(Failure::new(
            "monitor quit unexpectedly (no exit status for the script)",
        )),
        Err(e) => Err(Failure::new(format!(
            "cannot read the script's exit status: {e}"
        ))),
    }
}

/// Sends our request: fds 0, 1, 2, the environment and arguments, and
/// with `context` our directory and umask.
fn send_request(
    conn: &UnixStream,
    kind: protocol::RequestKind,
    args: &ClientArgs,
) -> io::Result<()> {
    let payload = protocol::encode_request_payload(
        environ_entries(),
        args.args
            .iter()
            .map(|a| std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())),
    );
    // SAFETY: fds 0..2 were checked open at start and stay open.
    let stdio = [0, 1, 2].map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
    if !kind.context {
        return protocol::io::send_request(conn, kind, stdio, &payload, None);
    }
    let cwd = std::fs::File::open(".").or_else(|_| {
        // Unreadable: O_PATH needs no permission on it.
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(".")
    })?;
    let umask = sys::current_umask();
    protocol::io::send_request(conn, kind, stdio, &payload, Some((cwd.as_fd(), umask)))
}

/// The forwardable signals, blocked and readable from a signalfd.
struct ForwardedSignals {
    fd: nix::sys::signalfd::SignalFd,
}

impl ForwardedSignals {
    fn block() -> Result<Self, Failure> {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        for &sig in &protocol::FORWARDED_SIGNALS {
            set.add(Signal::try_from(sig).expect("a real signal"));
        }
        let fail = |e: nix::Error| Failure::new(format!("cannot set up signal forwarding: {e}"));
        set.thread_block().map_err(fail)?;
        let fd = nix::sys::signalfd::SignalFd::with_flags(
            &set,
            nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
        )
        .map_err(fail)?;
        Ok(ForwardedSignals { fd })
    }
}

/// An extended call's frames: passes our signals on until the status
/// comes.
fn relay(conn: &UnixStream, signals: &ForwardedSignals) -> io::Result<i32> {
    loop {
        let [signalled, from_monitor] = sys::wait_readable([signals.fd.as_fd(), conn.as_fd()])?;
        if signalled {
            while let Ok(Some(info)) = signals.fd.read_signal() {
                let sig = info.ssi_signo as i32;
                let frame = protocol::encode_frame(protocol::FRAME_SIGNAL, sig as u32);
                // The monitor may be gone; its EOF says so below.
                let _ = protocol::io::send_all(conn, &frame);
                if sig == libc::SIGTSTP {
                    // Stop as a direct run would; `fg` continues us, and
                    // the SIGCONT that brings is passed on in turn.
                    // SAFETY: raising a signal at ourselves.
                    unsafe { libc::raise(libc::SIGSTOP) };
                }
            }
        }
        if from_monitor {
            // Other kinds: the executor's pid, or a kind from a later version.
            if let (protocol::FRAME_STATUS, status) = protocol::io::read_frame(conn)? {
                return Ok(status as i32);
            }
        }
    }
}

/// Signals we die of ourselves when the script died of them, so that the
/// caller sees what a direct run would have shown: those whose default
/// action is to end the process without a core dump. (The original
/// re-raises the first five; with signal forwarding a script may die of
/// any forwarded signal.) Others, and core dumps: a message and 127.
const RERAISED: [libc::c_int; 8] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGPIPE,
    libc::SIGKILL,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
];

/// Turns a wait status into our exit status, or dies of its signal.
pub(crate) fn report_status(status: i32) -> Result<i32, Failure> {
    if libc::WIFEXITED(status) {
        return Ok(libc::WEXITSTATUS(status));
    }
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        if !libc::WCOREDUMP(status) && RERAISED.contains(&sig) {
            sys::default_signal(sig);
            // SAFETY: raising a signal at ourselves.
            unsafe { libc::raise(sig) };
        }
    }
    Err(Failure::new(format!(
        "script {}",
        sys::describe_status(status)
    )))
}
