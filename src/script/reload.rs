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

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::unix::fs::MetadataExt;

use super::log;

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
    /// `None`: inotify is unavailable; check at every call.
    watch: Option<Inotify>,
    /// A watched file may have changed since the last check.
    dirty: bool,
}

impl Reload {
    /// Watches `files`, for a server that started at `started` (seconds,
    /// nanoseconds).
    pub(crate) fn new(files: Vec<PathBuf>, started: (i64, i64)) -> Self {
        let mut reload = Reload {
            files,
            started,
            watch: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok(),
            // Nothing changed between the start and the first watch is
            // missed: the first call checks.
            dirty: true,
        };
        reload.add_watches();
        reload
    }

    /// Readable when a watched file may have changed (then call
    /// [`note_events`](Self::note_events)).
    pub(crate) fn watch_fd(&self) -> Option<BorrowedFd<'_>> {
        self.watch.as_ref().map(|w| w.as_fd())
    }

    /// Reads the pending inotify events: something was touched.
    pub(crate) fn note_events(&mut self) {
        if let Some(watch) = &self.watch {
            while watch.read_events().is_ok_and(|events| !events.is_empty()) {}
        }
        self.dirty = true;
    }

    /// At a call: the first file that changed since the start, if any.
    pub(crate) fn changed(&mut self) -> Option<&Path> {
        if !self.dirty && self.watch.is_some() {
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
    /// cannot be watched otherwise means checking at every call instead.
    fn add_watches(&mut self) {
        let Some(watch) = &self.watch else { return };
        for file in &self.files {
            match watch.add_watch(file.as_path(), WATCH_MASK) {
                Ok(_) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => {
                    log::error(&format!(
                        "cannot watch {}: {e}; checking at every call instead",
                        file.display()
                    ));
                    self.watch = None;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        reload.note_events();
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
    fn a_touched_file_wakes_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let mut reload = Reload::new(vec![file.clone()], now());
        assert_eq!(reload.changed(), None);
        touch_later(&file);
        let [readable] = crate::sys::wait_readable([reload.watch_fd().unwrap()]).unwrap();
        assert!(readable);
        reload.note_events();
        assert_eq!(reload.changed(), Some(file.as_path()));
    }
}
