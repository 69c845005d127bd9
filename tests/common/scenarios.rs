//! The conformance table: every scenario, written once, for every script
//! side. Each takes the [`Side`] and speaks to its agent only through the
//! agent language (tests/agents/agent.rs documents it).
//!
//! A scenario is registered where it is written, `scenario!(NAME, |side|
//! { ... })`, and each side's conformance target runs every registered
//! one as a test called NAME ([`main`]): there is no second list to keep in
//! step. The conformance targets include this file with `#[path]`; the
//! other test targets, which share only `common`, do not carry it.

// A scenario's `///` comment stands on its `scenario!` call, where the
// reader looks for it; rustdoc never sees test code, so that it documents
// a macro call rather than an item costs nothing.
#![allow(unused_doc_comments)]

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::time::Duration;

use crate::common::*;

/// One entry of the table: a scenario and the test name it runs under.
pub struct Scenario {
    pub name: &'static str,
    pub run: fn(Side),
}

inventory::collect!(Scenario);

/// Registers a scenario under its name. Both arguments are expressions so
/// that rustfmt formats the body. The scenario becomes a function of that
/// name (backtraces show it, and a second scenario of the same name is a
/// compile error) and an entry of the table.
macro_rules! scenario {
    ($name:ident, $run:expr $(,)?) => {
        fn $name(side: Side) {
            let run: fn(Side) = $run;
            run(side)
        }
        inventory::submit! {
            Scenario {
                name: stringify!($name),
                run: $name,
            }
        }
    };
}

#[path = "../support/trials.rs"]
mod trials;

/// The `main` of a side's conformance target: one test per scenario,
/// named exactly as the scenario, so that libtest's and nextest's filters
/// (`--exact NAME`, `-E 'test(NAME)'`) select it.
pub fn main(side: Side) -> ExitCode {
    trials::run(
        inventory::iter::<Scenario>
            .into_iter()
            .map(|s| trials::Trial {
                name: s.name,
                run: Box::new(move || (s.run)(side)),
            })
            .collect(),
    )
}

const LIMIT: Duration = Duration::from_secs(10);

scenario!(exit_codes_all, |side| {
    let h = Harness::new(side);
    for code in 0..=255 {
        let out = h.call(&[format!("@exit:{code}")]).run();
        assert_eq!(
            out.status.code(),
            Some(code),
            "stderr: {}",
            stderr_str(&out)
        );
        assert!(out.stderr.is_empty(), "{}", stderr_str(&out));
    }
    h.finish();
});

scenario!(signal_deaths, |side| {
    let h = Harness::new(side);
    // These the client re-raises: the caller sees the same death.
    for (name, sig) in [
        ("INT", libc::SIGINT),
        ("TERM", libc::SIGTERM),
        ("HUP", libc::SIGHUP),
        ("PIPE", libc::SIGPIPE),
        ("KILL", libc::SIGKILL),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("ALRM", libc::SIGALRM),
    ] {
        let out = h
            .call(&["@out:before".to_string(), format!("@kill:{name}")])
            .run();
        assert_eq!(out.status.signal(), Some(sig), "{name}: {:?}", out.status);
        assert_eq!(
            stdout_str(&out),
            "before\n",
            "{name}: output before death kept"
        );
    }
    // Core-dumping ones: a message naming the signal, and 127.
    let out = h.call(&["@kill:SEGV"]).run();
    assert_eq!(out.status.code(), Some(127));
    let err = stderr_str(&out);
    assert!(
        err.starts_with("prefork-interp: ") && err.contains("SIGSEGV"),
        "{err}"
    );
    h.finish();
});

scenario!(args_byte_exact, |side| {
    let h = Harness::new(side);
    let mut args: Vec<OsString> = vec!["@args".into()];
    for a in [
        &b""[..],
        b" ",
        b"two words",
        b"tab\there",
        b"new\nline",
        b"\xff\xfe\x80 not utf-8",
        b"-",
        b"--",
        b"-x",
        b"=",
        b"\xc3\xa9t\xc3\xa9",
    ] {
        args.push(OsString::from_vec(a.to_vec()));
    }
    args.push(OsString::from("x".repeat(100_000)));
    let expected: String = args.iter().map(|a| hex(a.as_bytes()) + "\n").collect();
    // First call (creates the server) and a warm one.
    for _ in 0..2 {
        let out = h.call(&args).run();
        assert_success(&out);
        assert_eq!(stdout_str(&out), expected);
    }
    // Empty arguments at the end (`script x ""`), which a decoder that
    // splits on NUL must not drop.
    for args in [&["@args", "x", ""][..], &["@args", "", ""]] {
        let expected: String = args.iter().map(|a| hex(a.as_bytes()) + "\n").collect();
        let out = h.call(args).run();
        assert_success(&out);
        assert_eq!(stdout_str(&out), expected, "{args:?}");
    }
    // No arguments at all.
    let out = h.call(&[] as &[&str]).run();
    assert_success(&out);
    assert_eq!(stdout_str(&out), "");
    h.finish();
});

scenario!(env_byte_exact, |side| {
    let h = Harness::new(side);
    let extra: Vec<(OsString, OsString)> = vec![
        ("PFI_PLAIN".into(), "hello".into()),
        ("PFI_EMPTY".into(), "".into()),
        (
            "PFI_BYTES".into(),
            OsString::from_vec(b"\xff\x80\x01".to_vec()),
        ),
        ("PFI_NEWLINE".into(), "a\nb".into()),
        ("PFI_EQUALS".into(), "x=y=z".into()),
        ("PFI_LONG".into(), "v".repeat(50_000).into()),
    ];
    let mut expected: Vec<Vec<u8>> = h
        .base_env()
        .into_iter()
        .chain(extra.iter().cloned())
        .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
        .collect();
    expected.sort();
    let expected: String = expected.iter().map(|e| hex(e) + "\n").collect();
    for _ in 0..2 {
        let mut call = h.call(&["@envall"]);
        for (k, v) in &extra {
            call = call.env(k, v);
        }
        let out = call.run();
        assert_success(&out);
        assert_eq!(
            stdout_str(&out),
            expected,
            "environment differs (PREFORK_INTERP leaked?)"
        );
    }
    h.finish();
});

scenario!(env_is_per_call, |side| {
    let h = Harness::new(side);
    let out = h
        .call(&["@env:PFI_ONLY_FIRST"])
        .env("PFI_ONLY_FIRST", "one")
        .run();
    assert_eq!(stdout_str(&out), format!("{}\n", hex(b"one")));
    let out = h
        .call(&["@env:PFI_ONLY_FIRST", "@env:PREFORK_INTERP"])
        .run();
    assert_eq!(stdout_str(&out), "unset\nunset\n");
    let out = h
        .call(&["@env:PFI_ONLY_FIRST"])
        .env("PFI_ONLY_FIRST", "two")
        .run();
    assert_eq!(stdout_str(&out), format!("{}\n", hex(b"two")));
    h.finish();
});

/// A call's environment is the caller's plus what the script's
/// initialisation did to its own (set, changed, removed), as a direct run
/// has it (issue 14: a library that sets a variable when it loads).
/// Variables initialisation did not touch are the caller's, or absent.
scenario!(env_keeps_initialisation_changes, |side| {
    let h = Harness::new(side);
    let init = [
        (
            "AGENT_INIT_SETENV",
            "PFI_INIT_SET=from-init,PFI_INIT_CHANGED=from-init",
        ),
        ("AGENT_INIT_UNSETENV", "PFI_INIT_REMOVED"),
    ];
    let words = [
        "@env:PFI_INIT_SET",
        "@env:PFI_INIT_CHANGED",
        "@env:PFI_INIT_REMOVED",
        "@env:PFI_UNTOUCHED",
        "@env:PFI_ABSENT",
    ];
    let envall = |vars: &[(&str, &str)]| -> String {
        let mut all: Vec<Vec<u8>> = h
            .base_env()
            .into_iter()
            .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
            .chain(vars.iter().map(|(k, v)| format!("{k}={v}").into_bytes()))
            .collect();
        all.sort();
        all.iter().map(|e| hex(e) + "\n").collect()
    };
    let caller = [
        ("PFI_INIT_CHANGED", "from-caller"),
        ("PFI_INIT_REMOVED", "from-caller"),
        ("PFI_UNTOUCHED", "from-caller"),
    ];
    let with_env = |mut call: Call| {
        for (k, v) in init.iter().chain(&caller) {
            call = call.env(k, v);
        }
        call
    };
    let expected_words = format!(
        "{}\n{}\nunset\n{}\nunset\n",
        hex(b"from-init"),
        hex(b"from-init"),
        hex(b"from-caller")
    );
    // The direct run: the same words, the same environment. (Not @envall:
    // Python's own start-up adds LC_CTYPE under the C locale, which a call
    // leaves to its caller.)
    let direct = with_env(h.direct(&words)).run();
    assert_success(&direct);
    assert_eq!(stdout_str(&direct), expected_words);
    let mut args = words.to_vec();
    args.push("@envall");
    // The first call (it starts the server), then a warm one.
    for _ in 0..2 {
        let out = with_env(h.call(&args)).run();
        assert_success(&out);
        let expected_all = envall(&[
            init[0],
            init[1],
            ("PFI_INIT_SET", "from-init"),
            ("PFI_INIT_CHANGED", "from-init"),
            ("PFI_UNTOUCHED", "from-caller"),
        ]);
        assert_eq!(stdout_str(&out), expected_words.clone() + &expected_all);
    }
    // A caller with other variables (and without the AGENT_INIT_ ones,
    // which only the setup run reads) gets the same changes.
    let out = h
        .call(&args)
        .env("PFI_UNTOUCHED", "second")
        .env("PFI_INIT_REMOVED", "second")
        .run();
    assert_success(&out);
    let expected_all = envall(&[
        ("PFI_INIT_SET", "from-init"),
        ("PFI_INIT_CHANGED", "from-init"),
        ("PFI_UNTOUCHED", "second"),
    ]);
    assert_eq!(
        stdout_str(&out),
        format!(
            "{}\n{}\nunset\n{}\nunset\n{expected_all}",
            hex(b"from-init"),
            hex(b"from-init"),
            hex(b"second")
        )
    );
    h.finish();
});

scenario!(stdio_are_the_callers, |side| {
    let h = Harness::new(side);
    let (input, output, errors) = (h.path("in.txt"), h.path("out.txt"), h.path("err.txt"));
    std::fs::write(&input, "input").unwrap();
    for _ in 0..2 {
        let mut call = h.call(&["@fdlink:0", "@fdlink:1", "@fdlink:2", "@err:to-stderr"]);
        call.cmd
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(std::fs::File::create(&output).unwrap())
            .stderr(std::fs::File::create(&errors).unwrap());
        let out = call.run();
        assert_success(&out);
        let lines = std::fs::read_to_string(&output).unwrap();
        let expected = format!(
            "{}\n{}\n{}\n",
            input.display(),
            output.display(),
            errors.display()
        );
        assert_eq!(lines, expected);
        assert_eq!(std::fs::read_to_string(&errors).unwrap(), "to-stderr\n");
    }
    h.finish();
});

scenario!(stdin_to_stdout_large, |side| {
    let h = Harness::new(side);
    let data: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for _ in 0..2 {
        let out = h.call(&["@cat"]).stdin_bytes(data.clone()).run();
        assert_success(&out);
        assert!(out.stdout == data, "stdin did not reach stdout intact");
    }
    h.finish();
});

scenario!(no_protocol_fds_in_executor, |side| {
    let h = Harness::new(side);
    // The first call (which starts the server) has a stray fd 7.
    for call in [h.call(&["@fds"]).with_stray_fd(), h.call(&["@fds"])] {
        let out = call.run();
        assert_success(&out);
        assert_eq!(stdout_str(&out), "0 1 2\n");
    }
    h.finish();
});

scenario!(sigint_default_in_executor, |side| {
    let h = Harness::new(side);
    // The first call, which starts the server, comes from a context that
    // ignores SIGINT (a background job of a non-interactive shell).
    let out = h.call(&["@sigdisp:INT"]).ignoring_sigint().run();
    assert_eq!(stdout_str(&out), "default\n");
    let out = h.call(&["@sigdisp:INT"]).run();
    assert_eq!(stdout_str(&out), "default\n");
    h.finish();
});

scenario!(init_output_not_duplicated, |side| {
    let h = Harness::new(side);
    let out = h
        .call(&["@out:call"])
        .env("AGENT_INIT_PRINT", "init-says-hi")
        .run();
    assert_success(&out);
    assert_eq!(stdout_str(&out), "call\n");
    assert_eq!(
        stderr_str(&out).matches("init-says-hi").count(),
        1,
        "{}",
        stderr_str(&out)
    );
    for _ in 0..2 {
        let out = h.call(&["@out:call"]).run();
        assert_eq!(stdout_str(&out), "call\n");
        assert_eq!(stderr_str(&out), "");
    }
    h.finish();
});

