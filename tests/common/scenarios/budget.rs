//! A user's budget: many servers without running out of inotify
//! instances or processes, the least recently used evicted at the limit,
//! folded identities idling out sooner, and calls never failing because a
//! server could do without something (issue 27).
//!
//! Each scenario that spends a user's budget acts as a user of its own,
//! one per side (`pfi-<what>-<side>`): inotify instances are counted per
//! user, and the sides' tables run in parallel.

use std::time::Duration;

use crate::common::*;

use super::{LIMIT, Scenario};

/// This side's own user for `what`.
fn budget_user(what: &str, side: Side) -> (u32, u32) {
    test_user(&format!(
        "pfi-{what}-{}",
        format!("{side:?}").to_lowercase()
    ))
}

/// A call's (server pid, the rest of its stdout), for calls that start
/// with `@server`.
fn server_and_rest(out: &std::process::Output) -> (u32, String) {
    assert_success(out);
    let text = stdout_str(out);
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    (first.parse().unwrap(), rest.to_string())
}

/// Takes down every server of the world (as `user`, whose servers they
/// are, with `--kill -g IDENT`), then removes the lock files left by
/// servers that went on their own, checking each says `why` (evictions
/// keep them on purpose: they say why an identity's server went, for its
/// next start; the client keeps at most 100).
/// Returns how many such lock files there were.
fn take_down(h: &Harness, user: Option<(u32, u32)>, why: &str) -> usize {
    for entry in std::fs::read_dir(h.base()).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        if let Some(ident) = name.strip_prefix('s') {
            let mut kill = h.client_call(&["--kill", "-g", ident]);
            if let Some((uid, gid)) = user {
                kill = kill.by_user(uid, gid);
            }
            assert_success(&kill.run());
        }
    }
    let mut left = 0;
    for entry in std::fs::read_dir(h.base()).unwrap().flatten() {
        let name = entry.file_name().into_string().unwrap();
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            name.starts_with('l') && text.lines().any(|l| l.contains(why)),
            "{name} is not the lock file of a server that quit as {why:?}: {text}"
        );
        std::fs::remove_file(entry.path()).unwrap();
        left += 1;
    }
    left
}

/// The user's other programs hold every inotify instance it may have: the
/// server does without (it looks at its socket path every 5 s, and stats
/// its files at every call), its second and third calls are warm and
/// exact, and `--list` says what it does without.
scenario!(no_inotify_instance_left_calls_stay_warm, |side| {
    let (uid, gid) = budget_user("noino", side);
    let h = Harness::for_other_users(side);
    h.give_to(uid, gid);
    let holder = InotifyHolder::new(uid, gid, 0);
    assert!(holder.held > 0, "the holder holds nothing");
    let call = || h.call(&["@server", "@out:exact"]).by_user(uid, gid).run();
    let (server, rest) = server_and_rest(&call());
    assert_eq!(rest, "exact\n");
    for _ in ["second", "third"] {
        assert_eq!(server_and_rest(&call()), (server, "exact\n".to_string()));
    }
    let listed = stdout_str(&h.client_call(&["--list", "--json"]).by_user(uid, gid).run());
    assert!(
        listed.contains(
            "no inotify (Too many open files): socket path checked every 5 s, files at every call"
        ),
        "{listed}"
    );
    // A call after the listing: the server looks at its socket path as
    // it goes back to waiting after each connection, and the listing's
    // client leaves at once, so that look could come after the removal
    // below; a call's client waits for its script, long after it.
    assert_eq!(server_and_rest(&call()), (server, "exact\n".to_string()));
    // Its socket's removal is still seen, at the next look.
    std::fs::remove_file(h.socket()).unwrap();
    wait_until("the server to quit", Duration::from_secs(15), || {
        !alive(server)
    })
    .unwrap();
    drop(holder);
    let _ = take_down(&h, Some((uid, gid)), " socket replaced or removed");
    h.finish();
});

