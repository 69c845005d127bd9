//! The Python runner, `python3 -m prefork_interp PROGRAM ARG...`
//! (sides/python/prefork_interp/_runner.py): an unchanged program run
//! through the client and the runner must end exactly as `python3
//! PROGRAM ARG...` does, with the same arguments, stdin and environment:
//! stdout, stderr and status (or signal) byte for byte, on the first
//! call (cold) and on a call served by the warm server.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// A private directory: programs, HOME, the run directory; the module
/// from the repository on PYTHONPATH (direct runs get it too).
struct World {
    dir: tempfile::TempDir,
    python: PathBuf,
}

impl World {
    fn new() -> World {
        World::with_python(python())
    }

    fn with_python(python: PathBuf) -> World {
        World {
            dir: new_world_dir(),
            python,
        }
    }

    fn program(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.dir.path())
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("PYTHONPATH", repo().join("sides/python"))
            .env_remove("PYTHONUNBUFFERED")
            .env_remove("PYTHONIOENCODING")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// `python3 PROGRAM ARGS`.
    fn direct(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = self.command(&self.python);
        cmd.arg(program).args(args);
        cmd
    }

    /// `prefork-interp -U,PYTHON,-m,prefork_interp[,RUNNER-ARGS] PROGRAM ARGS`.
    fn served(&self, runner_args: &str, program: &str, args: &[&str]) -> Command {
        let mut cmd = self.command(&client());
        cmd.arg(format!(
            "-U,{},-m,prefork_interp{runner_args}",
            self.python.display()
        ))
        .arg(program)
        .args(args);
        cmd
    }

    /// Servers of this world: `--list`'s identities.
    fn servers(&self) -> Vec<String> {
        let out = self.command(&client()).arg("--list").output().unwrap();
        assert_success(&out);
        stdout_str(&out)
            .lines()
            .skip(1)
            // (Not a server's indented notes, nor the TOTAL line.)
            .filter(|line| !line.starts_with(' ') && !line.starts_with("TOTAL "))
            .filter_map(|line| line.split_whitespace().next().map(String::from))
            .collect()
    }

    fn finish(self) {
        for ident in self.servers() {
            let out = self
                .command(&client())
                .args(["-U", "--kill", "-g", &ident])
                .output()
                .unwrap();
            assert_success(&out);
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // A failed test's servers quit when their socket goes (their
        // watcher sees it); give them the chance.
        for ident in self.servers() {
            let _ = self
                .command(&client())
                .args(["-U", "--kill", "-g", &ident])
                .output();
        }
    }
}

fn run(cmd: Command, stdin: &[u8]) -> Output {
    output_with_stdin(cmd, stdin)
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?} signal {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        out.status.signal(),
        stdout_str(out),
        stderr_str(out)
    )
}

/// The direct run and two served runs (cold, then warm) end alike.
fn same_as_direct(w: &World, runner_args: &str, program: &str, args: &[&str], stdin: &[u8]) {
    let direct = run(w.direct(program, args), stdin);
    for which in ["cold", "warm"] {
        let served = run(w.served(runner_args, program, args), stdin);
        assert_eq!(
            describe(&served),
            describe(&direct),
            "{which} call of {program} {args:?} differs from the direct run"
        );
        assert_eq!(served.stdout, direct.stdout);
        assert_eq!(served.stderr, direct.stderr);
        assert_eq!(served.status.into_raw(), direct.status.into_raw());
    }
}

const ENDINGS: &str = r#"import json, sys
try:
    import decimal
except ImportError:
    decimal = None
print("argv", sys.argv, "path0", sys.path[0])
print("globals", list(globals()), __file__, __name__, __spec__, __package__)
print("json", json.dumps({"a": [1, 2]}), decimal.Decimal("1.10") + 1)
mode = sys.argv[1] if len(sys.argv) > 1 else ""
if mode == "exit":
    arg = sys.argv[2]
    sys.exit(int(arg) if arg.lstrip("-").isdigit() else arg)
if mode == "raise":
    def inner():
        try:
            {}["missing"]
        except KeyError as e:
            raise ValueError("boom") from e
    inner()
if mode == "stdin":
    data = sys.stdin.read()
    print("read", len(data), data.upper(), end="")
if mode == "interrupt":
    import os, signal
    os.kill(os.getpid(), signal.SIGINT)
    import time
    time.sleep(5)
if mode == "atexit":
    import atexit, threading, time
    atexit.register(print, "atexit handler", file=sys.stderr)
    threading.Thread(target=lambda: (time.sleep(0.2), print("thread done"))).start()
if mode == "syntax":
    exec("x = (")
print("end", file=sys.stderr)
"#;

