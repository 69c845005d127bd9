//! The conformance agent for the Rust script side.
//!
//! Every script side (Rust, Perl, Python, Ruby) has an agent that understands
//! the same little language, so that one table of scenarios
//! (tests/common/scenarios.rs and its theme files) drives them all. Keep them in step.
//!
//! At initialisation (read from the environment of the first call):
//!
//! | variable             | effect                                            |
//! |----------------------|---------------------------------------------------|
//! | `AGENT_INIT_SLEEP`   | sleep this many seconds first                      |
//! | `AGENT_INIT_PRINT`   | print this to stdout, without a newline            |
//! | `AGENT_INIT_EXIT`    | print a message to stderr and exit with this code  |
//! | `AGENT_MAX_SERVERS`  | max_servers (negative: no limit)                   |
//! | `AGENT_SPARE_HANDLERS` | spare_handlers                                   |
//! | `AGENT_IDLE_TIMEOUT` | idle_timeout in seconds                            |
//! | `AGENT_INTERRUPT_GRACE` | interrupt_grace in seconds                      |
//! | `AGENT_RELOAD_EXTRA` | one extra file to watch for auto-reload            |
//! | `AGENT_INIT_THREAD`  | start a thread that stays, then initialise (which  |
//! |                      | must refuse: the agent then exits 127)             |
//! | `AGENT_INIT_ATEXIT`  | register an exit handler (atexit, END, ...) that   |
//! |                      | appends the line `exit` to this file               |
//! | `AGENT_INIT_SETENV`  | `NAME=VALUE,...`: set these in its environment     |
//! | `AGENT_INIT_UNSETENV`| `NAME,...`: remove these from its environment      |
//! | `AGENT_INIT_ENVREAD` | `NAME`: read variable NAME the way the script side |
//! |                      | tracks (Rust: prefork_interp::env_var_os), for     |
//! |                      | `@initenv`                                          |
//!
//! The agent reads these settings untracked (Rust: std::env; Perl: before
//! the module is loaded; Python: before it is imported), so that calls
//! that differ in them still share a server.
//!
//! Per call, each argument `@CMD` or `@CMD:PARAM` is a command, run in
//! order; other arguments are data. Then exit 0.
//!
//! | command          | effect                                               |
//! |------------------|------------------------------------------------------|
//! | `@exit:N`        | exit with status N                                   |
//! | `@args`          | print every argument in hex, one per line             |
//! | `@env:NAME`      | print the variable's value in hex, or `unset`        |
//! | `@envall`        | print every `NAME=value` in hex, sorted, one a line  |
//! | `@cat`           | copy stdin to stdout                                 |
//! | `@out:TEXT`      | print TEXT and a newline to stdout                   |
//! | `@err:TEXT`      | print TEXT and a newline to stderr                   |
//! | `@kill:SIG`      | die of signal SIG (name without SIG): set it to its  |
//! |                  | default action, then send it to itself              |
//! | `@sleep:SECS`    | sleep                                                |
//! | `@pid:FILE`      | write its pid to FILE                                |
//! | `@spawn:FILE`    | start `sleep 30` with its stdio and SIGHUP ignored   |
//! |                  | (as `nohup` would), not waited for; it writes its    |
//! |                  | pid to FILE once it ignores SIGHUP; return then      |
//! | `@daemon:FILE`   | start a daemon (`setsid`, stdio on /dev/null) that   |
//! |                  | writes its pid to FILE and sleeps 30 s; return once  |
//! |                  | FILE exists (the daemon is detached)                 |
//! | `@server`        | print the server's pid (parent of its parent)        |
//! | `@fds`           | print its open fds, space-separated (Ruby: not its   |
//! |                  | interpreter's own eventfd and epoll, which a fork    |
//! |                  | renumbers)                                           |
//! | `@fdlink:N`      | print where fd N points                               |
//! | `@sigdisp:SIG`   | print SIG's disposition: default, ignore or handled  |
//! | `@onint:FILE`    | on SIGINT, create FILE and die of SIGINT             |
//! | `@intstay:FILE`  | on SIGINT, create FILE and carry on                  |
//! | `@trap:SIG`      | on SIG, print `caught SIG` and exit 0                |
//! | `@cwd`           | print the current directory                          |
//! | `@umask`         | print the umask, four octal digits                   |
//! | `@limits`        | print /proc/self/limits, then `nice N` and `oom N`   |
//! | `@ns`            | for mnt pid net user uts ipc cgroup: `NAME TARGET`,  |
//! |                  | TARGET what /proc/self/ns/NAME links to              |
//! | `@cgroup`        | print /proc/self/cgroup as it is                     |
//! | `@sigs`          | print the `SigBlk:` and `SigIgn:` lines of           |
//! |                  | /proc/self/status (blocked and ignored signals)      |
//! | `@groups`        | print the `Groups:` line of /proc/self/status        |
//! | `@fdsto:N`       | `@fds`, written straight to fd N                     |
//! | `@handlesto:N`   | write to fd N whether the language's stdin, stdout,  |
//! |                  | stderr handles are `open` or `closed`, one line      |
//! | `@initenv`       | print the value initialisation read of the variable  |
//! |                  | `AGENT_INIT_ENVREAD` names, in hex, or `unset`       |
//! | `@time`          | print the wall-clock time in nanoseconds              |
//! | `@tty`           | print isatty of fds 0, 1, 2 as `1`/`0`, spaced        |
//! | `@inittty`       | the same, as initialisation found them               |
//! | `@die:TEXT`      | fail the language's own way (panic, die, raise)       |
//! | `@_exit:N`       | exit at once with N: no flushing, no exit handlers    |
//!
//! Terminal commands (an error's name is its errno's, as `ENXIO`):
//!
//! | command          | effect                                               |
//! |------------------|------------------------------------------------------|
//! | `@devtty`        | open /dev/tty for reading and writing: print `ok`,   |
//! |                  | or the error's name                                  |
//! | `@fg`            | print `fg` if fd 0's terminal's foreground process   |
//! |                  | group (tcgetpgrp) is its own, `bg` if not, or the    |
//! |                  | error's name                                         |
//! | `@winsize`       | print fd 0's window size (TIOCGWINSZ), `ROWS COLS`,  |
//! |                  | or the error's name                                  |
//! | `@winch`         | count SIGWINCHs from now on (a handler)              |
//! | `@waitwinch`     | wait until one has come since `@winch`               |
//! | `@ask`           | write `Say: ` to /dev/tty, read a line from it,      |
//! |                  | print `said LINE` (without its newline)              |
//! | `@secret`        | read a password the language's usual way (Python:    |
//! |                  | getpass.getpass(); Ruby: io/console's noecho, the    |
//! |                  | prompt written inside it; Rust, Perl, as getpass     |
//! |                  | does it: echo off on /dev/tty (TCSAFLUSH), write     |
//! |                  | `Password: ` to it, read a line, settings back, a    |
//! |                  | newline to it);                                      |
//! |                  | print `length N` (N: its length without the newline) |
//! | `@pager:N`       | pipe the lines `line 1` to `line N` into `less`, its |
//! |                  | child; print `less exited CODE` when it ends         |
//! | `@curses:PYTHON` | run PYTHON with [`CURSES_PY`] (a curses program that |
//! |                  | waits for a key), its child; print `curses exited    |
//! |                  | CODE` when it ends                                   |
//!
//! A child's CODE is its exit code, or `signal N`.

