//! The `prefork-interp` command: what the kernel runs for a
//! `#!/usr/bin/prefork-interp` line (the `client` feature).
//!
//! ```text
//! connect BASE/s<ident>, read greeting ──ok──────────────────────────┐
//!   │ refused / missing / EOF (stale)                                 │
//! flock BASE/l<ident>                                                 │
//!   │ --kill: unlink socket and lock, exit 0                          │
//! connect again (someone may just have made it) ──ok── unlock ────────┤
//!   │ still nothing (or -f)                                           │
//! at the budget: evict the least recently used server                 │
//! spawn: socket, setup run, greeting (watcher if needed); unlock ─────┤
//!                                                                     v
//! call: request (fd 0, 1, 2, env, args) ──> executor; status <── monitor:
//! exit with it, or die of the same signal
//! ```
//!
//! One file per job: `cli` (the command line), `completions` (its shell
//! completion scripts), `rundir` (run directory, identity, lock),
//! `connect` (a greeted connection), `spawn` (a new server), `watcher`
//! (the daemon tying a server that does not watch its own socket path to
//! it), `budget` (how many servers, which goes), `call` (request, signal
//! relay, status), `list` (`--list`), `run` (`--run`: the program's
//! interpreter and its runner), `runner_check` (whether that interpreter
//! finds the runner, and if not the command that installs it), `exit`
//! (the one error type, and how a status becomes ours).

mod budget;
mod call;
mod cli;
mod completions;
mod connect;
mod exit;
mod list;
mod run;
mod rundir;
mod runner_check;
mod spawn;
mod terminal;
mod watcher;

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use cli::{ClientArgs, Mode, Parsed};
use exit::Failure;
use rundir::{IdentityItem, IdentityPaths, IdentitySpec};

/// The whole command; returns its exit status (or dies of the script's
/// signal, as a direct run would). Errors are printed here, once, as
/// `prefork-interp: MESSAGE` on stderr.
pub fn main() -> i32 {
    match run() {
        Ok(code) => code,
        Err(f) => {
            let _ = writeln!(io::stderr(), "prefork-interp: {}", f.message);
            f.exit_code
        }
    }
}

fn run() -> Result<i32, Failure> {
    let args = match cli::parse(std::env::args_os().collect())? {
        Parsed::Print(text) => {
            let mut out = io::stdout();
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
            return Ok(0);
        }
        Parsed::Run(args) => args,
    };
    // Our own fds and processes must not cost the caller a call a direct
    // run would make: the script gets the caller's limits back.
    crate::sys::raise_soft_limits();
    // A closed fd 0..2 would be reused by our own sockets and sent on:
    // /dev/null holds its place, and the call says it was closed.
    let closed = if matches!(args.mode, Mode::Kill | Mode::List { .. }) {
        [false; 3]
    } else {
        hold_closed_stdio()?
    };

    let base = rundir::base_dir()?;
    if let Mode::List { json } = args.mode {
        return list::print(&base, json).map(|()| 0);
    }
    // The identity's own items, then, round by round, what a server there
    // says it depends on and we differ in: our world (namespaces,
    // cgroups), which an executor could not take on, and the variables
    // its initialisation read.
    let mut items = args.identity_items.clone();
    for round in 0.. {
        let paths = identity_paths(&base, &args, &items)?;
        // Whether a server there suits us, or what sends us on. (Never with
        // an identity given: the caller chose to share it.)
        let folded = |server: &connect::Greeted, items: &mut Vec<IdentityItem>| {
            round < MAX_ROUNDS && args.given_identity.is_none() && fold(server, items)
        };

        // --kill takes down the server this caller would be served by.
        if args.mode == Mode::Kill
            && let Some(server) = connect::connect_within(&paths.socket, Some(KILL_PATIENCE))?
            && folded(&server, &mut items)
        {
            continue;
        }

        // A caller whose stdio is a terminal, or is not, where the first
        // caller's was the other way: a server for callers like us (the
        // identity folded by our terminals) is found at once, without a
        // greeting from the first one's on every call. Nobody there costs
        // one failed connect.
        // (Round 0: the identity's own items, which never name terminals.)
        if round == 0 && args.mode == Mode::Normal && args.given_identity.is_none() {
            let mut ours = items.clone();
            ours.push(IdentityItem::Terminals(crate::sys::stdio_terminals()));
            let folded_paths = identity_paths(&base, &args, &ours)?;
            if let Some(server) = connect::connect(&folded_paths.socket)? {
                items = ours;
                if folded(&server, &mut items) {
                    continue;
                }
                return call::call(server, &args, closed);
            }
        }

        if matches!(args.mode, Mode::Normal | Mode::Fresh)
            && let Some(server) = connect::connect(&paths.socket)?
        {
            if folded(&server, &mut items) {
                continue;
            }
            if args.mode == Mode::Normal {
                return call::call(server, &args, closed);
            }
        }

        let lock = connect::lock_identity(&paths.lock)?;
        match args.mode {
            Mode::Kill => return remove_identity(&paths).map(|()| 0),
            Mode::Normal => {
                if let Some(server) = connect::connect(&paths.socket)? {
                    drop(lock);
                    if folded(&server, &mut items) {
                        continue;
                    }
                    return call::call(server, &args, closed);
                }
            }
            // (--list returned above.)
            Mode::Fresh | Mode::List { .. } => {}
        }

        let server = create_server(&base, &paths, &args, &items, lock)?;
        return call::call(server, &args, closed);
    }
    unreachable!("the rounds end at MAX_ROUNDS")
}

