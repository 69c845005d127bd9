//! The server: a daemon copy of the initialised script that accepts calls
//! and hands each to a call handler forked in advance.
//!
//! ```text
//! server  loop: poll (level-triggered) on WATCHE, the reload watch,
//!   │           the monitors' pidfds, and LISTEN while under max_servers
//!   │     WATCHE EOF/text: quit; idle timeout: quit;
//!   │     a watched file changed: quit at the next call (dropping it
//!   │     makes its client start a fresh server)
//!   ├─fork─> call handler: monitor + executor-to-be (`spare_handlers` of
//!   │        them kept idle)
//!   │  per call: accept, greeting, call socket to an idle handler's
//!   │  monitor, then to its executor; fork the next spare
//!   └─ once, after the first call: wait for the setup run's exit, then
//!      collapse the heap into huge pages
//! ```
//!
//! The server never runs the script's code after initialisation: no exit
//! handlers, no destructors (it leaves with `_exit`).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::huge_pages;
use super::invocation::Invocation;
use super::log;
use super::monitor;
use super::options::Options;
use super::reload::Reload;
use crate::protocol::{self, SetupEnv};
use crate::sys::{self, Forked, Pidfd};

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
/// sees it: a pid and the sockets to hand it a call on.
struct Handler {
    pid: i32,
    control: UnixStream,
    handover: UnixStream,
}

