//! Watching a server's socket path, as a server of ours does for itself
//! (capability `watch`) and the client's watcher does for chiark-utils'
//! module: the file's identity, and which inotify events on its
//! directory may mean it was removed or replaced.

use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::sys::inotify::{AddWatchFlags, InotifyEvent};

/// What to watch on the socket's directory: unlink, rename over it,
/// re-creation, and the directory's own end.
pub(crate) const SOCKET_DIR_MASK: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF);

/// The (device, inode) of the file at `path` (not followed), if any.
pub(crate) fn file_identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Whether `path` still names the file whose identity is `identity`.
pub(crate) fn still_names(path: &Path, identity: (u64, u64)) -> bool {
    file_identity(path) == Some(identity)
}

/// Whether an event of the directory watch may mean the socket `name` went:
/// it names it, or the directory itself went, or events were lost. (Then
/// look: [`still_names`].)
pub(crate) fn may_mean_gone(event: &InotifyEvent, name: &OsStr) -> bool {
    event.name.as_deref() == Some(name)
        || event.mask.intersects(
            AddWatchFlags::IN_Q_OVERFLOW
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF
                | AddWatchFlags::IN_IGNORED,
        )
}
