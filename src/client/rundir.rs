//! The run directory, identities, and the per-identity socket and lock.
//!
//! ```text
//! BASE/s<ident>   the server's listening socket (its mtime is the
//!                 server's start time, passed to the script)
//! BASE/l<ident>   lock file, flock(2)ed while a client creates, replaces
//!                 or removes the server
//! ```
//!
//! BASE is the first usable of `$XDG_RUNTIME_DIR/prefork-interp`,
//! `/run/user/UID/prefork-interp` and `~/.prefork-interp/HOST`. A runtime
//! directory is usable when it is a real directory (not a symlink) owned by
//! us with no group or other permissions. BASE itself is created mode 0700,
//! and refused, with an error naming it, when it is a symlink, owned by
//! someone else, or open to group or other.

use std::ffi::{OsStr, OsString};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};

use super::exit::Failure;
use crate::sys::procfs;

/// Longest socket path `bind(2)` accepts: `sun_path` less its NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;

/// Fewest hex digits of the hash we cut an identity to.
pub(crate) const MIN_IDENT_HEX: usize = 33;

/// How many identities BASE keeps before the least recently used go.
pub(crate) const MAX_IDENTITIES: usize = 100;

/// Finds (creating it if need be) this user's run directory: the first
/// usable candidate whose socket names would fit (a runtime directory
/// too deep for them is passed over, as an unusable one is).
pub(crate) fn base_dir() -> Result<PathBuf, Failure> {
    let uid = nix::unistd::getuid().as_raw();
    if let Some(xdg) = std::env::var_os("XDG_RUNTIME_DIR") {
        let xdg = PathBuf::from(xdg);
        if xdg.is_absolute()
            && usable_runtime_dir(&xdg, uid)
            && socket_names_fit(&xdg.join("prefork-interp"))
        {
            return ensure_private_dir(&xdg.join("prefork-interp"), uid);
        }
    }
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if usable_runtime_dir(&run_user, uid) && socket_names_fit(&run_user.join("prefork-interp")) {
        return ensure_private_dir(&run_user.join("prefork-interp"), uid);
    }
    let home = home_dir(uid)?;
    let top = ensure_private_dir(&home.join(".prefork-interp"), uid)?;
    ensure_private_dir(&top.join(short_hostname()), uid)
}

/// Whether a socket in `base` could keep enough of a hashed identity.
fn socket_names_fit(base: &Path) -> bool {
    MAX_SOCKET_PATH.saturating_sub(base.as_os_str().len() + 2) >= MIN_IDENT_HEX
}

fn usable_runtime_dir(dir: &Path, uid: u32) -> bool {
    match fs::symlink_metadata(dir) {
        Ok(m) => m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0,
        Err(_) => false,
    }
}

/// Creates `dir` mode 0700 unless it exists, then checks it is safe.
fn ensure_private_dir(dir: &Path, uid: u32) -> Result<PathBuf, Failure> {
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Failure::new(format!(
                "cannot create run directory {}: {e}",
                dir.display()
            )));
        }
    }
    let m = fs::symlink_metadata(dir).map_err(|e| {
        Failure::new(format!(
            "cannot examine run directory {}: {e}",
            dir.display()
        ))
    })?;
    let problem = if m.file_type().is_symlink() {
        Some("is a symbolic link".to_string())
    } else if !m.is_dir() {
        Some("is not a directory".to_string())
    } else if m.uid() != uid {
        Some(format!("is owned by uid {}, not {uid}", m.uid()))
    } else if m.mode() & 0o077 != 0 {
        Some(format!(
            "has mode {:04o} (group or other may use it)",
            m.mode() & 0o7777
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(Failure::new(format!(
            "run directory {} {p}; refusing to use it",
            dir.display()
        ))),
        None => Ok(dir.to_path_buf()),
    }
}

fn home_dir(uid: u32) -> Result<PathBuf, Failure> {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        let home = PathBuf::from(home);
        // Daemons chdir to /; every path we hand out must be absolute.
        if !home.is_absolute() {
            return Err(Failure::new(format!(
                "HOME ({}) is not an absolute path",
                home.display()
            )));
        }
        return Ok(home);
    }
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(u)) => Ok(u.dir),
        _ => Err(Failure::new(format!(
            "no usable runtime directory, HOME is not set and uid {uid} has no home directory"
        ))),
    }
}