use std::ffi::{CString, OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::exit;
use std::sync::OnceLock;
use std::time::Duration;

#[path = "../support/proc_stat.rs"]
mod proc_stat;

use proc_stat::proc_state;

/// What `@spawn` runs: `sleep 30` that a hang-up does not end (a
/// terminal's end would otherwise take it, whoever else forgets to); its
/// pid to the file once SIGHUP is ignored.
const SPAWNED_SH: &str = r#"trap '' HUP; echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec sleep 30"#;

/// What `@daemon` runs in its new session: its pid to the file, then sleep.
const DAEMON_SH: &str = r#"echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec sleep 30"#;

/// The curses program of `@curses`, the same in every agent: it shows a
/// line, waits for a key, and after the screen is back prints the key's
/// code.
const CURSES_PY: &str = "import curses\n\
def main(screen):\n    \
screen.addstr(0, 0, 'curses: press a key')\n    \
screen.refresh()\n    \
return screen.getch()\n\
print('curses got %d' % curses.wrapper(main))\n";

/// SIGWINCHs since `@winch`.
static WINCHES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn on_winch(_: libc::c_int) {
    WINCHES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// An error's errno name (`ENXIO`), as the agents print it.
fn errno_name(e: &io::Error) -> String {
    format!(
        "{:?}",
        nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
    )
}

/// A child's end as the agents print it: its exit code or `signal N`.
fn child_code(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.code() {
        Some(code) => code.to_string(),
        None => format!("signal {}", status.signal().unwrap_or(0)),
    }
}

fn open_tty() -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
}

/// A line read from `tty` byte by byte (nothing beyond it is consumed),
/// without its newline.
fn read_line(tty: &mut std::fs::File) -> Vec<u8> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while tty.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    line
}

