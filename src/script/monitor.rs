//! The monitor: one per server, forked once, the parent of every
//! executor. It keeps `spare_handlers` executors-to-be idle, hands each
//! call the server passes it to one of them, and watches every call in
//! flight in one poll loop. A call costs one fork (the next spare's, off
//! its critical path) and one exit: the server forks nothing per call.
//!
//! ```text
//! server ══control══ monitor (forwardable signals ignored; the server's
//!    0x00 + call ──>   │      dispositions saved for the executors)
//!    <── 'd' per call  ├─fork─> executor-to-be (see `executor`), its own
//!        ended ('h' if │        process group; waits on its hand-over
//!        no request)   │        socket
//!   loop: keep `spare` executors idle (forking the missing ones when
//!     no call is in flight, or once they have been missing for 5 ms);
//!     poll (level-triggered) on
//!     control: a call socket: hand it to an idle executor (0x00 + the
//!        socket on its hand-over socket); EOF: the server is gone: take
//!        no more calls, let the spares go, serve the calls in flight to
//!        their end, then exit
//!     <── 'r', request byte, from an executor once it has read the
//!        request (extended: after its 'P'); EOF instead: bad request or
//!        client gone (it logged why): the call ends without a status.
//!        On a pseudo-terminal of its own, then the script's pid: the
//!        executor keeps the session, the script is its child and leads
//!        its own group (signals go there); the executor's 't' (the
//!        script stopped: 'T' to the client) and 'x' (its status: 'd' to
//!        the server and the status to the client at once; the keeper is
//!        reaped when its pidfd says it has gone) follow on the same socket.
//!        An extended call's 'F' frame goes to the keeper as 'f'
//!     pidfd readable: the executor has exited. SIGINT its group (what it
//!        left behind; it is a zombie, so its status cannot change and its
//!        group id cannot be reused), reap it (its real status), 'd' to
//!        the server, then the status to the client
//!     call socket readable (after 'r'): extended, an 'S' frame: deliver
//!        that signal to the executor's group. Otherwise (EOF, or any data
//!        in v1) the client is gone: SIGINT the group (SIGHUP and
//!        SIGCONT on a pseudo-terminal: its terminal has hung up); its
//!        pidfd says when it has gone, and the monitor logs its fate;
//!        still running after `interrupt_grace`, the group gets SIGKILL
//!        (logged)
//! ```
//!
//! 'd' goes to the server before the status goes to the client, so that
//! a greeting's `running` count is exact once a client has its status.
//!
//! The original watched an EXECTERM pipe for the executor's end and took
//! its EOF as death; a script that closes fds while still exiting (Perl
//! does) was then SIGINTed mid-exit and reported as killed. Watching the
//! pidfd avoids that race: its readiness means the process has exited.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, killpg};

use super::executor;
use super::invocation::Invocation;
use super::log;
use crate::protocol::io::{hung_up, recv_fd, send_all, send_fd};
use crate::protocol::{self, Frame, WaitStatus};
use crate::sys::{self, Forked, Pid, Pidfd};

/// An executor-to-be, waiting for a call.
struct Spare {
    pid: Pid,
    pidfd: Pidfd,
    handover: UnixStream,
    from_executor: UnixStream,
}

/// What a client gave for its caller's terminal ('R'): the settings to
/// put back, if the terminal still has those it left.
struct Restore {
    terminal: OwnedFd,
    put_back: protocol::TerminalSettings,
    left: protocol::TerminalSettings,
}

impl Restore {
    /// Puts the settings back, unless someone (the shell that ran the
    /// client, once it has seen it die) has set the terminal since.
    fn put_back(self) {
        let _ = sys::put_back_terminal_settings(&self.terminal, &self.put_back, &self.left);
    }
}

/// A call whose status went to a client that had its caller's terminal
/// raw. Sent is not received: a client killed as the script ends may have
/// closed its pseudo-terminal (which ended the script) and not yet its
/// call socket, and so never restore its terminal.
struct Ending {
    call: UnixStream,
    restore: Restore,
}

/// A call in flight, as its executor's pid keys it.
struct Call {
    pidfd: Pidfd,
    call: UnixStream,
    phase: Phase,
    /// The caller's terminal and the settings to put back on it if the
    /// client goes away while it has it raw ('R', capability `restore`).
    restore: Option<Restore>,
}

