//! Python's `fast_exit=True` (sides/python/prefork_interp), on Python
//! 3.13 in the Debian trixie tree (target/trixie: tools/trixie-chroot
//! makes it, ./test runs that first; these tests need root, as ./test
//! and CI have).
//!
//! Every way a call can end is run twice, directly (`python3 SCRIPT`: no
//! prefork-interp, so CPython ends it as always) and through
//! prefork-interp with `fast_exit=True`, and the two must be the same:
//! exit status (or signal), stdout and stderr, except for what fast_exit
//! skips and documents, the interpreter's finalisation. A global object's
//! finaliser (`__del__`) says which end a call had: it writes a line on
//! stderr when it runs, which it does at a direct run's end, and at a
//! call's end only when fast_exit left the end to CPython (an exception,
//! another thread still running, a flush that fails...).
#[path = "support/chroot.rs"]
mod chroot;
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use chroot::Chroot;
use common::*;

/// What the finaliser of the script's global object writes on stderr.
const FINALISER: &str = "finaliser of a global ran\n";

/// The tree, or a failure that says how to make it.
fn trixie() -> Chroot {
    let target = client().parent().unwrap().parent().unwrap().to_path_buf();
    let tree = Chroot::find(&target).unwrap_or_else(|| {
        panic!(
            "{} is missing: these tests need Python 3.13 in a Debian trixie tree; \
             tools/trixie-chroot makes it (./test runs it), as root",
            target.join("trixie").display()
        )
    });
    let out = tree
        .command(Path::new("/usr/bin/python3"), Path::new("/"))
        .arg("--version")
        .output()
        .expect("running python3 in the trixie tree");
    let version = stdout_str(&out).trim().to_string();
    let minor: Option<u32> = version
        .strip_prefix("Python 3.")
        .and_then(|v| v.split('.').next()?.parse().ok());
    assert!(
        minor.is_some_and(|m| m >= 12),
        "the trixie tree's python3 is {version:?}, not 3.12 or later"
    );
    tree
}

/// A private directory inside the tree (under its /tmp): the client, the
/// module, scripts, the run directory. Calls and direct runs happen
/// inside the tree, in this directory.
struct World {
    tree: Chroot,
    /// On the host; removed on drop.
    host: tempfile::TempDir,
    /// The same directory, inside the tree.
    inside: PathBuf,
    finished: bool,
}

impl World {
    fn new() -> World {
        let tree = trixie();
        let host = tempfile::Builder::new()
            .prefix("pfi-fast-")
            .tempdir_in(tree.host(Path::new("/tmp")))
            .unwrap();
        let inside = Path::new("/tmp").join(host.path().file_name().unwrap());
        let run = host.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::create_dir(host.path().join("home")).unwrap();
        // The client is static: it runs in the tree as it is.
        let client_copy = host.path().join("prefork-interp");
        if std::fs::hard_link(client(), &client_copy).is_err() {
            std::fs::copy(client(), &client_copy).unwrap();
        }
        // The whole package, as tools/module-files lists it.
        let listed = Command::new(repo().join("tools/module-files"))
            .arg("python")
            .output()
            .unwrap();
        assert!(listed.status.success());
        for file in String::from_utf8(listed.stdout).unwrap().lines() {
            let to = host.path().join("python").join(file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(repo().join("sides/python").join(file), to).unwrap();
        }
        World {
            tree,
            host,
            inside,
            finished: false,
        }
    }

    /// `#!CLIENT -U,INTERPRETER-WORDS` then the module on sys.path, then
    /// `body`; its path inside the tree.
    fn script(&self, name: &str, interpreter: &str, body: &str) -> PathBuf {
        let inside = self.inside.join(name);
        let text = format!(
            "#!{}/prefork-interp -U,{interpreter}\n\
             import sys; sys.path.insert(0, '{}/python')\n{body}",
            self.inside.display(),
            self.inside.display()
        );
        let host = self.tree.host(&inside);
        std::fs::write(&host, text).unwrap();
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
        inside
    }

    /// `program` inside the tree, in our directory, with the caller's
    /// environment of a test.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = self.tree.command(program, &self.inside);
        cmd.env("HOME", self.inside.join("home"))
            .env("XDG_RUNTIME_DIR", self.inside.join("run"))
            .stdin(Stdio::null());
        cmd
    }