#[test]
fn endings_like_a_direct_run() {
    let w = World::new();
    w.program("prog.py", ENDINGS);
    let cases: &[&[&str]] = &[
        &[],
        &["plain", "two words", "é"],
        &["exit", "3"],
        &["exit", "0"],
        &["exit", "300"],
        &["exit", "-1"],
        &["exit", "a message"],
        &["raise"],
        &["atexit"],
        &["syntax"],
        &["stdin"],
    ];
    for args in cases {
        same_as_direct(&w, "", "prog.py", args, b"some input\nlines\n");
    }
    w.finish();
}

/// KeyboardInterrupt: its traceback, then death by SIGINT.
#[test]
fn keyboard_interrupt_like_a_direct_run() {
    let w = World::new();
    w.program("prog.py", ENDINGS);
    let direct = run(w.direct("prog.py", &["interrupt"]), b"");
    assert_eq!(direct.status.signal(), Some(libc::SIGINT));
    assert!(stderr_str(&direct).contains("KeyboardInterrupt"));
    same_as_direct(&w, "", "prog.py", &["interrupt"], b"");
    w.finish();
}

/// sys.argv[0] is the program as given, sys.path[0] its real directory,
/// __file__ absolute: with a path through a subdirectory and a symbolic
/// link, and as a `#!` line naming the runner.
#[test]
fn argv0_and_path0_like_a_direct_run() {
    let w = World::new();
    std::fs::create_dir(w.dir.path().join("sub")).unwrap();
    w.program("sub/prog.py", ENDINGS);
    std::os::unix::fs::symlink("sub/prog.py", w.dir.path().join("link.py")).unwrap();
    for program in ["sub/prog.py", "./sub/../sub/prog.py", "link.py"] {
        same_as_direct(&w, "", program, &["x"], b"");
    }
    let absolute = w.dir.path().join("sub/prog.py");
    same_as_direct(&w, "", absolute.to_str().unwrap(), &["y"], b"");

    // The kernel runs `#!CLIENT -U,PYTHON,-m,prefork_interp`.
    let text = format!(
        "#!{} -U,{},-m,prefork_interp\n{ENDINGS}",
        client().display(),
        w.python.display()
    );
    let script = w.program("script", &text);
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let direct = run(w.direct("./script", &["exit", "7"]), b"");
    assert_eq!(direct.status.code(), Some(7), "{}", describe(&direct));
    for _ in 0..2 {
        let served = run(w.command(Path::new("./script")), b"");
        let direct = run(w.direct("./script", &[]), b"");
        assert_eq!(describe(&served), describe(&direct));
        let mut cmd = w.command(Path::new("./script"));
        cmd.args(["exit", "7"]);
        let served = run(cmd, b"");
        let direct = run(w.direct("./script", &["exit", "7"]), b"");
        assert_eq!(describe(&served), describe(&direct));
    }
    w.finish();
}

/// The program's top-level imports (and --preload modules) are imported
/// by the server: the program's code finds them loaded already.
#[test]
fn top_level_imports_are_preloaded() {
    let w = World::new();
    let text = "import sys\n\
                before = sorted(m for m in ('decimal', 'fractions', 'colorsys') if m in sys.modules)\n\
                try:\n    import decimal\nexcept ImportError:\n    pass\n\
                if True:\n    from fractions import Fraction\n\
                print(before)\n";
    w.program("ok.py", text);
    w.program(
        "bad.py",
        "import json\nimport no_such_module_here_at_all\nprint(json)\n",
    );
    // Without the server, nothing is loaded before the code runs.
    let direct = run(w.direct("ok.py", &[]), b"");
    assert_eq!(stdout_str(&direct), "[]\n");
    for _ in 0..2 {
        let served = run(w.served(",--preload,colorsys", "ok.py", &[]), b"");
        assert_eq!(
            stdout_str(&served),
            "['colorsys', 'decimal', 'fractions']\n",
            "{}",
            describe(&served)
        );
        assert_eq!(served.status.code(), Some(0));
    }
    // PREFORK_INTERP_PRELOAD names more, for `--run`, which passes no
    // runner options.
    w.program(
        "env.py",
        "import sys
print('colorsys' in sys.modules)
",
    );
    let mut served = w.served("", "env.py", &[]);
    served.env("PREFORK_INTERP_PRELOAD", "colorsys,");
    let served = run(served, b"");
    assert_eq!(stdout_str(&served), "True\n", "{}", describe(&served));
    // An import that fails is no failure of the server: the program
    // fails as directly.
    let direct = run(w.direct("bad.py", &[]), b"");
    assert!(stderr_str(&direct).contains("ModuleNotFoundError"));
    same_as_direct(&w, "", "bad.py", &[], b"");
    w.finish();
}