enum Phase {
    /// Handed over; the executor is reading the request.
    Waiting(UnixStream),
    /// The executor could not take the call (it logged why).
    Failed,
    /// The script runs; extended or v1 framing on the call socket; on a
    /// pseudo-terminal of its own, with the executor as its keeper.
    Running {
        extended: bool,
        keeper: Option<Keeper>,
    },
    /// The keeper has said how the script ended, and the client has it;
    /// the keeper is on its way out, to be reaped.
    Reported,
    /// The client went away; `group` has had SIGINT (SIGHUP, on a
    /// pseudo-terminal), at this time (and SIGKILL, if `killed`, after
    /// the grace).
    Abandoned {
        since: Instant,
        killed: bool,
        group: Pid,
    },
}

/// A call on a pseudo-terminal of its own: the executor keeps the
/// session; the script is its child and leads its own group.
struct Keeper {
    script: Pid,
    /// The executor's socket, for its 't' and 'x'; `None` at its EOF.
    from_keeper: Option<UnixStream>,
    /// The script's wait status, once 'x' has told it.
    status: Option<WaitStatus>,
}

impl Phase {
    /// The process group the call's signals go to: the executor's, or on
    /// a pseudo-terminal of its own the script's.
    fn group(&self, executor: Pid) -> Pid {
        match self {
            Phase::Running {
                keeper: Some(keeper),
                ..
            } => keeper.script,
            Phase::Abandoned { group, .. } => *group,
            _ => executor,
        }
    }
}

struct Monitor {
    /// The server's end; `None` once the server has gone.
    control: Option<UnixStream>,
    spares: Vec<Spare>,
    /// Spares the server's end let go: reaped quietly.
    leaving: Vec<(Pid, Pidfd)>,
    calls: HashMap<Pid, Call>,
    /// Calls whose status has gone, keyed by their call socket's fd,
    /// while their clients still have the caller's terminal raw: each
    /// until its client says it put the terminal back ('R' 0) or goes.
    ending: HashMap<RawFd, Ending>,
    spare: usize,
    /// How long an abandoned call's script may run on after its SIGINT.
    interrupt_grace: Option<Duration>,
    /// Since when spares have been missing while calls were in flight.
    short_since: Option<Instant>,
    saved: sys::SavedSignals,
    pid: Pid,
}

/// How long spares that are missing wait for the calls in flight to end
/// before they are forked anyway. A fork takes the monitor away from its
/// calls for as long as it runs (a copy of every page table); a short
/// call's status should not wait for it.
const REFILL_DELAY: Duration = Duration::from_millis(5);

/// What the monitor waits for, one entry per polled fd.
#[derive(Clone, Copy)]
enum Source {
    Control,
    Ready(Pid),
    Exited(Pid),
    Client(Pid),
    /// A keeper's 't' or 'x' (or EOF).
    Keeper(Pid),
    /// What a client whose status has gone says last ('R' 0, or EOF).
    Ending(RawFd),
}

impl Source {
    /// The order in which one poll's findings are handled: executors' 'r'
    /// (an executor may have said it and exited since), then keepers'
    /// word (a keeper may have said 'x' and exited since), then exits,
    /// then clients, then new calls.
    fn causal_rank(&self) -> u8 {
        match self {
            Source::Ready(_) => 0,
            Source::Keeper(_) => 1,
            Source::Exited(_) => 2,
            Source::Client(_) | Source::Ending(_) => 3,
            Source::Control => 4,
        }
    }
}

