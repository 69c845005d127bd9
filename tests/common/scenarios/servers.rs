//! Servers' lifetimes: one server for concurrent first calls, `max_servers`,
//! `--kill`, `--fresh`, the idle timeout, the monitor and the spare
//! executors, process titles, and load.

use std::time::Duration;

use crate::common::*;

use super::{LIMIT, Scenario, sigkill, start_long_call};

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

/// `ps` shows what each long-lived process is, never the first call's
/// arguments (a secret there would stay visible to every local user for
/// the server's life): SCRIPT [server], [monitor], [handler], and an
/// executor with its call SCRIPT (Rust: the program). (The watcher's
/// `prefork-interp [watcher] SCRIPT`, started for chiark-utils' module
/// only, is tested in compat_chiark.)
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
    wait_until("a spare handler", LIMIT, || {
        h.processes()
            .iter()
            .any(|(pid, _)| title(*pid) == expected("handler"))
    })
    .unwrap();
    assert_eq!(title(server), expected("server"));
    let titles: Vec<String> = h.processes().iter().map(|(pid, _)| title(*pid)).collect();
    let wanted = expected("monitor");
    assert!(titles.contains(&wanted), "{wanted} not in {titles:#?}");
    assert!(
        !titles.iter().any(|t| t.contains(secret)),
        "the first call's argument shows: {titles:#?}"
    );
    let (client, executor) = h.start_sleeper("executor", &[]);
    assert_eq!(title(executor), name, "an executor with its call");
    sigkill(client.id());
    h.finish();
});

/// What lives on after a call keeps nothing of its caller's environment:
/// a token in the environment of the call that started the server is in
/// no long-lived process's /proc/PID/environ or command line (server,
/// monitor, handlers; a watcher, for chiark-utils' module, is tested in
/// compat_chiark), while a call still gets its own.
scenario!(long_lived_processes_keep_no_callers_environment, |side| {
    let h = Harness::new(side);
    let token = "pfi-token-7c1d9e";
    let out = h.call(&["@env:PFI_TOKEN"]).env("PFI_TOKEN", token).run();
    assert_eq!(stdout_str(&out), format!("{}\n", hex(token.as_bytes())));
    // (The spare handler may still be on its way.)
    wait_until("server, monitor and a spare handler", LIMIT, || {
        h.processes().len() >= 3
    })
    .unwrap();
    let processes = h.processes();
    for (pid, shown) in &processes {
        for part in ["environ", "cmdline"] {
            let text = std::fs::read(format!("/proc/{pid}/{part}")).unwrap_or_default();
            assert!(
                !text.windows(token.len()).any(|w| w == token.as_bytes()),
                "{shown} (pid {pid}) keeps the first caller's token in its {part}"
            );
        }
    }
    let out = h.call(&["@env:PFI_TOKEN"]).env("PFI_TOKEN", "again").run();
    assert_eq!(stdout_str(&out), format!("{}\n", hex(b"again")));
    h.finish();
});
