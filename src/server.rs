//! The script side's entry point and the server's accept loop.
//!
//! A Rust program becomes a prefork server by calling
//! [`initialisation_complete`] once its expensive start-up is done:
//!
//! ```no_run
//! let invocation = prefork_interp::initialisation_complete(Default::default())?;
//! // From here on we are an executor: fds 0/1/2, the environment and
//! // `invocation.args` are the caller's.
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! ```text
//! setup run ──fork──> server (setsid, stdio /dev/null, syslog)
//!   exit 0              │  loop: mio on LISTEN + WATCHE + monitors' pidfds
//!                       │        WATCHE EOF/text: quit; idle: quit;
//!                       │        script changed: quit (at next accept)
//!                       ├─fork─> call handler: monitor + executor-to-be
//!                       │        (`spare_handlers` of them kept idle)
//!                       │  per call (at most max_servers at once; the
//!                       │  rest queue): accept, greeting, call socket to
//!                       │  an idle handler's monitor, then its executor;
//!                       │  fork the next spare
//!                       └─ once, after the first call: wait for the setup
//!                          run's exit, then MADV_COLLAPSE the heap
//! ```
//!
//! The server never runs the script's code after initialisation: no exit
//! handlers, no destructors (it leaves with `_exit`).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::monitor;
use crate::protocol::{self, SetupEnv};
use crate::sys::{self, Forked, log};

/// How a server behaves. The names follow the Perl module's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Calls served at once; further callers queue. `None`: no limit.
    pub max_servers: Option<usize>,
    /// Quit after this long with no call running and none arriving.
    /// `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Quit (at the next call, which then starts a fresh server) when the
    /// program's own executable has changed since the server started.
    pub autoreload: bool,
    /// More files whose change means the same.
    pub autoreload_extra: Vec<PathBuf>,
    /// Quit after this many failures to accept or fork.
    pub max_errors: u32,
    /// Call handlers (a monitor and its executor, forked in advance) kept
    /// waiting for the next call, so that no fork is on a call's critical
    /// path. At least 1.
    pub spare_handlers: usize,
    /// Syslog facility name ("user", "daemon", "local0" ...) for the
    /// server's and monitors' messages; `None` discards them.
    pub log_facility: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_servers: Some(4),
            idle_timeout: Some(Duration::from_secs(1_000_000)),
            autoreload: true,
            autoreload_extra: Vec::new(),
            max_errors: 100,
            spare_handlers: 1,
            log_facility: Some("user".into()),
        }
    }
}

/// What one call of the script gets: the caller's arguments and
/// environment. File descriptors 0, 1 and 2 are already the caller's, and
/// the process environment is already replaced by `env`.
///
/// `std::env::args()` cannot be changed after start-up: in an executor it
/// still shows the arguments of the run that started the server. Use
/// [`Invocation::args`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The caller's arguments: under prefork-interp, those after the
    /// script; run standalone, those after the program name.
    pub args: Vec<OsString>,
    /// The caller's environment, in order.
    pub env: Vec<(OsString, OsString)>,
    /// `true` in an executor forked by a server, `false` standalone.
    pub served: bool,
}

impl Invocation {
    fn standalone() -> Self {
        Invocation {
            args: std::env::args_os().skip(1).collect(),
            env: std::env::vars_os().collect(),
            served: false,
        }
    }
}