/// Runs in a freshly forked child of the server, for the rest of its
/// life. Returns only in an executor, into the script.
pub(crate) fn run(
    control: UnixStream,
    spare: usize,
    interrupt_grace: Option<Duration>,
) -> Invocation {
    // We deliver these to executors' groups, never our own, but a
    // terminal's signals must not end us either. Executors get back what
    // the server had.
    let forwarded: Vec<Signal> = protocol::FORWARDED_SIGNALS
        .iter()
        .filter_map(|&sig| Signal::try_from(sig).ok())
        .collect();
    let saved = sys::ignore_signals(&forwarded);
    // The server's limits, read once here: every executor forked from now
    // on compares a caller's with them at no cost.
    sys::own_limits();
    let mut monitor = Monitor {
        control: Some(control),
        spares: Vec::new(),
        leaving: Vec::new(),
        calls: HashMap::new(),
        ending: HashMap::new(),
        spare,
        interrupt_grace,
        short_since: None,
        saved,
        pid: nix::unistd::getpid(),
    };
    loop {
        if monitor.refill_due() {
            while monitor.spares.len() < monitor.spare {
                match monitor.fork_executor() {
                    Ok(Some(invocation)) => return invocation,
                    Ok(None) => {}
                    Err(e) => {
                        log::error(&format!("cannot fork an executor: {e}"));
                        break;
                    }
                }
            }
            monitor.short_since = None;
        } else if monitor.control.is_none()
            && monitor.calls.is_empty()
            && monitor.ending.is_empty()
            && monitor.leaving.is_empty()
        {
            sys::exit_now(0);
        }
        if let Some(invocation) = monitor.serve() {
            return invocation;
        }
        monitor.kill_overdue();
    }
}

impl Monitor {
    /// Whether to fork the missing spares now: at once when no call is in
    /// flight, else once they have been missing for [`REFILL_DELAY`].
    fn refill_due(&mut self) -> bool {
        if self.control.is_none() || self.spares.len() >= self.spare {
            return false;
        }
        let since = *self.short_since.get_or_insert_with(Instant::now);
        self.calls.is_empty() || since.elapsed() >= REFILL_DELAY
    }

    /// How long poll may wait: until the missing spares are due, or the
    /// first abandoned script's grace is over.
    fn poll_timeout(&self) -> PollTimeout {
        let refill = match self.short_since {
            Some(since) if self.control.is_some() && self.spares.len() < self.spare => {
                Some(REFILL_DELAY.saturating_sub(since.elapsed()))
            }
            _ => None,
        };
        let grace = self.interrupt_grace.and_then(|grace| {
            self.calls
                .values()
                .filter_map(|call| match call.phase {
                    Phase::Abandoned {
                        since,
                        killed: false,
                        ..
                    } => Some(grace.saturating_sub(since.elapsed())),
                    _ => None,
                })
                .min()
        });
        refill
            .into_iter()
            .chain(grace)
            .min()
            .map_or(PollTimeout::NONE, sys::poll_timeout)
    }

    /// SIGKILLs the groups of abandoned calls whose scripts are still
    /// running after their grace (they ignored or outlasted SIGINT).
    fn kill_overdue(&mut self) {
        let Some(grace) = self.interrupt_grace else {
            return;
        };
        for (&pid, call) in self.calls.iter_mut() {
            if let Phase::Abandoned {
                since,
                killed,
                group,
            } = &mut call.phase
                && !*killed
                && since.elapsed() >= grace
            {
                signal_group(*group, Signal::SIGKILL);
                *killed = true;
                log::error(&format!(
                    "executor {pid} still ran {:.1} s after its client went away and its \
                     SIGINT: killed",
                    grace.as_secs_f64()
                ));
            }
        }
    }

    /// Forks a spare executor. `Some` in the executor (the monitor's fds
    /// closed), `None` in the monitor.
    fn fork_executor(&mut self) -> io::Result<Option<Invocation>> {
        let (handover, handover_theirs) = UnixStream::pair()?;
        let (from_executor, theirs) = UnixStream::pair()?;
        // SAFETY: forked from the single-threaded server, we are too.
        match unsafe { sys::fork() }? {
            Forked::Child => {
                // Every fd of ours goes: a call socket kept open here would
                // keep its client from ever seeing EOF.
                let Monitor { saved, pid, .. } = std::mem::replace(self, Monitor::gone());
                drop((handover, from_executor));
                Ok(Some(executor::run(handover_theirs, theirs, &saved, pid)))
            }
            Forked::Parent(pid) => {
                drop((handover_theirs, theirs));
                match Pidfd::open(pid) {
                    Ok(pidfd) => self.spares.push(Spare {
                        pid,
                        pidfd,
                        handover,
                        from_executor,
                    }),
                    Err(e) => {
                        // Unwatchable: it must not serve. Its hand-over
                        // socket's EOF sends it away.
                        drop(handover);
                        let _ = sys::wait_status(pid);
                        return Err(e);
                    }
                }
                Ok(None)
            }
        }
    }