scenario!(concurrent_first_calls_start_one_server, |side| {
    let h = Harness::new(side);
    let children: Vec<_> = (0..8)
        .map(|_| h.call(&["@server"]).env("AGENT_INIT_SLEEP", "0.3").spawn())
        .collect();
    let pids: Vec<String> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert_success(&out);
            stdout_str(&out)
        })
        .collect();
    assert!(
        pids.iter().all(|p| *p == pids[0]),
        "several servers: {pids:?}"
    );
    h.finish();
});

scenario!(max_servers_queues_calls, |side| {
    let h = Harness::new(side);
    // Start the server with a limit of one call at a time.
    assert_success(&h.call(&["@out:x"]).env("AGENT_MAX_SERVERS", "1").run());
    let children: Vec<_> = (0..3)
        .map(|_| h.call(&["@time", "@sleep:0.3", "@time"]).spawn())
        .collect();
    let mut spans: Vec<(u128, u128)> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert_success(&out);
            let t: Vec<u128> = stdout_str(&out)
                .lines()
                .map(|l| l.parse().unwrap())
                .collect();
            (t[0], t[1])
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "calls overlapped despite max_servers=1: {spans:?}"
        );
    }
    h.finish();
});

scenario!(kill_tears_down, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    assert!(!h.run_dir_entries().is_empty());
    let out = h.kill_server();
    assert_success(&out);
    assert_eq!(
        h.run_dir_entries(),
        Vec::<String>::new(),
        "--kill left files"
    );
    wait_until("the old server to quit", LIMIT, || !alive(server)).unwrap();
    wait_until("the watcher to quit", LIMIT, || h.processes().is_empty()).unwrap();
    // --kill with nothing running is fine too.
    assert_success(&h.kill_server());
    assert_ne!(h.server_pid(), server);
    h.finish();
});

/// Starts a call that runs until told to finish, and waits until its
/// executor is running. Returns the child and the go-ahead file.
fn start_long_call(h: &Harness, name: &str) -> (std::process::Child, std::path::PathBuf) {
    let pid_file = h.path(&format!("{name}.pid"));
    let child = h
        .call(&[
            format!("@pid:{}", pid_file.display()),
            "@sleep:1".into(),
            "@out:finished".into(),
        ])
        .spawn();
    wait_until("the long call to start", LIMIT, || pid_file.exists()).unwrap();
    (child, pid_file)
}

scenario!(kill_with_call_in_flight, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    let (long, _) = start_long_call(&h, "long");
    assert_success(&h.kill_server());
    wait_until("the old server to quit", LIMIT, || !alive(server)).unwrap();
    let out = long.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(
        stdout_str(&out),
        "finished\n",
        "in-flight call must finish normally"
    );
    assert_ne!(h.server_pid(), server);
    h.finish();
});

scenario!(fresh_replaces_server, |side| {
    let h = Harness::new(side);
    let old = h.server_pid();
    let (long, _) = start_long_call(&h, "long");
    let out = h.call_with_options(&["-f"], &["@server"]).run();
    assert_success(&out);
    let new: u32 = stdout_str(&out).trim().parse().unwrap();
    assert_ne!(new, old);
    wait_until("the old server to quit", LIMIT, || !alive(old)).unwrap();
    let out = long.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stdout_str(&out), "finished\n");
    assert_eq!(h.server_pid(), new, "later calls use the fresh server");
    h.finish();
});

scenario!(idle_timeout, |side| {
    let h = Harness::new(side);
    let out = h.call(&["@server"]).env("AGENT_IDLE_TIMEOUT", "0.5").run();
    let server: u32 = stdout_str(&out).trim().parse().unwrap();
    wait_until("the idle server to quit", LIMIT, || !alive(server)).unwrap();
    wait_until("the watcher to quit", LIMIT, || h.processes().is_empty()).unwrap();
    assert_ne!(
        h.server_pid(),
        server,
        "a call after the timeout starts a new server"
    );
    h.finish();
});

scenario!(autoreload_program, |side| {
    let h = Harness::with_private_program(side);
    let old = h.server_pid();
    assert_eq!(h.server_pid(), old);
    touch(&h.program);
    let new = h.server_pid();
    assert_ne!(new, old, "changing the program must start a new server");
    wait_until("the old server to quit", LIMIT, || !alive(old)).unwrap();
    assert_eq!(h.server_pid(), new, "and the new one stays");
    h.finish();
});

scenario!(autoreload_extra_file, |side| {
    let h = Harness::new(side);
    let extra = h.path("config");
    std::fs::write(&extra, "x").unwrap();
    let out = h.call(&["@server"]).env("AGENT_RELOAD_EXTRA", &extra).run();
    let old: u32 = stdout_str(&out).trim().parse().unwrap();
    assert_eq!(h.server_pid(), old);
    touch(&extra);
    assert_ne!(
        h.server_pid(),
        old,
        "changing an extra file must start a new server"
    );
    h.finish();
});

/// The server of a call whose initialisation watches `file` too
/// (AGENT_RELOAD_EXTRA, read only when a call starts a server).
fn server_watching(h: &Harness, file: &std::path::Path) -> u32 {
    let out = h.call(&["@server"]).env("AGENT_RELOAD_EXTRA", file).run();
    assert_success(&out);
    stdout_str(&out).trim().parse().unwrap()
}

/// A file `config` in the world, and the server that a call watching it
/// started.
fn config_watched(h: &Harness) -> (std::path::PathBuf, u32) {
    let extra = h.path("config");
    std::fs::write(&extra, "x").unwrap();
    let server = server_watching(h, &extra);
    (extra, server)
}

/// A watched file replaced by rename (as editors save) is a change: the
/// new file is newer than the server.
scenario!(autoreload_file_replaced_by_rename, |side| {
    let h = Harness::new(side);
    let (extra, old) = config_watched(&h);
    assert_eq!(server_watching(&h, &extra), old);
    // Past the kernel's timestamp granularity: the new file's mtime
    // lies after the server's start.
    std::thread::sleep(Duration::from_millis(50));
    let new_copy = h.path("config.new");
    std::fs::write(&new_copy, "y").unwrap();
    std::fs::rename(&new_copy, &extra).unwrap();
    assert_ne!(
        server_watching(&h, &extra),
        old,
        "a file replaced by rename"
    );
    h.finish();
});

/// chmod fires an event but leaves the mtime; a copy with an old mtime
/// (`cp -p`) renamed over the file replaces the watched inode. Neither is
/// a change: the server stays, and its watches, armed again, still see a
/// later edit of the new file.
scenario!(
    autoreload_watches_survive_events_that_change_nothing,
    |side| {
        let h = Harness::new(side);
        let (extra, old) = config_watched(&h);
        set_mode(&extra, 0o600);
        assert_eq!(server_watching(&h, &extra), old, "chmod: no reload");
        let copy = h.path("config.copy");
        std::fs::copy(&extra, &copy).unwrap();
        let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(&copy)
            .unwrap()
            .set_modified(an_hour_ago)
            .unwrap();
        std::fs::rename(&copy, &extra).unwrap();
        for _ in 0..2 {
            assert_eq!(
                server_watching(&h, &extra),
                old,
                "same contents, old mtime: no reload"
            );
        }
        touch(&extra);
        assert_ne!(
            server_watching(&h, &extra),
            old,
            "an edit after the replacement is seen"
        );
        h.finish();
    }
);

/// As in chiark-utils' original, a watched file that is missing, removed
/// after the server started or never there, is no reason to reload.
scenario!(autoreload_missing_file_is_no_reason, |side| {
    let h = Harness::new(side);
    let (extra, old) = config_watched(&h);
    std::fs::remove_file(&extra).unwrap();
    for _ in 0..3 {
        assert_eq!(
            server_watching(&h, &extra),
            old,
            "a removed file is no reason to reload"
        );
    }
    assert_success(&h.kill_server());

    let never = h.path("never-there");
    let old = server_watching(&h, &never);
    for _ in 0..3 {
        assert_eq!(
            server_watching(&h, &never),
            old,
            "a file that never existed is no reason to reload"
        );
    }
    h.finish();
});

/// As in chiark-utils' original, a watched file that cannot be examined,
/// for another reason than that it is missing, is a reason to reload:
/// here its directory has become a file (ENOTDIR).
scenario!(
    autoreload_file_that_cannot_be_examined_is_a_reason,
    |side| {
        let h = Harness::new(side);
        let dir = h.path("conf.d");
        std::fs::create_dir(&dir).unwrap();
        let extra = dir.join("config");
        std::fs::write(&extra, "x").unwrap();
        let old = server_watching(&h, &extra);
        assert_eq!(server_watching(&h, &extra), old);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, "not a directory").unwrap();
        assert_eq!(
            std::fs::metadata(&extra).unwrap_err().raw_os_error(),
            Some(libc::ENOTDIR)
        );
        assert_ne!(
            server_watching(&h, &extra),
            old,
            "a file that cannot be examined is a reason to reload"
        );
        h.finish();
    }
);

/// As in chiark-utils' original, a watched file whose mtime is later than
/// the server's start is a reason to reload: also one removed and then
/// made again while the server went on serving (which the original,
/// checking every file at every call, sees).
scenario!(autoreload_missing_file_made_again, |side| {
    let h = Harness::new(side);
    let (extra, _) = config_watched(&h);
    std::fs::remove_file(&extra).unwrap();
    // A call while it is missing: the server has seen the removal.
    let serving = server_watching(&h, &extra);
    std::fs::write(&extra, "y").unwrap();
    // Its mtime now lies after the server's start, on the kernel's clock.
    touch(&extra);
    assert_ne!(
        server_watching(&h, &extra),
        serving,
        "a file made again after the server started is a change"
    );
    h.finish();
});

scenario!(setup_failure, |side| {
    let h = Harness::new(side);
    let out = h.call(&["@out:never"]).env("AGENT_INIT_EXIT", "3").run();
    assert_eq!(out.status.code(), Some(3), "the script's own status");
    assert_eq!(stdout_str(&out), "");
    let err = stderr_str(&out);
    assert!(
        err.contains("agent: failing initialisation as asked"),
        "script's stderr shown: {err}"
    );
    assert!(
        err.contains("prefork-interp: script initialisation failed: exited with status 3"),
        "{err}"
    );
    assert_eq!(
        h.run_dir_entries(),
        Vec::<String>::new(),
        "failed setup left files"
    );
    wait_until("the watcher to quit", LIMIT, || h.processes().is_empty()).unwrap();
    let out = h.call(&["@out:works"]).run();
    assert_eq!(stdout_str(&out), "works\n");
    h.finish();
});

scenario!(client_killed_mid_call, |side| {
    let h = Harness::new(side);
    let marker = h.path("got-sigint");
    let (mut client, executor) =
        h.start_sleeper("executor", &[&format!("@onint:{}", marker.display())]);
    client.kill().unwrap();
    client.wait().unwrap();
    wait_until("the executor to get SIGINT", LIMIT, || marker.exists()).unwrap();
    wait_until("the executor to be reaped", LIMIT, || reaped(executor)).unwrap();
    // The server carries on.
    let out = h.call(&["@out:still-here"]).run();
    assert_eq!(stdout_str(&out), "still-here\n");
    h.finish();
});

scenario!(standalone_run, |side| {
    let h = Harness::new(side);
    let args = ["@args", "a b", "@env:PREFORK_INTERP", "@exit:4"];
    let expected: String = args.iter().map(|a| hex(a.as_bytes()) + "\n").collect();
    let expected = expected + "unset\n";
    let out = h.direct(&args).run();
    assert_eq!(out.status.code(), Some(4), "{}", stderr_str(&out));
    assert_eq!(stdout_str(&out), expected);
    assert_eq!(
        h.run_dir_entries(),
        Vec::<String>::new(),
        "standalone must not start a server"
    );
    h.finish();
});

scenario!(threads_refused, |side| {
    let h = Harness::new(side);
    let out = h.call(&["@out:never"]).env("AGENT_INIT_THREAD", "1").run();
    assert_eq!(out.status.code(), Some(127), "{}", stderr_str(&out));
    assert_eq!(stdout_str(&out), "");
    let err = stderr_str(&out);
    assert!(
        err.contains("threads are running"),
        "names the problem: {err}"
    );
    assert!(
        err.contains("prefork-interp: script initialisation failed"),
        "{err}"
    );
    assert_eq!(h.run_dir_entries(), Vec::<String>::new());
    h.finish();
});

/// All of a run at once (exit code, signal, stdout, stderr), to compare
/// with another: a difference shows the whole of both (the client's own
/// message, say, next to a status that differs).
fn outcome(out: std::process::Output) -> (Option<i32>, Option<i32>, String, String) {
    (
        out.status.code(),
        out.status.signal(),
        stdout_str(&out),
        stderr_str(&out),
    )
}

