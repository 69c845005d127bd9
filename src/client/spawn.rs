//! Creating a server: the client's work while it holds the identity lock.
//!
//! ```text
//! client ── bind+listen BASE/s<ident> (nonblocking) ─────────── LISTEN
//!    │      pipe  watcher stdin   (read end: watcher; write end: WATCHI)
//!    │      pipe  watcher stderr  (write end: watcher; read end: WATCHE)
//!    │      socketpair: client end kept, server end ──────────── CALL
//!    ├─fork+exec─ setup: INTERP [INTERP-ARGS] [SCRIPT] ARGS...
//!    │             fd0 the caller's if a terminal (else /dev/null),
//!    │             fd1+fd2 the caller's stderr (fd1: its own where only
//!    │             it is a terminal; a pipe we copy to stderr where only
//!    │             stderr is: `SetupStdio`), no other fd of the caller's,
//!    │             PREFORK_INTERP=v1,MTIME LISTEN,CALL,WATCHI,WATCHE
//!    │               pfi-caps=signals,...,watch [pfi-idle=SECONDS]
//!    │             (the script initialises, forks the server, exits 0)
//!    ├─ wait for the setup: non-zero is the script's failure, reported
//!    ├─ read the greeting on the client end: that is the first call
//!    └─ unless the server offers `watch` (it watches its own socket path):
//!       fork─ intermediate ─fork─ watcher (setsid; fd0 WATCHI's pipe,
//!              exits at once        fd2 WATCHE's pipe, fd1 /dev/null)
//!       (reaped here); either way the client drops its pipe ends
//! ```
//!
//! On any failure the socket and lock are removed, which also makes the
//! watcher (and so any half-made server) quit: nothing is left behind.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;

use super::cli::ClientArgs;
use super::connect::{self, Greeted};
use super::exit::{Failure, die_of_same_signal};
use super::run;
use super::rundir::{self, IdentityPaths};
use super::watcher;
use crate::protocol::{self, SetupEnv};
use crate::sys;

/// Removes the socket and lock unless the server came up.
struct Cleanup<'a> {
    paths: &'a IdentityPaths,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = rundir::remove_if_exists(&self.paths.socket);
            let _ = rundir::remove_if_exists(&self.paths.lock);
        }
    }
}

/// The fds the setup run (and so the server) inherits, besides 0..2.
struct ServerFds {
    listener: UnixListener,
    call: UnixStream,
    watch_in: OwnedFd,
    watch_err: OwnedFd,
}

impl ServerFds {
    /// Moves the four fds to numbers at or above the caller's soft limit
    /// of open files, where we raised ours: the setup run (perl, say,
    /// loading modules) then has every number below it free, as a direct
    /// run has (the limit bounds fd numbers, not how many are open).
    fn above_callers_limit(self) -> Result<ServerFds, Failure> {
        let Some(soft) = sys::caller_soft_limit(libc::RLIMIT_NOFILE) else {
            return Ok(self);
        };
        let Ok(lowest) = i32::try_from(soft) else {
            return Ok(self);
        };
        let moved = |fd: OwnedFd| -> Result<OwnedFd, Failure> {
            if fd.as_raw_fd() >= lowest {
                return Ok(fd);
            }
            let raw = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(lowest))
                .map_err(|e| io_fail("cannot move a file descriptor", e.into()))?;
            // SAFETY: fcntl just made `raw`, and nothing else owns it. (The
            // old number closes as `fd` drops.)
            Ok(unsafe { OwnedFd::from_raw_fd(raw) })
        };
        Ok(ServerFds {
            listener: UnixListener::from(moved(OwnedFd::from(self.listener))?),
            call: UnixStream::from(moved(OwnedFd::from(self.call))?),
            watch_in: moved(self.watch_in)?,
            watch_err: moved(self.watch_err)?,
        })
    }
}

fn io_fail(what: &str, e: io::Error) -> Failure {
    Failure::new(format!("{what}: {e}{}", sys::limit_behind(&e)))
}

