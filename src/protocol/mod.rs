//! The wire: what crosses a process boundary, defined once for the client,
//! the script side, the tests and the fuzzer.
//!
//! - [`codec`] items (re-exported here): the bytes, as pure encode/decode
//!   functions. Nothing there does I/O, so all of it is fuzzed.
//! - [`io`]: the blocking socket I/O over them (whole messages, fds by
//!   SCM_RIGHTS, no SIGPIPE), shared by every role that speaks the wire.
//!
//! Who sends what, in today's roles (man/prefork-interp.7 is the full
//! text; it is compatible with chiark-utils' prefork-interp both ways):
//!
//! ```text
//! setup environment   PREFORK_INTERP=v1,SECS.NSECS LISTEN,CALL,WATCHI,WATCHE
//! server -> client    greeting: "PFI\n" u32be(len) xdata[len]
//!                     (then the server hands the call socket to its
//!                     monitor, which hands it to an executor forked in
//!                     advance)
//! client -> executor  0x00, then three one-byte messages carrying fd 0, 1, 2
//!                     (SCM_RIGHTS), then u32be(len) payload[len] where
//!                     payload = ("NAME=value\0")* "\0" ("arg\0")*
//! monitor -> client   u32be(wait status of the executor)
//! ```
//!
//! Extensions are negotiated:
//!
//! ```text
//! setup environment   a third word "pfi-caps=NAME[,NAME...]": the client
//!                     that creates the server reads our greeting xdata
//!                     (chiark-utils' client misreads any non-empty xdata,
//!                     so a server offers it only when told so)
//! greeting xdata      "pfi-caps 1\n" "caps NAME[,NAME...]\n"
//!                     ["world DIGEST\n": its namespaces and cgroups]
//!                     ["env DIGEST NAME...\n": what initialisation read]
//!                     ["start DIGEST NAME...\n": what the interpreter
//!                     read as it started]
//!                     ["terminals N\n": which of fds 0, 1, 2 were
//!                     terminals in initialisation, bit N for fd N]
//!                     "served N\n" "running N\n" (other lines: ignore);
//!                     a v1 server sends none
//! extended request    0x01 instead of 0x00, plus flags: 0x02 `context`;
//!                     0x04, 0x08, 0x10 (`tty`): fd 0, 1, 2 is the call's
//!                     own pseudo-terminal; 0x20 it starts in the
//!                     background; 0x40 (`limits`) a limits message comes
//!                     last; 0x80 a second byte follows (`closed`: 0x01,
//!                     0x02, 0x04: fd 0, 1, 2 closed, /dev/null sent;
//!                     `dispositions`: 0x08, a caller-signals message
//!                     comes last); then fds and payload as in v1; with
//!                     `context`, then 0x00 carrying the caller's
//!                     directory and u32be(umask)
//! then, frames        5 bytes each: kind, u32be value
//!   client -> monitor 'S' signal: deliver it to the script's group
//!   executor -> client 'P' the script's pid (before its per-call code)
//!   monitor -> client 'T' stop signal: the script stopped (`tty` calls)
//!   client -> monitor 'F' 1 or 0: the script's group to its terminal's
//!                     foreground or background (`tty` calls)
//!   monitor -> client 'X' wait status (last)
//! ```
//!
//! Inside a script side, its own processes hand a call along with
//! messages of the same kind (server -> monitor -> executor the call
//! socket; executor -> monitor 'r'; keeper <-> monitor 't', 'x', 'f';
//! monitor -> server 'd', 'h'): man/prefork-interp.7, INSIDE A SCRIPT
//! SIDE, is their one description, and sides/wire-vectors.json pins
//! every message's bytes for every side's unit tests.
//!
//! All integers are big-endian. Environment entries and arguments are
//! arbitrary bytes without NUL: nothing here assumes UTF-8.

pub mod codec;
pub mod io;

pub use codec::*;
