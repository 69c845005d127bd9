//! A call's context, as a direct run has it: directory, umask, resource
//! limits, nice value, OOM score, closed standard fds.

use crate::common::*;

use super::{Scenario, outcome};

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
    if let Limits::Soft = limits {
        return call
            .soft_limit(libc::RLIMIT_NOFILE, 100)
            .soft_limit(libc::RLIMIT_CPU, 1000);
    }
    // SAFETY: setrlimit, setpriority, open, write and close are
    // async-signal-safe system calls.
    unsafe {
        call.cmd.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            match limits {
                Limits::Soft => Ok(()), // (above)
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