/// Status, stdout and stderr of a call through prefork-interp must be those
/// of running the program directly: this covers each language's own ways
/// to fail (die, panic, exceptions) and its buffering at exit.
scenario!(behaves_like_direct_run, |side| {
    let h = Harness::new(side);
    let cases: [&[&str]; 7] = [
        &["@out:a"],
        &["@out:a", "@exit:77"],
        &["@err:e1", "@out:o1", "@exit:2"],
        &["@out:partial", "@die:boom"],
        &["@out:kept-or-lost", "@_exit:5"],
        &["@out:before-kill", "@kill:KILL"],
        &["@out:before-term", "@kill:TERM"],
    ];
    for args in cases {
        let direct = outcome(h.direct(args).run());
        let served = outcome(h.call(args).run());
        assert_eq!(
            served, direct,
            "{args:?}: through us (left), directly (right)"
        );
    }
    h.finish();
});

/// A plain exit with status N is N, every time, with calls in parallel
/// (the original reports many of them as killed by SIGINT).
scenario!(exit_status_under_load, |side| {
    let h = Harness::new(side);
    assert_success(&h.call(&["@out:start"]).run());
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..25 {
                    let out = h.call(&["@out:payload", "@exit:3"]).run();
                    assert_eq!(
                        out.status.code(),
                        Some(3),
                        "{:?} {}",
                        out.status,
                        stderr_str(&out)
                    );
                    assert_eq!(stdout_str(&out), "payload\n");
                }
            });
        }
    });
    h.finish();
});

/// Exit handlers registered during initialisation (atexit, END blocks)
/// run once per call, in the executor; never in the setup run, the
/// server or a monitor.
scenario!(exit_handlers_run_in_executor_only, |side| {
    let h = Harness::new(side);
    let record = h.path("exits");
    let out = h
        .call(&["@out:one"])
        .env("AGENT_INIT_ATEXIT", &record)
        .run();
    assert_success(&out);
    assert_success(&h.call(&["@out:two"]).run());
    assert_eq!(h.call(&["@exit:3"]).run().status.code(), Some(3));
    // Let the server and every monitor end (an exit handler run there
    // would add a line), then count.
    assert_success(&h.kill_server());
    wait_until("every process to exit", LIMIT, || h.processes().is_empty()).unwrap();
    let lines = std::fs::read_to_string(&record).unwrap();
    assert_eq!(
        lines,
        "exit\n".repeat(3),
        "one exit handler run per call, none elsewhere"
    );
    h.finish();
});

/// Runs a call with a terminal (a pty) as stdin, stdout and stderr;
/// returns its status and everything it wrote.
fn on_terminal(mut call: Call) -> (std::process::ExitStatus, Vec<u8>) {
    use std::io::Read;
    let pty = nix::pty::openpty(None, None).unwrap();
    for stdio in 0..3 {
        let slave = std::process::Stdio::from(pty.slave.try_clone().unwrap());
        match stdio {
            0 => call.cmd.stdin(slave),
            1 => call.cmd.stdout(slave),
            _ => call.cmd.stderr(slave),
        };
    }
    let mut child = call.spawn();
    // Our copy must go, or the terminal never reports its end.
    drop(pty.slave);
    let mut master = std::fs::File::from(pty.master);
    let mut output = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => output.extend_from_slice(&buf[..n]),
            // EIO: every holder of the terminal's other side is gone.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
    (child.wait().unwrap(), output)
}

/// On a terminal, a call looks like a direct run: isatty is true, and
/// stdout is line-buffered as the language makes it (a line printed just
/// before a sudden death is seen).
scenario!(terminal_like_direct_run, |side| {
    let h = Harness::new(side);
    let cases: [&[&str]; 3] = [
        &["@tty"],
        &["@out:line", "@kill:KILL"],
        &["@out:x", "@_exit:0"],
    ];
    for args in cases {
        let (direct_status, direct) = on_terminal(h.direct(args));
        let (served_status, served) = on_terminal(h.call(args));
        assert_eq!(served_status.code(), direct_status.code(), "{args:?}");
        assert_eq!(served_status.signal(), direct_status.signal(), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&served),
            String::from_utf8_lossy(&direct),
            "{args:?}"
        );
    }
    let (_, tty) = on_terminal(h.call(&["@tty"]));
    assert_eq!(String::from_utf8_lossy(&tty), "1 1 1\r\n");
    h.finish();
});

/// Signals sent to the client reach the script, which decides its fate:
/// a script that traps one and exits 0 gives 0.
scenario!(signals_forwarded_to_the_script, |side| {
    let h = Harness::new(side);
    for (name, sig) in [
        ("TERM", libc::SIGTERM),
        ("INT", libc::SIGINT),
        ("HUP", libc::SIGHUP),
        ("QUIT", libc::SIGQUIT),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("WINCH", libc::SIGWINCH),
        ("ALRM", libc::SIGALRM),
    ] {
        let (client, _) = h.start_sleeper(name, &[&format!("@trap:{name}")]);
        // SAFETY: signalling our own test's client.
        unsafe { libc::kill(client.id() as i32, sig) };
        let out = client.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {:?} {}",
            out.status,
            stderr_str(&out)
        );
        assert_eq!(stdout_str(&out), format!("caught {name}\n"));
    }
    h.finish();
});

/// A forwarded signal the script does not handle kills it, and the
/// client dies of the same signal; the executor is reaped.
scenario!(forwarded_signal_death_is_the_callers, |side| {
    let h = Harness::new(side);
    for (name, sig) in [
        ("TERM", libc::SIGTERM),
        ("HUP", libc::SIGHUP),
        ("USR1", libc::SIGUSR1),
    ] {
        let (client, executor) = h.start_sleeper(name, &[]);
        // SAFETY: signalling our own test's client.
        unsafe { libc::kill(client.id() as i32, sig) };
        let out = client.wait_with_output().unwrap();
        assert_eq!(out.status.signal(), Some(sig), "{name}: {:?}", out.status);
        wait_until("the executor to be reaped", LIMIT, || reaped(executor)).unwrap();
    }
    h.finish();
});

// The caller's terminal (issue 15). Each scenario drives an interactive
// bash on a pty that is its controlling terminal ([`Terminal`]), and does
// the same once with the agent run directly (`X=$D`) and once through us
// (`X=$S`): what the terminal shows must be the same, and the caller's
// terminal settings (`stty -a`) the same after as before.

/// How an interaction ran the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    Direct,
    Served,
}

/// A world and a shell on its terminal, the server started (so that
/// calls below are warm ones), and the terminal's settings as the shell
/// has them.
fn terminal_world(side: Side) -> (Harness, Terminal, String) {
    let h = Harness::new(side);
    let mut t = Terminal::shell(&h);
    assert_eq!(t.output("$S @out:warm"), "warm\r\n");
    let settings = t.stty();
    (h, t, settings)
}

/// Checks the terminal's settings are what they were, ends the shell,
/// and tears the world down.
fn terminal_done(h: Harness, mut t: Terminal, settings: &str) {
    assert_eq!(
        t.stty(),
        settings,
        "the terminal's settings after the calls"
    );
    t.exit();
    h.finish();
}

/// Runs `interaction` twice in the shell: with `X` the agent run
/// directly, then with `X` the script called through us. Returns, for
/// each, what the terminal showed from its first line to its end, and
/// what it returned.
fn direct_and_served<T>(
    t: &mut Terminal,
    mut interaction: impl FnMut(&mut Terminal, Run) -> T,
) -> [(String, T); 2] {
    [Run::Direct, Run::Served].map(|run| {
        t.run(match run {
            Run::Direct => "X=$D",
            Run::Served => "X=$S",
        });
        let from = t.position();
        let value = interaction(t, run);
        (t.since(from), value)
    })
}

/// The screens of a direct run and a call are the same, byte for byte.
#[track_caller]
fn assert_same_screen<T>(runs: &[(String, T); 2]) {
    assert_eq!(
        runs[1].0, runs[0].0,
        "what the terminal showed: through us (left), directly (right)"
    );
}

/// The pid a call wrote with `@pid:NAME` in the world's directory (the
/// shell's, so the call's), once it is there.
fn pid_in(h: &Harness, name: &str) -> u32 {
    let path = h.path(name);
    wait_until("the script to write its pid", LIMIT, || path.exists()).unwrap();
    // (Trimmed: a shell's `echo $$` ends it with a newline.)
    std::fs::read_to_string(&path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Processes whose process group is `group`.
fn group_members(group: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
                    .split_whitespace()
                    .collect();
                fields[2] == group.to_string() && fields[0] != "Z"
            })
        })
        .collect()
}

/// The pid a call wrote with `@pid:NAME`, once the script is asleep in
/// a blocking read or a sleep: a signal that comes then finds it in the
/// same place in every run (Python's traceback of a KeyboardInterrupt
/// names it).
fn script_waiting(h: &Harness, name: &str) -> u32 {
    let pid = pid_in(h, name);
    let waiting = || {
        let asleep = proc_state(pid).is_some_and(|(state, _)| state == 'S');
        // The system call it is in (readable by root or its parent;
        // anyone else takes asleep for waiting).
        let call = std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<libc::c_long>().ok());
        // Python before 3.11 sleeps in select() (no fds, a timeout),
        // which glibc makes x86_64's select or pselect6.
        #[cfg(target_arch = "x86_64")]
        const SELECT: libc::c_long = libc::SYS_select;
        #[cfg(not(target_arch = "x86_64"))]
        const SELECT: libc::c_long = libc::SYS_pselect6;
        asleep
            && call.is_none_or(|call| {
                [
                    libc::SYS_read,
                    libc::SYS_nanosleep,
                    libc::SYS_clock_nanosleep,
                    SELECT,
                    libc::SYS_pselect6,
                ]
                .contains(&call)
            })
    };
    wait_until("the script to wait (a read, a sleep)", LIMIT, waiting).unwrap();
    pid
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a test process.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// /dev/tty opens, the script is its terminal's foreground process group,
/// isatty and the window size are a direct run's; with stdin from
/// elsewhere, or stdout to a file, /dev/tty is still there, and a line
/// read from it after a prompt written to it comes back.
scenario!(terminal_devtty_foreground_winsize, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let out = h.path("out.txt");
    let runs = direct_and_served(&mut t, |t, _| {
        let all = t.output("$X @devtty @fg @tty @winsize");
        let stdin_elsewhere = t.output("$X @devtty @fg @tty < /dev/null");
        t.run("$X @devtty @fg @tty @winsize > out.txt");
        let stdout_to_file = std::fs::read_to_string(&out).unwrap();
        t.start("$X @ask > out.txt");
        t.expect("Say: ");
        t.send(b"hello there\r");
        t.expect("PROMPT> ");
        let said = std::fs::read_to_string(&out).unwrap();
        (all, stdin_elsewhere, stdout_to_file, said)
    });
    assert_same_screen(&runs);
    for (screen, got) in &runs {
        assert_eq!(
            *got,
            (
                "ok\r\nfg\r\n1 1 1\r\n24 80\r\n".to_string(),
                "ok\r\nENOTTY\r\n0 1 1\r\n".to_string(),
                "ok\nfg\n1 0 1\n24 80\n".to_string(),
                "said hello there\n".to_string()
            ),
            "{screen}"
        );
        assert!(screen.contains("Say: hello there\r\n"), "{screen}");
    }
    terminal_done(h, t, &settings);
});

/// In a pipeline (stdout, or stdin, a pipe), the script is still in its
/// terminal's foreground, /dev/tty opens, and a line typed at a prompt
/// written to /dev/tty is echoed once and comes back, as in a direct run.
scenario!(terminal_in_a_pipeline, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let runs = direct_and_served(&mut t, |t, run| {
        let piped_out = t.output("$X @devtty @tty | cat");
        let piped_in = t.output("echo x | $X @devtty @tty");
        // (Its answer on the terminal too, not through `cat`: the echo of
        // what is typed comes by way of the call's terminal, and a pipe's
        // reader would race it.)
        t.start("echo x | $X @ask");
        t.expect("Say: ");
        if run == Run::Served {
            // The call takes the caller's terminal (raw) once the script
            // reads its own; a line typed before that would be echoed by
            // both terminals. (A person is slower than this.)
            wait_until("the call to take the terminal", LIMIT, || !t.echoes()).unwrap();
        }
        t.send(b"in a pipeline\r");
        let asked = t.until("PROMPT> ");
        [piped_out, piped_in, asked]
    });
    assert_same_screen(&runs);
    assert_eq!(
        runs[0].1,
        [
            "ok\r\n1 0 1\r\n",
            "ok\r\n0 1 1\r\n",
            "in a pipeline\r\nsaid in a pipeline\r\n",
        ]
    );
    // Until it uses its terminal, the script of a call in a pipeline is
    // in its terminal's background (a direct run is in the foreground):
    // the other processes of the job may be using the caller's terminal
    // (README, "Beyond the original").
    let foreground = direct_and_served(&mut t, |t, _| t.output("$X @fg | cat"));
    assert_eq!(
        foreground.each_ref().map(|(_, said)| said.as_str()),
        ["fg\r\n", "bg\r\n"]
    );
    terminal_done(h, t, &settings);
});