/// A password, read as getpass(3) and Python's getpass do.
fn read_secret() -> Vec<u8> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let mut tty = open_tty().expect("/dev/tty");
    let old = tcgetattr(&tty).unwrap();
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&tty, SetArg::TCSAFLUSH, &quiet).unwrap();
    tty.write_all(b"Password: ").unwrap();
    let line = read_line(&mut tty);
    tcsetattr(&tty, SetArg::TCSAFLUSH, &old).unwrap();
    tty.write_all(b"\n").unwrap();
    line
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

static ONINT_PATH: OnceLock<CString> = OnceLock::new();
static INTSTAY_PATH: OnceLock<CString> = OnceLock::new();

/// Creates the file at `path`, from a signal handler: only
/// async-signal-safe calls.
fn create_from_handler(path: &CString) {
    // SAFETY: open and close are async-signal-safe; `path` is a valid C
    // string.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o600);
        if fd >= 0 {
            libc::close(fd);
        }
    }
}

extern "C" fn on_sigint_stay(_: libc::c_int) {
    if let Some(path) = INTSTAY_PATH.get() {
        create_from_handler(path);
    }
}
static ATEXIT_PATH: OnceLock<CString> = OnceLock::new();
/// Which of fds 0, 1, 2 initialisation had as terminals (`@inittty`).
static INIT_TTY: OnceLock<String> = OnceLock::new();

/// What initialisation read of the variable AGENT_INIT_ENVREAD names.
static INIT_ENV: OnceLock<Option<OsString>> = OnceLock::new();
static TRAP_MESSAGE: OnceLock<Vec<u8>> = OnceLock::new();

extern "C" fn on_trapped(_: libc::c_int) {
    if let Some(message) = TRAP_MESSAGE.get() {
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            libc::write(1, message.as_ptr().cast(), message.len());
            libc::_exit(0);
        }
    }
}

extern "C" fn at_exit() {
    if let Some(path) = ATEXIT_PATH.get() {
        // SAFETY: plain system calls on a valid C string.
        unsafe {
            let fd = libc::open(
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND,
                0o600,
            );
            if fd >= 0 {
                libc::write(fd, b"exit\n".as_ptr().cast(), 5);
                libc::close(fd);
            }
        }
    }
}

extern "C" fn on_sigint(_: libc::c_int) {
    // Only async-signal-safe calls here.
    if let Some(path) = ONINT_PATH.get() {
        create_from_handler(path);
        // SAFETY: signal and raise are async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::raise(libc::SIGINT);
        }
    }
}

