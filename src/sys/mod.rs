//! Thin, fd-typed wrappers over the system calls both the client and the
//! script side make, where nix has no safe form, one file a family as
//! nix has them: [`process`] (fork with its contract stated, pidfds,
//! wait statuses), [`fd`] (poll, close_range, close-on-exec), [`signal`]
//! (dispositions), [`term`] (controlling terminal, window size),
//! [`resource`] (limits, nice, OOM score, umask), [`socket_path`] (a
//! server's socket path: its file, the inotify events that may mean it
//! went). Everything else is
//! called through nix directly. [`procfs`] reads /proc; [`title`] sets
//! what /proc/PID/cmdline shows. Callers use the items from here
//! (`sys::fork`), not from the family's file.
//!
//! Every `fork` in this crate happens in a process that is single-threaded
//! by design (the client once its lock announcer has been joined; a
//! script-side server that checked it has no other threads), so the child
//! may go on to run ordinary Rust code.

pub(crate) mod fd;
pub(crate) mod process;
pub(crate) mod procfs;
pub(crate) mod resource;
pub(crate) mod signal;
pub(crate) mod socket_path;
pub(crate) mod term;
pub(crate) mod title;

pub(crate) use fd::*;
pub(crate) use nix::unistd::Pid;
pub(crate) use process::*;
pub(crate) use resource::*;
pub(crate) use signal::*;
pub(crate) use socket_path::*;
pub(crate) use term::*;