/// A call whose script reads its terminal from the background stops
/// (SIGTTIN), as a direct run's job does: started there (`&`), or sent
/// there (^Z, then `bg`) while it slept; `fg` gives it the terminal, and
/// it reads what is typed.
scenario!(terminal_background_read_stops, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let runs = direct_and_served(&mut t, |t, run| {
        let mut got = Vec::new();
        // Started in the background.
        t.run("$X @cat &");
        got.push(read_once_foreground(t, run, "$X @cat"));
        // Sent there while it sleeps, before it reads.
        let line = "$X @out:asleep @sleep:1 @cat";
        t.start(line);
        t.expect("asleep\r\n");
        t.send(b"\x1a");
        t.expect("Stopped");
        t.expect("PROMPT> ");
        t.run("bg");
        got.push(read_once_foreground(t, run, line));
        got
    });
    for (screen, got) in &runs {
        assert_eq!(*got, vec![("typed\r\n".to_string(), 0); 2], "{screen}");
    }
    terminal_done(h, t, &settings);
});

/// For [`terminal_background_read_stops`]: waits until the job `line`
/// stops for its terminal, brings it to the foreground, types a line and
/// ^D; returns what it copied and its status.
fn read_once_foreground(t: &mut Terminal, run: Run, line: &str) -> (String, i32) {
    // Asked until it shows: the job stops once it reads.
    let mut listed = String::new();
    let stopped = wait_until("the job to stop for its terminal", LIMIT, || {
        listed = t.output("jobs -l");
        listed.contains("Stopped (tty input)")
    });
    assert!(stopped.is_ok(), "{line}: {listed:?}");
    t.start("fg");
    t.expect(&format!("{line}\r\n"));
    if run == Run::Served {
        // Resumed in the foreground, the call takes the terminal (raw);
        // a line typed before that would be echoed by both terminals.
        wait_until("the call to take the terminal", LIMIT, || !t.echoes()).unwrap();
    }
    t.send(b"typed\r");
    t.expect("typed\r\n");
    t.send(b"\x04");
    let copied = t.until("PROMPT> ");
    (copied, t.status())
}

/// A password prompt (echo off on /dev/tty, the language's usual way):
/// what is typed reaches the script and never the screen; with stdin
/// from a file, the prompt still reads the terminal, and stdin is the
/// file.
scenario!(terminal_password_prompt, |side| {
    const SECRET: &str = "hunter2-xyzzy";
    let (h, mut t, settings) = terminal_world(side);
    std::fs::write(h.path("in.txt"), "from the file\n").unwrap();
    let runs = direct_and_served(&mut t, |t, _| {
        t.start("$X @secret");
        t.expect("Password: ");
        t.send(format!("{SECRET}\r").as_bytes());
        let typed = t.until("PROMPT> ");
        let status = t.status();
        t.start("$X @secret @cat < in.txt");
        t.expect("Password: ");
        t.send(format!("{SECRET}\r").as_bytes());
        let from_file = t.until("PROMPT> ");
        (typed, status, from_file, t.status())
    });
    assert_same_screen(&runs);
    for (screen, got) in &runs {
        assert_eq!(
            *got,
            (
                "\r\nlength 13\r\n".to_string(),
                0,
                "\r\nlength 13\r\nfrom the file\r\n".to_string(),
                0
            ),
            "{screen}"
        );
    }
    assert!(
        !String::from_utf8_lossy(t.seen()).contains(SECRET),
        "the secret was shown: {:?}",
        String::from_utf8_lossy(t.seen())
    );
    terminal_done(h, t, &settings);
});

/// A pager (less, reading its keys from /dev/tty) run by the script on
/// the text it pipes in: it shows the first screen, `q` ends it, the
/// call ends with 0 and the shell's prompt comes back.
scenario!(terminal_pager, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let runs = direct_and_served(&mut t, |t, _| {
        t.start("TERM=xterm $X @pager:100");
        // The screen's last line of text: less has drawn it, in its own
        // terminal mode since before it drew anything.
        t.expect("line 23");
        t.send(b"q");
        let rest = t.until("PROMPT> ");
        assert!(rest.ends_with("less exited 0\r\n"), "{rest:?}");
        t.status()
    });
    assert_same_screen(&runs);
    assert_eq!(runs.each_ref().map(|r| r.1), [0, 0]);
    terminal_done(h, t, &settings);
});

/// A full-screen (curses) program run by the script: it draws, a key
/// reaches it, it ends, and so does the call, with 0.
scenario!(terminal_curses, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let runs = direct_and_served(&mut t, |t, _| {
        t.start("TERM=xterm $X @curses:$PY");
        t.expect("curses: press a key");
        t.send(b"x");
        let rest = t.until("PROMPT> ");
        assert!(
            rest.ends_with("curses got 120\r\ncurses exited 0\r\n"),
            "{rest:?}"
        );
        t.status()
    });
    assert_same_screen(&runs);
    assert_eq!(runs.each_ref().map(|r| r.1), [0, 0]);
    terminal_done(h, t, &settings);
});

/// ^C while the script sleeps, and while it waits at a password prompt
/// (echo off): it dies of SIGINT, and the shell's `$?` is 130.
scenario!(terminal_interrupt, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let runs = direct_and_served(&mut t, |t, _| {
        let _ = std::fs::remove_file(h.path("exe.pid"));
        t.start("$X @pid:exe.pid @sleep:30");
        let script = script_waiting(&h, "exe.pid");
        t.send(b"\x03");
        t.expect("PROMPT> ");
        let asleep = t.status();
        wait_until("the script to be gone", LIMIT, || !alive(script)).unwrap();
        std::fs::remove_file(h.path("exe.pid")).unwrap();
        t.start("$X @pid:exe.pid @secret");
        t.expect("Password: ");
        let script = script_waiting(&h, "exe.pid");
        t.send(b"\x03");
        t.expect("PROMPT> ");
        wait_until("the script to be gone", LIMIT, || !alive(script)).unwrap();
        (asleep, t.status())
    });
    assert_same_screen(&runs);
    assert_eq!(runs.each_ref().map(|r| r.1), [(130, 130); 2]);
    terminal_done(h, t, &settings);
});

/// Whether process `pid` is stopped.
fn stopped(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(state, _)| state == 'T')
}

/// ^Z to the shell's foreground job, whose script wrote its pid to
/// `pid_file` (in the world's directory): returns that pid once the shell
/// says the job stopped, shows its prompt, and the job's processes (the
/// client and the script, or the script) are stopped.
fn stop_the_job(h: &Harness, t: &mut Terminal, pid_file: &str) -> u32 {
    let job = t.job();
    let executor = pid_in(h, pid_file);
    t.send(b"\x1a");
    t.expect("Stopped");
    t.expect("PROMPT> ");
    wait_until("the job's processes to stop", LIMIT, || {
        stopped(job) && stopped(executor)
    })
    .unwrap();
    executor
}

/// ^Z from an interactive bash stops the script (and the client: the job
/// is stopped as a whole), the shell says so; `fg` resumes it and its
/// output goes on; `bg` lets it run on in the background, where it
/// finishes, and `wait` gives its status.
scenario!(terminal_job_control, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let pid_file = h.path("exe.pid");
    // Starts the script, waits for its first line, and stops it with ^Z;
    // returns once the shell shows its prompt and the job's processes
    // (the client and the script, or the script) are stopped.
    let start_and_stop = |t: &mut Terminal, exit: u8| {
        let _ = std::fs::remove_file(&pid_file);
        t.start(&format!(
            "$X @pid:exe.pid @out:BEFORE @sleep:2 @out:AFTER @exit:{exit}"
        ));
        t.expect("BEFORE\r\n");
        stop_the_job(&h, t, "exe.pid");
    };
    let runs = direct_and_served(&mut t, |t, _| {
        start_and_stop(t, 0);
        t.start("fg");
        t.expect("AFTER\r\n");
        t.expect("PROMPT> ");
        let resumed = t.status();
        start_and_stop(t, 7);
        t.start("bg; wait %1; echo status=$?");
        t.expect("AFTER\r");
        t.expect("status=");
        let waited = t.until("\r\n");
        t.expect("PROMPT> ");
        (resumed, waited)
    });
    // In the background the client leaves its terminal's settings alone
    // (as it must), and undoes its own terminal's `\r\n` so that the
    // caller's makes it once.
    assert_same_screen(&runs);
    let [(_, direct_got), (_, served_got)] = runs;
    assert_eq!([direct_got, served_got], [(0, "7".into()), (0, "7".into())]);
    terminal_done(h, t, &settings);
});

/// ^Z at an interactive bash stops a job whose stdin, stdout and stderr
/// are all elsewhere (so no pseudo-terminal: the call's signals are
/// passed on as they come): the script and the client stop, the shell
/// says so, `fg` and `bg` resume it, its output goes on, and `wait` gives
/// its status, as for a direct run.
scenario!(terminal_job_control_with_stdio_elsewhere, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let pid_file = h.path("p");
    let log = h.path("log");
    let logged = |text: &str| std::fs::read_to_string(&log).is_ok_and(|said| said.contains(text));
    let start_and_stop = |t: &mut Terminal, run: Run, exit: u8| {
        let _ = std::fs::remove_file(&pid_file);
        t.start(&format!(
            // (Short: readline scrolls a line longer than the screen.
            // Stderr: a file as stdout would be block-buffered.)
            "$X @pid:p @err:BEFORE @sleep:1 @err:AFTER @exit:{exit} <&- >log 2>&1"
        ));
        wait_until("the script's first line", LIMIT, || logged("BEFORE\n")).unwrap();
        let executor = stop_the_job(&h, t, "p");
        // Stopped, it stays so: its sleep's end does not come.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            stopped(executor) && !logged("AFTER"),
            "{run:?}: a stopped script ran on: {:?}",
            std::fs::read_to_string(&log)
        );
    };
    let runs = direct_and_served(&mut t, |t, run| {
        start_and_stop(t, run, 0);
        t.run("fg");
        let resumed = (t.status(), std::fs::read_to_string(&log).unwrap());
        start_and_stop(t, run, 7);
        t.start("bg; wait %1; echo status=$?");
        t.expect("status=");
        let waited = t.until("\r\n");
        t.expect("PROMPT> ");
        (resumed, waited, std::fs::read_to_string(&log).unwrap())
    });
    assert_same_screen(&runs);
    for (screen, got) in &runs {
        let expected = (
            (0, "BEFORE\nAFTER\n".to_string()),
            "7".to_string(),
            "BEFORE\nAFTER\n".to_string(),
        );
        assert_eq!(*got, expected, "{screen}");
    }
    terminal_done(h, t, &settings);
});

/// The window's size changes (the terminal emulator sets it on its
/// pty): the script gets SIGWINCH and reads the new size.
scenario!(terminal_window_resize, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let runs = direct_and_served(&mut t, |t, _| {
        t.start("$X @winch @out:ready @waitwinch @winsize");
        t.expect("ready\r\n");
        t.resize(30, 100);
        let size = t.until("PROMPT> ");
        t.resize(24, 80);
        size
    });
    assert_same_screen(&runs);
    assert_eq!(
        runs.each_ref().map(|r| r.1.clone()),
        ["30 100\r\n", "30 100\r\n"]
    );
    terminal_done(h, t, &settings);
});

/// The client killed (SIGKILL, SIGTERM, SIGHUP) while the script waits at
/// a password prompt with echo off: the shell's terminal is as it was
/// before the call (`stty -a`), and the script's process group goes (a
/// direct run's dies of the signal; ours gets SIGHUP from its terminal's
/// end, or SIGINT from its monitor, or the signal passed on).
scenario!(terminal_client_killed_mid_prompt, |side| {
    let (h, mut t, settings) = terminal_world(side);
    for (name, sig) in [
        ("KILL", libc::SIGKILL),
        ("TERM", libc::SIGTERM),
        ("HUP", libc::SIGHUP),
    ] {
        let runs = direct_and_served(&mut t, |t, run| {
            let _ = std::fs::remove_file(h.path("exe.pid"));
            t.start("$X @pid:exe.pid @secret");
            t.expect("Password: ");
            let script = script_waiting(&h, "exe.pid");
            // The shell's job: the script run directly, or our client.
            let job = t.job();
            assert_eq!(job == script, run == Run::Direct, "{run:?}: the job {job}");
            signal(job, sig);
            let killed = std::time::Instant::now();
            wait_until("the script's process group to go", LIMIT, || {
                group_members(script).is_empty()
            })
            .unwrap();
            // For the record (shown with --no-capture).
            eprintln!(
                "{side:?}: {run:?}, SIG{name}: the script's group gone after {:.1} ms",
                killed.elapsed().as_secs_f64() * 1000.0
            );
            t.expect("PROMPT> ");
            let status = t.status();
            assert_eq!(t.stty(), settings, "{name}: the terminal's settings");
            status
        });
        assert_same_screen(&runs);
        assert_eq!(runs.each_ref().map(|r| r.1), [128 + sig; 2], "{name}");
    }
    terminal_done(h, t, &settings);
});

