//! Failures and faults: an initialisation that fails or is refused, and a
//! server, monitor or socket lost mid-life.

use crate::common::*;

use super::{LIMIT, Scenario, sigkill, start_long_call};

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

/// Our servers watch their own socket path (capability `watch`): no
/// watcher process is started for them, a server with its monitor and
/// spare holds one inotify instance, of the 128 a user has by default,
/// and the server holds no pipe (WATCHI and WATCHE closed).
scenario!(one_inotify_instance_and_no_watcher, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    let processes = h.processes();
    assert!(
        !processes
            .iter()
            .any(|(_, cmd)| cmd.starts_with("prefork-interp [watcher]")),
        "{processes:#?}"
    );
    let instances: usize = processes
        .iter()
        .map(|(pid, _)| inotify_instances(*pid))
        .sum();
    assert_eq!(instances, 1, "{processes:#?}");
    assert_eq!(inotify_instances(server), 1, "the server's");
    // WATCHI and WATCHE, which no watcher holds the other ends of, are
    // closed: the server holds no pipe.
    let pipes: Vec<std::path::PathBuf> = std::fs::read_dir(format!("/proc/{server}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("pipe:"))
        .collect();
    assert_eq!(
        pipes,
        Vec::<std::path::PathBuf>::new(),
        "the server's pipes"
    );
    h.finish();
});

/// Fault: the socket file is removed, or replaced by another file, by
/// hand. The server quits (its watch saw it); the next call replaces
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
