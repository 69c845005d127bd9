//! The server: a daemon copy of the initialised script that accepts calls
//! and hands each to its monitor, which runs it in an executor forked in
//! advance.
//!
//! ```text
//! server  loop: poll (level-triggered) on WATCHE (or, with capability
//!   │           `watch`, nothing of the watcher's), the inotify instance
//!   │           (reload files; the socket's directory), the monitor's
//!   │           control socket and pidfd, and LISTEN while under
//!   │           max_servers
//!   │     WATCHE EOF/text, or the socket path removed or replaced: quit
//!   │     (without inotify the path is checked every 5 s, and the
//!   │     files at every call: `degraded`); idle timeout: quit;
//!   │     a watched file changed: quit at the next call (dropping it
//!   │     makes its client start a fresh server)
//!   ├─fork─> the monitor (once; again if it dies), which forks every
//!   │        executor (see `monitor`)
//!   │  per call: accept, greeting, call socket to the monitor;
//!   │  'd' back from the monitor when it has ended (the `running` count;
//!   │  'h' for one that ended before a request: it leaves the idle time be)
//!   └─ once, first: wait for the setup run's exit, then collapse the
//!      heap into huge pages, which the monitor then shares
//! ```
//!
//! The server forks nothing per call, and never runs the script's code
//! after initialisation: no exit handlers, no destructors (it leaves with
//! `_exit`).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{MsgFlags, recv};

use super::huge_pages;
use super::init_env;
use super::invocation::Invocation;
use super::log;
use super::monitor;
use super::options::Options;
use super::reload::Reload;
use super::title;
use crate::protocol::{self, SetupEnv};
use crate::sys::{self, Forked, Pid, Pidfd};

/// The monitor as the server sees it.
struct MonitorLink {
    pid: Pid,
    pidfd: Pidfd,
    /// Calls go to it here; 'd' comes back.
    control: UnixStream,
}

/// How the server learns that its socket path was removed or replaced
/// (by `--kill`, `-f`, a stale-socket recovery, an eviction).
enum SocketWatch {
    /// The client's watcher (chiark-utils' client; ours without `watch`):
    /// EOF or text on WATCHE.
    Watcher { watch_err: File, _watch_in: OwnedFd },
    /// Our own (capability `watch`): the socket's directory in the
    /// reload's inotify instance, or without one a look every
    /// [`SOCKET_CHECK_INTERVAL`].
    Own(OwnSocketWatch),
}

struct OwnSocketWatch {
    path: PathBuf,
    /// The socket file's identity at the start; `None` if it had already
    /// gone (the first call is served, then the server quits).
    inode: Option<(u64, u64)>,
    /// When to look next, without inotify.
    next_check: Option<Instant>,
}

impl OwnSocketWatch {
    fn still_there(&self) -> bool {
        self.inode
            .is_some_and(|inode| sys::still_names(&self.path, inode))
    }
}

/// How often a server without inotify looks at its socket path.
const SOCKET_CHECK_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) struct Server {
    listener: UnixListener,
    socket_watch: SocketWatch,
    /// What the server does without, said in greetings (`degraded`).
    degraded: Option<String>,
    /// The second of its start (PREFORK_INTERP's SECS): a quit line dated
    /// since is someone's word on why its socket went.
    started_secs: i64,
    /// `None` until forked, and after it has died.
    monitor: Option<MonitorLink>,
    /// A pidfd of the setup run (our parent), until it has been waited for.
    setup_run: Option<Pidfd>,
    /// The extensions offered in greetings: those the creating client
    /// speaks (chiark-utils' client misreads any non-empty xdata).
    offered: Vec<&'static str>,
    /// Its namespaces and cgroups, for greetings: a caller in another
    /// world goes to a server of its own.
    world: String,
    /// Which of fds 0, 1, 2 were terminals in initialisation (bit N, fd
    /// N), for greetings: a caller whose differ goes to a server of its
    /// own, initialised as its direct run would be.
    terminals: u8,
    spare: usize,
    interrupt_grace: Option<Duration>,
    /// Calls handed over so far.
    served: u64,
    /// Calls handed to the monitor that it has not said are over.
    running: u64,
    max_servers: Option<usize>,
    idle_timeout: Option<Duration>,
    /// When the last call ended (or the server started): calls dropped
    /// before a request (`--list`'s) do not count. The idle timeout runs
    /// from here, and greetings say how long ago it was.
    idle_since: Instant,
    reload: Reload,
    errors: u32,
    max_errors: u32,
}