fn short_hostname() -> OsString {
    let name = nix::unistd::gethostname().unwrap_or_else(|_| "localhost".into());
    let bytes = name.as_bytes();
    let short = bytes.split(|&b| b == b'.').next().unwrap_or(bytes);
    let short = &short[..short.len().min(32)];
    let short = if short.is_empty() || short.contains(&b'/') {
        &b"localhost"[..]
    } else {
        short
    };
    OsStr::from_bytes(short).to_owned()
}

// ---------------------------------------------------------------- identity

/// One `-E` or `-G` option, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdentityItem {
    /// `-E VAR`: the variable's value, or its absence, is part of it.
    EnvVar(OsString),
    /// `-G STRING`: the string is part of it.
    String(OsString),
    /// The caller's world digest (namespaces and cgroups), added when a
    /// server's world differs from the caller's.
    World(String),
    /// Which of the caller's fds 0, 1, 2 are terminals (bit N for fd N),
    /// added when a server's initialisation had others.
    Terminals(u8),
}

/// Everything a server's identity is made of, bar the machine facts that
/// [`identity_hash`] reads itself.
#[derive(Debug, Clone)]
pub(crate) struct IdentitySpec<'a> {
    pub(crate) items: &'a [IdentityItem],
    /// The interpreter and its own arguments (from the combined #! form).
    pub(crate) interpreter: &'a [OsString],
    pub(crate) script: Option<&'a OsStr>,
    /// Whether the current directory is part of it (not with --caller-dir).
    pub(crate) include_cwd: bool,
}

/// What an identity is made of, read from this process: hashed for its
/// name ([`identity_hash`]), and described, without values, in the record
/// a new server's lock file keeps ([`identity_inputs_json`]).
struct IdentityInputs<'a> {
    spec: &'a IdentitySpec<'a>,
    uname: nix::sys::utsname::UtsName,
    /// (`.` or `/`, device, inode): `.` unless --caller-dir.
    dirs: Vec<(&'static str, u64, u64)>,
    egid: u32,
    /// Sorted, without duplicates.
    groups: Vec<u32>,
    limits: &'static crate::protocol::CallerLimits,
    /// Without the caller's directory in the identity (`--run`,
    /// `--caller-dir`): the file the script's words name from here
    /// (realpath), so that `./tool` typed in two directories is two
    /// programs. (The words stay in it too: they are the script's `$0`.)
    resolved_script: Option<std::path::PathBuf>,
}

impl<'a> IdentityInputs<'a> {
    fn read(spec: &'a IdentitySpec<'a>) -> io::Result<Self> {
        let dirs: &[&'static str] = if spec.include_cwd {
            &[".", "/"]
        } else {
            &["/"]
        };
        let dirs = dirs
            .iter()
            .map(|&dir| fs::metadata(dir).map(|m| (dir, m.dev(), m.ino())))
            .collect::<io::Result<_>>()?;
        let mut groups: Vec<u32> = nix::unistd::getgroups()
            .unwrap_or_default()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        groups.sort_unstable();
        groups.dedup();
        Ok(IdentityInputs {
            spec,
            uname: nix::sys::utsname::uname()?,
            dirs,
            egid: nix::unistd::getegid().as_raw(),
            groups,
            limits: crate::sys::own_limits(),
            resolved_script: spec
                .script
                .filter(|_| !spec.include_cwd)
                .map(|script| fs::canonicalize(script).or_else(|_| std::path::absolute(script)))
                .transpose()?,
        })
    }

    fn uname_parts(&self) -> [&OsStr; 5] {
        let u = &self.uname;
        [
            u.sysname(),
            u.nodename(),
            u.release(),
            u.version(),
            u.machine(),
        ]
    }

