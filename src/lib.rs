//! prefork-interp: pay a script's start-up once; run every call as a fork
//! of the initialised process.
//!
//! Put it in a script's `#!` line; the script calls its language's
//! "initialisation complete" function after its expensive set-up. The first
//! call starts a server; every later call connects to it, passes its
//! stdin/stdout/stderr, arguments and environment, and gets back the exit
//! status of a fresh fork of the initialised script.
//!
//! # Processes and file descriptors
//!
//! ```text
//!   CALLER
//!     │ fork/exec (the kernel, from the #! line)
//!   CLIENT  (src/bin, [`client`])
//!     │ connect BASE/s<ident>, read greeting; if none: lock, and
//!     │ [`spawn`] a server:  ─fork─fork─> WATCHER ([`watcher`], daemon)
//!     │                      ─fork/exec─> SETUP (the script, initialising)
//!     │                                     │ initialisation complete:
//!     │                                     │ fork, exit 0
//!     │                                   SERVER ([`server`], daemon)
//!     │                                     │ fork in advance (a spare
//!     │                                     │ call handler, ready before
//!     │                                     │ the call it will serve)
//!     │   fd 0,1,2 by SCM_RIGHTS,        MONITOR ([`monitor`], own pgrp)
//!     │   env + args ───────────╮           │ fork in advance
//!     │ <──────────────── wait  ╰───────> EXECUTOR ([`executor`]): the
//!     │                   status from       script again, with the
//!   exit N / die of the     the monitor     caller's fds, args and env
//!   same signal
//! ```
//!
//! ```text
//!                      listening socket      watcher stderr (WATCHE)
//!   CLIENT ══call════╗       │      SERVER ──────────────── WATCHER
//!     0 1 2 ─passed─╗║       └───── SERVER ──────────────── WATCHER
//!                   ║╚══════════ MONITOR   watcher stdin (WATCHI)  │
//!                   ║╚═════════╗   │ pidfd                     inotify
//!                   ╚═══ 0 1 2 ─ EXECUTOR                    socket path
//! ```
//!
//! The server accepts a call, greets the caller and hands the call socket
//! to an idle monitor and to its executor (forked before the call came);
//! the executor reads the request itself. No fork is on a call's critical
//! path: the server forks the next spare handler while the call runs.
//!
//! Causality, which is what makes teardown need no bookkeeping:
//! - socket path removed or replaced (`--kill`, `-f`) → watcher exits →
//!   WATCHE reaches EOF → server quits; calls in flight finish, because
//!   monitors are separate processes.
//! - server dies or quits → WATCHI reaches EOF → watcher exits; idle call
//!   handlers see their control socket's EOF → they exit.
//! - monitor dies (killed) → its executor gets SIGINT (PR_SET_PDEATHSIG),
//!   as when the client goes; the client sees EOF and says so.
//! - client dies (^C, kill) → call socket EOF → monitor SIGINTs its process
//!   group (the executor and whatever it started) and reaps the executor.
//! - executor exits → its pidfd is readable → monitor reaps it (real
//!   status), SIGINTs what it left behind, sends the status.
//!
//! # Modules
//!
//! - [`protocol`]: the wire format (pure encode/decode; the contract).
//! - [`rundir`]: run directory, identity hash, socket and lock paths.
//! - [`cli`], [`client`], [`spawn`], [`watcher`], [`list`]: the client
//!   binary's roles.
//! - [`server`], [`monitor`], [`executor`]: the Rust script side; the API
//!   is [`initialisation_complete`], [`Options`], [`Invocation`].
//!
//! The wire contract is [`protocol`]'s module documentation; it is
//! compatible with chiark-utils' prefork-interp in both directions.

pub mod cli;
pub mod client;
pub mod executor;
pub mod list;
pub mod monitor;
pub mod protocol;
pub mod rundir;
pub mod server;
pub mod spawn;
pub mod sys;
pub mod watcher;

pub use server::{Invocation, Options, initialisation_complete};