/// A missing program: CPython's one line, status 2.
#[test]
fn missing_program_like_a_direct_run() {
    let w = World::new();
    same_as_direct(&w, "", "not-there.py", &["a"], b"");
    let missing = w.dir.path().join("nowhere/x.py");
    same_as_direct(&w, "", missing.to_str().unwrap(), &[], b"");
    let direct = run(w.direct("not-there.py", &[]), b"");
    assert_eq!(direct.status.code(), Some(2));
    assert!(stderr_str(&direct).contains("/not-there.py': [Errno 2] No such file or directory"));
    // Created later: the next call runs it.
    w.program("not-there.py", "print('here now')\n");
    let served = run(w.served("", "not-there.py", &[]), b"");
    assert_eq!(stdout_str(&served), "here now\n", "{}", describe(&served));
    w.finish();
}

/// A flush of stdout that fails at exit (a full disk): CPython's
/// message, status 120.
#[test]
fn failing_flush_at_exit_like_a_direct_run() {
    let w = World::new();
    w.program("prog.py", "print('lost')\n");
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let mut direct = w.direct("prog.py", &[]);
    direct.stdout(full());
    let direct = run(direct, b"");
    assert_eq!(direct.status.code(), Some(120), "{}", describe(&direct));
    for _ in 0..2 {
        let mut served = w.served("", "prog.py", &[]);
        served.stdout(full());
        let served = run(served, b"");
        assert_eq!(describe(&served), describe(&direct));
    }
    w.finish();
}

/// A real program from Debian: pygmentize (python3-pygments, which
/// ./test installs), on Debian's python3.
#[test]
fn pygmentize_like_a_direct_run() {
    let pygmentize = "/usr/bin/pygmentize";
    assert!(
        Path::new(pygmentize).exists() && Path::new("/usr/bin/python3").exists(),
        "{pygmentize} is missing: install python3-pygments (./test does)"
    );
    let w = World::with_python(PathBuf::from("/usr/bin/python3"));
    w.program("input.py", ENDINGS);
    for args in [
        &["-l", "python", "-f", "terminal", "input.py"][..],
        &["-f", "html", "-O", "full", "input.py"],
        &["-L", "styles"],
        &["-l", "no-such-lexer", "input.py"],
        &["-l", "python", "missing.py"],
        &["-V"],
    ] {
        same_as_direct(&w, "", pygmentize, args, b"");
    }
    // From stdin.
    same_as_direct(&w, "", pygmentize, &["-l", "json"], b"{\"a\": [1, 2]}\n");
    std::thread::sleep(Duration::from_millis(10));
    w.finish();
}

/// `prefork-interp --run PROGRAM`: the program's own `#!` line picks its
/// Python and the runner. awscli (from PyPI, installed by ./test) sets
/// `AWS_DATA_PATH` in `os.environ` as it is imported, in the server: a
/// call keeps it (the environment is the caller's plus what the
/// initialisation did), or `aws` fails with "Unable to load data".
#[test]
fn run_option_awscli_like_a_direct_run() {
    let aws = python().parent().unwrap().join("aws");
    assert!(
        aws.exists(),
        "{} is missing: pip install awscli (./test does)",
        aws.display()
    );
    let w = World::new();
    for args in [
        &["--version"][..],
        &["configure", "list"],
        &["no-such-command"],
    ] {
        let direct = run(
            {
                let mut c = w.command(&aws);
                c.args(args);
                c
            },
            b"",
        );
        for which in ["cold", "warm"] {
            let mut c = w.command(&client());
            c.arg("--run").arg(&aws).args(args);
            let served = run(c, b"");
            assert_eq!(
                describe(&served),
                describe(&direct),
                "{which} call of aws {args:?} differs from the direct run"
            );
        }
    }
    w.finish();
}

/// A change to the program, or to a module it imports, restarts its
/// server: the next call (through `--run`) runs the new code, as a direct
/// run would.
#[test]
fn run_option_follows_changes_to_the_program_and_its_modules() {
    let w = World::new();
    let program = w.program(
        "prog",
        &format!(
            "#!{}\nimport helper\nprint('program one', helper.VALUE)\n",
            python().display()
        ),
    );
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let helper = w.program("helper.py", "VALUE = 'helper one'\n");
    let call = || {
        let mut c = w.command(&client());
        c.arg("--run").arg(&program);
        let out = run(c, b"");
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
        stdout_str(&out)
    };
    assert_eq!(call(), "program one helper one\n");
    assert_eq!(call(), "program one helper one\n");
    std::fs::write(&helper, "VALUE = 'helper two'\n").unwrap();
    assert_eq!(call(), "program one helper two\n");
    std::fs::write(
        &program,
        format!(
            "#!{}\nimport helper\nprint('program two', helper.VALUE)\n",
            python().display()
        ),
    )
    .unwrap();
    assert_eq!(call(), "program two helper two\n");
    w.finish();
}