    /// A call of `script` through prefork-interp (the kernel's #!).
    fn call(&self, script: &Path, args: &[&str]) -> Command {
        let mut cmd = self.command(script);
        cmd.args(args);
        cmd
    }

    /// `python3 SCRIPT ARGS`: no prefork-interp, CPython's own end.
    fn direct(&self, script: &Path, args: &[&str]) -> Command {
        let mut cmd = self.command(Path::new("/usr/bin/python3"));
        cmd.arg(script).args(args);
        cmd
    }

    /// Processes of this world: any whose command line names our
    /// directory (clients, watchers, servers, monitors, executors).
    fn processes(&self) -> Vec<(u32, String)> {
        let needle = self.inside.as_os_str().as_encoded_bytes();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if pid == std::process::id() || !alive(pid) {
                continue;
            }
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if cmdline.windows(needle.len()).any(|w| w == needle) {
                found.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
            }
        }
        found
    }

    /// `--kill` for every server in our run directory (one per identity:
    /// a script with `-E VAR` has one per value of VAR).
    fn kill_servers(&self) -> Vec<Output> {
        let client = self.inside.join("prefork-interp");
        let list = self.command(&client).arg("--list").output().unwrap();
        assert_success(&list);
        stdout_str(&list)
            .lines()
            .skip(1)
            // (Not a server's indented notes, nor the TOTAL line.)
            .filter(|line| !line.starts_with(' ') && !line.starts_with("TOTAL "))
            .filter_map(|line| line.split_whitespace().next())
            .map(|ident| {
                self.command(&client)
                    .args(["-U", "--kill", "-g", ident])
                    .output()
                    .unwrap()
            })
            .collect()
    }

    /// Tears the servers down; fails if any process of ours is left.
    fn finish(mut self) {
        self.finished = true;
        for out in self.kill_servers() {
            assert_success(&out);
        }
        wait_until("every process of the test to exit", LIMIT, || {
            self.processes().is_empty()
        })
        .unwrap_or_else(|e| panic!("{e}: {:#?}", self.processes()));
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.kill_servers();
            std::thread::sleep(Duration::from_millis(100));
            for (pid, _) in self.processes() {
                // SAFETY: killing a process of this test by pid.
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
    }
}

const LIMIT: Duration = Duration::from_secs(10);

/// How a run ended and what it wrote.
#[derive(PartialEq, Eq)]
struct Ending {
    /// The exit status, or the signal that killed it (negated).
    status: i32,
    stdout: String,
    stderr: String,
}

/// Failures show the long line of output short.
impl std::fmt::Debug for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let long = "x".repeat(BIG);
        f.debug_struct("Ending")
            .field("status", &self.status)
            .field("stdout", &self.stdout.replace(&long, &format!("x * {BIG}")))
            .field("stderr", &self.stderr)
            .finish()
    }
}

/// The length of the long line the script prints (ENDINGS): more than a
/// buffer's worth (8 kB).
const BIG: usize = 20000;

fn ending(out: Output) -> Ending {
    Ending {
        status: out
            .status
            .code()
            .unwrap_or_else(|| -out.status.signal().unwrap()),
        stdout: stdout_str(&out),
        stderr: stderr_str(&out),
    }
}

/// Runs `cmd`; with `broken_pipe`, its stdout is a pipe nobody reads
/// (closed before it starts: writes fail with EPIPE).
fn run(mut cmd: Command, broken_pipe: bool) -> Ending {
    if broken_pipe {
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        cmd.stdout(Stdio::from(write));
    }
    ending(cmd.output().unwrap())
}

