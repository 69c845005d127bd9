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
//!   CLIENT  (src/client, the `prefork-interp` command)
//!     │ connect BASE/s<ident>, read greeting; if none: lock, and
//!     │ spawn a server:      ─fork─fork─> WATCHER (client/watcher, daemon)
//!     │                      ─fork/exec─> SETUP (the script, initialising)
//!     │                                     │ initialisation complete:
//!     │                                     │ fork, exit 0
//!     │                                   SERVER (script/server, daemon)
//!     │                                     │ fork in advance (a spare
//!     │                                     │ call handler, ready before
//!     │                                     │ the call it will serve)
//!     │   fd 0,1,2 by SCM_RIGHTS,        MONITOR (script/monitor, own pgrp)
//!     │   env + args ───────────╮           │ fork in advance
//!     │ <──────────────── wait  ╰───────> EXECUTOR (script/executor): the
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
//! # The tree
//!
//! ```text
//! src/protocol/   the wire: codec (pure encode/decode) and io (blocking
//!                 socket I/O over it); public, below everything else
//! src/sys/        thin fd-typed system wrappers, and procfs (/proc)
//! src/script/     the Rust script side: setup, server, monitor,
//!                 executor, reload, huge pages, log; its API is
//!                 initialisation_complete, Options, Invocation
//! src/client/     the prefork-interp command (feature `client`): cli,
//!                 rundir, connect, spawn, watcher, call, list, exit
//! src/bin/        the command's main, calling client::main
//! ```
//!
//! `client` and `script` never import each other; both stand on
//! `protocol` and `sys`. A Rust script needs only the script side:
//! `prefork-interp = { version = "0.1", default-features = false }`
//! leaves out the client and its dependencies (clap, sha2).
//!
//! The wire contract is [`protocol`]'s module documentation and
//! man/prefork-interp.7; it is compatible with chiark-utils'
//! prefork-interp in both directions.

#[cfg(feature = "client")]
pub mod client;
pub mod protocol;
mod script;
// Some wrappers serve only the client.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
mod sys;

pub use script::{Invocation, Options, initialisation_complete};
