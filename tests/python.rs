//! Python-only behaviour of sides/python/prefork_interp, beyond the
//! shared conformance table: KeyboardInterrupt, per-call stream settings,
//! sys.argv[0], module auto-reload, the environment stand-in, the idle
//! spare's pre-copy of the heap, packaging and the manual page.
mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(10);

/// SIGINT to the script (Ctrl-C in a terminal reaches it this way when
/// it runs directly) ends it as a normal Python run ends: a
/// KeyboardInterrupt traceback, then death by SIGINT, which the caller
/// sees.
#[test]
fn sigint_ends_the_script_like_a_normal_run() {
    let h = Harness::new(Side::Python);
    let mut outcomes = Vec::new();
    for served in [false, true] {
        let pid_file = h.path(if served { "served.pid" } else { "direct.pid" });
        let args = [format!("@pid:{}", pid_file.display()), "@sleep:30".into()];
        let child = if served {
            h.call(&args)
        } else {
            h.direct(&args)
        }
        .spawn();
        wait_until("the script to start", LIMIT, || pid_file.exists()).unwrap();
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
        // SAFETY: signalling our own test's script.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        let err = stderr_str(&out);
        assert!(err.contains("KeyboardInterrupt"), "served={served}: {err}");
        outcomes.push(out.status.signal());
    }
    assert_eq!(outcomes, [Some(libc::SIGINT), Some(libc::SIGINT)]);
    h.finish();
}

/// The caller's PYTHONUNBUFFERED and PYTHONIOENCODING apply per call, as
/// they would to a direct run.
#[test]
fn per_call_stream_settings_like_a_direct_run() {
    let h = Harness::new(Side::Python);
    // Start the server without them.
    assert_success(&h.call(&["@out:x"]).run());
    let cases: [(&str, &str, &[&str]); 3] = [
        // Unbuffered: the line survives an immediate _exit.
        ("PYTHONUNBUFFERED", "1", &["@out:kept", "@_exit:0"]),
        ("PYTHONIOENCODING", "latin-1", &["@out:\u{e9}t\u{e9}"]),
        (
            "PYTHONIOENCODING",
            "ascii:backslashreplace",
            &["@out:\u{e9}t\u{e9}"],
        ),
    ];
    for (name, value, args) in cases {
        let direct = h.direct(args).env(name, value).run();
        let served = h.call(args).env(name, value).run();
        assert_eq!(served.stdout, direct.stdout, "{name}={value} {args:?}");
        assert_eq!(served.status.code(), direct.status.code());
    }
    // Without them again: block-buffered to a pipe, so _exit loses it.
    let out = h.call(&["@out:lost", "@_exit:0"]).run();
    assert_eq!(stdout_str(&out), "");
    h.finish();
}

fn python_world(body: &str) -> Harness {
    let text = format!(
        "import sys; sys.path.insert(0, '{}')\n{body}",
        repo().join("sides/python").display()
    );
    Harness::custom(Side::Python, client(), vec![python().into()], None, &text)
}

/// Is the host's python3 3.12 or later (sys.monitoring, which fast_exit
/// needs)?
fn python_has_monitoring() -> bool {
    let out = Command::new(python())
        .args(["-c", "import sys; print(sys.version_info >= (3, 12))"])
        .output()
        .unwrap();
    stdout_str(&out).trim() == "True"
}