/// The script of the table below: atexit handlers registered before and
/// after initialisation, a global object whose finaliser writes
/// [`FINALISER`], output on both streams, then the ending `sys.argv[1]`
/// names. `PFI_FAST=0` in the environment (one server each way, -E)
/// turns fast_exit off.
const ENDINGS: &str = r#"import atexit, os, signal, threading, time
import prefork_interp
atexit.register(print, "atexit handler registered before initialisation")
prefork_interp.initialisation_complete(fast_exit=os.environ.get("PFI_FAST") != "0")
atexit.register(print, "atexit handler registered after initialisation")
# A global whose class is not __main__'s (a cycle through __main__'s
# dict would be frozen in the server, and never collected).
guard = {}
exec("import os\nclass Guard:\n def __del__(self): os.write(2, b'finaliser of a global ran\\n')\n", guard)
finalised = guard["Guard"]()
how = sys.argv[1]
# More than a buffer's worth, unless stdout is a broken pipe (that would
# fail here, not at the end).
print("out", "x" * (20 if how == "epipe" else 20000))
print("err", file=sys.stderr)
if how.startswith("exit:"):
    sys.exit(int(how[5:]))
if how == "exit-none":
    sys.exit(None)
if how == "exit-message":
    sys.exit("a message instead of a status")
if how == "exit-intenum":
    import enum
    class Status(enum.IntEnum):
        FIVE = 5
    sys.exit(Status.FIVE)
if how == "raise-systemexit":
    raise SystemExit(4)
if how == "systemexit-subclass":
    class Quit(SystemExit):
        pass
    raise Quit(6)
if how == "exception":
    raise ValueError("an uncaught exception")
if how == "keyboardinterrupt":
    raise KeyboardInterrupt
if how == "thread":
    def late():
        time.sleep(0.3)
        print("the non-daemon thread ends")
    threading.Thread(target=late).start()
if how == "daemon-thread":
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
if how == "sigint-while-joining":
    def interrupt():
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)
    threading.Thread(target=interrupt).start()
if how == "exit-in-atexit":
    atexit.register(sys.exit, 7)
if how == "stdout-closed":
    sys.stdout.close()
if how == "fd-1-closed":
    os.close(1)
"#;

/// One way to end: the script's argument, more environment for the
/// runs, whether stdout is a broken pipe, the exit status (negated: the
/// signal), and whether fast_exit ends it (without the finaliser).
struct Case {
    how: &'static str,
    env: &'static [(&'static str, &'static str)],
    broken_pipe: bool,
    status: i32,
    fast: bool,
}

const fn case(how: &'static str, status: i32, fast: bool) -> Case {
    Case {
        how,
        env: &[],
        broken_pipe: false,
        status,
        fast,
    }
}

const CASES: &[Case] = &[
    case("fall-off-the-end", 0, true),
    Case {
        env: &[("PYTHONUNBUFFERED", "1")],
        ..case("fall-off-the-end", 0, true)
    },
    case("exit:0", 0, true),
    case("exit:3", 3, true),
    case("exit:256", 0, true),
    case("exit:-1", 255, true),
    case("exit-none", 0, true),
    case("exit-message", 1, true),
    case("exit-intenum", 5, true),
    case("raise-systemexit", 4, true),
    case("thread", 0, true),
    case("exit-in-atexit", 0, true),
    case("stdout-closed", 0, true),
    // Left to CPython:
    case("systemexit-subclass", 6, false),
    case("exception", 1, false),
    case("keyboardinterrupt", -libc::SIGINT, false),
    case("daemon-thread", 0, false),
    case("sigint-while-joining", 0, false),
    case("fd-1-closed", 120, false),
    Case {
        broken_pipe: true,
        ..case("epipe", 120, false)
    },
    Case {
        env: &[("PYTHONINSPECT", "1")],
        ..case("fall-off-the-end", 0, false)
    },
    // fast_exit off: CPython's end, the finaliser included.
    Case {
        env: &[("PFI_FAST", "0")],
        ..case("fall-off-the-end", 0, false)
    },
];