    /// Hex SHA-256 (64 digits). Every field is length-prefixed and
    /// tagged, so no two inputs collide by concatenation.
    fn hash(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |tag: u8, bytes: &[u8]| {
            h.update([tag]);
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        for part in self.uname_parts() {
            field(b'u', part.as_bytes());
        }
        for (_, dev, ino) in &self.dirs {
            field(b'd', &dev.to_be_bytes());
            field(b'i', &ino.to_be_bytes());
        }
        if !self.spec.include_cwd {
            field(b'C', b"caller-dir");
        }
        for item in self.spec.items {
            match item {
                IdentityItem::EnvVar(name) => {
                    field(b'E', name.as_bytes());
                    match std::env::var_os(name) {
                        Some(v) => field(b'v', v.as_bytes()),
                        None => field(b'n', b""),
                    }
                }
                IdentityItem::String(s) => field(b'G', s.as_bytes()),
                IdentityItem::World(digest) => field(b'W', digest.as_bytes()),
                IdentityItem::Terminals(bits) => field(b'T', &[*bits]),
            }
        }
        // The caller's credentials beyond its uid (whose run directory
        // this is): an unprivileged server cannot give an executor other
        // groups, so a caller with others (sg, newgrp, setpriv --groups)
        // gets a server of its own.
        field(b'g', &self.egid.to_be_bytes());
        for group in &self.groups {
            field(b'y', &group.to_be_bytes());
        }
        // What an executor cannot take on from a caller unprivileged
        // (raise a hard limit, lower its nice value or OOM score
        // adjustment): a caller whose differ gets a server of its own,
        // started under them.
        for (resource, _, hard) in &self.limits.rlimits {
            field(b'L', &[*resource]);
            field(b'h', &hard.to_be_bytes());
        }
        field(b'P', &self.limits.nice.to_be_bytes());
        field(b'O', &self.limits.oom_score_adj.to_be_bytes());
        field(b'I', &(self.spec.interpreter.len() as u64).to_be_bytes());
        for word in self.spec.interpreter {
            field(b'a', word.as_bytes());
        }
        match self.spec.script {
            Some(s) => field(b'S', s.as_bytes()),
            None => field(b'N', b""),
        }
        if let Some(file) = &self.resolved_script {
            field(b'R', file.as_os_str().as_bytes());
        }
        crate::protocol::hex_lower(&h.finalize())
    }

    /// The same inputs as JSON, for `--list --json`'s `depends_on`:
    /// names, not the values of environment variables (which the run
    /// directory, private as it is, need not hold).
    fn describe(&self) -> serde_json::Value {
        use serde_json::json;
        let text = |s: &OsStr| s.to_string_lossy().into_owned();
        let pick = |want: fn(&IdentityItem) -> Option<&OsStr>| -> Vec<String> {
            self.spec.items.iter().filter_map(want).map(text).collect()
        };
        let directory = self
            .dirs
            .iter()
            .find(|(d, ..)| *d == ".")
            .map(|(_, dev, ino)| {
                let path = std::env::current_dir().map(|p| text(p.as_os_str())).ok();
                json!({ "path": path, "dev": dev, "ino": ino })
            });
        let root = self
            .dirs
            .iter()
            .find(|(d, ..)| *d == "/")
            .map(|(_, dev, ino)| json!({ "dev": dev, "ino": ino }));
        let world = self.spec.items.iter().find_map(|item| match item {
            IdentityItem::World(digest) => Some(digest.clone()),
            _ => None,
        });
        let terminals = self.spec.items.iter().find_map(|item| match item {
            IdentityItem::Terminals(bits) => {
                Some((0..3).filter(|fd| bits & 1 << fd != 0).collect::<Vec<u8>>())
            }
            _ => None,
        });
        let hard_limits: serde_json::Map<String, serde_json::Value> = self
            .limits
            .rlimits
            .iter()
            .filter_map(|&(resource, _, hard)| {
                let name = crate::sys::RESOURCES.get(usize::from(resource))?;
                let hard = if hard == crate::protocol::RLIM_INFINITY {
                    json!("unlimited")
                } else {
                    json!(hard)
                };
                Some((name.to_string(), hard))
            })
            .collect();
        json!({
            "machine": self.uname_parts().map(text),
            "root": root,
            "directory": directory,
            "environment": pick(|i| match i {
                IdentityItem::EnvVar(name) => Some(name),
                _ => None,
            }),
            "strings": pick(|i| match i {
                IdentityItem::String(s) => Some(s),
                _ => None,
            }),
            "world": world,
            "terminals": terminals,
            "egid": self.egid,
            "groups": self.groups,
            "hard_limits": hard_limits,
            "nice": self.limits.nice,
            "oom_score_adj": self.limits.oom_score_adj,
            "interpreter": self.spec.interpreter.iter().map(|w| text(w)).collect::<Vec<_>>(),
            "script": self.spec.script.map(text),
        })
    }
}

/// Hex SHA-256 (64 digits) of the identity: uname, device and inode of `.`
/// and `/`, each `-E`/`-G` in order, the caller's groups, hard limits,
/// nice value and OOM score adjustment, the interpreter, the script.
pub(crate) fn identity_hash(spec: &IdentitySpec) -> io::Result<String> {
    Ok(IdentityInputs::read(spec)?.hash())
}

/// What an identity depends on, as JSON (`None` if it cannot be read,
/// or for an identity given with `-g`).
pub(crate) fn identity_inputs_json(spec: &IdentitySpec) -> Option<serde_json::Value> {
    IdentityInputs::read(spec).ok().map(|i| i.describe())
}

/// The socket and lock paths of one identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdentityPaths {
    pub(crate) ident: String,
    pub(crate) socket: PathBuf,
    pub(crate) lock: PathBuf,
}

