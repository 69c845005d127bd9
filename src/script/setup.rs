//! The end of the script's initialisation: [`initialisation_complete`].
//!
//! ```text
//! setup run (the script, started by the client with PREFORK_INTERP set)
//!   │ check: one thread, PREFORK_INTERP, its fds, the options
//!   │ record what initialisation did to the environment (init_env)
//!   │ flush stdout (what the script printed goes to the caller once)
//!   ├─fork─> server (setsid, SIGCHLD default, stdio /dev/null, syslog)
//!   exit 0     └─ Server::run: the call loop, see `server`
//!   (the client was waiting for this exit)
//! ```

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::init_env;
use super::invocation::Invocation;
use super::log;
use super::options::Options;
use super::reload::Reload;
use super::server::Server;
use super::title;
use crate::protocol::{self, SetupEnv};
use crate::sys::{self, Forked, Pidfd};

/// Ends the script's initialisation. Standalone (no `PREFORK_INTERP`):
/// returns at once. Under prefork-interp: becomes the server and returns
/// only in executors, once per call.
///
/// What the start-up before this call did to the process environment
/// (variables set, changed or removed since exec, as /proc/self/environ
/// shows the exec-time environment) is recorded here and laid over the
/// caller's environment in every call, as a direct run would have it.
///
/// Fails (in the setup run, whose stderr the caller sees) if other
/// threads are running, `PREFORK_INTERP` is malformed, an option is, or
/// /proc/self/environ cannot be read.
pub fn initialisation_complete(options: Options) -> io::Result<Invocation> {
    let Some(value) = std::env::var_os(protocol::ENV_VAR) else {
        return Ok(Invocation::standalone());
    };
    let setup = take_setup_env(&value)?;
    let facility = options.check()?;
    let reload = Reload::new(
        reload_files(&options)?,
        (setup.started_secs, setup.started_nsecs.into()),
    );
    init_env::record()?;
    title::prepare();

    // Whatever the script printed must reach the caller's stderr now, not
    // be copied into every executor and printed again.
    io::stdout().flush()?;
    if let Some(facility) = facility {
        log::open(&program_name(), facility);
    }
    if setup.client_caps.iter().any(|c| c == protocol::CAP_LIMITS) {
        // The server, monitor and spares are ours, not the caller's: under
        // a caller's low soft limit of processes (or open files), their
        // forks must not fail where a direct run would not. Each call's
        // executor takes its caller's limits back (capability `limits`).
        crate::sys::raise_soft_limits_for_server();
    }
    let setup_run = become_daemon()?;
    title::show(title::Role::Server);
    // The first caller's variables, as exec gave them, stay with its
    // call: not readable in the server's /proc/PID/environ for days.
    crate::sys::title::forget_initial_environ();

    // From here on we are the daemon: the script's own code must never run
    // here, so a failure is logged and ends this process (the waiting
    // client then sees no greeting and says so).
    // SAFETY: the client handed these fds to the setup run for the
    // server's use alone; nothing else in this process holds them.
    let server = unsafe { Server::new(&setup, &options, reload, setup_run) }.and_then(|server| {
        sys::null_stdio()?;
        Ok(server)
    });
    let server = server.unwrap_or_else(|e| {
        log::error(&format!("cannot start the server: {e}"));
        sys::exit_now(1)
    });
    // SAFETY: the first call's socket, ours alone as above.
    let first_call = unsafe { OwnedFd::from_raw_fd(setup.call) };
    Ok(server.run(first_call))
}

/// Reads and removes `PREFORK_INTERP` (children of the script must not
/// mistake themselves for a setup run), after checking that forking is
/// sound, and checks the fds it names.
fn take_setup_env(value: &OsStr) -> io::Result<SetupEnv> {
    let threads = sys::procfs::thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "prefork-interp: {threads} threads are running; initialisation_complete must be \
             called before any other thread starts (a fork would lose them)"
        )));
    }
    // SAFETY: single-threaded, checked just above.
    unsafe { std::env::remove_var(protocol::ENV_VAR) };
    let setup = protocol::decode_setup_env(value.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("prefork-interp: {e}")))?;
    for fd in [setup.listen, setup.call, setup.watch_err, setup.watch_in] {
        if fd < 3 || !sys::fd_is_open(fd) {
            return Err(io::Error::other(format!(
                "prefork-interp: {} names fd {fd}, which is not open",
                protocol::ENV_VAR
            )));
        }
    }
    Ok(setup)
}

/// The files whose change means a reload: the program itself (with
/// `autoreload`), then the extra ones.
fn reload_files(options: &Options) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    if options.autoreload {
        files.push(std::env::current_exe()?);
    }
    files.extend(options.autoreload_extra.iter().cloned());
    Ok(files)
}

/// The program's file name, for syslog.
fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| Some(Path::new(&a).file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "prefork-interp".into())
}

/// Forks the server; the setup run exits 0 here (the client is waiting
/// for it). Returns, in the server, a pidfd of the setup run, to know when
/// the server's pages are its own.
fn become_daemon() -> io::Result<Option<Pidfd>> {
    let setup_run = Pidfd::open(nix::unistd::getpid()).ok();
    // SAFETY: single-threaded, checked in take_setup_env.
    if let Forked::Parent(_) = unsafe { sys::fork() }? {
        sys::exit_now(0);
    }
    let _ = nix::unistd::setsid();
    // A caller that ignored SIGCHLD would make every wait fail.
    sys::default_signal(libc::SIGCHLD);
    Ok(setup_run)
}