/// Ends the script's initialisation. Standalone (no `PREFORK_INTERP`):
/// returns at once. Under prefork-interp: becomes the server and returns
/// only in executors, once per call.
///
/// Fails (in the setup run, whose stderr the caller sees) if other
/// threads are running, `PREFORK_INTERP` is malformed, or an option is.
pub fn initialisation_complete(options: Options) -> io::Result<Invocation> {
    let Some(value) = std::env::var_os(protocol::ENV_VAR) else {
        return Ok(Invocation::standalone());
    };
    let threads = sys::thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "prefork-interp: {threads} threads are running; initialisation_complete must be \
             called before any other thread starts (a fork would lose them)"
        )));
    }
    // Children of the script must not mistake themselves for a setup run.
    // SAFETY: single-threaded, checked just above.
    unsafe { std::env::remove_var(protocol::ENV_VAR) };
    let setup = protocol::decode_setup_env(value.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("prefork-interp: {e}")))?;
    for fd in [setup.listen, setup.call, setup.watch_err, setup.watch_in] {
        if fd < 3 || !sys::fd_is_open(fd) {
            return Err(io::Error::other(format!(
                "prefork-interp: {} names fd {fd}, which is not open",
                protocol::ENV_VAR
            )));
        }
    }
    if options.max_servers == Some(0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "prefork-interp: max_servers must be at least 1 (None for no limit)",
        ));
    }
    if options.spare_handlers == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "prefork-interp: spare_handlers must be at least 1",
        ));
    }
    let facility = match &options.log_facility {
        None => None,
        Some(name) => Some(log::facility(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("prefork-interp: unknown syslog facility {name:?}"),
            )
        })?),
    };
    let reload = ReloadCheck::new(&options, &setup)?;

    // Whatever the script printed must reach the caller's stderr now, not
    // be copied into every executor and printed again.
    io::stdout().flush()?;
    if let Some(facility) = facility {
        let ident = std::env::args_os()
            .next()
            .map(|a| {
                Path::new(&a)
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_else(|| "prefork-interp".into());
        log::open(&ident, facility);
    }
    // The setup run ends here: the client is waiting for it. (The server
    // keeps a pidfd of it, to know when its pages are the server's alone.)
    let setup_run = sys::pidfd_open(nix::unistd::getpid()).ok();
    if let Forked::Parent(_) = sys::fork()? {
        sys::exit_now(0);
    }
    let _ = nix::unistd::setsid();
    // A caller that ignored SIGCHLD would make every wait fail.
    sys::default_signal(libc::SIGCHLD);

    // From here on we are the daemon: the script's own code must never run
    // here, so a failure is logged and ends this process (the waiting
    // client then sees no greeting and says so).
    let mut server = match Server::new(&setup, &options, reload, setup_run).and_then(|s| {
        sys::null_stdio()?;
        Ok(s)
    }) {
        Ok(server) => server,
        Err(e) => {
            log::error(&format!("cannot start the server: {e}"));
            sys::exit_now(1)
        }
    };
    // SAFETY: the fd is the first call's socket, ours alone from here on.
    let mut pending = Some(unsafe { OwnedFd::from_raw_fd(setup.call) });
    // Only a client that said it reads greeting xdata is offered our
    // extensions, and only those it speaks (chiark-utils' client misreads
    // any non-empty xdata).
    let offered: Vec<&str> = protocol::OUR_CAPS
        .into_iter()
        .filter(|cap| setup.client_caps.iter().any(|c| c == cap))
        .collect();
    loop {
        // Hand the call to an idle handler first (forking one only if
        // none is waiting), then make up the spares, off its critical path.
        if let Some(call) = pending.take() {
            if server.idle.is_empty()
                && let Spawned::Child(control, handover) = server.spawn_handler()
            {
                drop((call, server));
                return Ok(monitor::run(control, handover));
            }
            server.hand_over(call, &offered);
            if let Some(setup_run) = server.setup_run.take() {
                // Once: see sys::collapse_into_huge_pages. (Pages still
                // shared with the setup run would be split again by our
                // own writes.)
                sys::wait_for_exit(setup_run);
                let collapsed = sys::collapse_into_huge_pages();
                log::info(&format!("{} MB of heap in huge pages", collapsed >> 20));
            }
        }
        while server.idle.len() < server.spare {
            match server.spawn_handler() {
                Spawned::Child(control, handover) => {
                    drop(server);
                    return Ok(monitor::run(control, handover));
                }
                Spawned::Handler => {}
                Spawned::Failed => break,
            }
        }
        pending = Some(server.next_call());
    }
}

/// What [`Server::spawn_handler`] made of this process.
enum Spawned {
    /// We are the new handler's monitor: its ends of the control and
    /// hand-over sockets.
    Child(UnixStream, UnixStream),
    /// We are the server, with one more idle handler.
    Handler,
    /// We are the server; the fork failed (logged).
    Failed,
}

/// An idle call handler (a monitor, and its executor-to-be) as the server
/// sees it: a pid and the socket to hand it a call on.
struct Handler {
    pid: i32,
    control: UnixStream,
    handover: UnixStream,
}

/// Files whose change since the server started means "quit, a fresh server
/// is needed". Checked when a call arrives, before it is served.
struct ReloadCheck {
    files: Vec<PathBuf>,
    started: (i64, i64),
}

impl ReloadCheck {
    fn new(options: &Options, setup: &SetupEnv) -> io::Result<Self> {
        let mut files = Vec::new();
        if options.autoreload {
            files.push(std::env::current_exe()?);
        }
        files.extend(options.autoreload_extra.iter().cloned());
        Ok(ReloadCheck {
            files,
            started: (setup.started_secs, setup.started_nsecs.into()),
        })
    }

    /// The first file that changed (or vanished), if any.
    fn changed(&self) -> Option<&Path> {
        self.files
            .iter()
            .map(PathBuf::as_path)
            .find(|f| match std::fs::metadata(f) {
                Ok(m) => (m.mtime(), m.mtime_nsec()) > self.started,
                Err(_) => true,
            })
    }
}

const LISTEN: Token = Token(usize::MAX);
const WATCH_ERR: Token = Token(usize::MAX - 1);

struct Server {
    listener: UnixListener,
    watch_err: File,
    _watch_in: OwnedFd,
    poll: Poll,
    events: Events,
    /// pid -> pidfd of each monitor, idle or busy.
    monitors: HashMap<i32, OwnedFd>,
    /// The idle ones, waiting for a call.
    idle: Vec<Handler>,
    /// A pidfd of the setup run (our parent), until it has been waited for.
    setup_run: Option<OwnedFd>,
    spare: usize,
    /// Calls handed over so far.
    served: u64,
    max_servers: Option<usize>,
    idle_timeout: Option<Duration>,
    idle_since: Instant,
    /// The listening socket may hold calls we have not accepted yet
    /// (mio is edge-triggered: we must remember it ourselves).
    accept_pending: bool,
    reload: ReloadCheck,
    errors: u32,
    max_errors: u32,
}

impl Server {
    fn new(
        setup: &SetupEnv,
        options: &Options,
        reload: ReloadCheck,
        setup_run: Option<OwnedFd>,
    ) -> io::Result<Self> {
        let own = |fd: RawFd| {
            // SAFETY: the client passed us these fds for our exclusive use.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        let listener = UnixListener::from(own(setup.listen));
        let watch_err = File::from(own(setup.watch_err));
        let watch_in = own(setup.watch_in);
        for fd in [
            listener.as_raw_fd(),
            watch_err.as_raw_fd(),
            watch_in.as_raw_fd(),
        ] {
            sys::set_cloexec(fd)?;
        }
        sys::set_nonblocking(listener.as_raw_fd(), true)?;
        sys::set_nonblocking(watch_err.as_raw_fd(), true)?;
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            LISTEN,
            Interest::READABLE,
        )?;
        poll.registry().register(
            &mut SourceFd(&watch_err.as_raw_fd()),
            WATCH_ERR,
            Interest::READABLE,
        )?;
        Ok(Server {
            listener,
            watch_err,
            _watch_in: watch_in,
            poll,
            events: Events::with_capacity(64),
            monitors: HashMap::new(),
            idle: Vec::new(),
            spare: options.spare_handlers,
            setup_run,
            served: 0,
            max_servers: options.max_servers,
            idle_timeout: options.idle_timeout,
            idle_since: Instant::now(),
            accept_pending: true,
            reload,
            errors: 0,
            max_errors: options.max_errors,
        })
    }

    fn quit(&self, why: &str) -> ! {
        log::info(&format!("server quitting: {why}"));
        sys::exit_now(0)
    }

    fn error(&mut self, msg: &str) {
        log::error(msg);
        self.errors += 1;
        if self.errors > self.max_errors {
            self.quit(&format!("more than {} errors", self.max_errors));
        }
    }

    /// Forks a call handler (see `monitor`). In the child, the caller
    /// must drop the server (closing every fd it holds, other handlers'
    /// control sockets included) and run the monitor.
    fn spawn_handler(&mut self) -> Spawned {
        let pairs = UnixStream::pair().and_then(|c| Ok((c, UnixStream::pair()?)));
        let ((control, control_theirs), (handover, handover_theirs)) = match pairs {
            Ok(pairs) => pairs,
            Err(e) => {
                self.error(&format!("cannot make a socket pair: {e}"));
                return Spawned::Failed;
            }
        };
        match sys::fork() {
            Ok(Forked::Child) => {
                drop((control, handover));
                Spawned::Child(control_theirs, handover_theirs)
            }
            Ok(Forked::Parent(pid)) => {
                drop((control_theirs, handover_theirs));
                if self.add_monitor(pid) {
                    self.idle.push(Handler {
                        pid: pid.as_raw(),
                        control,
                        handover,
                    });
                }
                Spawned::Handler
            }
            Err(e) => {
                self.error(&format!("cannot fork a call handler: {e}"));
                Spawned::Failed
            }
        }
    }

    /// Greets the caller and hands the call to an idle handler. Without
    /// one (a fork failed) the call is dropped: its client says so.
    fn hand_over(&mut self, call: OwnedFd, offered: &[&str]) {
        let xdata = protocol::encode_greeting_xdata(offered, self.served, self.busy() as u64);
        if let Err(e) = protocol::io::send_all(&call, &protocol::encode_greeting(&xdata)) {
            log::info(&format!("caller went away before its greeting: {e}"));
            return;
        }
        while let Some(handler) = self.idle.pop() {
            // The monitor first: an executor handed the call first could
            // finish it before the monitor knew it had one, and look to it
            // like an executor that died idle.
            let sent = protocol::io::send_fd(&handler.control, 0, &call)
                .and_then(|()| protocol::io::send_fd(&handler.handover, 0, &call));
            match sent {
                Ok(()) => {
                    self.served += 1;
                    return;
                }
                // It died idle; its pidfd will say so.
                Err(e) => log::error(&format!("call handler {}: {e}", handler.pid)),
            }
        }
        self.error("no call handler to take a call");
    }

    /// Handlers serving a call.
    fn busy(&self) -> usize {
        self.monitors.len() - self.idle.len()
    }

    /// Watches a new monitor's pidfd; false if we cannot (then it has been
    /// reaped already).
    fn add_monitor(&mut self, pid: sys::Pid) -> bool {
        match sys::pidfd_open(pid) {
            Ok(pidfd) => {
                let token = Token(pid.as_raw() as usize);
                match self.poll.registry().register(
                    &mut SourceFd(&pidfd.as_raw_fd()),
                    token,
                    Interest::READABLE,
                ) {
                    Ok(()) => {
                        self.monitors.insert(pid.as_raw(), pidfd);
                        return true;
                    }
                    Err(e) => self.error(&format!("cannot watch monitor {pid}: {e}")),
                }
            }
            Err(e) => self.error(&format!("cannot open a pidfd for monitor {pid}: {e}")),
        }
        // Unwatchable: it must not serve. Its control socket is gone, so
        // it leaves at once; wait for that.
        self.reap_blocking(pid);
        false
    }

    /// Without a pidfd we cannot watch it: wait for it instead, which
    /// keeps the concurrency limit true.
    fn reap_blocking(&mut self, pid: sys::Pid) {
        if let Ok(Some(status)) = sys::wait_status(pid, 0) {
            self.note_monitor_exit(pid.as_raw(), status);
        }
    }

    fn note_monitor_exit(&mut self, pid: i32, status: i32) {
        if status != 0 {
            self.error(&format!("monitor {pid} {}", sys::describe_status(status)));
        }
    }

    fn reap(&mut self, pid: i32) {
        let Some(pidfd) = self.monitors.remove(&pid) else {
            return;
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&pidfd.as_raw_fd()));
        drop(pidfd);
        self.idle.retain(|h| h.pid != pid);
        if let Ok(Some(status)) = sys::wait_status(sys::Pid::from_raw(pid), 0) {
            self.note_monitor_exit(pid, status);
        }
        if self.busy() == 0 {
            self.idle_since = Instant::now();
        }
    }

    fn at_limit(&self) -> bool {
        self.max_servers.is_some_and(|max| self.busy() >= max)
    }

    /// Waits for the next call to serve, and handles everything else
    /// meanwhile. Quits the process when the server's life is over.
    fn next_call(&mut self) -> OwnedFd {
        loop {
            if self.accept_pending && !self.at_limit() {
                match self.listener.accept() {
                    Ok((conn, _)) => {
                        if let Some(refusal) = other_user(conn.as_raw_fd()) {
                            // Another user reached our socket (a run
                            // directory opened up by hand): they get
                            // nothing, and it is worth a log line.
                            log::error(&refusal);
                            continue;
                        }
                        self.idle_since = Instant::now();
                        if let Some(file) = self.reload.changed() {
                            // Dropping the call makes its client start a
                            // fresh server.
                            self.quit(&format!("{} changed", file.display()));
                        }
                        return OwnedFd::from(conn);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.accept_pending = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => self.error(&format!("accept failed: {e}")),
                }
                continue;
            }
            let timeout = match self.idle_timeout {
                Some(idle) if self.busy() == 0 => {
                    let left = idle.saturating_sub(self.idle_since.elapsed());
                    if left.is_zero() {
                        self.quit("idle timeout");
                    }
                    Some(left)
                }
                _ => None,
            };
            if let Err(e) = self.poll.poll(&mut self.events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.error(&format!("poll failed: {e}"));
                }
                continue;
            }
            let tokens: Vec<Token> = self.events.iter().map(|e| e.token()).collect();
            for token in tokens {
                match token {
                    LISTEN => self.accept_pending = true,
                    WATCH_ERR => self.check_watcher(),
                    Token(pid) => self.reap(pid as i32),
                }
            }
        }
    }

    /// The watcher says nothing unless something is wrong; EOF means the
    /// socket path changed or the watcher died. Either way: quit.
    fn check_watcher(&mut self) {
        let mut buf = [0u8; 1024];
        loop {
            match self.watch_err.read(&mut buf) {
                Ok(0) => self.quit("socket replaced or removed (watcher exited)"),
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    self.quit(&format!("watcher reported: {}", text.trim_end()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.quit(&format!("cannot read from the watcher: {e}")),
            }
        }
    }
}

/// Why a call on `conn` must be refused: its caller is not our user.
fn other_user(conn: RawFd) -> Option<String> {
    let ours = nix::unistd::getuid().as_raw();
    match sys::peer_credentials(conn) {
        Ok((uid, _)) if uid == ours => None,
        Ok((uid, pid)) => Some(format!(
            "refused a call from uid {uid} (pid {pid}): this server is uid {ours}'s"
        )),
        Err(e) => Some(format!("refused a call whose caller is unknown: {e}")),
    }
}