/// 150 identities of one script (a value each of a variable its
/// initialisation reads), by a user whose other programs leave it 40
/// inotify instances: every call exact; live servers within the limit
/// (32), none degraded or dead of EMFILE; the latest ten identities still
/// warm, served by the same servers as before; an evicted identity's next
/// server says why the last one went.
scenario!(many_identities_stay_within_the_budget, |side| {
    const IDENTITIES: usize = 150;
    const LIMIT_OF_SERVERS: usize = 32;
    let (uid, gid) = budget_user("many", side);
    let h = Harness::for_other_users(side);
    h.give_to(uid, gid);
    let _holder = InotifyHolder::new(uid, gid, 40);
    let call = |i: usize| {
        h.call(&["@server".to_string(), format!("@out:{i}")])
            .env("AGENT_INIT_ENVREAD", "PFI_N")
            .env("PFI_N", i.to_string())
            .by_user(uid, gid)
            .run()
    };
    let mut servers = Vec::new();
    for i in 0..IDENTITIES {
        let (server, rest) = server_and_rest(&call(i));
        assert_eq!(rest, format!("{i}\n"), "identity {i}");
        servers.push(server);
    }
    for (i, &before) in servers.iter().enumerate().skip(IDENTITIES - 10) {
        let (server, rest) = server_and_rest(&call(i));
        assert_eq!(rest, format!("{i}\n"));
        assert_eq!(server, before, "identity {i} is no longer warm");
    }
    let live = servers.iter().filter(|&&pid| alive(pid)).count();
    assert!(
        live <= LIMIT_OF_SERVERS,
        "{live} live servers, the limit being {LIMIT_OF_SERVERS}"
    );
    let listed = stdout_str(&h.client_call(&["--list", "--json"]).by_user(uid, gid).run());
    assert!(!listed.contains("no inotify"), "{listed}");
    assert!(!listed.contains("Too many open files"), "{listed}");
    // The first identity was evicted long ago: its new server says so.
    let (again, rest) = server_and_rest(&call(1));
    assert_eq!(rest, "1\n");
    assert_ne!(again, servers[1]);
    let listed = stdout_str(&h.client_call(&["--list", "--json"]).by_user(uid, gid).run());
    assert!(
        listed.contains("evicted: least recently used of"),
        "{listed}"
    );
    let _ = take_down(&h, Some((uid, gid)), " evicted: ");
    h.finish();
});

/// Fault: servers evicted while calls arrive. With a limit of two live
/// servers, three callers at once, over and over, each going round four
/// identities: servers keep being created at the limit, so each call's
/// server may be evicted between its connect and its greeting, or while
/// it runs. Every call is exact (cold at worst), none fails. (Three
/// identities called one after the other first: the third's server
/// evicts one, whatever the timing of what follows.)
scenario!(evictions_while_calls_arrive, |side| {
    let h = Harness::new(side);
    let call = |identity: usize, text: &str| {
        let out = h
            .call(&["@out:start", "@sleep:0.05", &format!("@out:{text}")])
            .env("AGENT_INIT_ENVREAD", "PFI_N")
            .env("PFI_N", identity.to_string())
            .env("PREFORK_INTERP_SERVER_LIMIT", "2")
            .run();
        assert_success(&out);
        assert_eq!(stdout_str(&out), format!("start\n{text}\n"));
    };
    for identity in 0..3 {
        call(identity, "first");
    }
    let rounds = 12;
    std::thread::scope(|scope| {
        let callers: Vec<_> = (0..3)
            .map(|caller| {
                let call = &call;
                scope.spawn(move || {
                    for round in 0..rounds {
                        call((caller + round) % 4, &format!("{caller}.{round}"));
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().unwrap();
        }
    });
    // Servers were evicted: an identity's next server says so, or its
    // lock file alone is left, saying so.
    let listed = stdout_str(&h.client_call(&["--list", "--json"]).run());
    let left = take_down(&h, None, " evicted: ");
    assert!(
        listed.contains("evicted: ") || left > 0,
        "no eviction: {listed}"
    );
    h.finish();
});

/// A folded identity's server (a caller's own value of a variable the
/// initialisation read) idles out after PREFORK_INTERP_FOLDED_IDLE
/// seconds; the script's base identity's server keeps its own timeout.
scenario!(folded_identities_idle_out_sooner, |side| {
    let h = Harness::new(side);
    let call = |value: &str| {
        h.call(&["@server"])
            .env("AGENT_INIT_ENVREAD", "PFI_V")
            .env("PFI_V", value)
            .env("PREFORK_INTERP_FOLDED_IDLE", "1")
            .run()
    };
    let (base, _) = server_and_rest(&call("base"));
    let (folded, _) = server_and_rest(&call("other"));
    assert_ne!(base, folded);
    wait_until("the folded identity's server to quit", LIMIT, || {
        !alive(folded)
    })
    .unwrap();
    assert!(alive(base), "the base identity's server idled out too");
    assert_eq!(server_and_rest(&call("base")).0, base);
    h.finish();
});