pub(crate) struct Server {
    listener: UnixListener,
    watch_err: File,
    _watch_in: OwnedFd,
    /// pid -> pidfd of each monitor, idle or busy.
    monitors: HashMap<i32, Pidfd>,
    /// The idle ones, waiting for a call.
    idle: Vec<Handler>,
    /// A pidfd of the setup run (our parent), until it has been waited for.
    setup_run: Option<Pidfd>,
    /// The extensions offered in greetings: those the creating client
    /// speaks (chiark-utils' client misreads any non-empty xdata).
    offered: Vec<&'static str>,
    spare: usize,
    /// Calls handed over so far.
    served: u64,
    max_servers: Option<usize>,
    idle_timeout: Option<Duration>,
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
        reload: Reload,
        setup_run: Option<Pidfd>,
    ) -> io::Result<Self> {
        let own = |fd: RawFd| {
            // SAFETY: the caller vouches for these fds.
            unsafe { OwnedFd::from_raw_fd(fd) }
        };
        let listener = UnixListener::from(own(setup.listen));
        let watch_err = File::from(own(setup.watch_err));
        let watch_in = own(setup.watch_in);
        for fd in [listener.as_fd(), watch_err.as_fd(), watch_in.as_fd()] {
            sys::set_cloexec(fd, true)?;
        }
        sys::set_nonblocking(listener.as_fd())?;
        sys::set_nonblocking(watch_err.as_fd())?;
        let offered = protocol::OUR_CAPS
            .into_iter()
            .filter(|cap| setup.client_caps.iter().any(|c| c == cap))
            .collect();
        Ok(Server {
            listener,
            watch_err,
            _watch_in: watch_in,
            monitors: HashMap::new(),
            idle: Vec::new(),
            setup_run,
            offered,
            spare: options.spare_handlers,
            served: 0,
            max_servers: options.max_servers,
            idle_timeout: options.idle_timeout,
            idle_since: Instant::now(),
            reload,
            errors: 0,
            max_errors: options.max_errors,
        })
    }

    /// Serves calls, the first one being `first_call`, for the rest of
    /// the server's life. Returns only in an executor, into the script.
    pub(crate) fn run(mut self, first_call: OwnedFd) -> Invocation {
        let mut call = first_call;
        loop {
            // Hand the call to an idle handler first (forking one only if
            // none is waiting), then make up the spares, off its critical
            // path.
            if self.idle.is_empty()
                && let Spawned::Child(control, handover) = self.spawn_handler()
            {
                drop((call, self));
                return monitor::run(control, handover);
            }
            self.hand_over(call);
            if let Some(setup_run) = self.setup_run.take() {
                // Once. (Pages still shared with the setup run would be
                // split again by our own writes.)
                setup_run.wait_for_exit();
                let collapsed = huge_pages::collapse();
                log::info(&format!("{} MB of heap in huge pages", collapsed >> 20));
            }
            while self.idle.len() < self.spare {
                match self.spawn_handler() {
                    Spawned::Child(control, handover) => {
                        drop(self);
                        return monitor::run(control, handover);
                    }
                    Spawned::Handler => {}
                    Spawned::Failed => break,
                }
            }
            call = self.next_call();
        }
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
        // SAFETY: the server is single-threaded (checked at
        // initialisation, and it starts no threads).
        match unsafe { sys::fork() } {
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
    fn hand_over(&mut self, call: OwnedFd) {
        let xdata = protocol::encode_greeting_xdata(&self.offered, self.served, self.busy() as u64);
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
        match Pidfd::open(pid) {
            Ok(pidfd) => {
                self.monitors.insert(pid.as_raw(), pidfd);
                true
            }
            Err(e) => {
                self.error(&format!("cannot open a pidfd for monitor {pid}: {e}"));
                // Unwatchable: it must not serve. Its control socket is
                // gone, so it leaves at once; waiting for it keeps the
                // concurrency limit true.
                if let Ok(status) = sys::wait_status(pid) {
                    self.note_monitor_exit(pid.as_raw(), status);
                }
                false
            }
        }
    }

    fn note_monitor_exit(&mut self, pid: i32, status: i32) {
        if status != 0 {
            self.error(&format!("monitor {pid} {}", sys::describe_status(status)));
        }
    }

    fn reap(&mut self, pid: i32) {
        if self.monitors.remove(&pid).is_none() {
            return;
        }
        self.idle.retain(|h| h.pid != pid);
        if let Ok(status) = sys::wait_status(sys::Pid::from_raw(pid)) {
            self.note_monitor_exit(pid, status);
        }
        if self.busy() == 0 {
            self.idle_since = Instant::now();
        }
    }

    fn at_limit(&self) -> bool {
        self.max_servers.is_some_and(|max| self.busy() >= max)
    }

    /// How long poll may wait: until the idle timeout, while no call runs.
    /// Quits if that time has come.
    fn poll_timeout(&self) -> PollTimeout {
        match self.idle_timeout {
            Some(idle) if self.busy() == 0 => {
                let left = idle.saturating_sub(self.idle_since.elapsed());
                if left.is_zero() {
                    self.quit("idle timeout");
                }
                // Rounded up: poll must not wake just before the time.
                let millis = left.as_nanos().div_ceil(1_000_000);
                PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
            }
            _ => PollTimeout::NONE,
        }
    }

    /// Waits for the next call to serve, and handles everything else
    /// meanwhile. Quits the process when the server's life is over.
    fn next_call(&mut self) -> OwnedFd {
        loop {
            let timeout = self.poll_timeout();
            let (ready, exited) = match self.wait(timeout) {
                Ok(woken) => woken,
                Err(e) => {
                    self.error(&format!("poll failed: {e}"));
                    continue;
                }
            };
            if ready.watcher {
                self.check_watcher();
            }
            if ready.reload {
                self.reload.note_events();
            }
            for pid in exited {
                self.reap(pid);
            }
            if ready.listener
                && let Some(call) = self.accept()
            {
                return call;
            }
        }
    }

    /// One poll over everything the server waits for; says what is ready,
    /// and which monitors have exited.
    fn wait(&self, timeout: PollTimeout) -> io::Result<(Ready, Vec<i32>)> {
        let mut fds = vec![PollFd::new(self.watch_err.as_fd(), PollFlags::POLLIN)];
        let mut add = |fd| {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            fds.len() - 1
        };
        let reload_at = self.reload.watch_fd().map(&mut add);
        // At the limit, calls wait in the listen queue.
        let listener_at = (!self.at_limit()).then(|| add(self.listener.as_fd()));
        let pids: Vec<i32> = self.monitors.keys().copied().collect();
        let monitors_at: Vec<usize> = pids
            .iter()
            .map(|pid| add(self.monitors[pid].as_fd()))
            .collect();
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok((Ready::default(), Vec::new())),
            Err(e) => return Err(e.into()),
        }
        let is_ready = |at: Option<usize>| at.is_some_and(|i| fds[i].any().unwrap_or(false));
        let ready = Ready {
            watcher: is_ready(Some(0)),
            reload: is_ready(reload_at),
            listener: is_ready(listener_at),
        };
        let exited = pids
            .into_iter()
            .zip(monitors_at)
            .filter(|&(_, at)| is_ready(Some(at)))
            .map(|(pid, _)| pid)
            .collect();
        Ok((ready, exited))
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
                self.idle_since = Instant::now();
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

/// What one poll found ready.
#[derive(Default)]
struct Ready {
    watcher: bool,
    reload: bool,
    listener: bool,
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