impl IdentityPaths {
    /// Paths for a hashed identity, cut so the socket path fits `sun_path`.
    pub(crate) fn for_hash(base: &Path, hash_hex: &str) -> Result<Self, Failure> {
        let room = MAX_SOCKET_PATH.saturating_sub(base.as_os_str().len() + 2);
        if room < MIN_IDENT_HEX {
            return Err(Failure::new(format!(
                "run directory path {} is too long: a socket name there would keep only \
                 {room} hex digits of the identity, fewer than {MIN_IDENT_HEX}",
                base.display()
            )));
        }
        Ok(Self::new(base, &hash_hex[..room.min(hash_hex.len())]))
    }

    /// Paths for an identity given with `-g`, which is used as it is.
    pub(crate) fn for_given(base: &Path, ident: &OsStr) -> Result<Self, Failure> {
        let bytes = ident.as_bytes();
        if bytes.is_empty() || bytes.contains(&b'/') {
            return Err(Failure::new(format!(
                "bad identity {:?} for -g: it must be non-empty and contain no '/'",
                ident
            )));
        }
        let ident = std::str::from_utf8(bytes).map_err(|_| {
            Failure::new(format!(
                "bad identity {ident:?} for -g: it must be valid UTF-8"
            ))
        })?;
        let paths = Self::new(base, ident);
        if paths.socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Failure::new(format!(
                "identity {ident:?} for -g is too long: socket path {} exceeds {MAX_SOCKET_PATH} bytes",
                paths.socket.display()
            )));
        }
        Ok(paths)
    }

    fn new(base: &Path, ident: &str) -> Self {
        IdentityPaths {
            ident: ident.to_string(),
            socket: base.join(format!("s{ident}")),
            lock: base.join(format!("l{ident}")),
        }
    }
}

// -------------------------------------------------------------------- lock

/// An exclusive flock on an identity's lock file, released on drop.
#[derive(Debug)]
pub(crate) struct IdentityLock {
    lock: Flock<File>,
}

/// Who holds the flock on `path`: pid and command name.
pub(crate) fn lock_holder(path: &Path) -> Option<(u32, String)> {
    let meta = fs::metadata(path).ok()?;
    let pid = procfs::flock_holder(meta.dev(), meta.ino())?;
    Some((pid, procfs::command_name(pid)))
}

impl IdentityLock {
    /// Blocks until the lock is ours. If the lock file is removed or
    /// replaced while we wait (`--kill` removes it), locks the new one.
    pub(crate) fn acquire(path: &Path) -> io::Result<Self> {
        Self::lock(path, true).map(|l| l.expect("blocking lock always returns a lock"))
    }

    /// Like [`acquire`](Self::acquire), but `None` at once if it is held.
    pub(crate) fn try_acquire(path: &Path) -> io::Result<Option<Self>> {
        Self::lock(path, false)
    }

