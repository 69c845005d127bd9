//! What picks a server, and tells it: `--list` and `--kill` by identity,
//! `--list --json`, the tracked environment, and callers in worlds of
//! their own (namespaces, cgroups, groups).

use std::time::Duration;

use crate::common::*;

use super::{LIMIT, Scenario};

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
    assert_eq!(
        cols[7],
        "signals,context,tty,limits,closed,dispositions,watch,restore"
    );
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
        serde_json::json!([
            "signals",
            "context",
            "tty",
            "limits",
            "closed",
            "dispositions",
            "watch",
            "restore"
        ])
    );
    assert_eq!(two["running"], 0);
    // Started by a call with no terminal.
    assert_eq!(two["terminals"], serde_json::json!([]), "{two:#}");
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
        depends_on["terminals"],
        Value::Null,
        "nothing folded: {two:#}"
    );
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
