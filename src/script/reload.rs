//! Auto-reload: files whose change since the server started means "quit;
//! the next call starts a fresh server". The same rules in every script
//! side (and as chiark-utils' original):
//!
//! - a file whose mtime is later than the server's start has changed;
//! - a file that is missing (never there, or removed since) is no reason
//!   to reload; one that cannot be examined otherwise is;
//! - the files are watched with inotify, so a call costs no check unless
//!   one of them was touched since the last call; then all are stat'ed,
//!   and watched afresh (a file replaced by rename is a new inode).
//!   While a file is missing (it has no watch), and without inotify,
//!   every call stats every file.
//!
//! The same inotify instance carries the server's watch on its socket's
//! directory (capability `watch`): one instance per server, of the 128
//! a user has by default.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::os::unix::fs::MetadataExt;

use super::log;
use crate::sys;

/// What makes a watched file worth a look.
const WATCH_MASK: AddWatchFlags = AddWatchFlags::IN_MODIFY
    .union(AddWatchFlags::IN_ATTRIB)
    .union(AddWatchFlags::IN_CLOSE_WRITE)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF);

pub(crate) struct Reload {
    files: Vec<PathBuf>,
    /// The server's start: the socket's mtime, from the setup environment.
    started: (i64, i64),
    /// The server's one inotify instance, or why it has none (then every
    /// call checks every file).
    inotify: Result<Inotify, Errno>,
    /// The first file that could not be watched (not for being missing),
    /// and why: every call then checks every file.
    unwatched: Option<(PathBuf, Errno)>,
    /// A watched file may have changed since the last check.
    dirty: bool,
    /// The watch on the socket's directory, and the socket's name in it.
    socket_dir: Option<(WatchDescriptor, OsString)>,
}