/// After calls that end normally, with a status, or by a signal, the
/// terminal's settings are exactly what they were: as the interactive
/// shell sees them, and (since bash puts back its own settings after a
/// job that died of a signal, which would hide a call that left them
/// changed) without job control too, in one `sh -c` that asks `stty`
/// before and after the call, as a direct run's.
scenario!(terminal_settings_restored_after_calls, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let ends = [
        ("@out:x", 0),
        ("@exit:3", 3),
        ("@kill:TERM", 128 + libc::SIGTERM),
        ("@kill:INT", 128 + libc::SIGINT),
        ("@kill:HUP", 128 + libc::SIGHUP),
    ];
    for (call, status) in ends {
        t.run(&format!("$S {call}"));
        assert_eq!(t.status(), status, "$S {call}");
        assert_eq!(t.stty(), settings, "after $S {call}");
    }
    // (The call's words expanded by the interactive shell: `X` is not
    // exported.)
    let modes = t.modes();
    for (call, status) in ends {
        direct_and_served(&mut t, |t, run| {
            let said = t.output(&format!(
                "sh -c \"stty -a; echo ===; $X {call}; echo \\\"=== \\$?\\\"; stty -a\""
            ));
            // (Left raw, the terminal no longer makes "\r\n" of what
            // stty says: the modes first, readable.)
            assert_eq!(t.modes(), modes, "sh -c: after $X {call}, {run:?}");
            let (before, rest) = said.split_once("===\r\n").unwrap();
            let (got, after) = rest
                .rsplit_once("=== ")
                .unwrap()
                .1
                .split_once("\r\n")
                .unwrap();
            assert_eq!(got, status.to_string(), "sh -c: $X {call}, {run:?}: {said}");
            assert_eq!(
                after, before,
                "sh -c: the settings after $X {call}, {run:?}"
            );
        });
    }
    terminal_done(h, t, &settings);
});

/// Where no shell puts the terminal back (dash, with job control but
/// without bash's restoring), the settings after a call are still what
/// they were, as after a direct run: after calls that end normally, with
/// a status, by a signal of their own, by ^C; while a call stopped by ^Z
/// waits, and after `fg` has let it finish. And after our client itself
/// was killed (TERM, HUP) while the script read a password with echo off
/// (a direct run killed so would leave echo off; ours puts back what it
/// took, and the script's echo-off was on its own pseudo-terminal).
scenario!(terminal_restored_without_the_shells_help, |side| {
    let h = Harness::new(side);
    let mut t = Terminal::dash(&h);
    assert_eq!(t.output("$S @out:warm"), "warm\r\n");
    let settings = t.stty();
    let modes = t.modes();
    // After a call: its status, and the terminal as it was. The modes
    // first: a terminal left raw would not echo `echo $?`, nor `stty -a`.
    let ended = |t: &mut Terminal, after: &str| {
        assert_eq!(t.modes(), modes, "the terminal's modes {after}");
        let status = t.status();
        assert_eq!(t.stty(), settings, "the terminal's settings {after}");
        status
    };
    let pid_file = h.path("exe.pid");
    let runs = direct_and_served(&mut t, |t, _| {
        let mut statuses = Vec::new();
        for call in ["@out:x", "@exit:3", "@kill:TERM", "@kill:INT", "@kill:HUP"] {
            t.run(&format!("$X {call}"));
            statuses.push(ended(t, &format!("after $X {call}")));
        }
        // ^C while it sleeps.
        let _ = std::fs::remove_file(&pid_file);
        t.start("$X @pid:exe.pid @sleep:30");
        let script = script_waiting(&h, "exe.pid");
        t.send(b"\x03");
        t.expect("PROMPT> ");
        statuses.push(ended(t, "after ^C"));
        wait_until("the script to be gone", LIMIT, || !alive(script)).unwrap();
        // ^Z, the settings while it is stopped, then fg.
        let _ = std::fs::remove_file(&pid_file);
        t.start("$X @pid:exe.pid @out:BEFORE @sleep:1 @out:AFTER");
        t.expect("BEFORE\r\n");
        stop_the_job(&h, t, "exe.pid");
        assert_eq!(ended(t, "while stopped by ^Z"), 128 + libc::SIGTSTP);
        t.start("fg");
        t.expect("AFTER\r\n");
        t.expect("PROMPT> ");
        statuses.push(ended(t, "after fg"));
        statuses
    });
    let [int, hup, term] = [libc::SIGINT, libc::SIGHUP, libc::SIGTERM].map(|sig| 128 + sig);
    for (_, statuses) in &runs {
        assert_eq!(*statuses, [0, 3, term, int, hup, int, 0], "the statuses");
    }
    t.run("X=$S");
    for (name, sig) in [("TERM", libc::SIGTERM), ("HUP", libc::SIGHUP)] {
        let _ = std::fs::remove_file(&pid_file);
        t.start("$X @pid:exe.pid @secret");
        t.expect("Password: ");
        let script = script_waiting(&h, "exe.pid");
        signal(t.job(), sig);
        wait_until("the script's process group to go", LIMIT, || {
            group_members(script).is_empty()
        })
        .unwrap();
        t.expect("PROMPT> ");
        let status = ended(&mut t, &format!("after the client's SIG{name} mid-prompt"));
        assert_eq!(status, 128 + sig, "{name}");
    }
    t.exit();
    h.finish();
});