    fn lock(path: &Path, block: bool) -> io::Result<Option<Self>> {
        let how = if block {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockExclusiveNonblock
        };
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)?;
            let lock = match Flock::lock(file, how) {
                Ok(lock) => lock,
                Err((_, Errno::EINTR)) => continue,
                Err((_, Errno::EWOULDBLOCK)) if !block => return Ok(None),
                Err((_, e)) => return Err(e.into()),
            };
            // Still the file at `path`? Otherwise it was removed or
            // replaced while we waited: lock the new one.
            let held = lock.metadata()?;
            match fs::symlink_metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(IdentityLock { lock }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends `bytes` to the lock file (we hold the lock): a quit line.
    pub(crate) fn append(&self, bytes: &[u8]) -> io::Result<()> {
        use std::io::{Seek, Write};
        let mut file: &File = &self.lock;
        file.seek(io::SeekFrom::End(0))?;
        file.write_all(bytes)
    }

    /// Writes the record of the server just created (we hold the lock):
    /// `record`, with the reason its predecessor gave for quitting (the
    /// last `quit` line a server appended, man 7), as one line of JSON in
    /// place of what was there. Read back by [`read_record`].
    pub(crate) fn write_record(&self, mut record: serde_json::Value) -> io::Result<()> {
        use std::io::{Read, Seek, Write};
        let mut file: &File = &self.lock;
        let mut old = Vec::new();
        file.seek(io::SeekFrom::Start(0))?;
        file.read_to_end(&mut old)?;
        let last = crate::protocol::decode_last_quit(&old).map(|(at, reason)| {
            serde_json::json!({ "at": at, "reason": String::from_utf8_lossy(reason) })
        });
        record["last_restart"] = last.unwrap_or(serde_json::Value::Null);
        let mut line = serde_json::to_vec(&record).map_err(io::Error::other)?;
        line.push(b'\n');
        file.set_len(0)?;
        file.seek(io::SeekFrom::Start(0))?;
        file.write_all(&line)
    }
}

/// The record a client wrote in a lock file when it created the server
/// ([`IdentityLock::write_record`]), if there is one.
pub(crate) fn read_record(lock: &Path) -> Option<serde_json::Value> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(lock)
        .ok()?;
    // Only a regular file of ours is read (a FIFO planted there would
    // block, a huge file would waste memory).
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > 1 << 20 {
        return None;
    }
    let text = io::read_to_string(file).ok()?;
    serde_json::from_str(text.lines().next()?).ok()
}

/// Removes a file, counting "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

// --------------------------------------------------------------- pre-clean