#[test]
fn fast_exit_ends_every_way_as_python_does_but_finalisation() {
    let w = World::new();
    let script = w.script("endings", "-E,PFI_FAST,/usr/bin/python3", ENDINGS);
    for &Case {
        how,
        env,
        broken_pipe,
        status,
        fast,
    } in CASES
    {
        let with_env = |mut cmd: Command| {
            cmd.envs(env.iter().copied());
            cmd
        };
        let direct = run(with_env(w.direct(&script, &[how])), broken_pipe);
        let served = run(with_env(w.call(&script, &[how])), broken_pipe);
        let what = format!("{how} {env:?}");
        assert_eq!(direct.status, status, "{what}: direct run: {direct:#?}");
        if fast {
            assert!(
                direct.stderr.contains(FINALISER),
                "{what}: a direct run ends with the finaliser: {direct:#?}"
            );
        }
        // What the call should show: the direct run's, without the
        // finaliser's line when fast_exit ended it.
        let expected = Ending {
            stderr: if fast {
                direct.stderr.replacen(FINALISER, "", 1)
            } else {
                direct.stderr.clone()
            },
            ..direct
        };
        assert_eq!(served, expected, "{what}: through prefork-interp");
    }
    // What the cases above rely on, seen once.
    let out = run(w.call(&script, &["thread"]), false);
    assert_eq!(
        out.stdout,
        format!(
            "out {}\nthe non-daemon thread ends\natexit handler registered after \
             initialisation\natexit handler registered before initialisation\n",
            "x".repeat(BIG)
        ),
        "joined, then the atexit handlers, each once, last registered first"
    );
    let out = run(w.call(&script, &["exception"]), false);
    assert!(
        out.stderr.contains("ValueError: an uncaught exception"),
        "{out:#?}"
    );
    // Python's message about the failed flush (its wording varies with
    // the version).
    let out = run(w.call(&script, &["epipe"]), true);
    assert!(
        out.stderr
            .contains("BrokenPipeError: [Errno 32] Broken pipe\n"),
        "{out:#?}"
    );
    w.finish();
}

/// `python3 -m MODULE`: the __main__ module's frame sits above runpy's.
#[test]
fn fast_exit_under_python_dash_m() {
    let w = World::new();
    std::fs::write(
        w.host.path().join("fastmain.py"),
        format!(
            "import sys; sys.path.insert(0, '{}/python')\n{}",
            w.inside.display(),
            ENDINGS.replace("how = sys.argv[1]", "how = sys.argv[-1]")
        ),
    )
    .unwrap();
    // The script itself only names the server; python3 -m runs fastmain.
    let script = w.script("dash-m", "-E,PFI_FAST,/usr/bin/python3,-m,fastmain", "");
    for (how, status, fast) in [
        ("fall-off-the-end", 0, true),
        ("exit:3", 3, true),
        ("exception", 1, false),
    ] {
        let mut direct = w.command(Path::new("/usr/bin/python3"));
        direct.args(["-m", "fastmain", how]);
        let direct = run(direct, false);
        let served = run(w.call(&script, &[how]), false);
        assert_eq!(direct.status, status, "{how}: {direct:#?}");
        assert_eq!(served.status, status, "{how}: {served:#?}");
        assert_eq!(served.stdout, direct.stdout, "{how}");
        assert_eq!(
            served.stderr.contains(FINALISER),
            !fast,
            "{how}: {served:#?}"
        );
        assert_eq!(
            served.stderr.replacen(FINALISER, "", 1),
            direct.stderr.replacen(FINALISER, "", 1),
            "{how}"
        );
    }
    w.finish();
}