/// The greeting, to the byte, from a server our client started, after
/// one call has come and gone: magic, xdata length (u32 big-endian),
/// then the offer, the server's world (the digest of its namespaces and
/// cgroups, which are the test's) and the counters (served: calls handed
/// over before this connection; idle: milliseconds since that call
/// ended, the one number not known in advance, bounded). Written out, not encoded
/// with the crate's encoder, which it pins too (the digest's formula
/// aside, which the codec's unit test pins on all sides' behalf).
scenario!(greeting_bytes_after_one_call, |side| {
    let h = Harness::new(side);
    let began = std::time::Instant::now();
    let (call, pid_file) = start_long_call(&h, "call");
    let executor: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_success(&call.wait_with_output().unwrap());
    // The monitor tells the server a call has ended before it tells the
    // client: the count is exact once the client is gone.
    assert!(
        reaped(executor),
        "the executor is reaped before its status is sent"
    );
    // The server's world is this test's (its namespaces and cgroups).
    let world = prefork_interp::protocol::world_digest(
        &prefork_interp::protocol::WORLD_NAMESPACES.map(|name| {
            std::fs::metadata(format!("/proc/self/ns/{name}"))
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        }),
        &std::fs::read("/proc/self/cgroup").unwrap(),
    );
    let got = raw_greeting(&h.socket());
    let idle_bound = began.elapsed().as_millis();
    // The idle line's number, as sent, if it is no more than the time
    // since the call began.
    let idle = got
        .strip_suffix(b"\n")
        .and_then(|g| g.rsplit(|&b| b == b'\n').next())
        .and_then(|line| line.strip_prefix(b"idle "))
        .and_then(|n| std::str::from_utf8(n).ok())
        .filter(|n| n.parse::<u128>().is_ok_and(|n| n <= idle_bound))
        .unwrap_or("(milliseconds, at most the time since the call began)");
    let xdata = [
        &b"pfi-caps 1\ncaps signals,context,tty,limits,closed\n"[..],
        format!("world {world}\n").as_bytes(),
        b"served 1\nrunning 0\n",
        format!("idle {idle}\n").as_bytes(),
    ]
    .concat();
    assert_eq!(xdata.len(), 146 + idle.len());
    let expected = [&b"PFI\n"[..], &(xdata.len() as u32).to_be_bytes(), &xdata].concat();
    let expected = expected.as_slice();
    assert!(
        got == expected,
        "greeting\n got: {:?}\nwant: {:?}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
    h.finish();
});

/// The wire itself, as a fourth implementation would speak it: the server
/// (created by our client) offers `signals`; an extended call gets 'P'
/// with the executor's pid, then 'X' with its status; a v1 call on the
/// same server gets a bare status.
scenario!(wire_extended_and_v1_calls, |side| {
    use prefork_interp::protocol::{self, RequestKind};
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    let h = Harness::new(side);
    h.server_pid(); // creates the server
    let socket = h.socket();
    let null = std::fs::File::open("/dev/null").unwrap();
    let pid_file = h.path("executor.pid");
    let call = |extended: bool| {
        let conn = UnixStream::connect(&socket).unwrap();
        let xdata = protocol::io::read_greeting(&conn).unwrap();
        assert_eq!(protocol::decode_caps(&xdata), protocol::OUR_CAPS);
        let env = h.base_env();
        let entries: Vec<Vec<u8>> = env
            .iter()
            .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
            .collect();
        let pid_arg = format!("@pid:{}", pid_file.display());
        let args: [&[u8]; 2] = [pid_arg.as_bytes(), b"@exit:3"];
        let payload = protocol::encode_request_payload(entries.iter().map(Vec::as_slice), args);
        let kind = RequestKind {
            extended,
            context: false,
            pty: [false; 3],
            pty_background: false,
            limits: false,
            closed: [false; 3],
        };
        protocol::io::send_request(&conn, kind, [null.as_fd(); 3], &payload, None, None).unwrap();
        conn
    };

    let mut conn = call(true);
    let (kind, pid) = protocol::io::read_frame(&conn).unwrap();
    assert_eq!(kind, protocol::FRAME_EXECUTOR_PID);
    let (kind, status) = protocol::io::read_frame(&conn).unwrap();
    assert_eq!(kind, protocol::FRAME_STATUS);
    assert_eq!(status as i32, 3 << 8, "exit status 3");
    let written: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_eq!(pid, written, "the 'P' frame names the executor");
    assert_eq!(
        conn.read(&mut [0u8; 1]).unwrap(),
        0,
        "'X' is the last frame"
    );

    std::fs::remove_file(&pid_file).unwrap();
    let mut conn = call(false);
    let mut status = [0u8; 4];
    conn.read_exact(&mut status).unwrap();
    assert_eq!(protocol::decode_status(status), 3 << 8);
    assert_eq!(
        conn.read(&mut status).unwrap(),
        0,
        "v1: the status and nothing else"
    );
    h.finish();
});

/// Each call runs in its caller's directory with its caller's umask; with
/// `--caller-dir` the identity leaves the directory out, so one server
/// serves callers in different directories.
scenario!(runs_in_callers_directory_and_umask, |side| {
    use std::os::unix::process::CommandExt;
    let h = Harness::new(side);
    let run = |options: &[&str], dir: &std::path::Path, mask: libc::mode_t| {
        let mut call = h.call_with_options(options, &["@cwd", "@umask", "@server"]);
        call.cmd.current_dir(dir);
        // SAFETY: umask is async-signal-safe.
        unsafe {
            call.cmd.pre_exec(move || {
                libc::umask(mask);
                Ok(())
            });
        }
        let out = call.run();
        assert_success(&out);
        stdout_str(&out)
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (a, b) = (h.path("dir-a"), h.path("dir-b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let from_a = run(&["--caller-dir"], &a, 0o027);
    assert_eq!(from_a[..2], [a.display().to_string(), "0027".to_string()]);
    let from_b = run(&["--caller-dir"], &b, 0o077);
    assert_eq!(from_b[..2], [b.display().to_string(), "0077".to_string()]);
    assert_eq!(from_a[2], from_b[2], "one server for both directories");
    // Without --caller-dir: one server per directory, and the umask is
    // still the caller's.
    let plain = run(&[], h.dir(), 0o002);
    assert_eq!(
        plain[..2],
        [h.dir().display().to_string(), "0002".to_string()]
    );
    assert_ne!(plain[2], from_a[2]);
    let plain_b = run(&[], &b, 0o002);
    assert_eq!(plain_b[0], b.display().to_string());
    assert_ne!(plain_b[2], plain[2], "another directory, another server");
    assert_success(
        &h.call_with_options(&["--caller-dir", "--kill"], &[] as &[&str])
            .run(),
    );
    let mut kill_b = h.call_with_options(&["--kill"], &[] as &[&str]);
    kill_b.cmd.current_dir(&b);
    assert_success(&kill_b.run());
    h.finish();
});

/// `--list` shows the server: identity, pid, start, calls served and
/// running, idle time, memory, protocol, environment read (none), its
/// title (the script, not the first call's arguments); `--kill -g IDENT`
/// takes the listed identity.
scenario!(list_and_kill_by_identity, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    assert_success(&h.call(&["@out:x"]).run());
    let cols = h.listed(server);
    let socket_names = h.run_dir_entries();
    assert!(
        socket_names.contains(&format!("s{}", cols[0])),
        "{cols:?} {socket_names:?}"
    );
    assert_eq!(
        cols[3], "2",
        "two calls accepted before the listing: {cols:?}"
    );
    assert_eq!(cols[4], "0", "none running: {cols:?}");
    assert!(
        cols[5].ends_with('s') && cols[5][..cols[5].len() - 1].parse::<u32>().is_ok(),
        "idle, in seconds: {cols:?}"
    );
    let (size, unit) = cols[6].split_at(cols[6].len() - 1);
    assert!(
        ["K", "M"].contains(&unit) && size.parse::<f64>().is_ok_and(|m| m > 0.0),
        "the memory of the server and its spare handlers, in KiB or MiB: {cols:?}"
    );
    assert_eq!(cols[7], "signals,context,tty,limits,closed");
    assert_eq!(cols[8], "-", "no environment read: {cols:?}");
    let shown = if side == Side::Rust {
        &h.program
    } else {
        &h.script
    };
    assert_eq!(
        cols[9..].join(" "),
        format!("{} [server]", shown.display()),
        "{cols:?}"
    );
    let out = h.client_call(&["-U", "--kill", "-g", &cols[0]]).run();
    assert_success(&out);
    wait_until("the server to quit", LIMIT, || !alive(server)).unwrap();
    h.finish();
});

/// `--list --json` says what a server is: one object with its identity,
/// pid, script, counters, the memory of it and its spare handlers, and
/// what its identity depends on. Listing does not count as a call: the
/// server's idle time goes on across two listings. A server that quit
/// because a file it watches changed is named as the reason of its
/// successor's start.
scenario!(list_json_tells_what_a_server_is, |side| {
    use serde_json::Value;
    let h = Harness::new(side);
    let extra = h.path("config");
    std::fs::write(&extra, "x").unwrap();
    let first = |h: &Harness| {
        let out = h.call(&["@server"]).env("AGENT_RELOAD_EXTRA", &extra).run();
        assert_success(&out);
        stdout_str(&out).trim().parse::<u32>().unwrap()
    };
    let server = first(&h);
    let listed = |h: &Harness| -> Value {
        let out = h.client_call(&["--list", "--json"]).run();
        assert_success(&out);
        let all: Value = serde_json::from_str(&stdout_str(&out)).unwrap();
        let all = all.as_array().expect("a JSON array").clone();
        assert_eq!(all.len(), 1, "{all:?}");
        all[0].clone()
    };
    let one = listed(&h);
    std::thread::sleep(Duration::from_millis(600));
    let two = listed(&h);
    let socket = h.socket();
    assert_eq!(
        two["ident"],
        socket.file_name().unwrap().to_str().unwrap()[1..]
    );
    assert_eq!(two["socket"], socket.to_str().unwrap());
    assert_eq!(two["state"], "live");
    assert_eq!(two["pid"], server);
    assert_eq!(two["script"], h.script.to_str().unwrap(), "{two:#}");
    assert_eq!(two["protocol"], "pfi-caps 1");
    assert_eq!(
        two["capabilities"],
        serde_json::json!(["signals", "context", "tty", "limits", "closed"])
    );
    assert_eq!(two["running"], 0);
    assert_eq!(two["last_restart"], Value::Null, "a first server: {two:#}");
    // The listings' own connections are not calls: idle time goes on.
    let idle = |v: &Value| v["idle_seconds"].as_f64().unwrap();
    assert!(
        idle(&two) >= idle(&one) + 0.5,
        "idle {} then {} seconds, 0.6 s apart",
        idle(&one),
        idle(&two)
    );
    // Memory: the server, its monitor, its spare handler(s), summed.
    let memory = &two["memory"];
    let processes = memory["processes"].as_array().unwrap();
    let roles: Vec<&str> = processes
        .iter()
        .map(|p| p["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles[..2], ["server", "monitor"], "{memory:#}");
    assert!(
        roles[2..].iter().all(|&r| r == "handler") && roles.len() > 2,
        "{memory:#}"
    );
    assert_eq!(processes[0]["pid"], server);
    for size in ["pss_kib", "rss_kib"] {
        let sum: u64 = processes.iter().map(|p| p[size].as_u64().unwrap()).sum();
        assert_eq!(memory[size], sum, "{memory:#}");
    }
    for p in processes {
        let (pss, rss) = (
            p["pss_kib"].as_u64().unwrap(),
            p["rss_kib"].as_u64().unwrap(),
        );
        assert!(pss > 0 && rss >= pss, "{memory:#}");
    }
    let depends_on = &two["depends_on"];
    assert_eq!(depends_on["script"], two["script"]);
    assert_eq!(depends_on["interpreter"], two["interpreter"]);
    assert!(
        !two["interpreter"].as_array().unwrap().is_empty(),
        "{two:#}"
    );
    assert_eq!(depends_on["environment_read"], serde_json::json!([]));
    assert_eq!(depends_on["world"], Value::Null, "nothing folded: {two:#}");
    assert_eq!(
        depends_on["directory"]["path"],
        std::fs::canonicalize(h.dir()).unwrap().to_str().unwrap()
    );
    assert!(depends_on["hard_limits"]["NOFILE"].is_u64(), "{two:#}");
    // A watched file changes: the next call starts a new server, which
    // is listed with the reason the old one gave.
    touch(&extra);
    let new = first(&h);
    assert_ne!(new, server);
    wait_until("the old server to quit", LIMIT, || !alive(server)).unwrap();
    let three = listed(&h);
    assert_eq!(three["pid"], new);
    assert_eq!(
        three["last_restart"]["reason"],
        format!("{} changed", extra.display()),
        "{three:#}"
    );
    assert!(three["last_restart"]["at"].as_u64().unwrap() >= two["started_unix"].as_u64().unwrap());
    h.finish();
});

/// A connection from another uid that reaches the socket (its directories
/// opened up by hand) is refused before the greeting, and the server goes
/// on serving its own user. (Root only: it acts as a second user.)
scenario!(calls_from_another_uid_are_refused, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    let socket = h.socket();
    let (uid, gid) = other_user();
    let opened = [h.dir().to_path_buf(), h.path("run"), h.base()];
    for dir in &opened {
        set_mode(dir, 0o711);
    }
    let socket_mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    set_mode(&socket, 0o777);
    let out = as_user(uid, gid, python())
        .args([
            "-c",
            "import socket, sys\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.settimeout(10)\n\
             s.connect(sys.argv[1])\n\
             print('connected, got %d bytes' % len(s.recv(100)))\n",
        ])
        .arg(&socket)
        .output()
        .unwrap();
    for dir in &opened {
        set_mode(dir, 0o700);
    }
    set_mode(&socket, socket_mode & 0o7777);
    assert_success(&out);
    assert_eq!(
        stdout_str(&out).trim(),
        "connected, got 0 bytes",
        "no greeting for another uid"
    );
    assert_eq!(h.server_pid(), server, "the same server serves its user");
    h.finish();
});

/// Load: 2,000 calls from 32 parallel callers. No call fails, every
/// output byte and exit status is exact, calls beyond the limit
/// (max_servers, 4) queue instead of being refused, and one server serves
/// them all without growing: RSS within 10% of its size after the first
/// 100 calls, the same fds.
scenario!(load_2000_calls_32_parallel, |side| {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let h = Harness::new(side);
    let server = h.server_pid();
    let one_call = |i: usize| {
        let text = format!("call-{i}-{}", "x".repeat(i % 200));
        let out = h
            .call(&[
                format!("@out:{text}"),
                format!("@err:{i}"),
                format!("@exit:{}", i % 256),
            ])
            .run();
        assert_eq!(
            out.status.code(),
            Some((i % 256) as i32),
            "call {i}: {:?} {}",
            out.status,
            stderr_str(&out)
        );
        assert_eq!(stdout_str(&out), format!("{text}\n"), "call {i}");
        assert_eq!(stderr_str(&out), format!("{i}\n"), "call {i}");
    };
    let calls = |from: usize, to: usize| {
        let next = AtomicUsize::new(from);
        std::thread::scope(|scope| {
            for _ in 0..32 {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= to {
                            break;
                        }
                        one_call(i);
                    }
                });
            }
        });
    };
    // Between bursts the server reaps the last monitors and forks its
    // spares: measure once that has settled.
    let settled = || {
        let mut last = (0, 0);
        wait_until("the server to settle", LIMIT, || {
            std::thread::sleep(Duration::from_millis(100));
            let now = (fd_count(server), rss_kb(server));
            let same = now.0 == last.0;
            last = now;
            same
        })
        .unwrap();
        last
    };
    let start = std::time::Instant::now();
    calls(0, 100);
    let (fds_100, rss_100) = settled();
    calls(100, 2000);
    let (fds_2000, rss_2000) = settled();
    // For the record (shown with --no-capture).
    eprintln!(
        "{side:?}: 2000 calls, 32 callers, {:.1} s; server fds {fds_100} -> {fds_2000}, \
         RSS {rss_100} -> {rss_2000} kB",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(fds_2000, fds_100, "server fds after 100 and 2000 calls");
    assert!(
        rss_2000 * 10 <= rss_100 * 11,
        "server RSS {rss_100} kB after 100 calls, {rss_2000} kB after 2000"
    );
    assert_eq!(h.server_pid(), server, "one server for every call");
    h.finish();
});

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn sigkill(pid: u32) {
    // SAFETY: kill(2) on a test process.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// The first call that works after a fault, and how long it took to get
/// there (printed for the record: shown with --no-capture).
fn recovered(h: &Harness, fault: &str, since: std::time::Instant) -> u32 {
    let server = h.server_pid();
    eprintln!(
        "{:?}: {fault}: served again after {:.1} ms",
        h.side,
        since.elapsed().as_secs_f64() * 1000.0
    );
    server
}

/// Fault: the server is SIGKILLed while a call runs. The call in flight
/// ends as it would have (its monitor is a process of its own, and serves
/// the calls in flight to their end); the next call finds nobody
/// listening and starts a new server; the old server's watcher, monitor
/// and spare executor leave.
scenario!(server_killed_mid_call, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    let (long, _) = start_long_call(&h, "long");
    sigkill(server);
    let killed = std::time::Instant::now();
    let new = recovered(&h, "server killed", killed);
    assert_ne!(new, server);
    let out = long.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stdout_str(&out), "finished\n");
    h.finish();
});

/// One fork per call: every call's executor is a child of the server's
/// one monitor, calls in flight at once included; the server forks
/// nothing per call.
scenario!(calls_share_one_monitor, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    let (first, one) = h.start_sleeper("one", &[]);
    let (second, two) = h.start_sleeper("two", &[]);
    let (_, monitor) = proc_state(one).unwrap();
    assert_eq!(proc_state(two).unwrap().1, monitor, "both calls' monitor");
    assert_eq!(
        proc_state(monitor).unwrap().1,
        server,
        "the monitor's parent"
    );
    for client in [first, second] {
        sigkill(client.id());
        let _ = client.wait_with_output();
    }
    wait_until("both scripts to be reaped", LIMIT, || {
        reaped(one) && reaped(two)
    })
    .unwrap();
    let (third, three) = h.start_sleeper("three", &[]);
    assert_eq!(
        proc_state(three).unwrap().1,
        monitor,
        "a later call's monitor"
    );
    sigkill(third.id());
    let _ = third.wait_with_output();
    h.finish();
});

/// A spare taken by a call is forked again while the call runs (after a
/// few ms: a short call's status does not wait for the fork), so that a
/// second caller finds one ready.
scenario!(spare_refilled_while_a_long_call_runs, |side| {
    let h = Harness::new(side);
    let (client, executor) = h.start_sleeper("long", &[]);
    let (_, monitor) = proc_state(executor).unwrap();
    let children = || {
        h.processes()
            .into_iter()
            .filter(|&(pid, _)| proc_state(pid).is_some_and(|(_, ppid)| ppid == monitor))
            .count()
    };
    // The call's executor and a new spare, the call still running.
    wait_until("a spare beside the running call", LIMIT, || children() == 2).unwrap();
    assert!(alive(executor), "the call is still running");
    sigkill(client.id());
    let _ = client.wait_with_output();
    h.finish();
});

/// A script that carries on after the SIGINT its client's death brings
/// is SIGKILLed once `interrupt_grace` is over: it must not outlive its
/// caller, holding the caller's pipes. (The time it took is printed for
/// the record; it cannot be shorter than the grace.)
scenario!(script_ignoring_sigint_is_killed_after_the_grace, |side| {
    let h = Harness::new(side);
    let marker = h.path("got-sigint");
    let grace = 0.3;
    let grace_env = grace.to_string();
    let pid_file = h.path("stay.pid");
    let client = h
        .call(&[
            format!("@intstay:{}", marker.display()),
            format!("@pid:{}", pid_file.display()),
            "@sleep:30".into(),
        ])
        .env("AGENT_INTERRUPT_GRACE", &grace_env)
        .spawn();
    wait_until("the script to start", LIMIT, || pid_file.exists()).unwrap();
    let executor: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    // Timed from before the kill: the monitor's grace starts after it,
    // however late this thread runs again.
    let killed = std::time::Instant::now();
    sigkill(client.id());
    let _ = client.wait_with_output();
    wait_until("the script to get SIGINT", LIMIT, || marker.exists()).unwrap();
    wait_until("the script to be killed", LIMIT, || !alive(executor)).unwrap();
    let took = killed.elapsed().as_secs_f64();
    eprintln!("{side:?}: a script ignoring SIGINT ended {took:.2} s after its client's death");
    assert!(
        took >= grace,
        "killed after {took:.2} s, before the grace ({grace} s)"
    );
    h.finish();
});

/// Fault: the monitor is SIGKILLed with two calls in flight. Each client
/// says so at once (one line, 127); each executor, with nobody left to
/// report its end, gets SIGINT; the server forks a new monitor and serves
/// on.
scenario!(monitor_killed_mid_call, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    let calls: Vec<_> = ["one", "two"]
        .iter()
        .map(|name| {
            let marker = h.path(&format!("{name}-got-sigint"));
            let (client, executor) =
                h.start_sleeper(name, &[&format!("@onint:{}", marker.display())]);
            (client, executor, marker)
        })
        .collect();
    let (_, monitor) = proc_state(calls[0].1).unwrap();
    assert_ne!(monitor, server);
    sigkill(monitor);
    let killed = std::time::Instant::now();
    for (client, executor, marker) in calls {
        let out = client.wait_with_output().unwrap();
        eprintln!(
            "{side:?}: monitor killed: the client reported it after {:.1} ms",
            killed.elapsed().as_secs_f64() * 1000.0
        );
        assert_eq!(out.status.code(), Some(127), "{}", stderr_str(&out));
        assert_eq!(stderr_str(&out).lines().count(), 1, "{}", stderr_str(&out));
        wait_until("the executor to get SIGINT", LIMIT, || marker.exists()).unwrap();
        wait_until("the executor to end", LIMIT, || !alive(executor)).unwrap();
    }
    assert_eq!(recovered(&h, "monitor killed", killed), server);
    h.finish();
});