impl Server {
    /// Takes over the fds `setup` names (all but the first call's).
    ///
    /// # Safety
    /// The fds in `setup` are open and ours alone, as the client handed
    /// them to the setup run.
    pub(crate) unsafe fn new(
        setup: &SetupEnv,
        options: &Options,
        mut reload: Reload,
        setup_run: Option<Pidfd>,
    ) -> io::Result<Self> {
        let own = |fd: RawFd| {
            // SAFETY: the caller vouches for these fds.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        let listener = UnixListener::from(own(setup.listen));
        let watch_err = File::from(own(setup.watch_err));
        let watch_in = own(setup.watch_in);
        sys::set_cloexec(listener.as_fd(), true)?;
        sys::set_nonblocking(listener.as_fd())?;
        let offered: Vec<&'static str> = protocol::OUR_CAPS
            .into_iter()
            .filter(|cap| setup.client_caps.iter().any(|c| c == cap))
            .collect();
        let (socket_watch, degraded) = if offered.contains(&protocol::CAP_WATCH) {
            // No watcher will hold the other ends: the pipes mean nothing.
            drop((watch_err, watch_in));
            let (own, degraded) = watch_own_socket(&listener, setup, &mut reload);
            (SocketWatch::Own(own), degraded)
        } else {
            for fd in [watch_err.as_fd(), watch_in.as_fd()] {
                sys::set_cloexec(fd, true)?;
            }
            sys::set_nonblocking(watch_err.as_fd())?;
            let degraded = files_degraded(&reload);
            let watcher = SocketWatch::Watcher {
                watch_err,
                _watch_in: watch_in,
            };
            (watcher, degraded)
        };
        if let Some(text) = &degraded {
            log::error(&format!("degraded: {text}"));
        }
        // A folded identity's server idles out sooner (`pfi-idle`).
        let idle_limit = setup.idle_limit.map(Duration::from_secs);
        let idle_timeout = options.idle_timeout.into_iter().chain(idle_limit).min();
        Ok(Server {
            listener,
            socket_watch,
            degraded,
            started_secs: setup.started_secs,
            monitor: None,
            setup_run,
            offered,
            world: sys::procfs::own_world(),
            // (Still the setup run's fds 0, 1, 2: not yet /dev/null.)
            terminals: sys::stdio_terminals(),
            spare: options.spare_handlers,
            interrupt_grace: options.interrupt_grace,
            served: 0,
            running: 0,
            max_servers: options.max_servers,
            idle_timeout,
            idle_since: Instant::now(),
            reload,
            errors: 0,
            max_errors: options.max_errors,
        })
    }

    /// Serves calls, the first one being `first_call`, for the rest of
    /// the server's life. Returns only in an executor, into the script.
    pub(crate) fn run(mut self, first_call: OwnedFd) -> Invocation {
        let mut pending = Some(first_call);
        if let Some(setup_run) = self.setup_run.take() {
            // Before the monitor's fork, so that the monitor shares the
            // huge pages and every executor it forks copies one entry
            // per 2 MB. Once the setup run has gone: pages still shared
            // with it would not collapse.
            setup_run.wait_for_exit();
            let started = Instant::now();
            let collapsed = huge_pages::collapse();
            log::info(&format!(
                "{} MB of heap in huge pages ({:.1} ms)",
                collapsed >> 20,
                started.elapsed().as_secs_f64() * 1000.0
            ));
        }
        loop {
            if self.monitor.is_none()
                && let Some(control) = self.spawn_monitor()
            {
                let (spare, grace) = (self.spare, self.interrupt_grace);
                drop((pending, self));
                return monitor::run(control, spare, grace);
            }
            if let Some(call) = pending.take() {
                self.hand_over(call);
            }
            pending = self.next_call();
        }
    }

    fn quit(&self, why: &str) -> ! {
        log::info(&format!("server quitting: {why}"));
        self.record_quit(why, false);
        sys::exit_now(0)
    }

    /// Quits because the socket path went: whoever removed it may have
    /// said why in the lock file already (an eviction does), and that
    /// word stands.
    fn quit_socket_gone(&self, why: &str) -> ! {
        log::info(&format!("server quitting: {why}"));
        self.record_quit(why, true);
        sys::exit_now(0)
    }

    /// Appends the `quit` line to the identity's lock file, for `--list`
    /// to show as the reason of the next server's start; with
    /// `unless_said`, not if a quit line dated since our start is there.
    /// Best effort: a lock file removed (`--kill`) or a socket path not
    /// ours is skipped.
    fn record_quit(&self, why: &str, unless_said: bool) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let Some(lock) = self
            .listener
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().and_then(protocol::lock_path_for_socket))
        else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .append(true)
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(lock)
        {
            if unless_said && self.quit_said_since_start(&mut file) {
                return;
            }
            let _ = file.write_all(&protocol::encode_quit_line(now, why));
        }
    }

    /// Whether `lock`'s last quit line is dated at or after our start.
    fn quit_said_since_start(&self, lock: &mut File) -> bool {
        let mut text = Vec::new();
        if lock.read_to_end(&mut text).is_err() {
            return false;
        }
        protocol::decode_last_quit(&text)
            .is_some_and(|(secs, _)| i64::try_from(secs).is_ok_and(|s| s >= self.started_secs))
    }

    fn error(&mut self, msg: &str) {
        log::error(msg);
        self.errors += 1;
        if self.errors > self.max_errors {
            self.quit(&format!("more than {} errors", self.max_errors));
        }
    }

    /// Forks the monitor (see `monitor`). `Some` in the child, which
    /// must drop the server (closing every fd it holds) and run the
    /// monitor; `None` in the server, with a monitor unless that failed
    /// (logged).
    fn spawn_monitor(&mut self) -> Option<UnixStream> {
        let (control, theirs) = match UnixStream::pair() {
            Ok(pair) => pair,
            Err(e) => {
                self.error(&format!("cannot make a socket pair: {e}"));
                return None;
            }
        };
        // SAFETY: the server is single-threaded (checked at
        // initialisation, and it starts no threads).
        match unsafe { sys::fork() } {
            Ok(Forked::Child) => {
                drop(control);
                title::show(title::Role::Monitor);
                Some(theirs)
            }
            Ok(Forked::Parent(pid)) => {
                drop(theirs);
                match Pidfd::open(pid) {
                    Ok(pidfd) => {
                        self.monitor = Some(MonitorLink {
                            pid,
                            pidfd,
                            control,
                        })
                    }
                    Err(e) => {
                        // Unwatchable: it must not serve. Its control
                        // socket's EOF sends it away.
                        drop(control);
                        let _ = sys::wait_status(pid);
                        self.error(&format!("cannot open a pidfd for the monitor {pid}: {e}"));
                    }
                }
                None
            }
            Err(e) => {
                self.error(&format!("cannot fork the monitor: {e}"));
                None
            }
        }
    }

    /// Greets the caller and hands the call to the monitor. Without one
    /// (a fork failed, or it has just died) the call is dropped: its
    /// client says so.
    fn hand_over(&mut self, call: OwnedFd) {
        let idle = if self.running == 0 {
            self.idle_since.elapsed()
        } else {
            Duration::ZERO
        };
        let xdata = protocol::encode_greeting_xdata(
            &self.offered,
            Some(&self.world),
            init_env::dependency(),
            // (A Rust program has no interpreter reading its environment
            // before its own code runs.)
            None,
            Some(self.terminals),
            self.degraded.as_deref(),
            protocol::ServerCounters {
                served: self.served,
                running: self.running,
                idle_ms: idle.as_millis().try_into().unwrap_or(u64::MAX),
            },
        );
        if let Err(e) = protocol::io::send_all(&call, &protocol::encode_greeting(&xdata)) {
            log::info(&format!("caller went away before its greeting: {e}"));
            return;
        }
        let Some(monitor) = &self.monitor else {
            self.error("no monitor to take a call");
            return;
        };
        match protocol::io::send_fd(&monitor.control, protocol::FD_MESSAGE_BYTE, &call) {
            Ok(()) => {
                self.served += 1;
                self.running += 1;
            }
            // It has died; its pidfd will say so.
            Err(e) => log::error(&format!("monitor {}: {e}", monitor.pid)),
        }
    }

    /// Reads the monitor's 'd's (calls ended) and 'h's (calls dropped
    /// before a request). False if it has gone.
    fn hear_monitor(&mut self) -> bool {
        let Some(monitor) = &self.monitor else {
            return false;
        };
        let mut buf = [0u8; 256];
        loop {
            match recv(
                monitor.control.as_raw_fd(),
                &mut buf,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return false,
                Ok(n) => {
                    let count = |byte| buf[..n].iter().filter(|&&b| b == byte).count() as u64;
                    let ended = count(protocol::MONITOR_CALL_ENDED);
                    let dropped = count(protocol::MONITOR_CALL_DROPPED);
                    self.running = self.running.saturating_sub(ended + dropped);
                    // A listing, or a caller that went elsewhere, keeps
                    // no server alive.
                    if self.running == 0 && ended > 0 {
                        self.idle_since = Instant::now();
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return true,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
    }

    /// The monitor has gone: its calls in flight have ended (their clients
    /// saw EOF). The loop forks another.
    fn monitor_died(&mut self) {
        let Some(monitor) = self.monitor.take() else {
            return;
        };
        drop(monitor.control);
        let status = sys::wait_status(monitor.pid).unwrap_or(protocol::WaitStatus::exited(0));
        self.error(&format!(
            "monitor {} {}",
            monitor.pid,
            sys::describe_status(status)
        ));
        self.running = 0;
        self.idle_since = Instant::now();
    }

    fn at_limit(&self) -> bool {
        self.max_servers
            .is_some_and(|max| self.running >= max as u64)
    }

    /// How long poll may wait: until the idle timeout, while no call runs,
    /// or the next look at the socket path, without inotify. Quits if the
    /// idle timeout has come, or the socket has gone.
    fn poll_timeout(&mut self) -> PollTimeout {
        let idle_left = match self.idle_timeout {
            Some(idle) if self.running == 0 => {
                let left = idle.saturating_sub(self.idle_since.elapsed());
                if left.is_zero() {
                    self.quit("idle timeout");
                }
                Some(left)
            }
            _ => None,
        };
        let check_left = self.check_socket_if_due();
        idle_left
            .into_iter()
            .chain(check_left)
            .min()
            .map_or(PollTimeout::NONE, sys::poll_timeout)
    }

    /// Without inotify: looks at the socket path if it is time (quits if it
    /// has gone); how long until the next look.
    fn check_socket_if_due(&mut self) -> Option<Duration> {
        let SocketWatch::Own(own) = &mut self.socket_watch else {
            return None;
        };
        let next = own.next_check?;
        let now = Instant::now();
        if now < next {
            return Some(next - now);
        }
        own.next_check = Some(now + SOCKET_CHECK_INTERVAL);
        self.check_socket();
        Some(SOCKET_CHECK_INTERVAL)
    }

    /// Quits if our socket path has been removed or replaced.
    fn check_socket(&self) {
        if let SocketWatch::Own(own) = &self.socket_watch
            && !own.still_there()
        {
            self.quit_socket_gone("socket replaced or removed");
        }
    }

    /// Waits for the next call to serve, and handles everything else
    /// meanwhile. `None` when the monitor has died (the loop forks
    /// another first). Quits the process when the server's life is over.
    fn next_call(&mut self) -> Option<OwnedFd> {
        // (Its socket gone before it started: the first call was served.)
        self.check_socket();
        loop {
            let timeout = self.poll_timeout();
            let ready = match self.wait(timeout) {
                Ok(ready) => ready,
                Err(e) => {
                    self.error(&format!("poll failed: {e}"));
                    continue;
                }
            };
            if ready.watcher {
                self.check_watcher();
            }
            if ready.reload && self.reload.note_events() {
                self.check_socket();
            }
            // Before any accept: a greeting's `running` counts what the
            // monitor has said.
            if (ready.monitor_said && !self.hear_monitor()) || ready.monitor_exited {
                self.monitor_died();
                return None;
            }
            if ready.listener
                && let Some(call) = self.accept()
            {
                return Some(call);
            }
        }
    }

    /// One poll over everything the server waits for; says what is ready.
    fn wait(&self, timeout: PollTimeout) -> io::Result<Ready> {
        let mut fds = Vec::with_capacity(5);
        let mut add = |fd| {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            fds.len() - 1
        };
        let watcher_at = match &self.socket_watch {
            SocketWatch::Watcher { watch_err, .. } => Some(add(watch_err.as_fd())),
            SocketWatch::Own(_) => None,
        };
        let reload_at = self.reload.watch_fd().map(&mut add);
        // At the limit, calls wait in the listen queue.
        let listener_at = (!self.at_limit()).then(|| add(self.listener.as_fd()));
        let monitor_at = self
            .monitor
            .as_ref()
            .map(|m| (add(m.control.as_fd()), add(m.pidfd.as_fd())));
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Ready::default()),
            Err(e) => return Err(e.into()),
        }
        let is_ready = |at: Option<usize>| at.is_some_and(|i| fds[i].any().unwrap_or(false));
        Ok(Ready {
            watcher: is_ready(watcher_at),
            reload: is_ready(reload_at),
            listener: is_ready(listener_at),
            monitor_said: is_ready(monitor_at.map(|(control, _)| control)),
            monitor_exited: is_ready(monitor_at.map(|(_, pidfd)| pidfd)),
        })
    }

    /// Accepts a call, if one is there and may be served.
    fn accept(&mut self) -> Option<OwnedFd> {
        match self.listener.accept() {
            Ok((conn, _)) => {
                if let Some(refusal) = other_user(&conn) {
                    // Another user reached our socket (a run directory
                    // opened up by hand): they get nothing, and a log line.
                    log::error(&refusal);
                    return None;
                }
                if let Some(file) = self.reload.changed() {
                    // Dropping the call makes its client start a fresh
                    // server.
                    let why = format!("{} changed", file.display());
                    self.quit(&why);
                }
                Some(OwnedFd::from(conn))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                None
            }
            Err(e) => {
                self.error(&format!("accept failed: {e}"));
                None
            }
        }
    }

    /// The watcher says nothing unless something is wrong; EOF means the
    /// socket path changed or the watcher died. Either way: quit.
    fn check_watcher(&mut self) {
        let SocketWatch::Watcher { watch_err, .. } = &mut self.socket_watch else {
            return;
        };
        let mut buf = [0u8; 1024];
        loop {
            match watch_err.read(&mut buf) {
                Ok(0) => self.quit_socket_gone("socket replaced or removed (watcher exited)"),
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    self.quit_socket_gone(&format!("watcher reported: {}", text.trim_end()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.quit(&format!("cannot read from the watcher: {e}")),
            }
        }
    }
}

/// Sets up the server's own watch on its socket path (capability
/// `watch`); says what it does without, if inotify fails it.
fn watch_own_socket(
    listener: &UnixListener,
    setup: &SetupEnv,
    reload: &mut Reload,
) -> (OwnSocketWatch, Option<String>) {
    let path = listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(PathBuf::from))
        .unwrap_or_default();
    let started = (setup.started_secs, i64::from(setup.started_nsecs));
    // The file at the path must be the one our client made: same mtime.
    let inode = std::fs::symlink_metadata(&path)
        .ok()
        .filter(|m| (m.mtime(), m.mtime_nsec()) == started)
        .map(|m| (m.dev(), m.ino()));
    let mut own = OwnSocketWatch {
        path,
        inode,
        next_check: None,
    };
    let degraded = match reload.watch_socket(&own.path) {
        Ok(()) => files_degraded(reload),
        Err(e) => {
            // (An instance that cannot watch the directory is given up
            // too, so that what the line says is so.)
            reload.give_up_inotify(e);
            own.next_check = Some(Instant::now() + SOCKET_CHECK_INTERVAL);
            Some(format!(
                "no inotify ({}): socket path checked every {} s, files at every call",
                e.desc(),
                SOCKET_CHECK_INTERVAL.as_secs()
            ))
        }
    };
    (own, degraded)
}

/// What the reload watch does without, if anything.
fn files_degraded(reload: &Reload) -> Option<String> {
    if let Some(e) = reload.without_inotify() {
        return Some(format!(
            "no inotify ({}): files checked at every call",
            e.desc()
        ));
    }
    reload.unwatched_file().map(|(file, e)| {
        format!(
            "cannot watch {} ({}): files checked at every call",
            file.display(),
            e.desc()
        )
    })
}

/// What one poll found ready.
#[derive(Default)]
struct Ready {
    watcher: bool,
    reload: bool,
    listener: bool,
    /// Bytes (or EOF) on the monitor's control socket.
    monitor_said: bool,
    monitor_exited: bool,
}

/// Why a call on `conn` must be refused: its caller is not our user.
fn other_user(conn: &UnixStream) -> Option<String> {
    let ours = nix::unistd::getuid().as_raw();
    match sys::peer_credentials(conn) {
        Ok((uid, _)) if uid == ours => None,
        Ok((uid, pid)) => Some(format!(
            "refused a call from uid {uid} (pid {pid}): this server is uid {ours}'s"
        )),
        Err(e) => Some(format!("refused a call whose caller is unknown: {e}")),
    }
}
