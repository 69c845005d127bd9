//! Calls: arguments, environment, stdio and statuses, as a direct run has
//! them; a standalone run.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::common::*;

use super::{LIMIT, Scenario, outcome};

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
