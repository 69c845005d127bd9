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
//!     │ spawn a server:      ─fork/exec─> SETUP (the script, initialising)
//!     │                                     │ initialisation complete:
//!     │                                     │ fork, exit 0
//!     │                                   SERVER (script/server, daemon)
//!     │                                     │ fork once (again if it dies)
//!     │   fd 0,1,2 by SCM_RIGHTS,        MONITOR (script/monitor): forks
//!     │   env + args ───────────╮           │ every executor, in advance
//!     │ <──────────────── wait  ╰───────> EXECUTOR (script/executor): the
//!     │                   status from       script again, with the
//!   exit N / die of the     the monitor     caller's fds, args and env;
//!   same signal                             its own process group
//! ```
//!
//! ```text
//!                      listening socket
//!   CLIENT ══call════╗       │        one inotify instance: the socket's
//!     0 1 2 ─passed─╗║       └──── SERVER ── directory, the reload files
//!                   ║║               ║ control socket,
//!                   ║║               ║ pidfd
//!                   ║╚═══════════ MONITOR
//!                   ║╚══════════╗    │ per executor: pidfd, hand-over
//!                   ║           ║    │ socket, 'r' socket
//!                   ╚═══ 0 1 2 ─ EXECUTOR
//! ```
//!
//! The server accepts a call, greets the caller and passes the call
//! socket to the monitor, which hands it to an idle executor (forked
//! before the call came); the executor reads the request itself. A call
//! costs one fork (the monitor forks the next spare while the call runs,
//! off its critical path) and one exit; the server forks nothing per call.
//! The monitor tells the server 'd' when a call has ended: that is the
//! greeting's `running` count and what `max_servers` limits.
//!
//! A server of ours watches its own socket path (capability `watch`). For
//! one that does not (chiark-utils' Perl module), the client forks a
//! WATCHER (client/watcher, a daemon with inotify of its own) after the
//! greeting, tied to the server by the WATCHI and WATCHE pipes.
//!
//! Causality, which is what makes teardown need no bookkeeping:
//! - socket path removed or replaced (`--kill`, `-f`, an eviction) → the
//!   server sees it (or the watcher exits → WATCHE reaches EOF) → server
//!   quits; calls in flight finish, because the monitor is a process of
//!   its own.
//! - server dies or quits → (WATCHI reaches EOF → watcher exits;) the
//!   monitor sees its control socket's EOF → it lets its spare executors
//!   go, serves the calls in flight to their end, and exits.
//! - monitor dies (killed) → every executor gets SIGINT
//!   (PR_SET_PDEATHSIG), as when its client goes; each client sees EOF
//!   and says so; the server forks a new monitor.
//! - client dies (^C, kill) → call socket EOF → the monitor SIGINTs that
//!   executor's process group (it and whatever it started) and reaps it.
//! - executor exits → its pidfd is readable → the monitor SIGINTs what it
//!   left behind in its group, reaps it (real status), tells the server,
//!   sends the status.
//!
//! # On the caller's terminal
//!
//! When one of the caller's fds 0, 1, 2 is its controlling terminal, the
//! call runs on a pseudo-terminal of its own (capability `tty`), so that
//! the script has a controlling terminal and is its foreground job (or
//! background job, while the client is one), as in a direct run from a
//! shell:
//!
//! ```text
//!   caller's terminal (raw while the call is in the foreground)
//!     ║ keys ▼   ▲ output
//!   CLIENT ══ pty master (client/terminal)
//!                 ║ line discipline: echo, ^C ^\ ^Z, SIGWINCH
//!   EXECUTOR ─ leads a new session; the pty slave is its controlling
//!     │        terminal; keeps the session as a shell would, and tells
//!     │        the monitor the script's stops ('t') and end ('x')
//!     └─fork─> SCRIPT: its own group, the terminal's foreground; the
//!              slave in place of each fd that was the caller's terminal
//! ```
//!
//! The script is not the session's leader because a leader's own group,
//! its parent being elsewhere, would be orphaned: the kernel drops the
//! stop signals a terminal sends such a group. The monitor turns a 't'
//! into a 'T' frame; the client restores the caller's terminal and stops
//! its own group by the same signal, so the shell sees the job stop. The
//! client's 'F' frames, passed to the executor as 'f', move the script's
//! group to its terminal's foreground or background as the client moves.
//!
//! The Perl, Python and Ruby executors, once they have forked the
//! script, exec the client's own program as the keeper (`prefork-interp
//! --session-keeper PID`, named in `PREFORK_INTERP` by the client that
//! started the server; script/keeper): an interpreter left beside the
//! script would share its pages, and every page the script writes would
//! be copied first.
//!
//! # The tree
//!
//! ```text
//! src/protocol/   the wire: codec (pure encode/decode) and io (blocking
//!                 socket I/O over it); public, below everything else
//! src/sys/        thin fd-typed system wrappers by family (process, fd,
//!                 signal, term, resource), procfs (/proc), titles
//! src/script/     the Rust script side: setup, server, monitor,
//!                 executor, keeper, reload, huge pages, log; its API is
//!                 initialisation_complete, Options, Invocation
//! src/client/     the prefork-interp command (feature `client`): cli,
//!                 run, rundir, connect, spawn, watcher, call, terminal,
//!                 list, exit
//! src/bin/        the command's main: client::main, or the session keeper
//! sides/          the Perl and Python script sides (the same roles in
//!                 files of the same names) and the wire vectors every
//!                 side's unit tests read
//! ```
//!
//! `client` and `script` never import each other; both stand on
//! `protocol` and `sys`. A Rust script needs only the script side:
//! `prefork-interp = { version = "0.1", default-features = false }`
//! leaves out the client and its dependencies (clap, sha2).
//!
//! The wire contract is man/prefork-interp.7 (the inner protocol of a
//! script side's own processes included); it is compatible with
//! chiark-utils' prefork-interp in both directions. Its bytes are pinned
//! by sides/wire-vectors.json, which every side's unit tests read.

#[cfg(feature = "client")]
pub mod client;
// Public for the integration tests, the conformance table's raw-wire
// scenarios and the fuzzer, not as an API: hidden from the docs, and not
// covered by the crate's version. A Rust script needs only the items
// re-exported below.
#[doc(hidden)]
pub mod protocol;
mod script;
// Some wrappers serve only the client.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
mod sys;

#[doc(hidden)]
pub use script::run_session_keeper;
pub use script::{Invocation, Options, env_var, env_var_os, initialisation_complete};
