//! The client on its own: command line, bad input, run directory safety,
//! interpreter arguments from the combined #! form.
mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::{Command, Stdio};

use common::*;

fn client_cmd(h: &Harness) -> Command {
    let mut cmd = Command::new(client());
    cmd.env_clear().envs(h.base_env()).current_dir(h.dir());
    cmd
}

#[track_caller]
fn assert_one_line_failure(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let err = stderr_str(out);
    assert!(err.starts_with("prefork-interp: "), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
}

#[test]
fn help_documents_every_option_and_exit_status() {
    let h = Harness::new(Side::Rust);
    let out = client_cmd(&h).arg("--help").output().unwrap();
    assert_success(&out);
    let help = stdout_str(&out);
    for option in [
        "-U",
        "-f",
        "--kill",
        "-E",
        "-G",
        "-g",
        "--help",
        "--version",
        "--run",
        "Exit status",
        "127",
    ] {
        assert!(help.contains(option), "--help lacks {option}: {help}");
    }
    let out = client_cmd(&h).arg("--version").output().unwrap();
    assert_success(&out);
    assert!(stdout_str(&out).contains(env!("CARGO_PKG_VERSION")));
    h.finish();
}

#[test]
fn usage_errors() {
    let h = Harness::new(Side::Rust);
    let cases: [(&[&str], &str); 5] = [
        (&["perl", "x"], "-U is required"),
        (&[], "-U is required"),
        (&["-U"], "no interpreter"),
        (&["-U,--frobnicate,perl", "x"], "--frobnicate"),
        (&["-U", "--json", "perl", "x"], "--list"),
    ];
    for (args, needle) in cases {
        let out = client_cmd(&h).args(args).output().unwrap();
        assert_one_line_failure(&out, needle);
    }
    h.finish();
}

/// `--session-keeper PID` is for a script side's executor to exec
/// (prefork-interp(7)): run by anyone else, with fds that are not the
/// monitor's socket and the call's terminal, or a pid that is not its
/// child, it says so in one line, 127, and touches nothing.
#[test]
fn session_keeper_refuses_what_is_not_its_call() {
    let h = Harness::new(Side::Rust);
    let (sock, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let pty = nix::pty::openpty(None, None).unwrap();
    let cases: [(&str, Stdio, Stdio, &str); 4] = [
        ("x", Stdio::null(), Stdio::null(), "not a process id"),
        (
            "1",
            Stdio::null(),
            Stdio::null(),
            "fd 0 is not the monitor's socket",
        ),
        (
            "1",
            Stdio::from(std::os::fd::OwnedFd::from(sock.try_clone().unwrap())),
            Stdio::null(),
            "fd 1 is not the call's terminal",
        ),
        (
            "1",
            Stdio::from(std::os::fd::OwnedFd::from(sock.try_clone().unwrap())),
            Stdio::from(pty.slave.try_clone().unwrap()),
            "not a child of ours",
        ),
    ];
    for (pid, stdin, stdout, needle) in cases {
        let out = client_cmd(&h)
            .args(["--session-keeper", pid])
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_one_line_failure(&out, needle);
    }
    h.finish();
}

/// `--run PROGRAM`: a program that cannot be run through a runner gets one
/// line naming it and what is wrong, status 127, and nothing is started.
#[test]
fn run_refuses_what_it_cannot_run() {
    let h = Harness::new(Side::Rust);
    let write = |name: &str, text: &str, mode: u32| {
        let path = h.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.display().to_string()
    };
    let no_shebang = write("no-shebang", "print('hi')\n", 0o755);
    let shell = write("shell", "#!/bin/sh\necho hi\n", 0o755);
    let not_executable = write("not-executable", "#!/usr/bin/python3\n", 0o644);
    let missing = h.path("missing").display().to_string();
    let cases: [(&[&str], String); 6] = [
        (&["--run"], "--run needs a PROGRAM".into()),
        (
            &["--run", &missing],
            format!("--run: {missing}: No such file"),
        ),
        (
            &["--run", "no-such-program-anywhere"],
            "no-such-program-anywhere: not found in PATH".into(),
        ),
        (
            &["--run", &no_shebang],
            format!("{no_shebang} has no #! line"),
        ),
        (
            &["--run", &shell],
            "names /bin/sh, which has no runner".into(),
        ),
        (&["--run", &not_executable], "not executable".into()),
    ];
    for (args, needle) in cases {
        let out = client_cmd(&h).args(args).output().unwrap();
        assert_one_line_failure(&out, &needle);
    }
    assert_eq!(h.run_dir_entries(), Vec::<String>::new());
    assert!(h.processes().is_empty());
    h.finish();
}

#[test]
fn missing_interpreter_is_named_and_leaves_nothing() {
    let h = Harness::new(Side::Rust);
    let script = h.path("bad-interp");
    let text = format!("#!{} -U,/nonexistent/interp\n", client().display());
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = client_cmd(&h)
        .arg("-U,/nonexistent/interp")
        .arg(&script)
        .output()
        .unwrap();
    assert_one_line_failure(&out, "cannot run interpreter /nonexistent/interp");
    assert_eq!(h.run_dir_entries(), Vec::<String>::new());
    wait_until(
        "the watcher to quit",
        std::time::Duration::from_secs(10),
        || h.processes().is_empty(),
    )
    .unwrap();
    h.finish();
}

#[test]
fn script_that_never_starts_a_server() {
    // /bin/true "initialises" and exits 0 without the library's call.
    let h = Harness::new(Side::Rust);
    let out = client_cmd(&h)
        .args(["-U", "/bin/true", "script"])
        .output()
        .unwrap();
    assert_one_line_failure(&out, "without starting a server");
    assert_eq!(h.run_dir_entries(), Vec::<String>::new());
    h.finish();
}

/// A setup run killed by a signal: the caller dies of the same signal, as
/// a direct run would have, a core-dumping one (QUIT) too, without a core
/// of its own. Either way nothing is left behind.
#[test]
fn setup_killed_by_a_signal() {
    let h = Harness::new(Side::Rust);
    use std::os::unix::process::ExitStatusExt;
    for (signal, number) in [("TERM", libc::SIGTERM), ("QUIT", libc::SIGQUIT)] {
        let out = client_cmd(&h)
            .args(["-U", "/bin/sh", "-c", &format!("kill -{signal} $$")])
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(number), "{out:?}");
        assert!(
            !out.status.core_dumped(),
            "{signal}: the client dumped core"
        );
        assert_eq!(h.run_dir_entries(), Vec::<String>::new(), "{signal}");
    }
    h.finish();
}

/// Where cores may be written (RLIMIT_CORE as high as it goes), the
/// script's initialisation killed by SIGQUIT writes its own (in its
/// directory, as `core_pattern` says), and the client, dying of the same
/// signal, writes none: its status says no core was dumped.
#[test]
fn the_client_dumps_no_core_of_its_own() {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let h = Harness::new(Side::Rust);
    let mut cmd = client_cmd(&h);
    cmd.args(["-U", "/bin/sh", "-c", "kill -QUIT $$"]);
    // SAFETY: getrlimit and setrlimit are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_CORE, &mut core);
            core.rlim_cur = core.rlim_max;
            libc::setrlimit(libc::RLIMIT_CORE, &core);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGQUIT), "{out:?}");
    assert!(!out.status.core_dumped(), "the client dumped core");
    let _ = std::fs::remove_file(h.path("core"));
    h.finish();
}