    /// An empty monitor, to move the real one out of in a child.
    fn gone() -> Monitor {
        Monitor {
            control: None,
            spares: Vec::new(),
            leaving: Vec::new(),
            calls: HashMap::new(),
            ending: HashMap::new(),
            spare: 0,
            interrupt_grace: None,
            short_since: None,
            saved: sys::ignore_signals(&[]),
            pid: Pid::from_raw(0),
        }
    }

    /// One poll, and everything it found, in causal order (see
    /// [`Source::causal_rank`]). `Some` only in a new executor.
    fn serve(&mut self) -> Option<Invocation> {
        let mut ready = match self.wait() {
            Ok(ready) => ready,
            Err(e) => {
                log::error(&format!("monitor: poll failed: {e}"));
                sys::exit_now(1)
            }
        };
        ready.sort_by_key(Source::causal_rank);
        for source in ready {
            match source {
                Source::Ready(pid) => self.take_ready(pid),
                Source::Keeper(pid) => self.hear_keeper(pid),
                Source::Exited(pid) => self.reap(pid),
                Source::Client(pid) => self.hear_client(pid),
                Source::Ending(fd) => self.hear_ending(fd),
                Source::Control => return self.take_call(),
            }
        }
        None
    }

    fn wait(&self) -> io::Result<Vec<Source>> {
        let mut watched: Vec<(BorrowedFd<'_>, Source)> = Vec::new();
        let mut add = |fd, source| watched.push((fd, source));
        if let Some(control) = &self.control {
            add(control.as_fd(), Source::Control);
        }
        for spare in &self.spares {
            add(spare.pidfd.as_fd(), Source::Exited(spare.pid));
        }
        for (pid, pidfd) in &self.leaving {
            add(pidfd.as_fd(), Source::Exited(*pid));
        }
        for (&pid, call) in &self.calls {
            add(call.pidfd.as_fd(), Source::Exited(pid));
            match &call.phase {
                Phase::Waiting(from_executor) => add(from_executor.as_fd(), Source::Ready(pid)),
                Phase::Running { keeper, .. } => {
                    add(call.call.as_fd(), Source::Client(pid));
                    if let Some(from_keeper) = keeper.as_ref().and_then(|k| k.from_keeper.as_ref())
                    {
                        add(from_keeper.as_fd(), Source::Keeper(pid));
                    }
                }
                Phase::Failed | Phase::Abandoned { .. } | Phase::Reported => {}
            }
        }
        for (&fd, ending) in &self.ending {
            add(ending.call.as_fd(), Source::Ending(fd));
        }
        let (fds, sources): (Vec<_>, Vec<_>) = watched.into_iter().unzip();
        let mut fds: Vec<PollFd<'_>> = fds
            .into_iter()
            .map(|fd| PollFd::new(fd, PollFlags::POLLIN))
            .collect();
        loop {
            match poll(&mut fds, self.poll_timeout()) {
                Ok(_) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(sources
            .into_iter()
            .zip(&fds)
            .filter(|(_, fd)| fd.any().unwrap_or(false))
            .map(|(source, _)| source)
            .collect())
    }

    /// Reads an executor's 'r' (blocking: it is readable, or its writer
    /// has exited). EOF or garbage: it could not take the call.
    fn take_ready(&mut self, pid: Pid) {
        let Some(call) = self.calls.get_mut(&pid) else {
            return;
        };
        let Phase::Waiting(from_executor) = &mut call.phase else {
            return;
        };
        let mut message = [0u8; 2];
        let kind = from_executor
            .read_exact(&mut message)
            .and_then(|()| Ok(protocol::decode_executor_ready(message)?));
        let Ok(kind) = kind else {
            call.phase = Phase::Failed;
            return;
        };
        // On a pseudo-terminal of its own the script's pid follows, and
        // the socket stays open for the keeper's word.
        let mut script = [0u8; 4];
        if kind.on_pty() && from_executor.read_exact(&mut script).is_err() {
            call.phase = Phase::Failed;
            return;
        }
        let Phase::Waiting(from_executor) = std::mem::replace(&mut call.phase, Phase::Failed)
        else {
            unreachable!("checked above");
        };
        call.phase = Phase::Running {
            extended: kind.extended,
            keeper: kind.on_pty().then(|| Keeper {
                script: Pid::from_raw(u32::from_be_bytes(script) as i32),
                from_keeper: Some(from_executor),
                status: None,
            }),
        };
    }

    /// A child has exited: a spare (died idle, or let go), or a call's
    /// executor.
    fn reap(&mut self, pid: Pid) {
        if let Some(at) = self.spares.iter().position(|s| s.pid == pid) {
            self.spares.swap_remove(at);
            if let Ok(status) = sys::wait_status(pid) {
                log::error(&format!(
                    "idle executor {pid} {}",
                    sys::describe_status(status)
                ));
            }
            return;
        }
        if let Some(at) = self.leaving.iter().position(|(p, _)| *p == pid) {
            self.leaving.swap_remove(at);
            let _ = sys::wait_status(pid);
            return;
        }
        // A call still waiting: its 'r' may have come after poll looked.
        self.take_ready(pid);
        let Some(call) = self.calls.remove(&pid) else {
            return;
        };
        // Before the reaping: what it left behind in its group.
        if !matches!(call.phase, Phase::Abandoned { .. }) {
            signal_group(pid, Signal::SIGINT);
        }
        let status = sys::wait_status(pid);
        match call.phase {
            Phase::Reported => {}
            // No request came (a listing; a caller that went elsewhere).
            Phase::Waiting(_) | Phase::Failed => self.call_ended(protocol::MONITOR_CALL_DROPPED),
            Phase::Running { .. } | Phase::Abandoned { .. } => {
                self.call_ended(protocol::MONITOR_CALL_ENDED)
            }
        }
        let status = match status {
            Ok(status) => status,
            Err(e) => {
                log::error(&format!("cannot reap executor {pid}: {e}"));
                return;
            }
        };
        let mut call = call;
        let status = script_status(pid, &mut call, status);
        match call.phase {
            Phase::Running { extended, .. } => {
                if let Some(ending) = status_to_client(pid, &mut call, extended, status) {
                    self.ending.insert(ending.call.as_raw_fd(), ending);
                }
            }
            Phase::Reported => {}
            Phase::Abandoned { .. } => log::info(&format!(
                "client went away; script interrupted, it {}",
                sys::describe_status(status)
            )),
            Phase::Failed | Phase::Waiting(_) => {
                if status.exit_code() != Some(0) {
                    log::error(&format!(
                        "executor {pid} failed before its call: it {}",
                        sys::describe_status(status)
                    ));
                }
            }
        }
    }

    /// The call socket of a running call is readable: a signal frame, or
    /// the client's end.
    fn hear_client(&mut self, pid: Pid) {
        let Some(call) = self.calls.get_mut(&pid) else {
            return;
        };
        let Phase::Running { extended, keeper } = &call.phase else {
            return;
        };
        let group = call.phase.group(pid);
        if *extended {
            match protocol::io::read_frame(&call.call) {
                Ok(Frame::Restore(len)) => match read_restore(&call.call, len) {
                    Ok(restore) => {
                        call.restore = restore;
                        return;
                    }
                    Err(e) if hung_up(&e) => {}
                    Err(e) => log::error(&format!("call of executor {pid}: {e}")),
                },
                Ok(Frame::Foreground(foreground)) => {
                    // For the keeper, which moves the script's group.
                    if let Some(from_keeper) = keeper.as_ref().and_then(|k| k.from_keeper.as_ref())
                    {
                        let frame = Frame::KeeperForeground(foreground).encode();
                        let _ = send_all(from_keeper, &frame);
                    }
                    return;
                }
                Ok(frame) => return forward(group, frame),
                Err(e) if hung_up(&e) => {}
                Err(e) => log::error(&format!("call of executor {pid}: {e}")),
            }
        }
        // Before anything else, for the shell that ran the client: its
        // terminal as the client found it.
        if let Some(restore) = call.restore.take() {
            restore.put_back();
        }
        // v1: the client has nothing more to say; it left. On its own
        // terminal: that terminal is gone, and a direct run whose terminal
        // goes away gets SIGHUP (and SIGCONT, should it be stopped).
        if keeper.is_some() {
            signal_group(group, Signal::SIGHUP);
            signal_group(group, Signal::SIGCONT);
        } else {
            signal_group(group, Signal::SIGINT);
        }
        call.phase = Phase::Abandoned {
            since: Instant::now(),
            killed: false,
            group,
        };
    }

    /// A client whose status has gone said more: 'R' 0 (it put its
    /// terminal back), or its end (it may have died first: we put the
    /// terminal back, if it has what the client left there).
    fn hear_ending(&mut self, fd: RawFd) {
        let Some(ending) = self.ending.get_mut(&fd) else {
            return;
        };
        match protocol::io::read_frame(&ending.call) {
            Ok(Frame::Restore(len)) => match read_restore(&ending.call, len) {
                Ok(Some(restore)) => {
                    ending.restore = restore;
                    return;
                }
                Ok(None) => {
                    self.ending.remove(&fd);
                    return;
                }
                Err(_) => {}
            },
            // A signal for a script that has ended goes nowhere.
            Ok(_) => return,
            Err(_) => {}
        }
        if let Some(ending) = self.ending.remove(&fd) {
            ending.restore.put_back();
        }
    }

    /// A keeper's socket is readable. Once it has told the script's
    /// status, the call is over: the client has it at once, without
    /// waiting for the keeper's own exit.
    fn hear_keeper(&mut self, pid: Pid) {
        let Some(call) = self.calls.get_mut(&pid) else {
            return;
        };
        let Phase::Running {
            extended,
            keeper: Some(keeper),
        } = &mut call.phase
        else {
            return;
        };
        hear_keeper(keeper, &call.call);
        if let Some(status) = keeper.status {
            let extended = *extended;
            call.phase = Phase::Reported;
            self.call_ended(protocol::MONITOR_CALL_ENDED);
            if let Some(call) = self.calls.get_mut(&pid)
                && let Some(ending) = status_to_client(pid, call, extended, status)
            {
                self.ending.insert(ending.call.as_raw_fd(), ending);
            }
        }
    }

    /// The server passes a call (or has gone). `Some` only in an executor
    /// forked because no spare was left.
    fn take_call(&mut self) -> Option<Invocation> {
        let control = self.control.as_ref()?;
        let call = match recv_fd(control) {
            Ok((_, call)) => UnixStream::from(call),
            Err(e) => {
                if !hung_up(&e) {
                    log::error(&format!("monitor: control socket: {e}"));
                }
                self.server_gone();
                return None;
            }
        };
        loop {
            if self.spares.is_empty() {
                match self.fork_executor() {
                    Ok(Some(invocation)) => {
                        drop(call);
                        return Some(invocation);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        log::error(&format!("no executor for a call: {e}"));
                        self.call_ended(protocol::MONITOR_CALL_DROPPED);
                        return None; // dropping the call: its client says so
                    }
                }
            }
            let spare = self.spares.pop()?;
            match send_fd(&spare.handover, protocol::FD_MESSAGE_BYTE, &call) {
                Ok(()) => {
                    self.calls.insert(
                        spare.pid,
                        Call {
                            pidfd: spare.pidfd,
                            call,
                            phase: Phase::Waiting(spare.from_executor),
                            restore: None,
                        },
                    );
                    return None;
                }
                Err(e) => {
                    // It died idle; reap it and try another.
                    log::error(&format!("idle executor {}: {e}", spare.pid));
                    self.leaving.push((spare.pid, spare.pidfd));
                }
            }
        }
    }

    /// The server has gone: no more calls. The spares leave on their
    /// hand-over socket's EOF; calls in flight are served to their end.
    fn server_gone(&mut self) {
        self.control = None;
        for spare in self.spares.drain(..) {
            self.leaving.push((spare.pid, spare.pidfd));
        }
    }

    /// Tells the server a call it handed us has ended: `how` is
    /// [`protocol::MONITOR_CALL_ENDED`], or [`protocol::MONITOR_CALL_DROPPED`]
    /// if its script never ran.
    fn call_ended(&mut self, how: u8) {
        if let Some(control) = &self.control
            && send_all(control, &[how]).is_err()
        {
            self.server_gone();
        }
    }
}

/// The status of a call's script, its executor `pid` reaped with
/// `status`: the executor's own, or on a pseudo-terminal of its own what
/// its keeper said of the script (all it said is there to read now).
fn script_status(pid: Pid, call: &mut Call, status: WaitStatus) -> WaitStatus {
    let Phase::Running {
        keeper: Some(keeper),
        ..
    } = &mut call.phase
    else {
        return status;
    };
    while keeper.from_keeper.is_some() {
        hear_keeper(keeper, &call.call);
    }
    keeper.status.unwrap_or_else(|| {
        // The keeper was killed before the script ended: nothing watches
        // the script now. It goes too.
        log::error(&format!(
            "keeper {pid} of script {} {}: script killed",
            keeper.script,
            sys::describe_status(status)
        ));
        signal_group(keeper.script, Signal::SIGKILL);
        status
    })
}

/// The rest of an 'R' frame: `len` bytes of settings and, if any, the
/// caller's terminal; what to put back should the client go away.
fn read_restore(call: &UnixStream, len: u32) -> io::Result<Option<Restore>> {
    if len == 0 {
        return Ok(None);
    }
    let len = len as usize;
    if len > protocol::MAX_RESTORE_LEN {
        return Err(io::Error::other(protocol::ProtocolError::BadRestore(len)));
    }
    let mut bytes = vec![0u8; len];
    (&*call).read_exact(&mut bytes)?;
    let (put_back, left) = protocol::decode_restore(&bytes).map_err(io::Error::other)?;
    let (_, terminal) = recv_fd(call)?;
    Ok(Some(Restore {
        terminal,
        put_back,
        left,
    }))
}

/// The script's status to its client, once it has ended. What the client
/// said before that is read first: its terminal's settings, or that it
/// has gone (its terminal's hang-up may be what ended the script). Not
/// sent, the client has gone, and its terminal is ours to put back; sent,
/// the client restores its terminal itself and says so, and until then
/// the call is [`Ending`] (returned).
fn status_to_client(
    pid: Pid,
    call: &mut Call,
    extended: bool,
    status: WaitStatus,
) -> Option<Ending> {
    let gone = hear_last_of_client(call);
    let delivered = !gone && send_status(pid, &call.call, extended, status);
    let restore = call.restore.take()?;
    if !delivered {
        restore.put_back();
        return None;
    }
    match call.call.try_clone() {
        Ok(call) => Some(Ending { call, restore }),
        Err(_) => None,
    }
}

/// The script's wait status to its client, as the call's framing has it.
/// Whether it was sent.
fn send_status(pid: Pid, call: &UnixStream, extended: bool, status: WaitStatus) -> bool {
    let message = if extended {
        Frame::Status(status).encode().to_vec()
    } else {
        protocol::encode_status(status).to_vec()
    };
    match send_all(call, &message) {
        Ok(()) => true,
        Err(e) => {
            if !hung_up(&e) {
                log::error(&format!("cannot send executor {pid}'s status: {e}"));
            }
            false
        }
    }
}

/// Reads what an extended call's client sent that has not been read yet
/// (its 'R' frames are kept; signals for an ended script go nowhere).
/// Whether the client has gone.
fn hear_last_of_client(call: &mut Call) -> bool {
    loop {
        let mut fd = [PollFd::new(call.call.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fd, PollTimeout::ZERO) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
        }
        match protocol::io::read_frame(&call.call) {
            Ok(Frame::Restore(len)) => match read_restore(&call.call, len) {
                Ok(restore) => call.restore = restore,
                Err(_) => return true,
            },
            Ok(_) => {}
            Err(_) => return true,
        }
    }
}

/// Acts on a frame from the client: a signal for the call's group.
/// Anything else (a kind from a later version) is ignored.
fn forward(group: Pid, frame: Frame) {
    if let Frame::Signal(signal) = frame
        && protocol::FORWARDED_SIGNALS.contains(&signal)
        && let Ok(signal) = Signal::try_from(signal)
    {
        signal_group(group, signal);
    }
}

/// One message from a keeper: the script stopped ('t': the client is
/// told, 'T'), or ended ('x': its status kept for the client). EOF or
/// garbage: the keeper has nothing more to say.
fn hear_keeper(keeper: &mut Keeper, call: &UnixStream) {
    let Some(from_keeper) = &keeper.from_keeper else {
        return;
    };
    match protocol::io::read_frame(from_keeper) {
        Ok(Frame::KeeperStopped(signal)) => {
            let frame = Frame::Stopped(signal).encode();
            // A client gone is heard on the call socket.
            let _ = send_all(call, &frame);
        }
        Ok(Frame::KeeperStatus(status)) => keeper.status = Some(status),
        Ok(_) | Err(_) => keeper.from_keeper = None,
    }
}

/// A signal to an executor's process group (it leads its own): the
/// executor and what it started.
fn signal_group(executor: Pid, signal: Signal) {
    let _ = killpg(executor, signal);
}