/// `fast_exit=True` on the host's Python. Before 3.12 (Debian 12 has
/// 3.11) it changes nothing: a call ends as without it, finalisers
/// included, exactly as a direct run. (On 3.12 or later only the
/// finaliser is skipped; tests/python_fast_exit.rs tests that in full on
/// 3.13.)
#[test]
fn fast_exit_changes_nothing_before_python_3_12() {
    let h = python_world(
        "import atexit, os\n\
         import prefork_interp\n\
         prefork_interp.initialisation_complete(fast_exit=True)\n\
         atexit.register(print, 'atexit handler')\n\
         guard = {}\n\
         exec(\"import os\\nclass Guard:\\n def __del__(self): os.write(2, b'finaliser ran\\\\n')\\n\", guard)\n\
         finalised = guard['Guard']()\n\
         print('out')\n\
         if sys.argv[1:]: sys.exit(int(sys.argv[1]))\n",
    );
    let finaliser_in_calls = !python_has_monitoring();
    for args in [&[] as &[&str], &["3"]] {
        let direct = h.direct(args).run();
        let served = h.call(args).run();
        assert_eq!(served.status.code(), direct.status.code(), "{args:?}");
        assert_eq!(stdout_str(&served), "out\natexit handler\n", "{args:?}");
        assert_eq!(stdout_str(&served), stdout_str(&direct), "{args:?}");
        assert_eq!(stderr_str(&direct), "finaliser ran\n", "{args:?}");
        let expected = if finaliser_in_calls {
            "finaliser ran\n"
        } else {
            ""
        };
        assert_eq!(stderr_str(&served), expected, "{args:?}");
    }
    h.finish();
}

/// fast_exit takes True or False only, refused at once (also in a direct
/// run, where it would do nothing).
#[test]
fn fast_exit_must_be_a_bool() {
    let h = python_world(
        "import prefork_interp\n\
         prefork_interp.initialisation_complete(fast_exit=1)\n\
         print('not reached')\n",
    );
    for out in [h.direct(&[] as &[&str]).run(), h.call(&[] as &[&str]).run()] {
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(stdout_str(&out), "");
        assert!(
            stderr_str(&out)
                .contains("ValueError: prefork-interp: fast_exit must be True or False, not 1\n"),
            "{}",
            stderr_str(&out)
        );
    }
    h.finish();
}

#[test]
fn argv_zero_is_the_script_path() {
    let h = python_world(
        "import prefork_interp\nprefork_interp.initialisation_complete()\nprint(sys.argv)\n",
    );
    for _ in 0..2 {
        let out = h.call(&["a"]).run();
        assert_success(&out);
        assert_eq!(
            stdout_str(&out),
            format!("['{}', 'a']\n", h.script.display())
        );
    }
    h.finish();
}

const SERVER_PID_BODY: &str = "import sys, os
sys.path.insert(0, 'LIBDIR')
import pfi_test_module
import prefork_interp
prefork_interp.initialisation_complete(**pfi_test_module.OPTIONS)
stat = open('/proc/%d/stat' % os.getppid()).read()
print(stat[stat.rindex(')') + 2:].split()[1])
";

fn module_world(options: &str) -> (Harness, std::path::PathBuf) {
    let h = python_world("");
    let lib = h.path("lib");
    std::fs::create_dir(&lib).unwrap();
    let module = lib.join("pfi_test_module.py");
    std::fs::write(&module, format!("OPTIONS = dict({options})\n")).unwrap();
    let mut text = std::fs::read_to_string(&h.script).unwrap();
    text += &SERVER_PID_BODY.replace("LIBDIR", lib.to_str().unwrap());
    std::fs::write(&h.script, text).unwrap();
    (h, module)
}

#[test]
fn editing_an_imported_module_restarts_the_server() {
    let (h, module) = module_world("");
    let old = h.plain_call();
    assert_eq!(h.plain_call(), old);
    touch(&module);
    let new = h.plain_call();
    assert_ne!(new, old, "a module in sys.modules changed");
    // Replaced by rename, as editors save.
    std::thread::sleep(Duration::from_millis(50));
    let copy = module.with_extension("new");
    std::fs::write(&copy, "OPTIONS = dict()\n").unwrap();
    std::fs::rename(&copy, &module).unwrap();
    assert_ne!(h.plain_call(), new, "a module replaced by rename");
    h.finish();
}

#[test]
fn autoreload_modules_off_ignores_modules() {
    let (h, module) = module_world("autoreload_modules=False");
    let old = h.plain_call();
    touch(&module);
    assert_eq!(h.plain_call(), old);
    h.finish();
}