impl Reload {
    /// Watches `files`, for a server that started at `started` (seconds,
    /// nanoseconds).
    pub(crate) fn new(files: Vec<PathBuf>, started: (i64, i64)) -> Self {
        let mut reload = Reload {
            files,
            started,
            inotify: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC),
            unwatched: None,
            // Nothing changed between the start and the first watch is
            // missed: the first call checks.
            dirty: true,
            socket_dir: None,
        };
        reload.add_watches();
        reload
    }

    /// Readable when a watched file or the socket's directory may have
    /// changed (then call [`note_events`](Self::note_events)).
    pub(crate) fn watch_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inotify.as_ref().ok().map(|w| w.as_fd())
    }

    /// Why the server has no inotify instance, if it has none.
    pub(crate) fn without_inotify(&self) -> Option<Errno> {
        self.inotify.as_ref().err().copied()
    }

    /// The first file that cannot be watched (so every call checks), and why.
    pub(crate) fn unwatched_file(&self) -> Option<(&Path, Errno)> {
        self.unwatched.as_ref().map(|(p, e)| (p.as_path(), *e))
    }

    /// Watches the directory of `socket` for its removal or replacement,
    /// in the same instance.
    pub(crate) fn watch_socket(&mut self, socket: &Path) -> Result<(), Errno> {
        let inotify = self.inotify.as_ref().map_err(|e| *e)?;
        let dir = socket.parent().unwrap_or(Path::new("."));
        let name = socket.file_name().unwrap_or_default().to_owned();
        let wd = inotify.add_watch(dir, sys::SOCKET_DIR_MASK)?;
        self.socket_dir = Some((wd, name));
        Ok(())
    }

    /// Does without inotify from now on (`why`): every call checks every
    /// file, as the server's `degraded` line then says.
    pub(crate) fn give_up_inotify(&mut self, why: Errno) {
        self.inotify = Err(why);
        self.socket_dir = None;
    }

    /// Reads the pending inotify events. A file's marks the files for a
    /// check at the next call; true if one may mean the socket went (its
    /// name, its directory's own end, or lost events).
    pub(crate) fn note_events(&mut self) -> bool {
        let Ok(inotify) = &self.inotify else {
            return false;
        };
        let mut socket = false;
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events {
                let on_dir = self
                    .socket_dir
                    .as_ref()
                    .filter(|(wd, _)| *wd == event.wd)
                    .map(|(_, name)| name.as_os_str());
                let overflow = event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW);
                match on_dir {
                    Some(name) => socket |= sys::may_mean_gone(&event, name),
                    None => self.dirty = true,
                }
                // (Lost events belong to no watch: both must look.)
                if overflow {
                    socket = true;
                    self.dirty = true;
                }
            }
        }
        socket
    }

    /// At a call: the first file that changed since the start, if any.
    pub(crate) fn changed(&mut self) -> Option<&Path> {
        if !self.dirty && self.inotify.is_ok() && self.unwatched.is_none() {
            return None;
        }
        let started = self.started;
        let mut missing = false;
        let changed = self
            .files
            .iter()
            .position(|file| match std::fs::metadata(file) {
                Ok(m) => (m.mtime(), m.mtime_nsec()) > started,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing = true;
                    false
                }
                Err(e) => {
                    log::error(&format!("cannot check {}: {e}", file.display()));
                    true
                }
            });
        if changed.is_none() {
            // A missing file has no watch to tell us when it is made
            // again: while one is missing, every call checks.
            self.dirty = missing;
            self.add_watches();
        }
        changed.map(|i| self.files[i].as_path())
    }

    /// (Re-)adds a watch per file. Missing files are skipped; a file that
    /// cannot be watched otherwise means checking at every call instead
    /// (said once; the instance stays, for the socket's directory).
    fn add_watches(&mut self) {
        let Ok(inotify) = &self.inotify else { return };
        if self.unwatched.is_some() {
            return;
        }
        for file in &self.files {
            match inotify.add_watch(file.as_path(), WATCH_MASK) {
                Ok(_) | Err(Errno::ENOENT) => {}
                Err(e) => {
                    log::error(&format!(
                        "cannot watch {} ({}): checking files at every call instead",
                        file.display(),
                        e.desc()
                    ));
                    self.unwatched = Some((file.clone(), e));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::time::{Duration, SystemTime};

    fn now() -> (i64, i64) {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        (t.as_secs() as i64, t.subsec_nanos() as i64)
    }

    fn touch_later(path: &Path) {
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }

    #[test]
    fn changed_missing_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "").unwrap();
        std::fs::write(&b, "").unwrap();
        let mut reload = Reload::new(vec![a.clone(), b.clone()], now());
        assert!(reload.watch_fd().is_some());
        assert_eq!(reload.changed(), None, "nothing changed");
        assert!(!reload.dirty, "all watched: no check until an event");

        std::fs::remove_file(&a).unwrap();
        let _ = reload.note_events();
        assert_eq!(reload.changed(), None, "a missing file is no reason");
        assert!(reload.dirty, "but it has no watch: every call checks");
        assert_eq!(reload.changed(), None, "nor at the next call");

        // Made again: no watch saw it (it had none), yet the next call
        // must see it, with no inotify event to say so.
        std::fs::write(&a, "new").unwrap();
        touch_later(&a);
        assert_eq!(reload.changed(), Some(a.as_path()), "back, and newer");
    }

    #[test]
    fn a_file_never_there_is_no_reason() {
        let dir = tempfile::tempdir().unwrap();
        let never = dir.path().join("never");
        let mut reload = Reload::new(vec![never.clone()], now());
        assert_eq!(reload.changed(), None);
        std::fs::write(&never, "").unwrap();
        touch_later(&never);
        assert_eq!(reload.changed(), Some(never.as_path()), "until it is made");
    }

    #[test]
    fn the_socket_watch_shares_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        let (file, socket) = (dir.path().join("f"), dir.path().join("s"));
        std::fs::write(&file, "").unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let mut reload = Reload::new(vec![file.clone()], now());
        assert_eq!(reload.changed(), None);
        reload.watch_socket(&socket).unwrap();
        let fd = |r: &Reload| r.watch_fd().unwrap().as_raw_fd();
        let instance = fd(&reload);

        // Another name in the directory: not the socket's business.
        std::fs::write(dir.path().join("other"), "").unwrap();
        assert!(!reload.note_events());
        assert!(!reload.dirty, "nor the files'");
        // A watched file: the files', not the socket's.
        touch_later(&file);
        assert!(!reload.note_events());
        assert!(reload.dirty);
        // The socket's removal, seen in the same instance.
        std::fs::remove_file(&socket).unwrap();
        assert!(reload.note_events());
        assert_eq!(fd(&reload), instance);
    }

    #[test]
    fn a_touched_file_wakes_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let mut reload = Reload::new(vec![file.clone()], now());
        assert_eq!(reload.changed(), None);
        touch_later(&file);
        let [readable] = crate::sys::wait_readable([reload.watch_fd().unwrap()]).unwrap();
        assert!(readable);
        let _ = reload.note_events();
        assert_eq!(reload.changed(), Some(file.as_path()));
    }
}