#[test]
fn interpreter_arguments_from_the_combined_form_reach_the_interpreter() {
    // The original looks for an interpreter called "perl,-w". We run
    // `perl -w SCRIPT`: the script reports $^W (set by -w) and fails its
    // initialisation, so the setup's stderr and status come back to us.
    let h = Harness::new(Side::Rust);
    let script = h.path("warn.pl");
    std::fs::write(&script, "print STDERR \"W=$^W ARGV=@ARGV\\n\"; exit 5;\n").unwrap();
    let out = client_cmd(&h)
        .args(["-U,perl,-w"])
        .arg(&script)
        .args(["a", "b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr_str(&out));
    assert!(
        stderr_str(&out).contains("W=1 ARGV=a b"),
        "{}",
        stderr_str(&out)
    );
    // The space-separated combined form too.
    let out = client_cmd(&h)
        .args(["-U perl -w"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        stderr_str(&out).contains("W=1 ARGV=\n"),
        "{}",
        stderr_str(&out)
    );
    h.finish();
}

#[test]
fn unsafe_run_directory_is_refused() {
    let h = Harness::new(Side::Rust);
    let base = h.base();
    // Open to group and other.
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = h.call(&["@out:x"]).run();
    assert_one_line_failure(&out, "has mode 0777");
    assert!(stderr_str(&out).contains(&base.display().to_string()));
    std::fs::remove_dir(&base).unwrap();
    // A symlink to a directory we own.
    let elsewhere = h.path("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700)).unwrap();
    symlink(&elsewhere, &base).unwrap();
    let out = h.call(&["@out:x"]).run();
    assert_one_line_failure(&out, "is a symbolic link");
    std::fs::remove_file(&base).unwrap();
    h.finish();
}

/// Whether the home directory is the run directory's last candidate
/// here: /run/user/UID, which a test cannot take out of play, is not
/// there (as on CI). Says so when it is.
fn home_fallback_testable() -> bool {
    let uid = nix::unistd::getuid();
    let testable = !std::path::Path::new(&format!("/run/user/{uid}")).exists();
    if !testable {
        eprintln!("skipped: /run/user/{uid} exists and would be used");
    }
    testable
}

#[test]
fn home_directory_fallback() {
    // XDG_RUNTIME_DIR unusable (group-writable).
    if !home_fallback_testable() {
        return;
    }
    let h = Harness::new(Side::Rust);
    let xdg = h.path("run");
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = h.call(&["@out:via-home"]).run();
    assert_eq!(stdout_str(&out), "via-home\n", "{}", stderr_str(&out));
    let host_dirs: Vec<_> = std::fs::read_dir(h.path("home").join(".prefork-interp"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(host_dirs.len(), 1);
    let mode = host_dirs[0].metadata().unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // Kill through the same fallback directory.
    let out = h.kill_server();
    assert_success(&out);
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    h.finish();
}

/// A `--kill` succeeded: its server quits, and the run directory is empty.
#[track_caller]
fn assert_killed(h: &Harness, kill: &std::process::Output, server: u32) {
    assert_success(kill);
    wait_until(
        "the server to quit",
        std::time::Duration::from_secs(10),
        || !alive(server),
    )
    .unwrap();
    assert_eq!(h.run_dir_entries(), Vec::<String>::new());
}

/// The comma form works after other options too, as it does first:
/// `prefork-interp --kill -U,INTERP SCRIPT` stops that script's server.
#[test]
fn kill_takes_the_comma_form_after_other_options() {
    let h = Harness::new(Side::Rust);
    let server = h.server_pid();
    let out = client_cmd(&h)
        .arg("--kill")
        .arg(format!("-U,{}", example("agent").display()))
        .arg(&h.script)
        .output()
        .unwrap();
    assert_killed(&h, &out, server);
    h.finish();
}

/// A runtime directory too deep for socket names there is passed over,
/// as an unusable one is: the next candidate (here the home directory's)
/// serves.
#[test]
fn too_deep_runtime_directory_is_passed_over() {
    if !home_fallback_testable() {
        return;
    }
    let h = Harness::new(Side::Rust);
    let deep = h.path("run").join("d".repeat(100));
    std::fs::create_dir(&deep).unwrap();
    std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = h.call(&["@out:fits"]).env("XDG_RUNTIME_DIR", &deep).run();
    assert_eq!(stdout_str(&out), "fits\n", "{}", stderr_str(&out));
    let sockets: Vec<_> = std::fs::read_dir(h.path("home").join(".prefork-interp"))
        .unwrap()
        .flatten()
        .flat_map(|host| std::fs::read_dir(host.path()).unwrap().flatten())
        .filter(|e| e.file_name().to_string_lossy().starts_with('s'))
        .collect();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let out = h
        .call_with_options(&["--kill"], &[] as &[&str])
        .env("XDG_RUNTIME_DIR", &deep)
        .run();
    assert_success(&out);
    h.finish();
}

#[test]
fn stale_socket_is_replaced() {
    let h = Harness::new(Side::Rust);
    // A server that died without cleaning up leaves its socket behind.
    let old = h.server_pid();
    let socket = h.socket();
    // SAFETY: killing our own test's server.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    wait_until(
        "the server to die",
        std::time::Duration::from_secs(10),
        || !alive(old),
    )
    .unwrap();
    assert!(socket.exists());
    let out = h.call(&["@out:recovered"]).run();
    assert_eq!(stdout_str(&out), "recovered\n", "{}", stderr_str(&out));
    h.finish();
}

/// A socket whose listener accepts and never greets (a stuck server, or
/// something else of ours on the path): the caller is told once, after
/// two seconds, what it waits for and whom (pid); when the listener goes
/// it starts a server of its own, and the call is exact.
#[test]
fn a_server_that_never_greets_is_named() {
    let h = Harness::new(Side::Rust);
    assert_success(&h.call(&["@out:first"]).run());
    let socket = h.socket();
    assert_success(&h.kill_server());
    let impostor = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let mut client = h.call(&["@out:exact"]).spawn();
    let stderr = client.stderr.take().unwrap();
    let (line, _) = impostor.accept().unwrap();
    // The notice, then nothing more while we hold the connection.
    let (tell, told) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut stderr = std::io::BufReader::new(stderr);
        let mut said = String::new();
        stderr.read_line(&mut said).unwrap();
        tell.send(said).unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
        rest
    });
    let said = told.recv_timeout(std::time::Duration::from_secs(10));
    let Ok(said) = said else {
        let _ = client.kill();
        panic!("no notice within 10 s of a server that never greets");
    };
    assert!(
        said.starts_with(&format!(
            "prefork-interp: no greeting yet from {} (pid {})",
            socket.display(),
            std::process::id()
        )) && said.contains("--list"),
        "{said}"
    );
    drop((line, impostor));
    let out = client.wait_with_output().unwrap();
    let rest = reader.join().unwrap();
    assert_eq!(stdout_str(&out), "exact\n", "{rest}");
    assert_eq!(rest, "", "said once");
    h.finish();
}

/// A caller whose soft limit of open files leaves a direct run just
/// enough (12: its stdio and a few files) is not refused a cold call for
/// the client's own sockets and pipes: the client raises its soft limits
/// for its own work, and the setup run, and the script, have the
/// caller's; the protocol's four fds are moved above that limit, so the
/// setup run (perl loading our module's nested `use` lines) has every
/// number below it, as a direct run has.
#[test]
fn low_soft_fd_limit_costs_a_cold_call_nothing() {
    let low = |call: Call| call.soft_limit(libc::RLIMIT_NOFILE, 12);
    for side in [Side::Rust, Side::Perl, Side::Python, Side::Ruby] {
        let h = Harness::new(side);
        cold_and_warm_like_a_direct_run(&h, low, "soft limit of open files 12");
        h.finish();
    }
}

/// A direct run of `@out:exact @limits`, then a cold and a warm call, each
/// set up by `low` (a low limit): the calls' output is the direct run's.
fn cold_and_warm_like_a_direct_run(h: &Harness, low: impl Fn(Call) -> Call, what: &str) {
    let args = ["@out:exact", "@limits"];
    let direct = low(h.direct(&args)).run();
    assert_success(&direct);
    for round in ["cold", "warm"] {
        let served = low(h.call(&args)).run();
        assert_eq!(
            (stdout_str(&served), stderr_str(&served)),
            (stdout_str(&direct), stderr_str(&direct)),
            "{:?}, {round}: through us, then directly ({what})",
            h.side
        );
    }
}

/// Processes of `uid` (zombies too: they count against its limit until
/// reaped).
fn processes_of(uid: u32) -> u64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter(|e| {
            std::os::unix::fs::MetadataExt::uid(
                &e.metadata()
                    .unwrap_or_else(|_| std::fs::metadata("/").unwrap()),
            ) == uid
        })
        .count() as u64
}

/// A caller whose soft limit of processes leaves a direct run just
/// enough (two more than it has: the script, and a fork of the
/// `@limits` command's) is not refused a cold call for the client's own
/// processes (the setup run) nor the server's (server, monitor, spare):
/// those raise their soft limits for their own work, and each call's
/// script has the caller's. As a user of the test's own (root's limit of
/// processes is not enforced).
#[test]
fn low_soft_process_limit_costs_a_cold_call_nothing() {
    let (uid, gid) = test_user("pfi-nproc");
    for side in [Side::Rust, Side::Perl, Side::Python, Side::Ruby] {
        let h = Harness::for_other_users(side);
        h.give_to(uid, gid);
        let soft = processes_of(uid) + 2;
        let low = |call: Call| call.by_user(uid, gid).soft_limit(libc::RLIMIT_NPROC, soft);
        cold_and_warm_like_a_direct_run(&h, low, &format!("soft limit of processes {soft}"));
        for (pid, _) in h.processes() {
            // SAFETY: killing a test process by pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(h.base());
        std::fs::create_dir(h.base()).ok();
        h.finish();
    }
}

#[test]
fn given_identity_shares_a_server_and_kills_by_name() {
    let h = Harness::new(Side::Rust);
    let agent = example("agent");
    let run = |args: &[&str]| {
        let mut cmd = client_cmd(&h);
        cmd.arg(format!("-U,-g,shared,{}", agent.display()))
            .args(args);
        cmd.output().unwrap()
    };
    // Different "scripts", one given identity: one server.
    let a = run(&["script-a", "@server"]);
    let b = run(&["script-b", "@server"]);
    assert_success(&a);
    assert_eq!(stdout_str(&a), stdout_str(&b));
    assert!(h.base().join("sshared").exists());
    let server: u32 = stdout_str(&a).trim().parse().unwrap();
    // --kill -g needs no interpreter, nor -U.
    let out = client_cmd(&h)
        .args(["--kill", "-g", "shared"])
        .output()
        .unwrap();
    assert_killed(&h, &out, server);
    // A bad given identity is refused.
    let out = client_cmd(&h)
        .args(["-U", "-g", "a/b", "/bin/true"])
        .output()
        .unwrap();
    assert_one_line_failure(&out, "bad identity");
    h.finish();
}

#[test]
fn identity_follows_env_option() {
    let h = Harness::new(Side::Rust);
    let agent = example("agent");
    let run = |value: &str| {
        let mut cmd = client_cmd(&h);
        cmd.arg(format!("-U,-E,PFI_MODE,{}", agent.display()))
            .arg(&h.script)
            .arg("@server")
            .env("PFI_MODE", value);
        let out = cmd.output().unwrap();
        assert_success(&out);
        stdout_str(&out)
    };
    let (a1, b, a2) = (run("a"), run("b"), run("a"));
    assert_eq!(a1, a2, "same value, same server");
    assert_ne!(a1, b, "-E makes the value part of the identity");
    for value in ["a", "b"] {
        let mut cmd = client_cmd(&h);
        cmd.arg(format!("-U,--kill,-E,PFI_MODE,{}", agent.display()))
            .arg(&h.script)
            .env("PFI_MODE", value);
        assert_success(&cmd.output().unwrap());
    }
    h.finish();
}

/// Every manual page renders without a warning (groff -ww; ./test
/// installs groff-base).
#[test]
fn manual_pages_render_cleanly() {
    let mut pages = 0;
    for entry in std::fs::read_dir(repo().join("man")).unwrap().flatten() {
        let out = Command::new("groff")
            .args(["-ww", "-man", "-Tutf8", "-z"])
            .arg(entry.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            entry.path().display(),
            stderr_str(&out)
        );
        assert_eq!(stderr_str(&out), "", "{}", entry.path().display());
        pages += 1;
    }
    assert!(pages >= 3, "expected the manual pages in man/");
}

/// A socket in our run directory that another uid listens on (planted by
/// root here) gets nothing from the client: no byte, no fd, and the
/// client says whose it is. (Root only: the client runs as a second user.)
#[test]
fn a_server_of_another_uid_gets_nothing() {
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    let (uid, gid) = other_user();
    let run = dir_owned_by(uid, gid);
    let base = run.path().join("prefork-interp");
    std::fs::create_dir(&base).unwrap();
    std::os::unix::fs::chown(&base, Some(uid), Some(gid)).unwrap();
    set_mode(&base, 0o700);
    let planted = UnixListener::bind(base.join("splanted")).unwrap();
    set_mode(&base.join("splanted"), 0o777);

    let out = as_user(uid, gid, client())
        .args(["-U", "-g", "planted", "/bin/true"])
        .env("XDG_RUNTIME_DIR", run.path())
        .env("HOME", run.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{}", stderr_str(&out));
    let err = stderr_str(&out);
    assert!(
        err.contains("splanted") && err.contains("uid 0") && err.contains("nothing sent"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    planted.set_nonblocking(true).unwrap();
    let (mut conn, _) = planted.accept().expect("the client did connect");
    conn.set_nonblocking(false).unwrap();
    let mut got = Vec::new();
    conn.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "the client sent {got:?}");
}

/// Another user can neither reach, list, kill nor replace our servers,
/// even when pointed at our run directory (it is refused as not theirs,
/// and they fall back to their own). (Root only.)
#[test]
fn another_user_cannot_list_or_kill_our_servers() {
    let h = Harness::new(Side::Rust);
    let server = h.server_pid();
    let socket = h.socket();
    let ident = socket.file_name().unwrap().to_string_lossy()[1..].to_string();
    let (uid, gid) = other_user();
    let theirs = dir_owned_by(uid, gid);
    let as_other = |args: &[&str]| {
        as_user(uid, gid, client())
            .args(args)
            .env("XDG_RUNTIME_DIR", h.path("run"))
            .env("HOME", theirs.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let list = as_other(&["--list"]);
    assert_success(&list);
    assert!(!stdout_str(&list).contains(&ident), "{}", stdout_str(&list));
    assert_success(&as_other(&["-U", "--kill", "-g", &ident]));
    // -f starts a server of their own, in their own directory (here one
    // that fails: /bin/true is no script side).
    let fresh = as_other(&["-U", "-f", "-g", &ident, "/bin/true"]);
    assert_eq!(fresh.status.code(), Some(127), "{}", stderr_str(&fresh));
    assert!(
        stderr_str(&fresh).contains("without starting a server"),
        "{}",
        stderr_str(&fresh)
    );
    assert!(alive(server));
    assert!(socket.exists());
    assert_eq!(h.server_pid(), server, "still our server, still serving");
    h.finish();
}

/// A lock held by a stuck process: the client says, once, what it is
/// waiting for and who holds it, and goes on when the lock is free.
#[test]
fn lock_held_by_a_stuck_process_is_named() {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let h = Harness::new(Side::Rust);
    h.server_pid();
    let ident = h.socket().file_name().unwrap().to_string_lossy()[1..].to_string();
    assert_success(&h.kill_server());
    let lock_path = h.base().join(format!("l{ident}"));
    let held = std::fs::File::create(&lock_path).unwrap();
    // The stuck process is this test.
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let mut call = h.call(&["@out:at-last"]).spawn();
    let mut stderr = call.stderr.take().unwrap();
    let mut said = Vec::new();
    let mut byte = [0u8; 1];
    while !said.ends_with(b"\n") {
        assert_eq!(stderr.read(&mut byte).unwrap(), 1, "stderr ended: {said:?}");
        said.push(byte[0]);
    }
    let said = String::from_utf8(said).unwrap();
    assert!(
        said.contains(&lock_path.display().to_string())
            && said.contains(&format!("pid {}", std::process::id())),
        "{said}"
    );
    drop(held);
    let out = call.wait_with_output().unwrap();
    assert_success(&out);
    assert_eq!(stdout_str(&out), "at-last\n");
    h.finish();
}

/// A garbage greeting (bad magic, or an xdata length over the limit) from
/// what listens on our socket: one clear line, 127, and nothing sent.
#[test]
fn garbage_greetings_are_refused() {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;
    for (greeting, expected) in [
        (b"XYZ\n\0\0\0\0".to_vec(), "bad greeting"),
        (b"PFI\n\xff\xff\xff\xff".to_vec(), "too long"),
    ] {
        let h = Harness::new(Side::Rust);
        std::fs::create_dir_all(h.base()).unwrap();
        set_mode(&h.base(), 0o700);
        let planted = UnixListener::bind(h.base().join("sfake")).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = planted.accept().unwrap();
            conn.write_all(&greeting).unwrap();
            let mut got = Vec::new();
            conn.read_to_end(&mut got).unwrap();
            got
        });
        let out = h.client_call(&["-U", "-g", "fake", "/bin/true"]).run();
        assert_eq!(out.status.code(), Some(127), "{}", stderr_str(&out));
        let err = stderr_str(&out);
        assert!(err.contains(expected), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(server.join().unwrap().is_empty(), "the client sent nothing");
        std::fs::remove_file(h.base().join("sfake")).unwrap();
        h.finish();
    }
}

/// More than 100 identities: creating a new server first removes sockets
/// nobody listens on, so the directory stays bounded and a live server
/// (here the oldest socket there) keeps serving.
#[test]
fn precleaning_bounds_the_directory_and_spares_live_servers() {
    use std::os::unix::net::UnixListener;
    let h = Harness::new(Side::Rust);
    let live = h.server_pid();
    for i in 0..110 {
        drop(UnixListener::bind(h.base().join(format!("sstale{i:03}"))).unwrap());
    }
    let sockets = || {
        std::fs::read_dir(h.base())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('s'))
            .count()
    };
    assert_eq!(sockets(), 111);
    let other = h.call_with_options(&["-G", "other"], &["@server"]).run();
    assert_success(&other);
    assert!(sockets() <= 100, "{} sockets", sockets());
    assert_eq!(h.server_pid(), live, "the live server still serves");
    let killed = h
        .call_with_options(&["-G", "other", "--kill"], &[] as &[&str])
        .run();
    assert_success(&killed);
    for entry in std::fs::read_dir(h.base()).unwrap().flatten() {
        if entry.file_name().to_string_lossy().starts_with("sstale") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    h.finish();
}

/// The run directory on a read-only or a full file system (a tmpfs out of
/// inodes), each in a mount namespace of its own: one clear line, 127, and
/// nothing left in the directory. (Root only.)
#[test]
fn run_directory_on_a_read_only_or_full_file_system() {
    let h = Harness::new(Side::Rust);
    for (options, expected) in [
        ("ro,mode=0700", "Read-only file system"),
        ("nr_inodes=3,mode=0700", "No space left on device"),
    ] {
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(
                r#"mount -t tmpfs -o "$1" pfi "$0" || exit 99
                "$2"; status=$?
                ls -A "$0/prefork-interp" 2>/dev/null | sed 's/^/left: /'
                exit $status"#,
            )
            .arg(h.path("run"))
            .arg(options)
            .arg(&h.script)
            .env_clear()
            .envs(h.base_env())
            .current_dir(h.dir())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr_str(&out);
        assert_eq!(out.status.code(), Some(127), "{options}: {err}");
        assert!(
            err.starts_with("prefork-interp: ") && err.contains(expected),
            "{options}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{options}: {err}");
        assert_eq!(stdout_str(&out), "", "{options}: left behind");
    }
    h.finish();
}

/// A run directory owned by someone else is refused; symlinks planted in
/// our own (as a lock or socket of this identity) are not followed: the
/// call fails in one line and the file they point at is untouched.
#[test]
fn foreign_run_directory_and_planted_symlinks_are_refused() {
    let h = Harness::new(Side::Rust);
    let base = h.base();
    let (uid, gid) = other_user();
    std::fs::create_dir(&base).unwrap();
    std::os::unix::fs::chown(&base, Some(uid), Some(gid)).unwrap();
    set_mode(&base, 0o700);
    let out = h.call(&["@out:x"]).run();
    assert_one_line_failure(&out, &format!("is owned by uid {uid}"));
    std::fs::remove_dir(&base).unwrap();

    h.server_pid();
    let ident = h.socket().file_name().unwrap().to_string_lossy()[1..].to_string();
    assert_success(&h.kill_server());
    let victim = h.path("victim");
    std::fs::write(&victim, "precious").unwrap();
    for name in [format!("l{ident}"), format!("s{ident}")] {
        symlink(&victim, base.join(name)).unwrap();
    }
    let out = h.call(&["@out:x"]).run();
    assert_one_line_failure(&out, "cannot lock");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    for name in [format!("l{ident}"), format!("s{ident}")] {
        std::fs::remove_file(base.join(name)).unwrap();
    }
    h.finish();
}

/// prefork-interp(1) documents, in its OPTIONS section, every option that
/// --help lists.
#[test]
fn manual_page_documents_every_option() {
    let page = std::fs::read_to_string(repo().join("man/prefork-interp.1"))
        .unwrap()
        .replace("\\-", "-");
    let options = page
        .split(".SH OPTIONS")
        .nth(1)
        .and_then(|rest| rest.split("\n.SH ").next())
        .expect("an OPTIONS section");
    let help = Command::new(client()).arg("--help").output().unwrap();
    let mut seen = 0;
    for line in stdout_str(&help).lines() {
        let line = line.trim_start();
        if !line.starts_with('-') {
            continue;
        }
        for option in line
            .split(|c: char| c == ',' || c.is_whitespace())
            .take_while(|w| w.is_empty() || w.starts_with('-'))
            .filter(|w| !w.is_empty())
        {
            let documented = options.lines().any(|l| {
                l.starts_with(".B")
                    && l.split(|c: char| c.is_whitespace() || c == '"')
                        .any(|w| w == option)
            });
            assert!(documented, "{option} is not in prefork-interp(1)'s OPTIONS");
            seen += 1;
        }
    }
    assert!(seen >= 11, "only {seen} options found in --help");
}

/// `--run` where the interpreter cannot find our runner (no PERL5LIB,
/// PYTHONPATH or RUBYLIB to the repository's, nothing installed): one
/// line naming the program, the missing runner, the interpreter and the
/// command that installs it for that interpreter (tests/runner_install.rs
/// runs those commands), status 127, and nothing left in the run
/// directory; not the interpreter's own "Can't locate" or "No module
/// named", which would read as the program failing. With the runner
/// found, the same program runs.
#[test]
fn run_without_the_runner_says_so() {
    let h = Harness::new(Side::Rust);
    for (program, text, runner, command, package, path_var, path) in [
        (
            "tool.pl",
            "#!/usr/bin/perl\nprint \"ran\\n\";\n",
            "Perl runner (Proc::Prefork::Interp::Run), not installed for /usr/bin/perl",
            "/usr/bin/perl -S cpanm",
            "Proc::Prefork::Interp",
            "PERL5LIB",
            repo().join("sides/perl/lib"),
        ),
        (
            "tool.py",
            "#!/usr/bin/env python3\nprint('ran')\n",
            "Python runner (the prefork_interp package), not installed for python3",
            // (With the options an externally managed python3 needs.)
            "python3 -m pip install",
            "prefork-interp",
            "PYTHONPATH",
            repo().join("sides/python"),
        ),
        (
            "tool.rb",
            "#!/usr/bin/ruby\nputs 'ran'\n",
            "Ruby runner (prefork_interp/run), not installed for /usr/bin/ruby",
            "/usr/bin/ruby -S gem install",
            "prefork_interp",
            "RUBYLIB",
            repo().join("sides/ruby/lib"),
        ),
    ] {
        let file = h.path(program);
        std::fs::write(&file, text).unwrap();
        set_mode(&file, 0o755);
        let out = client_cmd(&h).arg("--run").arg(&file).output().unwrap();
        assert_one_line_failure(
            &out,
            &format!(
                "prefork-interp: --run: {} needs prefork-interp's {runner}: install it with: {command}",
                file.display()
            ),
        );
        let err = stderr_str(&out);
        assert!(err.ends_with(&format!(" {package}\n")), "{err}");
        assert_eq!(h.run_dir_entries(), Vec::<String>::new(), "{program}");
        let out = client_cmd(&h)
            .env(path_var, &path)
            .arg("--run")
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(
            stdout_str(&out),
            "ran\n",
            "{program} with {path_var}: {out:?}"
        );
        let out = client_cmd(&h)
            .env(path_var, &path)
            .args(["--kill", "--run"])
            .arg(&file)
            .output()
            .unwrap();
        assert_success(&out);
    }
    h.finish();
}