/// A launcher that runs the script's code and then has work of its own
/// (coverage, a debugger: here runpy.run_path under another __main__, then
/// an exit status of its own) decides how the run ends: fast_exit leaves
/// such ends to CPython.
#[test]
fn fast_exit_leaves_a_launchers_end_to_cpython() {
    let w = World::new();
    std::fs::write(
        w.host.path().join("inner.py"),
        "import prefork_interp, sys\n\
         prefork_interp.initialisation_complete(fast_exit=True)\n\
         print('inner ran')\n",
    )
    .unwrap();
    let script = w.script(
        "launcher",
        "/usr/bin/python3",
        "import runpy\n\
         runpy.run_path('inner.py', run_name='__main__')\n\
         print('the launcher has the last word')\n\
         sys.exit(5)\n",
    );
    let out = run(w.call(&script, &[]), false);
    assert_eq!(
        out,
        Ending {
            status: 5,
            stdout: "inner ran\nthe launcher has the last word\n".into(),
            stderr: String::new()
        }
    );
    w.finish();
}

/// What fast_exit documents it skips, besides finalisers: a file object
/// the script did not close is not flushed (a direct run's finalisation
/// closes it).
#[test]
fn fast_exit_does_not_flush_an_unclosed_file() {
    let w = World::new();
    let script = w.script(
        "unclosed",
        "/usr/bin/python3",
        "import prefork_interp\n\
         prefork_interp.initialisation_complete(fast_exit=True)\n\
         kept = open('written', 'w')\n\
         kept.write('what the buffer holds\\n')\n\
         closed = open('closed', 'w')\n\
         closed.write('closed in time\\n')\n\
         closed.close()\n",
    );
    let contents = |name: &str| std::fs::read_to_string(w.host.path().join(name)).unwrap();
    assert_eq!(run(w.direct(&script, &[]), false).status, 0);
    assert_eq!(contents("written"), "what the buffer holds\n");
    assert_eq!(contents("closed"), "closed in time\n");
    for name in ["written", "closed"] {
        std::fs::remove_file(w.host.path().join(name)).unwrap();
    }
    assert_eq!(run(w.call(&script, &[]), false).status, 0);
    assert_eq!(
        contents("written"),
        "",
        "fast_exit skipped its finalisation"
    );
    assert_eq!(contents("closed"), "closed in time\n");
    w.finish();
}

/// A call that fast_exit ends writes little of the heap it inherited,
/// so its spare, idle, copies nothing in advance; without fast_exit (a
/// call's end runs the finalisation, which writes to most of it) the spare
/// copies its heap (prefork_interp/_precopy.py). The fast_exit spare,
/// forked first, is looked at once the other has copied.
#[test]
fn fast_exit_spares_copy_nothing_in_advance() {
    let w = World::new();
    let body = |options: &str| {
        format!(
            "import json, decimal, os\nimport prefork_interp\n\
             prefork_interp.initialisation_complete({options})\n\
             print(os.getppid(), os.getpid())\n"
        )
    };
    let fast = w.script("fast", "/usr/bin/python3", &body("fast_exit=True"));
    let normal = w.script("normal", "/usr/bin/python3", &body(""));
    let (_, fast_spare) = monitor_and_spare(&w.call(&fast, &[]).output().unwrap());
    let (_, normal_spare) = monitor_and_spare(&w.call(&normal, &[]).output().unwrap());
    wait_until("the normal end's spare to copy its heap", LIMIT, || {
        let (own, anonymous) = own_of_anonymous_kb(normal_spare);
        own * 5 >= anonymous * 4
    })
    .unwrap_or_else(|e| panic!("{e}: {:?} kB", own_of_anonymous_kb(normal_spare)));
    let (own, anonymous) = own_of_anonymous_kb(fast_spare);
    assert!(
        own * 2 < anonymous,
        "the fast_exit spare has {own} of its {anonymous} kB of anonymous memory its own"
    );
    w.finish();
}