fn main() {
    // Panics (`@die`) print the same text in every run: the default hook
    // names the thread's id, which differs between runs.
    std::panic::set_hook(Box::new(|info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        eprintln!("agent panicked: {text}");
    }));
    if let Some(secs) = env_f64("AGENT_INIT_SLEEP") {
        std::thread::sleep(Duration::from_secs_f64(secs));
    }
    if let Some(text) = std::env::var_os("AGENT_INIT_PRINT") {
        io::stdout().write_all(text.as_bytes()).unwrap();
    }
    if let Some(code) = std::env::var("AGENT_INIT_EXIT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        eprintln!("agent: failing initialisation as asked");
        exit(code);
    }
    if std::env::var_os("AGENT_INIT_THREAD").is_some() {
        std::thread::spawn(|| std::thread::sleep(Duration::from_secs(3600)));
    }
    if let Some(path) = std::env::var_os("AGENT_INIT_ATEXIT") {
        ATEXIT_PATH
            .set(CString::new(path.as_bytes()).unwrap())
            .unwrap();
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(at_exit) };
    }
    if let Some(list) = std::env::var_os("AGENT_INIT_SETENV") {
        for entry in list.as_bytes().split(|&b| b == b',') {
            let eq = entry.iter().position(|&b| b == b'=').expect("NAME=VALUE");
            // SAFETY: single-threaded yet (AGENT_INIT_THREAD aside).
            unsafe {
                std::env::set_var(
                    OsStr::from_bytes(&entry[..eq]),
                    OsStr::from_bytes(&entry[eq + 1..]),
                )
            };
        }
    }
    if let Some(list) = std::env::var_os("AGENT_INIT_UNSETENV") {
        for name in list.as_bytes().split(|&b| b == b',') {
            // SAFETY: as above.
            unsafe { std::env::remove_var(OsStr::from_bytes(name)) };
        }
    }
    if let Some(name) = std::env::var_os("AGENT_INIT_ENVREAD") {
        let _ = INIT_ENV.set(prefork_interp::env_var_os(name));
    }
    let _ = INIT_TTY.set(isatty_words());
    let mut options = prefork_interp::Options::default();
    if let Some(max) = env_f64("AGENT_MAX_SERVERS") {
        options.max_servers = (max >= 0.0).then_some(max as usize);
    }
    if let Some(spare) = env_f64("AGENT_SPARE_HANDLERS") {
        options.spare_handlers = spare as usize;
    }
    if let Some(grace) = env_f64("AGENT_INTERRUPT_GRACE") {
        options.interrupt_grace = Some(Duration::from_secs_f64(grace));
    }
    if let Some(idle) = env_f64("AGENT_IDLE_TIMEOUT") {
        options.idle_timeout = Some(Duration::from_secs_f64(idle));
    }
    if let Some(extra) = std::env::var_os("AGENT_RELOAD_EXTRA") {
        options.autoreload_extra.push(extra.into());
    }

    let invocation = prefork_interp::initialisation_complete(options).unwrap_or_else(|e| {
        eprintln!("agent: {e}");
        exit(127)
    });
    let code = run(&invocation.args);
    io::stdout().flush().unwrap();
    exit(code);
}