/// Fault: the watcher is SIGKILLed. The server takes its pipe's EOF as
/// the end of its socket and quits; the next call starts a new server.
scenario!(watcher_killed, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    let watchers: Vec<u32> = h
        .processes()
        .into_iter()
        .filter(|(_, cmd)| cmd.starts_with("prefork-interp [watcher] "))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(watchers.len(), 1, "{:#?}", h.processes());
    sigkill(watchers[0]);
    let killed = std::time::Instant::now();
    wait_until("the server to quit", LIMIT, || !alive(server)).unwrap();
    assert_ne!(recovered(&h, "watcher killed", killed), server);
    h.finish();
});

/// Fault: the socket file is removed, or replaced by another file, by
/// hand. The server quits (its watcher saw it); the next call replaces
/// whatever is there with a new server.
scenario!(socket_removed_or_replaced_by_hand, |side| {
    let h = Harness::new(side);
    for replace in [false, true] {
        let server = h.server_pid();
        let socket = h.socket();
        if replace {
            let other = h.base().join("not-a-socket");
            std::fs::write(&other, "x").unwrap();
            std::fs::rename(&other, &socket).unwrap();
        } else {
            std::fs::remove_file(&socket).unwrap();
        }
        let changed = std::time::Instant::now();
        wait_until("the server to quit", LIMIT, || !alive(server)).unwrap();
        let fault = if replace {
            "socket replaced"
        } else {
            "socket removed"
        };
        assert_ne!(recovered(&h, fault, changed), server);
    }
    h.finish();
});

/// Hostile or broken requests: a bad request byte, a byte with no fd, an
/// oversized length, a truncated payload, a payload with no final NUL, a
/// caller that hangs up at once. Each call is dropped (no status, no
/// crash) and the same server goes on serving.
scenario!(bad_requests_are_dropped, |side| {
    use prefork_interp::protocol;
    use prefork_interp::protocol::io::send_fd;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    let h = Harness::new(side);
    let server = h.server_pid();
    let null = std::fs::File::open("/dev/null").unwrap();
    let with_fds = |conn: &UnixStream| {
        for _ in 0..3 {
            send_fd(conn, 0, &null).unwrap();
        }
    };
    type Send<'a> = Box<dyn Fn(&mut UnixStream) + 'a>;
    let cases: Vec<(&str, Send<'_>)> = vec![
        (
            "bad request byte",
            Box::new(|c| c.write_all(&[0x21]).unwrap()),
        ),
        (
            "a byte without its fd",
            Box::new(|c| c.write_all(&[0, 0, 0, 0]).unwrap()),
        ),
        (
            "oversized length",
            Box::new(|c| {
                c.write_all(&[0]).unwrap();
                with_fds(c);
                c.write_all(&(protocol::MAX_PAYLOAD_LEN + 1).to_be_bytes())
                    .unwrap();
            }),
        ),
        (
            "truncated payload",
            Box::new(|c| {
                c.write_all(&[0]).unwrap();
                with_fds(c);
                c.write_all(&10u32.to_be_bytes()).unwrap();
                c.write_all(b"A=1\0").unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
            }),
        ),
        (
            "payload without its final NUL",
            Box::new(|c| {
                c.write_all(&[0]).unwrap();
                with_fds(c);
                c.write_all(&3u32.to_be_bytes()).unwrap();
                c.write_all(b"abc").unwrap();
            }),
        ),
        (
            "hang-up before the request",
            Box::new(|c| c.shutdown(std::net::Shutdown::Write).unwrap()),
        ),
    ];
    for (name, send) in cases {
        let mut conn = UnixStream::connect(h.socket()).unwrap();
        conn.set_read_timeout(Some(LIMIT)).unwrap();
        protocol::io::read_greeting(&conn).unwrap();
        send(&mut conn);
        let mut rest = Vec::new();
        // Closed with our bytes still unread on its side: a reset.
        let got = conn.read_to_end(&mut rest);
        assert!(
            rest.is_empty()
                && match &got {
                    Ok(n) => *n == 0,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                },
            "{name}: expected the call dropped, got {got:?} {rest:?}"
        );
        assert_eq!(h.server_pid(), server, "{name}: the same server serves on");
    }
    h.finish();
});

/// An executor that leaves a child behind, holding the caller's stdout:
/// the call ends when the executor exits (its status at once), and what
/// it left in its process group gets SIGINT (as with the original), so a
/// caller reading the pipe is not kept waiting for it.
scenario!(children_left_behind_get_sigint, |side| {
    let h = Harness::new(side);
    let pid_file = h.path("child.pid");
    // run() reads stdout to its end: it returns only once the child, which
    // holds the pipe, is gone.
    let out = h
        .call(&[
            format!("@spawn:{}", pid_file.display()),
            "@out:done".into(),
            "@exit:5".into(),
        ])
        .run();
    assert_eq!(out.status.code(), Some(5), "{}", stderr_str(&out));
    assert_eq!(stdout_str(&out), "done\n");
    let child = pid_in(&h, "child.pid");
    wait_until("the child left behind to end", LIMIT, || !alive(child)).unwrap();
    // The same from a shell on a terminal (the call on a pseudo-terminal
    // of its own, the script's process under a keeper), for a child that
    // the hang-up of that terminal does not end.
    std::fs::remove_file(&pid_file).unwrap();
    let mut t = Terminal::shell(&h);
    assert_eq!(
        t.output("$S @spawn:child.pid @out:done @exit:5"),
        "done\r\n"
    );
    assert_eq!(t.status(), 5);
    t.exit();
    let child = pid_in(&h, "child.pid");
    wait_until("the child left behind on a terminal to end", LIMIT, || {
        !alive(child)
    })
    .unwrap();
    h.finish();
});

/// An executor that starts a daemon (a session of its own, stdio
/// elsewhere): the call ends at once with the executor's status, and the
/// daemon lives on, as after a direct run.
scenario!(daemon_started_by_the_script_outlives_the_call, |side| {
    let h = Harness::new(side);
    let pid_file = h.path("daemon.pid");
    let out = h
        .call(&[format!("@daemon:{}", pid_file.display()), "@exit:0".into()])
        .run();
    assert_success(&out);
    wait_until("the daemon to start", LIMIT, || pid_file.exists()).unwrap();
    let daemon: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The monitor signalled the executor's group before sending the
    // status: had the daemon been in it, it would be dying now.
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(daemon), "the daemon outlives the call");
    sigkill(daemon);
    h.finish();
});

/// `spare_handlers`: that many executors-to-be wait beside an idle
/// server, children of its one monitor, and calls use them; 0 is refused
/// at initialisation with a message naming the option.
scenario!(spare_handlers_wait_for_calls, |side| {
    let h = Harness::new(side);
    let out = h.call(&["@server"]).env("AGENT_SPARE_HANDLERS", "3").run();
    assert_success(&out);
    let server: u32 = stdout_str(&out).trim().parse().unwrap();
    let children = |parent: u32| -> Vec<u32> {
        h.processes()
            .into_iter()
            .map(|(pid, _)| pid)
            .filter(|&pid| proc_state(pid).is_some_and(|(_, ppid)| ppid == parent))
            .collect()
    };
    // The server has one child, the monitor; the spares are the monitor's.
    wait_until("one monitor", LIMIT, || children(server).len() == 1).unwrap();
    let monitor = children(server)[0];
    wait_until("three spare executors", LIMIT, || {
        children(monitor).len() == 3
    })
    .unwrap();
    for i in 0..5 {
        let out = h.call(&[format!("@out:{i}")]).run();
        assert_eq!(stdout_str(&out), format!("{i}\n"));
    }
    wait_until("three spare executors again", LIMIT, || {
        children(monitor).len() == 3
    })
    .unwrap();
    assert_eq!(children(server), [monitor], "the same monitor throughout");
    assert_eq!(h.server_pid(), server);
    assert_success(&h.kill_server());

    let out = h
        .call(&["@out:never"])
        .env("AGENT_SPARE_HANDLERS", "0")
        .run();
    assert_eq!(out.status.code(), Some(127), "{}", stderr_str(&out));
    assert!(
        stderr_str(&out).contains("spare_handlers"),
        "{}",
        stderr_str(&out)
    );
    assert_eq!(stdout_str(&out), "");
    h.finish();
});

/// Limits a call runs under, set between fork and exec as a shell's
/// `ulimit` and `nice` would.
#[derive(Clone, Copy)]
enum Limits {
    /// Soft limits only: open files 100, CPU time 1000 s.
    Soft,
    /// Open files N, soft and hard (what `ulimit -n N` does).
    Hard(u64),
    /// nice 5.
    Nice,
    /// oom_score_adj 500.
    Oom,
}

fn under_limits(mut call: Call, limits: Limits) -> Call {
    use std::os::unix::process::CommandExt;
    // SAFETY: getrlimit, setrlimit, setpriority, open, write and close
    // are async-signal-safe system calls.
    unsafe {
        call.cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            let set_soft = |resource, soft| {
                let mut limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(resource, &mut limit) != 0 {
                    return fail();
                }
                limit.rlim_cur = soft;
                if libc::setrlimit(resource, &limit) != 0 {
                    return fail();
                }
                Ok(())
            };
            match limits {
                Limits::Soft => {
                    set_soft(libc::RLIMIT_NOFILE, 100)?;
                    set_soft(libc::RLIMIT_CPU, 1000)
                }
                Limits::Hard(n) => {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return fail();
                    }
                    Ok(())
                }
                Limits::Nice => {
                    if libc::setpriority(libc::PRIO_PROCESS, 0, 5) != 0 {
                        return fail();
                    }
                    Ok(())
                }
                Limits::Oom => {
                    let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
                    if fd < 0 || libc::write(fd, b"500".as_ptr().cast(), 3) != 3 {
                        return fail();
                    }
                    libc::close(fd);
                    Ok(())
                }
            }
        });
    }
    call
}

/// The caller's resource limits, nice value and OOM score adjustment
/// reach the script, as they would a direct run: `ulimit -S`, `ulimit`
/// and `nice` apply behind prefork-interp too. Soft limits the server's
/// executor takes on; a caller whose nice value or OOM score adjustment
/// differ (which an executor could not take back) gets a server of its
/// own, started under them.
scenario!(limits_like_a_direct_run, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    for limits in [Limits::Soft, Limits::Nice, Limits::Oom] {
        let direct = under_limits(h.direct(&["@limits"]), limits).run();
        let served = under_limits(h.call(&["@limits"]), limits).run();
        assert_success(&direct);
        assert_success(&served);
        assert_eq!(
            stdout_str(&served),
            stdout_str(&direct),
            "through us (left), directly (right)"
        );
    }
    let soft = stdout_str(&under_limits(h.call(&["@server", "@limits"]), Limits::Soft).run());
    assert_eq!(
        soft.lines().next(),
        Some(server.to_string().as_str()),
        "{soft}"
    );
    assert!(soft.contains("Max open files            100 "), "{soft}");
    assert!(soft.contains("Max cpu time              1000 "), "{soft}");
    // Each on its own: one the identity left out would be served by the
    // server that the other (or none) started.
    let mut servers = vec![server.to_string()];
    for (limits, shown) in [(Limits::Nice, "nice 5\n"), (Limits::Oom, "oom 500\n")] {
        let said = stdout_str(&under_limits(h.call(&["@server", "@limits"]), limits).run());
        let its_server = said.lines().next().unwrap_or_default().to_string();
        assert!(!servers.contains(&its_server), "{servers:?}: {said}");
        assert!(said.contains(shown), "{said}");
        servers.push(its_server);
    }
    // The next call, without them, has the server's again.
    let plain = h.call(&["@limits"]).run();
    assert_success(&plain);
    assert_eq!(
        stdout_str(&plain),
        stdout_str(&h.direct(&["@limits"]).run())
    );
    for limits in [Limits::Nice, Limits::Oom] {
        let kill = h.call_with_options(&["--kill"], &[] as &[&str]);
        assert_success(&under_limits(kill, limits).run());
    }
    h.finish();
});