/// Creates a new server for `paths` (replacing any old one) and returns
/// the first call's connection, greeting already read. `idle_limit`
/// (seconds) bounds how long the server may idle (`pfi-idle`).
pub(crate) fn create_server(
    paths: &IdentityPaths,
    args: &ClientArgs,
    idle_limit: Option<u64>,
) -> Result<Greeted, Failure> {
    let socket = &paths.socket;
    // Armed before the socket exists: a failure to make it (a full file
    // system, say) must not leave our lock file behind either.
    let mut cleanup = Cleanup { paths, armed: true };
    if args.run {
        super::runner_check::check_runner(&args.interpreter, args.script.as_deref())?;
    }
    // Before the socket, whose time is the server's start: a file of
    // these written after it would look changed since (autoreload).
    let base = socket.parent().unwrap_or(Path::new("."));
    let early = run::early_tracking_arguments(&args.interpreter[0], base);
    let (listener, meta) = listen(socket)?;
    // What ps shows for the watcher: the script it watches for.
    let script = args
        .script
        .as_deref()
        .unwrap_or(args.interpreter[0].as_os_str());
    let pipes = WatcherPipes::new()?;
    let (conn, call) = UnixStream::pair().map_err(|e| io_fail("cannot make a socket pair", e))?;
    let fds = ServerFds {
        listener,
        call,
        watch_in: pipes.server_in,
        watch_err: pipes.server_err,
    }
    .above_callers_limit()?;
    let status = run_setup(args, &meta, idle_limit, fds, &early)?;
    if !status.success() {
        let raw = status.into_raw();
        let wait_status = protocol::WaitStatus::from_raw(raw);
        let message = format!(
            "script initialisation failed: {}",
            sys::describe_status(wait_status)
        );
        if let Some(code) = status.code() {
            return Err(Failure {
                message,
                exit_code: code,
            });
        }
        // Killed: die of the same signal where a direct run would have
        // (the socket and lock go first); other deaths are reported.
        drop(cleanup);
        die_of_same_signal(wait_status);
        return Err(Failure::new(message));
    }
    let Some(server) = connect::greeting(conn, socket)? else {
        return Err(Failure::new(
            "script finished its initialisation run without starting a server \
             (does it call the prefork-interp library's initialisation-complete function?)",
        ));
    };
    // A server that watches its own socket path needs no watcher (nor
    // its inotify instance); chiark-utils' module does.
    if !server.offers(protocol::CAP_WATCH) {
        watcher::spawn(
            socket,
            meta.dev(),
            meta.ino(),
            pipes.watcher_in,
            pipes.watcher_err,
            script,
        )
        .map_err(|e| io_fail("cannot start the watcher", e))?;
    }
    cleanup.armed = false;
    Ok(server)
}

/// A fresh listening socket at `socket` (nonblocking), and its metadata:
/// its inode is what the watcher watches, its mtime the server's start.
fn listen(socket: &Path) -> Result<(UnixListener, fs::Metadata), Failure> {
    rundir::remove_if_exists(socket)
        .map_err(|e| io_fail(&format!("cannot remove old socket {}", socket.display()), e))?;
    let listener = UnixListener::bind(socket)
        .map_err(|e| io_fail(&format!("cannot create socket {}", socket.display()), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| io_fail("cannot make the socket nonblocking", e))?;
    let meta = fs::symlink_metadata(socket)
        .map_err(|e| io_fail(&format!("cannot examine {}", socket.display()), e))?;
    Ok((listener, meta))
}

/// The watcher's two pipes. The server gets its ends at once; the
/// watcher, if the server needs one, gets the others after the greeting
/// (until then the client holds them, so the server sees no EOF).
struct WatcherPipes {
    /// WATCHI: the write end of the watcher's stdin.
    server_in: OwnedFd,
    /// WATCHE: the read end (nonblocking) of the watcher's stderr.
    server_err: OwnedFd,
    watcher_in: OwnedFd,
    watcher_err: OwnedFd,
}

impl WatcherPipes {
    fn new() -> Result<WatcherPipes, Failure> {
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_CLOEXEC)
                .map_err(|e| io_fail("cannot make a pipe", e.into()))
        };
        let (watcher_in, server_in) = pipe()?;
        let (server_err, watcher_err) = pipe()?;
        sys::set_nonblocking(server_err.as_fd())
            .map_err(|e| io_fail("cannot make a pipe nonblocking", e))?;
        Ok(WatcherPipes {
            server_in,
            server_err,
            watcher_in,
            watcher_err,
        })
    }
}

/// Our own program, for the server's script side to run as the keeper of
/// a call on a pseudo-terminal of its own (`pfi-keeper`): a small
/// program there, where a copy of the interpreter would share the
/// script's memory and make it copy every page it writes. None if it has
/// gone from its path (we were replaced, say).
fn keeper_program() -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::env::current_exe().ok()?;
    path.is_file().then(|| path.as_os_str().as_bytes().to_vec())
}