/// A new server for this identity, made while we hold its `lock`
/// (released when it is up).
fn create_server(
    base: &std::path::Path,
    paths: &rundir::IdentityPaths,
    args: &ClientArgs,
    items: &[IdentityItem],
    lock: rundir::IdentityLock,
) -> Result<connect::Greeted, Failure> {
    let budget = budget::Budget::from_env()?;
    // Best effort: a directory we cannot tidy fails clearly just below.
    let _ = rundir::preclean(base, rundir::MAX_IDENTITIES);
    let _ = budget::make_room(base, &paths.socket, budget.server_limit);
    // A folded identity (a value of a variable, a world, terminals) is one
    // of many of its script's: its server idles out sooner.
    let folded = items.len() > args.identity_items.len();
    let idle_limit = folded.then_some(budget.folded_idle_secs);
    let server = spawn::create_server(paths, args, idle_limit)?;
    // For --list: what this server is, and why the last one went.
    // Best effort: the server is up either way.
    let _ = lock.write_record(server_record(args, items));
    if args.caller_dir && !server.offers(crate::protocol::CAP_CONTEXT) {
        // Useless to anyone: take the new server down again (we hold the
        // lock, so its file may go too).
        let _ = rundir::remove_if_exists(&paths.socket);
        let _ = rundir::remove_if_exists(&paths.lock);
    }
    drop(lock);
    Ok(server)
}

/// --kill with no server answering: its socket and lock file go (we
/// hold the lock).
fn remove_identity(paths: &rundir::IdentityPaths) -> Result<(), Failure> {
    for path in [&paths.socket, &paths.lock] {
        rundir::remove_if_exists(path)
            .map_err(|e| Failure::new(format!("cannot remove {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Adds to `items` what `server` says we differ in: our world, which of
/// our fds 0, 1, 2 are terminals, and the variables its initialisation
/// read whose values here differ. Whether
/// anything was added (then the caller belongs with another server).
fn fold(server: &connect::Greeted, items: &mut Vec<IdentityItem>) -> bool {
    let before = items.len();
    let world = server
        .world_differs()
        .map(|w| IdentityItem::World(w.to_string()));
    let terminals = server.terminals_differ().map(IdentityItem::Terminals);
    let names = server.env_differs();
    let vars = names
        .iter()
        .map(|name| IdentityItem::EnvVar(OsStr::from_bytes(name).to_owned()));
    for item in world.into_iter().chain(terminals).chain(vars) {
        if !items.contains(&item) {
            items.push(item);
        }
    }
    items.len() > before
}

/// How many times a caller moves on to an identity with more in it; after
/// that it takes the server it has (one whose start-up reads other
/// variables for every value of the last is not worth chasing further).
const MAX_ROUNDS: usize = 4;

/// How long --kill waits for a server's greeting, to learn whether this
/// caller belongs with another; a server at its call limit is killed as
/// the one found.
const KILL_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

fn identity_paths(
    base: &Path,
    args: &ClientArgs,
    items: &[IdentityItem],
) -> Result<IdentityPaths, Failure> {
    match &args.given_identity {
        Some(ident) => IdentityPaths::for_given(base, ident),
        None => {
            let hash = rundir::identity_hash(&IdentitySpec {
                items,
                interpreter: &args.interpreter,
                script: args.script.as_deref(),
                include_cwd: !args.caller_dir,
            })
            .map_err(|e| Failure::new(format!("cannot compute the server identity: {e}")))?;
            IdentityPaths::for_hash(base, &hash)
        }
    }
}

/// The record of a server this caller has created: its script and
/// interpreter, when, and what its identity depends on (`null` for an
/// identity given with `-g`).
fn server_record(args: &ClientArgs, items: &[IdentityItem]) -> serde_json::Value {
    let text = |s: &OsStr| s.to_string_lossy().into_owned();
    let depends_on = match args.given_identity {
        Some(_) => None,
        None => rundir::identity_inputs_json(&IdentitySpec {
            items,
            interpreter: &args.interpreter,
            script: args.script.as_deref(),
            include_cwd: !args.caller_dir,
        }),
    };
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    serde_json::json!({
        "record": 1,
        "created": created,
        "script": args.script.as_deref().map(text),
        // The exact bytes (`script` is text: a non-UTF-8 byte is lost).
        "script_hex": args.script.as_deref().map(|s| crate::protocol::hex_lower(s.as_bytes())),
        "interpreter": args.interpreter.iter().map(|w| text(w)).collect::<Vec<_>>(),
        "depends_on": depends_on,
    })
}

/// Opens /dev/null on each of fds 0, 1, 2 that is closed, in that order
/// (open takes the lowest free number); says which were.
fn hold_closed_stdio() -> Result<[bool; 3], Failure> {
    let mut closed = [false; 3];
    for (fd, was_closed) in closed.iter_mut().enumerate() {
        if crate::sys::fd_is_open(fd as i32) {
            continue;
        }
        *was_closed = true;
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| Failure::new(format!("cannot open /dev/null: {e}")))?;
        // Held for the client's life, as the caller's fd would be, and
        // inherited as it would be: the setup run must not start with it
        // closed (open's O_CLOEXEC would close it at exec).
        crate::sys::set_cloexec(std::os::fd::AsFd::as_fd(&null), false)
            .map_err(|e| Failure::new(format!("cannot keep /dev/null open: {e}")))?;
        let held = std::os::fd::IntoRawFd::into_raw_fd(null);
        if held != fd as i32 {
            return Err(Failure::new(format!(
                "/dev/null opened on fd {held}, not on closed fd {fd}"
            )));
        }
    }
    Ok(closed)
}