/// A caller whose hard limits differ from the server's gets a server of
/// its own, started under them: an executor could not raise them. With
/// an identity given (`-g`) they share one, and a call whose limit the
/// server cannot give says so in one line and ends with 127, rather than
/// run the script with the wrong limit.
scenario!(limits_that_cannot_be_raised_get_their_own_server, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    let low = under_limits(h.call(&["@server", "@limits"]), Limits::Hard(200)).run();
    assert_success(&low);
    let shown = stdout_str(&low);
    assert_ne!(shown.lines().next(), Some(server.to_string().as_str()));
    assert!(
        shown.contains("Max open files            200                  200"),
        "{shown}"
    );
    assert_eq!(h.server_pid(), server, "the first server serves on");
    let kill = h.call_with_options(&["--kill"], &[] as &[&str]);
    assert_success(&under_limits(kill, Limits::Hard(200)).run());
    // One identity for both: the call is refused.
    let shared = |limits: Option<Limits>| {
        let call = h.call_with_options(&["-g", "shared"], &["@out:ran"]);
        match limits {
            Some(limits) => under_limits(call, limits),
            None => call,
        }
    };
    assert_success(&shared(Some(Limits::Hard(200))).run());
    let refused = shared(None).run();
    assert_eq!(refused.status.code(), Some(127));
    assert_eq!(stdout_str(&refused), "", "the script must not run");
    let err = stderr_str(&refused);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("prefork-interp: cannot give the script the caller's RLIMIT_NOFILE"),
        "{err}"
    );
    assert_success(&h.client_call(&["--kill", "-g", "shared"]).run());
    h.finish();
});

/// A caller's closed fd 0, 1 or 2 (`<&-`, `>&-`, `2>&-`) is closed for the
/// script as in a direct run (Rust: the /dev/null std opens in its
/// place), fds and the language's own handles alike; cold and warm.
scenario!(closed_std_fds_like_a_direct_run, |side| {
    let h = Harness::new(side);
    for (closed, shown_on) in [(0, 1), (1, 2), (2, 1)] {
        let args = [
            format!("@fdsto:{shown_on}"),
            format!("@handlesto:{shown_on}"),
        ];
        // Fds 0, 1, 2 only: a direct run also inherits the test
        // runner's (its jobserver's, say), which an executor never has.
        let shown = |out: &std::process::Output| {
            assert!(out.status.success(), "fd {closed} closed: {out:?}");
            let text = if shown_on == 1 {
                stdout_str(out)
            } else {
                stderr_str(out)
            };
            let (fds, handles) = text.split_once('\n').unwrap_or_default();
            let fds: Vec<&str> = fds
                .split(' ')
                .filter(|fd| fd.len() == 1 && *fd < "3")
                .collect();
            format!("{}\n{handles}", fds.join(" "))
        };
        let direct = shown(&h.direct(&args).closing(closed).run());
        assert!(
            direct.ends_with(" open\n") || direct.ends_with(" closed\n"),
            "fd {closed}: {direct}"
        );
        for round in ["first", "second"] {
            let ours = shown(&h.call(&args).closing(closed).run());
            assert_eq!(ours, direct, "fd {closed} closed, {round} call");
        }
        // Used, the closed fd fails (or reads nothing, or writes nowhere)
        // as in a direct run: the status, and what reaches the caller on
        // the other two (Perl, say: its output buffered for a closed
        // stdout fails at exit, "Unable to flush stdout", status 1).
        let used: &[&str] = match closed {
            0 => &["@cat", "@out:after"],
            // (Alone: Perl's agent flushes stdout before writing to
            // stderr, which takes the failed output away before exit.)
            1 => &["@out:lost"],
            _ => &["@err:lost", "@out:after"],
        };
        assert_eq!(
            outcome(h.call(used).closing(closed).run()),
            outcome(h.direct(used).closing(closed).run()),
            "fd {closed} closed and used: {used:?}, through us (left), directly (right)"
        );
        // Cold next time: the setup run is a direct run too.
        assert_success(&h.kill_server());
    }
    h.finish();
});

/// `ps` shows what each long-lived process is, never the first call's
/// arguments (a secret there would stay visible to every local user for
/// the server's life): SCRIPT [server], [monitor], [handler], the
/// watcher's `prefork-interp [watcher] SCRIPT`, and an executor with its
/// call SCRIPT (Rust: the program).
scenario!(process_titles_hide_the_first_callers_arguments, |side| {
    let h = Harness::new(side);
    let secret = "secret-in-the-first-call-3141";
    let out = h.call(&["@server", secret]).run();
    assert_success(&out);
    let server: u32 = stdout_str(&out).trim().parse().unwrap();
    let name = if side == Side::Rust {
        h.program.display().to_string()
    } else {
        h.script.display().to_string()
    };
    let title = |pid: u32| {
        let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        String::from_utf8_lossy(&raw)
            .replace('\0', " ")
            .trim_end()
            .to_string()
    };
    let expected = |role: &str| format!("{name} [{role}]");
    let watcher = format!("prefork-interp [watcher] {}", h.script.display());
    wait_until("a spare handler", LIMIT, || {
        h.processes()
            .iter()
            .any(|(pid, _)| title(*pid) == expected("handler"))
    })
    .unwrap();
    assert_eq!(title(server), expected("server"));
    let titles: Vec<String> = h.processes().iter().map(|(pid, _)| title(*pid)).collect();
    for wanted in [expected("monitor"), watcher] {
        assert!(titles.contains(&wanted), "{wanted} not in {titles:#?}");
    }
    assert!(
        !titles.iter().any(|t| t.contains(secret)),
        "the first call's argument shows: {titles:#?}"
    );
    let (client, executor) = h.start_sleeper("executor", &[]);
    assert_eq!(title(executor), name, "an executor with its call");
    sigkill(client.id());
    h.finish();
});

/// A variable the initialisation reads (the tracked way) picks the
/// server: a caller whose value differs from the first caller's gets a
/// server initialised with its own value, as a direct run would be; the
/// first value's callers keep theirs; `--list` shows the dependency.
scenario!(
    environment_read_in_initialisation_picks_the_server,
    |side| {
        let h = Harness::new(side);
        let with = |call: Call, value: Option<&str>| {
            let call = call.env("AGENT_INIT_ENVREAD", "PFI_TEST_X");
            match value {
                Some(v) => call.env("PFI_TEST_X", v),
                None => call,
            }
        };
        let mut servers = Vec::new();
        for value in [Some("1"), Some("2"), None, Some("1")] {
            servers.push(server_seeing_as_directly(&h, "@initenv", |call| {
                with(call, value)
            }));
        }
        assert_eq!(servers[0], servers[3], "the first value's server serves on");
        for (i, j) in [(0, 1), (0, 2), (1, 2)] {
            assert_ne!(servers[i], servers[j], "{servers:?}");
        }
        for &server in &servers[..3] {
            let cols = h.listed(server);
            assert_eq!(cols[8], "PFI_TEST_X", "{cols:?}");
        }
        // --kill takes the server the caller would be served by.
        let kill = h.call_with_options(&["--kill"], &[] as &[&str]);
        assert_success(&with(kill, Some("2")).run());
        wait_until("that server to quit", LIMIT, || !alive(servers[1])).unwrap();
        assert!(alive(servers[0]) && alive(servers[2]));
        // The others by identity, as --list shows them.
        for server in [servers[0], servers[2]] {
            let ident = h.listed(server)[0].clone();
            assert_success(&h.client_call(&["--kill", "-g", &ident]).run());
        }
        h.finish();
    }
);

/// A call set up by `world` sees of `command` what a direct run set up so
/// sees; returns the pid of the server that served it.
fn server_seeing_as_directly(h: &Harness, command: &str, world: impl Fn(Call) -> Call) -> u32 {
    let direct = world(h.direct(&[command])).run();
    assert_success(&direct);
    let ours = world(h.call(&["@server", command])).run();
    assert_success(&ours);
    let text = stdout_str(&ours);
    let (server, shown) = text.split_once('\n').unwrap();
    assert_eq!(shown, stdout_str(&direct), "{command}");
    server.parse().unwrap()
}

/// For a caller in a world of its own (`world` sets a call up in it: other
/// namespaces, cgroup or groups): two calls there get one server, not
/// `outside`, and see of `command` what a direct run there sees; then
/// `--kill` from there takes that server down.
fn served_in_a_world_of_its_own(
    h: &Harness,
    outside: Option<u32>,
    command: &str,
    world: impl Fn(Call) -> Call,
) {
    let seen = [0, 1].map(|_| server_seeing_as_directly(h, command, &world));
    assert_eq!(seen[0], seen[1], "{command}: its server is kept");
    if let Some(outside) = outside {
        assert_ne!(seen[0], outside, "{command}: a server of its own");
    }
    let kill = h.call_with_options(&["--kill"], &[] as &[&str]);
    assert_success(&world(kill).run());
}

/// A caller in other namespaces (a sandbox that still reaches the run
/// directory) gets a server of its own, started there, which sees what a
/// direct run there sees; the server outside serves on. (Root only.)
scenario!(namespaces_get_their_own_server, |side| {
    if !running_as_root("to make namespaces") {
        return;
    }
    let h = Harness::new(side);
    let outside = h.server_pid();
    for flags in [
        &["--mount"][..],
        &["--net"],
        &["--ipc"],
        &["--uts"],
        &["--cgroup"],
        &["--pid", "--fork", "--mount-proc"],
        &["--user", "--map-root-user"],
    ] {
        let holder = NamespaceHolder::new(flags);
        // The caller's directory is the one outside: only the namespaces
        // differ (entering a mount namespace moves a process to its root,
        // and another directory alone would give another server).
        let cwd = h.call(&["@cwd"]).inside(holder.pid).run();
        assert_eq!(
            stdout_str(&cwd).trim_end(),
            h.dir().to_str().unwrap(),
            "{flags:?}"
        );
        // Pids are the namespace's own with --pid: none to compare.
        let other = (!flags.contains(&"--pid")).then_some(outside);
        served_in_a_world_of_its_own(&h, other, "@ns", |call| call.inside(holder.pid));
    }
    assert_eq!(h.server_pid(), outside, "the server outside serves on");
    h.finish();
});

/// A caller in another cgroup gets a server of its own, started in that
/// cgroup, so the cgroup's limits and accounting cover the script's whole
/// process as in a direct run; the first server serves on. (Root only.)
scenario!(cgroup_gets_its_own_server, |side| {
    if !running_as_root("to make a cgroup") {
        return;
    }
    let h = Harness::new(side);
    let outside = h.server_pid();
    let cgroup = TestCgroup::new(&format!("{side:?}"));
    assert_ne!(
        stdout_str(&h.direct(&["@cgroup"]).in_cgroup(&cgroup.path).run()),
        stdout_str(&h.direct(&["@cgroup"]).run())
    );
    served_in_a_world_of_its_own(&h, Some(outside), "@cgroup", |call| {
        call.in_cgroup(&cgroup.path)
    });
    assert_eq!(h.server_pid(), outside, "the first serves on");
    h.finish();
    drop(cgroup);
});

/// A caller with other groups than the server's (sg, newgrp, setpriv
/// --groups) gets a server of its own, which an unprivileged server could
/// not give its executor; the script sees the groups a direct run does.
/// (Root only.)
scenario!(other_groups_get_their_own_server, |side| {
    if !running_as_root("to call with other groups") {
        return;
    }
    let h = Harness::new(side);
    let server = h.server_pid();
    let with_other_groups = |mut call: Call| {
        use std::os::unix::process::CommandExt;
        // SAFETY: setgroups is an async-signal-safe system call.
        unsafe {
            call.cmd.pre_exec(|| {
                let groups: [libc::gid_t; 2] = [4242, 4243];
                if libc::setgroups(2, groups.as_ptr()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        call
    };
    let direct = with_other_groups(h.direct(&["@groups"])).run();
    assert!(stdout_str(&direct).contains("4242 4243"));
    served_in_a_world_of_its_own(&h, Some(server), "@groups", with_other_groups);
    assert_eq!(h.server_pid(), server, "the first serves on");
    h.finish();
});