/// Runs the setup: the script, told its fds by `PREFORK_INTERP`; waits
/// for it (it forks the server and exits).
fn run_setup(
    args: &ClientArgs,
    meta: &fs::Metadata,
    idle_limit: Option<u64>,
    fds: ServerFds,
    early_tracking: &[std::ffi::OsString],
) -> Result<std::process::ExitStatus, Failure> {
    let setup_env = protocol::encode_setup_env(&SetupEnv {
        started_secs: meta.mtime(),
        started_nsecs: meta.mtime_nsec() as u32,
        listen: fds.listener.as_raw_fd(),
        call: fds.call.as_raw_fd(),
        watch_in: fds.watch_in.as_raw_fd(),
        watch_err: fds.watch_err.as_raw_fd(),
        // We read greeting xdata: the server may offer its extensions.
        client_caps: protocol::OUR_CAPS.iter().map(|c| c.to_string()).collect(),
        idle_limit,
        keeper: keeper_program(),
    });
    let stdio = SetupStdio::new()?;

    let interpreter = &args.interpreter;
    let mut command = Command::new(&interpreter[0]);
    // The early tracking first of all: before a runner's arguments (whose
    // words after a file of its own are that file's), and so loaded at
    // the interpreter's start, not with the program.
    command
        .args(early_tracking)
        .args(&interpreter[1..])
        .args(args.script.iter())
        .args(&args.args)
        .stdin(stdio.stdin)
        .stdout(stdio.stdout)
        .env(protocol::ENV_VAR, setup_env);
    // Raw numbers: the closure must be 'static, though it runs (in the
    // child, before exec) while `fds` is alive.
    let inherited = [
        fds.listener.as_raw_fd(),
        fds.call.as_raw_fd(),
        fds.watch_in.as_raw_fd(),
        fds.watch_err.as_raw_fd(),
    ];
    // The setup (and so the server, for its whole life) gets fds 0..2 and
    // the protocol's four, nothing else: any other fd of the first caller
    // (a pipe, say) must not be held open by a long-lived server.
    // SAFETY: the closure only calls sigaction, setrlimit, close_range and
    // fcntl, which are async-signal-safe; the fds it borrows are open until exec.
    unsafe {
        command.pre_exec(move || {
            // The server starts with no signal ignored (std's spawn gives
            // it an empty mask): what its initialisation does is then its
            // own, and each call brings its caller's signals.
            sys::default_ignored_signals();
            // The caller's soft limits (we raised ours for our work).
            sys::restore_soft_limits();
            sys::cloexec_from(3)?;
            for fd in inherited {
                sys::set_cloexec(BorrowedFd::borrow_raw(fd), false)?;
            }
            Ok(())
        });
    }
    let mut setup = command.spawn().map_err(|e| {
        Failure::new(format!(
            "cannot run interpreter {}: {e}{}",
            interpreter[0].to_string_lossy(),
            sys::limit_behind(&e)
        ))
    })?;
    // The server holds these now; ours would keep the watcher and the
    // first call alive past the server's death.
    drop(fds);
    drop(command);
    if let Some(relayed) = stdio.relayed {
        relay_until_exit(&setup, relayed);
    }
    setup
        .wait()
        .map_err(|e| io_fail("cannot wait for the script's initialisation", e))
}

/// The setup run's fds 0 and 1 (fd 2 is ours, the caller's stderr): a
/// terminal where the caller has one, so that what initialisation makes
/// of its stdio (a library deciding at import whether to prompt, or to
/// colour) is what a direct run's would; what it prints reaches the
/// caller's stderr, not its stdout (only this call would get it).
///
/// ```text
/// fd 0  the caller's fd 0 if a terminal, else /dev/null
/// fd 1  the caller's stderr if both or neither of its fds 1, 2 are
///       terminals; its fd 1 if only that one is; if only stderr is, a
///       pipe whose bytes we copy to stderr until the setup run exits
/// ```
struct SetupStdio {
    stdin: Stdio,
    stdout: Stdio,
    /// The read end of fd 1's pipe, if it has one.
    relayed: Option<OwnedFd>,
}

impl SetupStdio {
    fn new() -> Result<SetupStdio, Failure> {
        let terminals = sys::stdio_terminals();
        let terminal = |fd: u8| terminals & 1 << fd != 0;
        let stdin = if terminal(0) {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        let (stdout, relayed) = match (terminal(1), terminal(2)) {
            (true, false) => (Stdio::inherit(), None),
            (false, true) => {
                let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
                    .map_err(|e| io_fail("cannot make a pipe", e.into()))?;
                sys::set_nonblocking(read.as_fd())
                    .map_err(|e| io_fail("cannot make a pipe nonblocking", e))?;
                (Stdio::from(write), Some(read))
            }
            _ => {
                let stderr_copy: OwnedFd = io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|e| io_fail("cannot duplicate stderr", e))?;
                (Stdio::from(File::from(stderr_copy)), None)
            }
        };
        Ok(SetupStdio {
            stdin,
            stdout,
            relayed,
        })
    }
}

/// Copies what the setup run writes to `relayed` (its fd 1's pipe) to our
/// stderr until it has exited, then what is left in the pipe. (Not until
/// end of file: a process initialisation started may hold the pipe for
/// good.) Best effort: the setup run's status is what matters.
fn relay_until_exit(setup: &std::process::Child, relayed: OwnedFd) {
    let Ok(pidfd) = sys::Pidfd::open(sys::Pid::from_raw(setup.id() as i32)) else {
        return;
    };
    loop {
        let Ok([output, exited]) = sys::wait_readable([relayed.as_fd(), pidfd.as_fd()]) else {
            return;
        };
        if exited {
            copy_available(&relayed);
            return;
        }
        if output && !copy_available(&relayed) {
            // Its end: nothing more to copy.
            pidfd.wait_for_exit();
            return;
        }
    }
}

/// Copies what a nonblocking pipe holds now to our stderr; false once it
/// is at its end (or cannot be read, or stderr written).
fn copy_available(pipe: &OwnedFd) -> bool {
    let mut buf = [0u8; 8192];
    loop {
        match nix::unistd::read(pipe, &mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                if io::Write::write_all(&mut io::stderr(), &buf[..n]).is_err() {
                    return false;
                }
            }
            Err(nix::errno::Errno::EAGAIN) => return true,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}