/// A program's global objects are finalised at its end as in a direct
/// run (their `__del__`, using another global, after the exit handlers),
/// through the runner, which otherwise skips the interpreter's
/// finalisation.
#[test]
fn global_objects_finalised_like_a_direct_run() {
    let w = World::new();
    w.program(
        "prog.py",
        "import atexit\n\
         def say(text):\n    print(text, flush=True)\n\
         class Resource:\n    def __del__(self):\n        say('del resource')\n\
         kept = Resource()\n\
         atexit.register(say, 'atexit')\n\
         say('end')\n",
    );
    same_as_direct(&w, "", "prog.py", &[], b"");
    w.finish();
}

/// Warnings raised while the server preloads and compiles the program
/// are shown in every call, under its filters, from where a direct run
/// shows them: a module that warns as it is imported (a
/// DeprecationWarning pointing at the program's import line, which the
/// default filters show for __main__), then a SyntaxWarning of the
/// program's own, which a direct run's compilation shows first.
#[test]
fn warnings_while_preloading_like_a_direct_run() {
    let w = World::new();
    w.program(
        "olden.py",
        "import warnings\nwarnings.warn('olden is deprecated', DeprecationWarning, stacklevel=2)\n",
    );
    w.program(
        "prog.py",
        "import sys\nimport olden\nx = 1\nprint('ran', x is 1)\n",
    );
    same_as_direct(&w, "", "prog.py", &[], b"");
    w.finish();
}

/// Real programs that warn as they start: 2to3 (lib2to3 is deprecated)
/// and jsonschema's CLI (from PyPI, installed by ./test), each the same
/// as a direct run, cold and warm, its error cases too.
#[test]
fn deprecated_programs_warn_like_a_direct_run() {
    let bin = python().parent().unwrap().to_path_buf();
    let w = World::new();
    w.program("instance.json", "{\"a\": 1}\n");
    w.program(
        "schema.json",
        "{\"type\": \"object\", \"required\": [\"b\"]}\n",
    );
    for (program, args) in [
        ("2to3", &["--help"][..]),
        ("2to3", &["--no-such-option"]),
        ("jsonschema", &["-i", "instance.json", "schema.json"]),
    ] {
        let direct = run_option_like_a_direct_run(&w, &bin.join(program), args);
        assert!(
            stderr_str(&direct).contains("DeprecationWarning"),
            "{program}: {direct:?}"
        );
    }
    w.finish();
}

/// `--run PATH ARGS` as a direct run of PATH: the same stdout, stderr and
/// status, cold and warm; then its server goes (what a preloaded module
/// does as it loads, such as jsonschema's CLI taking sys.argv as main()'s
/// default, happens once: other arguments start afresh). The direct
/// run's output.
fn run_option_like_a_direct_run(w: &World, path: &Path, args: &[&str]) -> Output {
    assert!(
        path.exists(),
        "{} is missing (./test installs it)",
        path.display()
    );
    let mut c = w.command(path);
    c.args(args);
    let direct = run(c, b"");
    for which in ["cold", "warm"] {
        let mut c = w.command(&client());
        c.arg("--run").arg(path).args(args);
        assert_eq!(
            describe(&run(c, b"")),
            describe(&direct),
            "{which} call of {} {args:?} differs from the direct run",
            path.display()
        );
    }
    let mut kill = w.command(&client());
    kill.arg("--kill").arg("--run").arg(path);
    assert_success(&run(kill, b""));
    direct
}

/// Real programs nobody here wrote, with their error cases: the
/// interpreter's own (pip, pydoc3; Debian's py3versions, pygettext3) and
/// PyPI's that ./test installs (pyproject-build from build, docutils and
/// jp.py that awscli brings), each as a direct run, cold and warm.
#[test]
fn real_programs_like_a_direct_run() {
    let bin = python().parent().unwrap().to_path_buf();
    let w = World::new();
    w.program("text.txt", "plain text\n");
    for (path, args) in [
        (bin.join("pip"), &["--version"][..]),
        (bin.join("pip"), &["show", "no-such-package-here"]),
        (bin.join("pydoc3"), &["json.dumps"]),
        (bin.join("pydoc3"), &["no_such_module_here"]),
        (bin.join("pyproject-build"), &["--version"]),
        (bin.join("pyproject-build"), &["--no-such-option"]),
        (bin.join("docutils"), &["--version"]),
        (bin.join("docutils"), &["text.txt"]),
        (bin.join("jp.py"), &["--help"]),
        ("/usr/bin/py3versions".into(), &["-d"]),
        ("/usr/bin/pygettext3".into(), &["--no-such-option"]),
    ] {
        run_option_like_a_direct_run(&w, &path, args);
    }
    w.finish();
}