#[test]
fn server_watches_modules_with_inotify() {
    let (h, _) = module_world("");
    assert!(holds_inotify(&h.plain_call()));
    h.finish();
}

#[test]
fn setup_variable_is_read_in_chiarks_order() {
    let out = Command::new(python())
        .args([
            "-c",
            "from prefork_interp import _wire\n\
             for v in (b'v1,1795467572.582498935 5,9,7,8',\n\
                       b'v1,1795467572.582498935 5,9,7,8 pfi-caps=signals'):\n\
             \x20   s = _wire.decode_setup_env(v)\n\
             \x20   print(s['listen'], s['call'], s['watch_in'], s['watch_err'], \
                    s['started_secs'] * 10**9 + s['started_nsecs'], sorted(s['client_caps']))",
        ])
        .env("PYTHONPATH", repo().join("sides/python"))
        .output()
        .unwrap();
    assert_eq!(
        stdout_str(&out),
        "5 9 7 8 1795467572582498935 []\n5 9 7 8 1795467572582498935 ['signals']\n",
        "{}",
        stderr_str(&out)
    );
}

/// `pip install` from the repository works (pip fetches the build
/// backend from PyPI).
#[test]
fn pip_installs_the_module() {
    let target = tempfile::tempdir().unwrap();
    let source = tempfile::tempdir().unwrap();
    // Build from a copy, so that no build/ or egg-info/ lands in the tree.
    let mut files = vec!["pyproject.toml".to_string(), "README.md".to_string()];
    files.extend(module_files());
    for file in &files {
        let to = source.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(repo().join("sides/python").join(file), to).unwrap();
    }
    let out = Command::new(python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(target.path())
        .arg(source.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "pip: {}", stderr_str(&out));
    let out = Command::new(python())
        .args([
            "-c",
            "import prefork_interp; print(prefork_interp.__file__)",
        ])
        .env("PYTHONPATH", target.path())
        .output()
        .unwrap();
    assert!(
        stdout_str(&out).starts_with(target.path().to_str().unwrap()),
        "{}",
        stderr_str(&out)
    );
}

/// The package's files (every *.py), as tools/module-files lists them.
fn module_files() -> Vec<String> {
    let out = Command::new(repo().join("tools/module-files"))
        .arg("python")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_str(&out));
    let files: Vec<String> = stdout_str(&out).lines().map(str::to_string).collect();
    assert!(
        files.contains(&"prefork_interp/__init__.py".to_string()),
        "{files:?}"
    );
    files
}