/// Keeps BASE to at most `keep` identities before a new one is added:
/// deletes sockets (and their locks), each under its own lock: first
/// those nobody listens on (their servers are gone), then the least
/// recently used by socket atime (their servers quit once their calls in
/// flight finish). An identity whose lock is held (being created or
/// killed right now, including our own) is skipped.
///
/// Lock files whose socket has gone (an evicted server's keeps the reason
/// for its next start) are kept up to `keep` too, the oldest going first.
pub(crate) fn preclean(base: &Path, keep: usize) -> io::Result<()> {
    let mut sockets = Vec::new();
    let mut orphan_locks = Vec::new();
    for entry in fs::read_dir(base)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.as_bytes().first() == Some(&b'l') {
            let socket_name = [b"s", &name.as_bytes()[1..]].concat();
            let socket = base.join(OsStr::from_bytes(&socket_name));
            if !socket.exists()
                && let Ok(m) = entry.metadata()
            {
                orphan_locks.push(((m.mtime(), m.mtime_nsec()), entry.path()));
            }
            continue;
        }
        if name.as_bytes().first() != Some(&b's') {
            continue;
        }
        let m = match entry.metadata() {
            Ok(m) if m.file_type().is_socket() => m,
            _ => continue,
        };
        sockets.push(((m.atime(), m.atime_nsec()), name));
    }
    if orphan_locks.len() > keep {
        orphan_locks.sort();
        let excess = orphan_locks.len() - keep;
        for (_, lock_path) in orphan_locks.into_iter().take(excess) {
            if let Some(_lock) = IdentityLock::try_acquire(&lock_path)? {
                remove_if_exists(&lock_path)?;
            }
        }
    }
    // The new socket will make one more.
    if sockets.len() < keep {
        return Ok(());
    }
    // Live: listened on in any network namespace of ours (a server
    // started in another one is no stale socket). Stale ones go first.
    let listening = procfs::listening_sockets_of_ours();
    let mut sockets: Vec<_> = sockets
        .into_iter()
        .map(|(atime, name)| ((listening.contains_key(&base.join(&name)), atime), name))
        .collect();
    sockets.sort();
    let excess = sockets.len() + 1 - keep;
    for (_, name) in sockets.into_iter().take(excess) {
        let socket = base.join(&name);
        let Some(lock_path) = crate::protocol::lock_path_for_socket(&socket) else {
            continue;
        };
        if let Some(_lock) = IdentityLock::try_acquire(&lock_path)? {
            remove_if_exists(&socket)?;
            remove_if_exists(&lock_path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(items: &'a [IdentityItem], interp: &'a [OsString]) -> IdentitySpec<'a> {
        IdentitySpec {
            items,
            interpreter: interp,
            script: Some(OsStr::new("/x/script")),
            include_cwd: true,
        }
    }

    #[test]
    fn identity_depends_on_every_input() {
        let perl = [OsString::from("perl")];
        let perl_w = [OsString::from("perl"), OsString::from("-w")];
        let g1 = [IdentityItem::String("a".into())];
        let g2 = [IdentityItem::String("b".into())];
        let base = identity_hash(&spec(&[], &perl)).unwrap();
        assert_eq!(base.len(), 64);
        assert_eq!(base, identity_hash(&spec(&[], &perl)).unwrap());
        assert_ne!(base, identity_hash(&spec(&[], &perl_w)).unwrap());
        assert_ne!(base, identity_hash(&spec(&g1, &perl)).unwrap());
        assert_ne!(
            identity_hash(&spec(&g1, &perl)).unwrap(),
            identity_hash(&spec(&g2, &perl)).unwrap()
        );
        let mut no_script = spec(&[], &perl);
        no_script.script = None;
        assert_ne!(base, identity_hash(&no_script).unwrap());
        let mut any_dir = spec(&[], &perl);
        any_dir.include_cwd = false;
        assert_ne!(base, identity_hash(&any_dir).unwrap());
    }

    #[test]
    fn socket_path_fits_sun_path() {
        let hash = "0123456789abcdef".repeat(4);
        let p = IdentityPaths::for_hash(Path::new("/run/user/1000/prefork-interp"), &hash).unwrap();
        assert_eq!(p.ident.len(), 64);
        let long = PathBuf::from(format!("/{}", "d".repeat(60)));
        let p = IdentityPaths::for_hash(&long, &hash).unwrap();
        assert_eq!(p.socket.as_os_str().len(), MAX_SOCKET_PATH);
        assert!(p.ident.len() >= MIN_IDENT_HEX);
        let too_long = PathBuf::from(format!("/{}", "d".repeat(80)));
        let err = IdentityPaths::for_hash(&too_long, &hash)
            .unwrap_err()
            .message;
        assert!(err.contains("too long"), "{err}");
    }

    #[test]
    fn given_identity_is_checked() {
        let base = Path::new("/tmp/x");
        assert_eq!(
            IdentityPaths::for_given(base, OsStr::new("web"))
                .unwrap()
                .socket,
            Path::new("/tmp/x/sweb")
        );
        assert!(IdentityPaths::for_given(base, OsStr::new("")).is_err());
        assert!(IdentityPaths::for_given(base, OsStr::new("a/b")).is_err());
        assert!(IdentityPaths::for_given(base, OsStr::new(&"x".repeat(200))).is_err());
    }

    #[test]
    fn lock_is_exclusive_and_follows_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lident");
        let held = IdentityLock::acquire(&path).unwrap();
        assert!(IdentityLock::try_acquire(&path).unwrap().is_none());
        // Removing the file (as --kill does) lets a new lock be taken.
        fs::remove_file(&path).unwrap();
        assert!(IdentityLock::try_acquire(&path).unwrap().is_some());
        drop(held);
    }

    #[test]
    fn preclean_removes_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        for i in 0..5 {
            let s = dir.path().join(format!("s{i}"));
            listeners.push(std::os::unix::net::UnixListener::bind(&s).unwrap());
            let t = nix::sys::time::TimeSpec::new(1000 + i, 0);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &s,
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
            File::create(dir.path().join(format!("l{i}"))).unwrap();
        }
        // Identity 1's lock is busy: it is skipped, not waited for.
        let _busy = IdentityLock::acquire(&dir.path().join("l1")).unwrap();
        preclean(dir.path(), 3).unwrap();
        let left: Vec<bool> = (0..5)
            .map(|i| dir.path().join(format!("s{i}")).exists())
            .collect();
        assert_eq!(left, [false, true, false, true, true]);
        assert!(!dir.path().join("l0").exists());
        assert!(dir.path().join("l1").exists());
    }

    #[test]
    fn preclean_keeps_so_many_lock_files_without_sockets() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            let lock = dir.path().join(format!("l{i}"));
            File::create(&lock).unwrap();
            let t = nix::sys::time::TimeSpec::new(1000 + i, 0);
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &lock,
                &t,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .unwrap();
        }
        // Identity 4 has its socket: its lock is no orphan.
        let _listener = std::os::unix::net::UnixListener::bind(dir.path().join("s4")).unwrap();
        let _busy = IdentityLock::acquire(&dir.path().join("l0")).unwrap();
        preclean(dir.path(), 2).unwrap();
        let left: Vec<bool> = (0..5)
            .map(|i| dir.path().join(format!("l{i}")).exists())
            .collect();
        // Four orphans, two too many: the oldest two go, except that 0's
        // lock is held (it is skipped, not waited for).
        assert_eq!(left, [true, false, true, true, true]);
    }
}
