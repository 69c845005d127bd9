//! Signals: deaths by signal, signals forwarded to the script, and the
//! SIGINT (then SIGKILL) that a caller's death, or an executor's end,
//! brings to what is left; a daemon the script starts lives on.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use crate::common::*;

use super::{LIMIT, Scenario, outcome, pid_in, sigkill};

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
    // Those whose default dumps core, and others that end a process: the
    // same death as a direct run's (the shell says "Quit", 131), and no
    // core of the client's own.
    for name in ["QUIT", "SEGV", "ABRT", "FPE", "PROF"] {
        let args = ["@out:before".to_string(), format!("@kill:{name}")];
        let direct = h.direct(&args).without_core().run();
        let served = h.call(&args).without_core().run();
        assert!(direct.status.signal().is_some(), "{name}: {direct:?}");
        assert!(
            !served.status.core_dumped(),
            "{name}: the client dumped core"
        );
        assert_eq!(
            outcome(served),
            outcome(direct),
            "{name}: through us, then directly"
        );
    }
    // (Limits are part of an identity: those calls had a server of their own.)
    assert_success(
        &h.call_with_options(&["--kill"], &[] as &[&str])
            .without_core()
            .run(),
    );
    h.finish();
});

/// A caller ignoring SIGINT (a background job of a non-interactive
/// shell) gives a script that ignores it, as a direct run would, and
/// leaves nothing of that to the next caller, though its call started
/// the server.
scenario!(sigint_as_the_caller_has_it, |side| {
    let h = Harness::new(side);
    let direct = h.direct(&["@sigdisp:INT"]).ignoring_sigint().run();
    assert_eq!(stdout_str(&direct), "ignore\n");
    for _cold_then_warm in 0..2 {
        let out = h.call(&["@sigdisp:INT"]).ignoring_sigint().run();
        assert_eq!(stdout_str(&out), "ignore\n");
    }
    let out = h.call(&["@sigdisp:INT"]).run();
    assert_eq!(stdout_str(&out), "default\n");
    h.finish();
});

/// Who ignores and blocks what: `nohup`; `trap '' INT QUIT`; a command
/// substitution; a blocked signal; real-time signals. A direct run
/// inherits these; so does a call, cold and warm; a caller with none
/// gets none of an earlier caller's, though that caller started the
/// server.
scenario!(caller_signals_like_a_direct_run, |side| {
    let h = Harness::new(side);
    let callers: [(&str, &[i32], &[i32]); 6] = [
        ("nohup", &[libc::SIGHUP], &[]),
        ("trap '' INT QUIT", &[libc::SIGINT, libc::SIGQUIT], &[]),
        (
            "a command substitution",
            &[libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU],
            &[],
        ),
        ("nothing", &[], &[]),
        (
            "USR2 and TERM blocked",
            &[libc::SIGUSR1],
            &[libc::SIGUSR2, libc::SIGTERM],
        ),
        ("real-time", &[40], &[64]),
    ];
    let under = |mut call: Call, ignored: &[i32], blocked: &[i32]| {
        for &sig in ignored {
            call = call.ignoring(sig);
        }
        for &sig in blocked {
            call = call.blocking(sig);
        }
        call
    };
    for (caller, ignored, blocked) in callers {
        let direct = under(h.direct(&["@sigs"]), ignored, blocked).run();
        assert_success(&direct);
        for round in ["first", "second"] {
            let served = under(h.call(&["@sigs"]), ignored, blocked).run();
            assert_eq!(
                stdout_str(&served),
                stdout_str(&direct),
                "{caller}, {round} call: through us, then directly"
            );
        }
    }
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