fn run(args: &[OsString]) -> i32 {
    let mut out = io::stdout().lock();
    for arg in args {
        let Some(command) = arg.as_bytes().strip_prefix(b"@") else {
            continue;
        };
        let (name, param) = match command.iter().position(|&b| b == b':') {
            Some(i) => (&command[..i], &command[i + 1..]),
            None => (command, &b""[..]),
        };
        let param_str = String::from_utf8_lossy(param).into_owned();
        match name {
            b"exit" => return param_str.parse().expect("@exit:N"),
            b"args" => {
                for a in args {
                    writeln!(out, "{}", hex(a.as_bytes())).unwrap();
                }
            }
            b"env" => match std::env::var_os(OsStr::from_bytes(param)) {
                Some(v) => writeln!(out, "{}", hex(v.as_bytes())).unwrap(),
                None => writeln!(out, "unset").unwrap(),
            },
            b"envall" => {
                let mut all: Vec<Vec<u8>> = std::env::vars_os()
                    .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
                    .collect();
                all.sort();
                for e in all {
                    writeln!(out, "{}", hex(&e)).unwrap();
                }
            }
            b"cat" => {
                let mut data = Vec::new();
                io::stdin().read_to_end(&mut data).unwrap();
                out.write_all(&data).unwrap();
            }
            b"out" => writeln!(out, "{param_str}").unwrap(),
            b"err" => {
                out.flush().unwrap();
                eprintln!("{param_str}");
            }
            b"kill" => {
                out.flush().unwrap();
                let sig: nix::sys::signal::Signal =
                    format!("SIG{param_str}").parse().expect("@kill:SIGNAL");
                // SAFETY: restoring the default action of a signal. (KILL
                // and STOP refuse, and need no reset.)
                let _ =
                    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
                nix::sys::signal::raise(sig).unwrap();
            }
            b"sleep" => std::thread::sleep(Duration::from_secs_f64(param_str.parse().unwrap())),
            b"pid" => {
                let tmp = format!("{param_str}.tmp");
                std::fs::write(&tmp, std::process::id().to_string()).unwrap();
                std::fs::rename(&tmp, &param_str).unwrap();
            }
            b"spawn" => {
                // Left behind on purpose: its monitor's business.
                #[allow(clippy::zombie_processes)]
                let _child = std::process::Command::new("sh")
                    .args(["-c", SPAWNED_SH, &param_str])
                    .spawn()
                    .unwrap();
                while !std::path::Path::new(&param_str).exists() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            b"daemon" => {
                // Not waited for on purpose: it detaches.
                #[allow(clippy::zombie_processes)]
                let _daemon = std::process::Command::new("setsid")
                    .args(["sh", "-c", DAEMON_SH, &param_str])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                // As a daemonising program does: return once it is detached.
                while !std::path::Path::new(&param_str).exists() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            b"server" => {
                // The executor's parent is its monitor, whose parent is
                // the server.
                let monitor = std::os::unix::process::parent_id();
                let (_, server) = proc_state(monitor).expect("the monitor's /proc/PID/stat");
                writeln!(out, "{server}").unwrap();
            }
            b"fds" => writeln!(out, "{}", open_fds()).unwrap(),
            b"fdsto" => write_to_fd(&param_str, &format!("{}\n", open_fds())),
            b"handlesto" => {
                let words = [0, 1, 2].map(|fd| {
                    // SAFETY: F_GETFD on a number changes nothing.
                    if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
                        "open"
                    } else {
                        "closed"
                    }
                });
                write_to_fd(&param_str, &format!("{}\n", words.join(" ")));
            }
            b"ns" => {
                for name in ["mnt", "pid", "net", "user", "uts", "ipc", "cgroup"] {
                    let target = match std::fs::read_link(format!("/proc/self/ns/{name}")) {
                        Ok(t) => t.display().to_string(),
                        Err(e) => errno_name(&e),
                    };
                    writeln!(out, "{name} {target}").unwrap();
                }
            }
            b"sigs" => {
                let status = std::fs::read_to_string("/proc/self/status").unwrap();
                for line in status.lines() {
                    if line.starts_with("SigBlk:") || line.starts_with("SigIgn:") {
                        writeln!(out, "{line}").unwrap();
                    }
                }
            }
            b"groups" => {
                let status = std::fs::read_to_string("/proc/self/status").unwrap();
                let line = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
                writeln!(out, "{line}").unwrap();
            }
            b"cgroup" => out
                .write_all(&std::fs::read("/proc/self/cgroup").unwrap())
                .unwrap(),
            b"initenv" => match INIT_ENV.get().cloned().flatten() {
                Some(v) => writeln!(out, "{}", hex(v.as_bytes())).unwrap(),
                None => writeln!(out, "unset").unwrap(),
            },
            b"fdlink" => {
                let target = std::fs::read_link(format!("/proc/self/fd/{param_str}")).unwrap();
                writeln!(out, "{}", target.display()).unwrap();
            }
            b"sigdisp" => {
                let sig: nix::sys::signal::Signal =
                    format!("SIG{param_str}").parse().expect("@sigdisp:SIGNAL");
                // SAFETY: querying the disposition without changing it.
                let current = unsafe {
                    let mut old: libc::sigaction = std::mem::zeroed();
                    libc::sigaction(sig as libc::c_int, std::ptr::null(), &mut old);
                    old.sa_sigaction
                };
                let word = match current {
                    libc::SIG_DFL => "default",
                    libc::SIG_IGN => "ignore",
                    _ => "handled",
                };
                writeln!(out, "{word}").unwrap();
            }
            b"onint" => {
                ONINT_PATH.set(CString::new(param).unwrap()).unwrap();
                // SAFETY: installing a handler that is async-signal-safe.
                unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
            }
            b"intstay" => {
                INTSTAY_PATH.set(CString::new(param).unwrap()).unwrap();
                // SAFETY: installing a handler that is async-signal-safe.
                unsafe {
                    libc::signal(
                        libc::SIGINT,
                        on_sigint_stay as *const () as libc::sighandler_t,
                    )
                };
            }
            b"trap" => {
                out.flush().unwrap();
                let sig: nix::sys::signal::Signal =
                    format!("SIG{param_str}").parse().expect("@trap:SIGNAL");
                TRAP_MESSAGE
                    .set(format!("caught {param_str}\n").into_bytes())
                    .unwrap();
                // SAFETY: installing a handler that is async-signal-safe.
                unsafe {
                    libc::signal(
                        sig as libc::c_int,
                        on_trapped as *const () as libc::sighandler_t,
                    )
                };
            }
            b"cwd" => writeln!(out, "{}", std::env::current_dir().unwrap().display()).unwrap(),
            b"limits" => {
                // What a direct run inherits beyond fds: every resource
                // limit, the nice value (field 19 of stat) and the OOM
                // score adjustment, as the kernel shows them.
                let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
                let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
                let after_name = &stat[stat.rfind(')').unwrap() + 2..];
                let nice = after_name.split(' ').nth(16).unwrap();
                let oom = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
                write!(out, "{limits}nice {nice}\noom {oom}").unwrap();
            }
            b"umask" => {
                // SAFETY: umask always succeeds; the value goes back at once.
                let mask = unsafe {
                    let mask = libc::umask(0);
                    libc::umask(mask);
                    mask
                };
                writeln!(out, "{mask:04o}").unwrap();
            }
            b"time" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                writeln!(out, "{}", now.as_nanos()).unwrap();
            }
            b"tty" => writeln!(out, "{}", isatty_words()).unwrap(),
            b"inittty" => writeln!(out, "{}", INIT_TTY.get().unwrap()).unwrap(),
            b"devtty" => match open_tty() {
                Ok(_) => writeln!(out, "ok").unwrap(),
                Err(e) => writeln!(out, "{}", errno_name(&e)).unwrap(),
            },
            b"fg" => match nix::unistd::tcgetpgrp(io::stdin()) {
                Ok(group) if group == nix::unistd::getpgrp() => writeln!(out, "fg").unwrap(),
                Ok(_) => writeln!(out, "bg").unwrap(),
                Err(e) => writeln!(out, "{e:?}").unwrap(),
            },
            b"winsize" => {
                // SAFETY: TIOCGWINSZ fills a winsize that lives through the
                // call.
                let mut size: libc::winsize = unsafe { std::mem::zeroed() };
                if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut size) } == 0 {
                    writeln!(out, "{} {}", size.ws_row, size.ws_col).unwrap();
                } else {
                    writeln!(out, "{}", errno_name(&io::Error::last_os_error())).unwrap();
                }
            }
            b"winch" => {
                // SAFETY: installing a handler that is async-signal-safe.
                unsafe {
                    libc::signal(libc::SIGWINCH, on_winch as *const () as libc::sighandler_t)
                };
            }
            b"waitwinch" => {
                while WINCHES.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            b"ask" => {
                let mut tty = open_tty().expect("/dev/tty");
                tty.write_all(b"Say: ").unwrap();
                let line = read_line(&mut tty);
                writeln!(out, "said {}", String::from_utf8_lossy(&line)).unwrap();
            }
            b"secret" => {
                out.flush().unwrap();
                let secret = read_secret();
                writeln!(out, "length {}", secret.len()).unwrap();
            }
            b"pager" => {
                out.flush().unwrap();
                let lines: usize = param_str.parse().expect("@pager:N");
                let text: String = (1..=lines).map(|i| format!("line {i}\n")).collect();
                let mut less = std::process::Command::new("less")
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .expect("less");
                // One write, then EOF: less has it all at once.
                let _ = less.stdin.take().unwrap().write_all(text.as_bytes());
                let status = less.wait().unwrap();
                writeln!(out, "less exited {}", child_code(status)).unwrap();
            }
            b"curses" => {
                out.flush().unwrap();
                let status = std::process::Command::new(OsStr::from_bytes(param))
                    .args(["-c", CURSES_PY])
                    .status()
                    .expect("python");
                writeln!(out, "curses exited {}", child_code(status)).unwrap();
            }
            b"die" => panic!("{param_str}"),
            b"_exit" => {
                // SAFETY: _exit is always safe.
                unsafe { libc::_exit(param_str.parse().expect("@_exit:N")) }
            }
            other => panic!("agent: unknown command @{}", String::from_utf8_lossy(other)),
        }
    }
    0
}

/// This process's open fds, space-separated, leaving out the one the
/// listing itself holds.
fn open_fds() -> String {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_link(e.path())
                .map(|t| !t.to_string_lossy().ends_with("/fd"))
                .unwrap_or(false)
        })
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect();
    fds.sort();
    let fds: Vec<String> = fds.iter().map(i32::to_string).collect();
    fds.join(" ")
}

/// Writes `text` straight to fd `fd` (a number), unbuffered.
fn write_to_fd(fd: &str, text: &str) {
    let fd: i32 = fd.parse().expect("fd number");
    // SAFETY: a plain write to a number the test names.
    unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
}

/// isatty of fds 0, 1, 2 as `1`/`0`, spaced.
fn isatty_words() -> String {
    // SAFETY: isatty on small integers.
    let t: Vec<String> = (0..3)
        .map(|fd| unsafe { libc::isatty(fd) }.to_string())
        .collect();
    t.join(" ")
}
