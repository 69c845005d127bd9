//! Reaching a server: a greeted connection, and the identity lock taken
//! when there is none.

use std::io;
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::exit::Failure;
use super::rundir::{self, IdentityLock};
use crate::protocol;
use crate::sys;

/// A connection to a live server whose greeting has been read.
pub(crate) struct Greeted {
    pub(crate) conn: UnixStream,
    /// The extensions it offers (none: a v1 server).
    pub(crate) caps: Vec<String>,
    /// What its initialisation read of the environment.
    pub(crate) env: Option<protocol::EnvDependency>,
    /// What its interpreter read of the environment as it started.
    pub(crate) start: Option<protocol::EnvDependency>,
    /// The digest of its namespaces and cgroups.
    pub(crate) world: Option<String>,
    /// Which of fds 0, 1, 2 were terminals in its initialisation (bit N
    /// for fd N).
    pub(crate) terminals: Option<u8>,
    /// Calls it was running, and how long it had been idle (ms), as it
    /// greeted (servers of ours only).
    pub(crate) running: Option<u64>,
    pub(crate) idle_ms: Option<u64>,
}

impl Greeted {
    pub(crate) fn offers(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }

    /// Our world's digest, if this server's world (namespaces, cgroups) is
    /// another: this caller belongs with a server started in its own.
    pub(crate) fn world_differs(&self) -> Option<&'static str> {
        let ours = own_world();
        self.world
            .as_deref()
            .is_some_and(|theirs| theirs != ours)
            .then_some(ours)
    }

    /// Which of our fds 0, 1, 2 are terminals, if this server's
    /// initialisation had others (a library deciding at import whether
    /// it has a terminal, for its prompt or colours, decided otherwise
    /// than a direct run of ours would): this caller belongs with a
    /// server initialised with terminals where it has them.
    pub(crate) fn terminals_differ(&self) -> Option<u8> {
        let ours = sys::stdio_terminals();
        self.terminals
            .is_some_and(|theirs| theirs != ours)
            .then_some(ours)
    }

    /// The variables this server's initialisation, or its interpreter as
    /// it started, read whose values here differ from those it was
    /// started with (all of that line's, since only a digest is known),
    /// if any do: this caller belongs with a server started with its own
    /// values.
    pub(crate) fn env_differs(&self) -> Vec<&[u8]> {
        let differs = |dependency: &protocol::EnvDependency| {
            let ours = protocol::env_digest(&dependency.names, |name| {
                std::env::var_os(std::ffi::OsStr::from_bytes(name)).map(|v| v.into_vec())
            });
            ours != dependency.digest
        };
        [&self.env, &self.start]
            .into_iter()
            .flatten()
            .filter(|dependency| differs(dependency))
            .flat_map(|dependency| dependency.names.iter().map(Vec::as_slice))
            .collect()
    }
}

/// This process's world digest, worked out once (see
/// [`procfs::own_world`](crate::sys::procfs::own_world)).
fn own_world() -> &'static str {
    static WORLD: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    WORLD.get_or_init(sys::procfs::own_world)
}

/// Connects to the server at `socket` and reads its greeting. `None` when
/// there is no live server there (no socket, nobody listening, or EOF
/// before the greeting from a server that is quitting).
pub(crate) fn connect(socket: &Path) -> Result<Option<Greeted>, Failure> {
    connect_within(socket, None)
}

/// [`connect`], but a server that has not greeted within `patience` (one
/// at its call limit) counts as none.
pub(crate) fn connect_within(
    socket: &Path,
    patience: Option<Duration>,
) -> Result<Option<Greeted>, Failure> {
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
    let server_pid = match sys::peer_credentials(&conn) {
        Ok((uid, pid)) if uid == our_uid => pid,
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
    };
    // Worked out while the server accepts and writes its greeting (on
    // another core): a call's only other cost of checking that the
    // server's world is ours.
    own_world();
    if patience.is_some() {
        conn.set_read_timeout(patience)
            .map_err(|e| Failure::new(format!("cannot wait for a greeting: {e}")))?;
    } else if !sys::readable_within(conn.as_fd(), GREETING_PATIENCE) {
        // Said once, and we go on waiting, as for the lock.
        eprintln!(
            "prefork-interp: no greeting yet from {} (pid {server_pid}): a server at its \
             limit of calls greets when one ends; one that never does is stuck, or is not \
             a server: see prefork-interp --list, and kill that pid",
            socket.display()
        );
    }
    match greeting(conn, socket) {
        Err(_) if patience.is_some() => Ok(None),
        other => other,
    }
}