/// The package's own unit tests (sides/python/tests: the wire vectors of
/// sides/wire-vectors.json against prefork_interp._wire), run as its
/// README says, by the python3 the other tests use.
#[test]
fn package_unit_tests_pass() {
    let out = Command::new(python())
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(repo().join("sides/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let err = stderr_str(&out);
    assert!(out.status.success(), "unittest failed:\n{err}");
    let ran: u32 = err
        .lines()
        .find_map(|line| line.strip_prefix("Ran ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no `Ran N tests` line:\n{err}"));
    assert!(ran > 0, "no tests ran:\n{err}");
    assert!(err.contains("\nOK"), "{err}");
}

/// From `import prefork_interp` until initialisation_complete(),
/// os.environ and os.environb are stand-ins that record the names read
/// (the greeting's `env` line, with a digest of their exec-time values)
/// and otherwise act as the real ones: writes reach child processes,
/// copies and iteration record nothing, a reference taken before the
/// import is not seen, and the real ones are back afterwards.
#[test]
fn environment_reads_are_recorded_until_initialisation_completes() {
    let code = r#"
import hashlib, os, subprocess, sys
from os import environ as early
import prefork_interp as p
seen = set()
def step(what):
    print(what, *sorted(n.decode() for n in p._init_env_state.reads - seen))
    seen.update(p._init_env_state.reads)
print(isinstance(os.environ, os._Environ), isinstance(os.environb, os._Environ))
os.environ['PFI_A']; step('[]')
os.environ.get('PFI_B'); 'PFI_C' in os.environ; os.getenv('PFI_D'); step('get in getenv')
os.environb.get(b'PFI_E'); os.getenvb(b'PFI_F'); step('bytes')
os.environ.copy(); list(os.environ.items()); list(os.environ.values()); step('copies')
os.environ | {}; {} | os.environ; os.environ == {}; early.get('PFI_G'); step('others')
os.environ['PFI_W'] = 'w'; step('write')
print(subprocess.run(['sh', '-c', 'echo $PFI_W'], capture_output=True, text=True).stdout.strip())
step('child')
expected = b''.join(n + (b'=' + os.environb[n] if n in os.environb else b'') + b'\0'
                    for n in sorted(seen))
print(p._init_env_state.dependency(p._init_env_state.reads)
      == (hashlib.sha256(expected).hexdigest(), sorted(seen)))
kept = os.environ
p.initialisation_complete()
kept.get('PFI_H'); os.environ.get('PFI_I')
print(type(os.environ) is os._Environ, type(os.environb) is os._Environ)
step('after')
"#;
    let out = Command::new(python())
        .args(["-c", code])
        .env("PYTHONPATH", repo().join("sides/python"))
        .env("PFI_A", "1")
        .env_remove("PFI_B")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_str(&out));
    // PATH: subprocess's search for sh.
    assert_eq!(
        stdout_str(&out),
        "True True\n[] PFI_A\nget in getenv PFI_B PFI_C PFI_D\nbytes PFI_E PFI_F\ncopies\n\
         others\nwrite\nw\nchild PATH\nTrue\nTrue True\nafter\n"
    );
}

/// The manual page documents every parameter of every public function.
#[test]
fn manual_page_documents_the_api() {
    let page = std::fs::read_to_string(repo().join("man/prefork_interp.3")).unwrap();
    let out = Command::new(python())
        .args([
            "-c",
            "import inspect, prefork_interp as p\n\
                for f in p.__all__:\n    print(f)\n    \
                for n in inspect.signature(getattr(p, f)).parameters: print(n)",
        ])
        .env("PYTHONPATH", repo().join("sides/python"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_str(&out));
    for name in stdout_str(&out).lines() {
        assert!(
            page.contains(name),
            "man/prefork_interp.3 does not mention {name}"
        );
    }
    // groff -ww: every warning (groff-base is installed by ./test).
    let out = Command::new("groff")
        .args(["-ww", "-man", "-Tutf8", "-z"])
        .arg(repo().join("man/prefork_interp.3"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_str(&out));
    assert_eq!(stderr_str(&out), "", "man page warnings");
}

/// The interpreter's own start-up variables (hash seed, bytecode writing,
/// UTF-8 mode, optimisation, warnings filters) are inputs of the
/// initialisation: a call with other values than the server's reaches a
/// server started with its values, and sees what a direct run does.
#[test]
fn interpreter_start_up_variables_like_a_direct_run() {
    let h = python_world(
        "import prefork_interp\nprefork_interp.initialisation_complete()\nimport sys\n\
         print(hash('abc'), sys.flags.dont_write_bytecode, sys.flags.utf8_mode, \
         sys.flags.optimize, sys.warnoptions)\n",
    );
    let cases: [&[(&str, &str)]; 4] = [
        &[("PYTHONHASHSEED", "1")],
        &[("PYTHONHASHSEED", "2")],
        &[("PYTHONHASHSEED", "1"), ("PYTHONDONTWRITEBYTECODE", "1")],
        &[
            ("PYTHONHASHSEED", "3"),
            ("PYTHONUTF8", "1"),
            ("PYTHONOPTIMIZE", "1"),
            ("PYTHONWARNINGS", "error"),
        ],
    ];
    h.same_stdout_as_direct_under(&cases);
    h.finish();
}

/// The environment read above `import prefork_interp` (by the script,
/// or by a library it imports first) is an input of the initialisation
/// too, where the package is installed with its .pth file (here a user
/// site, PYTHONUSERBASE, holding that file and a path line for the
/// tree's package): a run that starts a server imports the package
/// before the script's first line. A reference taken before the import
/// (`from os import environ`) is tracked too.
#[test]
fn environment_read_before_the_import_like_a_direct_run() {
    let h = Harness::custom(
        Side::Python,
        client(),
        vec![python().into()],
        None,
        "import os\nfrom os import environ\n\
         early, kept = os.environ.get('PFI_EARLY'), environ.get('PFI_KEPT')\n\
         import prefork_interp\nprefork_interp.initialisation_complete()\n\
         print(early, kept, type(os.environ).__name__)\n",
    );
    let version = Command::new(python())
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .unwrap();
    let base = h.path("userbase");
    let site = base.join(format!(
        "lib/python{}/site-packages",
        stdout_str(&version).trim()
    ));
    std::fs::create_dir_all(&site).unwrap();
    // (.pth files run in name order: the path line's first.)
    std::fs::write(
        site.join("a-prefork-interp-tree.pth"),
        format!("{}\n", repo().join("sides/python").display()),
    )
    .unwrap();
    std::fs::copy(
        repo().join("sides/python/prefork_interp_early.pth"),
        site.join("prefork_interp_early.pth"),
    )
    .unwrap();
    let base = base.to_str().unwrap();
    let cases: [&[(&str, &str)]; 4] = [
        &[("PYTHONUSERBASE", base), ("PFI_EARLY", "first")],
        &[("PYTHONUSERBASE", base), ("PFI_EARLY", "second")],
        &[
            ("PYTHONUSERBASE", base),
            ("PFI_EARLY", "first"),
            ("PFI_KEPT", "k"),
        ],
        &[("PYTHONUSERBASE", base)],
    ];
    h.same_stdout_as_direct_under(&cases);
    h.finish();
}

/// INTERPRETER_VARIABLES (prefork_interp/_init_env.py) against the
/// interpreter's own list, `python3 --help-env` (3.11 on): each variable
/// there is in it, or here with the reason it is not an input of the
/// initialisation.
#[test]
fn interpreter_variables_cover_python_help_env() {
    const NOT_AT_START: [(&str, &str); 5] = [
        (
            "PYTHONUNBUFFERED",
            "each call's streams are made with the caller's",
        ),
        (
            "PYTHONIOENCODING",
            "each call's streams are made with the caller's",
        ),
        ("PYTHONSTARTUP", "read by interactive sessions only"),
        ("PYTHONCASEOK", "Windows and macOS only"),
        (
            "PYTHONBREAKPOINT",
            "read from os.environ by each breakpoint(): the call's own",
        ),
    ];
    let help = Command::new(python()).arg("--help-env").output().unwrap();
    if !help.status.success() {
        // Before 3.11 there is no --help-env: nothing to hold the list to.
        assert!(stderr_str(&help).contains("--help-env"), "{help:?}");
        return;
    }
    let documented: Vec<String> = stdout_str(&help)
        .lines()
        .filter_map(|line| {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            (name.starts_with("PYTHON") && name.len() > 6).then_some(name)
        })
        .collect::<std::collections::BTreeSet<String>>()
        .into_iter()
        .collect();
    let listed = Command::new(python())
        .env("PYTHONPATH", repo().join("sides/python"))
        .args([
            "-c",
            "from prefork_interp import _init_env\n\
             print(' '.join(n.decode() for n in _init_env.INTERPRETER_VARIABLES))",
        ])
        .output()
        .unwrap();
    assert_success(&listed);
    let listed = stdout_str(&listed);
    let listed: Vec<&str> = listed.split_whitespace().collect();
    assert_interpreter_variables_cover(&documented, &listed, &NOT_AT_START, "python3 --help-env");
}

/// What a call leaves in __main__'s globals is finalised at its normal
/// end as in a direct run: a global object's `__del__` (which uses another
/// global function), a `weakref.finalize`, an exit handler first; the
/// same output, cold and warm.
#[test]
fn globals_made_by_a_call_are_finalised_like_a_direct_run() {
    let h = python_world(
        "import prefork_interp\nprefork_interp.initialisation_complete()\n\
         import atexit, weakref\n\
         def say(text):\n    print(text, flush=True)\n\
         class Resource:\n    def __del__(self):\n        say('del ' + self.name)\n\
         r = Resource(); r.name = 'r'\n\
         class Plain: pass\n\
         p = Plain(); weakref.finalize(p, say, 'finalize p')\n\
         atexit.register(say, 'atexit')\n\
         say('end of main')\n",
    );
    let direct = h.direct(&[] as &[&str]).run();
    assert_success(&direct);
    assert!(stdout_str(&direct).contains("del r"), "{direct:?}");
    for round in 0..2 {
        let out = h.call(&[] as &[&str]).run();
        assert_eq!(
            (out.status.code(), stdout_str(&out), stderr_str(&out)),
            (
                direct.status.code(),
                stdout_str(&direct),
                stderr_str(&direct)
            ),
            "call {round} (left) against a direct run"
        );
    }
    h.finish();
}

// ------------------------------------------- the idle spare's pre-copy

/// Has `pid` copied its heap: at least 80% of its anonymous memory its own?
fn copied_its_heap(pid: u32) -> bool {
    let (own, anonymous) = own_of_anonymous_kb(pid);
    own * 5 >= anonymous * 4
}

/// Does `pid` share most of its anonymous memory still (under half its own)?
fn shares_its_heap(pid: u32) -> bool {
    let (own, anonymous) = own_of_anonymous_kb(pid);
    own * 2 < anonymous
}

/// What the pre-copy scripts print first in a call.
const PRINT_PIDS: &str = "import os\nprint(os.getppid(), os.getpid(), flush=True)\n";

/// A call's end writes to most of the heap it inherited (CPython's
/// finalisation): the spare waiting for the next call copies that heap in
/// advance, while idle, so that its call's end takes no copy-on-write
/// faults. It does so with fast_exit=True too where that does nothing
/// (before Python 3.12), since calls then end normally. The monitor,
/// which runs no call, keeps sharing its memory with the server.
#[test]
fn an_idle_spare_copies_the_heap_in_advance() {
    let mut options = vec![""];
    if !python_has_monitoring() {
        options.push("fast_exit=True");
    }
    for options in options {
        let h = python_world(&format!(
            "import json, decimal, email.parser\n\
             import prefork_interp\n\
             prefork_interp.initialisation_complete({options})\n{PRINT_PIDS}"
        ));
        let (monitor, spare) = monitor_and_spare(&h.call(&[] as &[&str]).run());
        wait_until("the idle spare to copy its heap", LIMIT, || {
            copied_its_heap(spare)
        })
        .unwrap_or_else(|e| {
            panic!(
                "({options}) {e}: Private_Dirty and Anonymous {:?} kB",
                own_of_anonymous_kb(spare)
            )
        });
        assert!(
            shares_its_heap(monitor),
            "({options}) the monitor's own of its anonymous memory: {:?} kB",
            own_of_anonymous_kb(monitor)
        );
        h.finish();
    }
}

/// The runner's calls end with os._exit, after what CPython does before
/// its finalisation (prefork_interp/_runner.py): their end writes little
/// of the heap, and its spares copy nothing in advance. (Seen beside a
/// script's spare, which has copied its heap meanwhile.)
#[test]
fn the_runners_spares_copy_nothing_in_advance() {
    let runner = Harness::custom(
        Side::Python,
        client(),
        vec![python().into(), "-m".into(), "prefork_interp".into()],
        None,
        PRINT_PIDS,
    );
    let script = python_world(&format!(
        "import prefork_interp\nprefork_interp.initialisation_complete()\n{PRINT_PIDS}"
    ));
    let out = runner
        .call(&[] as &[&str])
        .env("PYTHONPATH", repo().join("sides/python"))
        .run();
    let (_, runners_spare) = monitor_and_spare(&out);
    let (_, scripts_spare) = monitor_and_spare(&script.call(&[] as &[&str]).run());
    wait_until("the script's idle spare to copy its heap", LIMIT, || {
        copied_its_heap(scripts_spare)
    })
    .unwrap();
    assert!(
        shares_its_heap(runners_spare),
        "the runner's spare, idle for longer, has this much of its anonymous memory its own: \
         {:?} kB",
        own_of_anonymous_kb(runners_spare)
    );
    runner.finish();
    script.finish();
}

/// SIGCONT to a stopped process when dropped, even by a failing test.
struct Stopped(u32);

impl Stopped {
    fn stop(pid: u32) -> Stopped {
        // SAFETY: signalling a process of our test's server.
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// A call that comes while the spare copies its heap is taken at once:
/// the spare looks for it between chunks of 256 KiB, and stops copying.
/// The call then ends exactly as it would have: the script's output,
/// buffered until the end, and its exit handler's. The spare is caught
/// mid-copy (a 64 MiB heap, SIGSTOP as soon as it is forked) and the call
/// handed to it while it is stopped; the call's script says how much of
/// its memory was its own as it started.
#[test]
fn a_call_coming_while_the_spare_copies_is_taken_at_once() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let h = python_world(
        "import atexit, os, sys\n\
         import prefork_interp\n\
         ballast = b'x' * (64 << 20)\n\
         prefork_interp.initialisation_complete()\n\
         if sys.argv[1:] == ['hold']:\n\
         \x20   print(os.getppid(), os.getpid(), flush=True)\n\
         \x20   sys.stdin.read()\n\
         \x20   os._exit(0)\n\
         fields = dict(line.split(':', 1) for line in open('/proc/self/smaps_rollup'))\n\
         own, anonymous = (int(fields[n].split()[0]) for n in ('Private_Dirty', 'Anonymous'))\n\
         atexit.register(print, 'exit handler')\n\
         print('own %d of %d kB' % (own, anonymous))\n\
         print('end of main')\n",
    );
    // Each try: a call holds the spare that took it, so that the next
    // spare is forked now; stopped, unless it has already copied half.
    for _ in 0..5 {
        let mut hold = h.call(&["hold"]);
        hold.cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut hold = hold.spawn();
        let mut line = String::new();
        BufReader::new(hold.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let (monitor, executor) = monitor_and_executor(&line);
        let spare = loop {
            if let Some(&spare) = children_of(monitor, &[executor]).first() {
                break spare;
            }
        };
        let stopped = Stopped::stop(spare);
        let caught = shares_its_heap(spare);
        drop(hold.stdin.take());
        assert!(hold.wait().unwrap().success());
        if !caught {
            drop(stopped);
            continue; // copied half before it could be stopped: again
        }
        let call = h.call(&[] as &[&str]).spawn();
        // The monitor forks the next spare once it has handed the call to
        // this one (it sits in the stopped spare's hand-over socket).
        wait_until("the call to be handed to the stopped spare", LIMIT, || {
            !children_of(monitor, &[executor, spare]).is_empty()
        })
        .unwrap();
        drop(stopped);
        let out = call.wait_with_output().unwrap();
        assert_success(&out);
        let said = stdout_str(&out);
        let mut lines = said.lines();
        let own: Vec<u64> = lines
            .next()
            .and_then(|l| l.strip_prefix("own "))
            .map(|l| l.split(' ').filter_map(|w| w.parse().ok()).collect())
            .unwrap_or_else(|| panic!("{said:?}"));
        assert!(
            own[0] * 2 < own[1],
            "the call found {} of its {} kB its own: the spare copied on",
            own[0],
            own[1]
        );
        assert_eq!(lines.collect::<Vec<_>>(), ["end of main", "exit handler"]);
        assert_eq!(stderr_str(&out), "");
        h.finish();
        return;
    }
    panic!("the spare had copied half its heap before it could be stopped, five times");
}