/// Greets every server in `sockets` at once, waiting at most `patience`
/// in all: what each said, or `None` for one that is gone, not ours, or
/// has not greeted by then (at its call limit). The connections are
/// dropped at once: hang-ups before a request, which no server counts as
/// a call.
pub(crate) fn greet_all(sockets: &[&Path], patience: Duration) -> Vec<Option<Greeted>> {
    let our_uid = nix::unistd::getuid().as_raw();
    let mut pending: Vec<(usize, UnixStream)> = sockets
        .iter()
        .enumerate()
        .filter_map(|(i, socket)| {
            let conn = UnixStream::connect(socket).ok()?;
            // (Our own servers only, as for a call.)
            matches!(sys::peer_credentials(&conn), Ok((uid, _)) if uid == our_uid)
                .then_some((i, conn))
        })
        .collect();
    let mut greeted: Vec<Option<Greeted>> = sockets.iter().map(|_| None).collect();
    let deadline = std::time::Instant::now() + patience;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut polled: Vec<nix::poll::PollFd<'_>> = pending
            .iter()
            .map(|(_, conn)| nix::poll::PollFd::new(conn.as_fd(), nix::poll::PollFlags::POLLIN))
            .collect();
        match nix::poll::poll(&mut polled, sys::poll_timeout(left)) {
            Ok(0) => break,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
        let ready: Vec<bool> = polled.iter().map(|p| p.any().unwrap_or(false)).collect();
        drop(polled);
        let mut still = Vec::new();
        for ((i, conn), ready) in pending.into_iter().zip(ready) {
            if !ready {
                still.push((i, conn));
                continue;
            }
            // The greeting is one write: it is all there, or the server
            // is going (a short read then fails, and it is no candidate).
            let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
            greeted[i] = greeting(conn, sockets[i]).ok().flatten();
        }
        pending = still;
    }
    greeted
}

/// Reads the greeting on `conn` (a connection to `socket`, or the first
/// call's socketpair); `None` if the connection ended before it.
pub(crate) fn greeting(conn: UnixStream, socket: &Path) -> Result<Option<Greeted>, Failure> {
    match protocol::io::read_greeting(&conn) {
        Ok(xdata) => Ok(Some(Greeted {
            conn,
            caps: protocol::decode_caps(&xdata),
            env: protocol::decode_env_dependency(&xdata),
            start: protocol::decode_start_dependency(&xdata),
            world: protocol::decode_world(&xdata),
            terminals: protocol::decode_terminals(&xdata),
            running: protocol::decode_xdata_number(&xdata, "running"),
            idle_ms: protocol::decode_xdata_number(&xdata, "idle"),
        })),
        Err(e) if protocol::io::hung_up(&e) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            Err(Failure::new(format!("{}: {e}", socket.display())))
        }
        Err(e) => Err(Failure::new(format!(
            "cannot read greeting from {}: {e}",
            socket.display()
        ))),
    }
}

/// How long a server's greeting may take before we say what we are
/// waiting for (a server greets at once unless it is at its limit of
/// calls in flight).
const GREETING_PATIENCE: Duration = Duration::from_secs(2);

/// How long the lock may take before we say what we are waiting for.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// Takes the identity lock. If that takes more than [`LOCK_PATIENCE`]
/// (another client is starting a slow server, or a stuck process holds
/// the lock) it says so once on stderr, naming the holder, and goes on
/// waiting: a caller is never left hanging without a word.
pub(crate) fn lock_identity(path: &Path) -> Result<IdentityLock, Failure> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// A socket whose "server" greets every caller with `xdata`, from a
    /// thread, or (`None`) accepts and never greets.
    fn server(path: &Path, xdata: Option<Vec<u8>>) -> std::thread::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            if let Some(xdata) = xdata {
                protocol::io::send_all(&conn, &protocol::encode_greeting(&xdata)).unwrap();
            }
            // Held until the caller hangs up.
            let _ = std::io::Read::read(&mut &conn, &mut [0u8; 1]);
        })
    }

    #[test]
    fn greet_all_waits_once_for_all() {
        let dir = tempfile::tempdir().unwrap();
        let [idle, silent, gone] = ["a", "b", "c"].map(|n| dir.path().join(n));
        let xdata = protocol::encode_greeting_xdata(
            &[protocol::CAP_SIGNALS],
            None,
            None,
            None,
            None,
            None,
            protocol::ServerCounters {
                served: 1,
                running: 0,
                idle_ms: 1234,
            },
        );
        let threads = [server(&idle, Some(xdata)), server(&silent, None)];
        let patience = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let got = greet_all(&[&idle, &silent, &gone, &silent], patience);
        let took = started.elapsed();
        assert_eq!(got[0].as_ref().and_then(|g| g.idle_ms), Some(1234));
        assert!(got[1].is_none() && got[2].is_none() && got[3].is_none());
        // One wait for all: not one per silent server.
        assert!(took >= patience && took < patience * 2, "{took:?}");
        drop(got);
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
