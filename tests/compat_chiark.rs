//! Interoperability with chiark-utils, both directions, against its Debian
//! packages (chiark-utils-bin: the C client /usr/bin/prefork-interp;
//! chiark-scripts: its Perl module; libio-fdpass-perl). `./test` installs
//! them.
//!
//! What each pair is expected to show, quirks of the original included:
//!
//! | client   | script side         | expected                                      |
//! |----------|---------------------|-----------------------------------------------|
//! | chiark C | ours (any language) | works; @ARGV starts with the interpreter and  |
//! |          |                     | script path (the C client sends them); exit   |
//! |          |                     | statuses exact, even a plain `exit` under load|
//! | ours     | chiark Perl module  | works; @ARGV exact; statuses exact with       |
//! |          |                     | POSIX::_exit; a plain `exit N` is reported as |
//! |          |                     | death by SIGINT (its EXECTERM race)           |
//!
//! chiark's client keeps its run directory in /var/run/user/UID, or else
//! in the password database's home (it looks at neither XDG_RUNTIME_DIR
//! nor HOME), so its calls run with a private /run through a mount
//! namespace each ([`Harness::with_private_run`]): these tests need root,
//! as CI has, and never touch the real run or home directory.
mod common;

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const CHIARK_CLIENT: &str = "/usr/bin/prefork-interp";
const CHIARK_MODULE: &str = "/usr/share/perl5/Proc/Prefork/Interp.pm";

fn require_chiark() {
    for path in [CHIARK_CLIENT, CHIARK_MODULE] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: these tests need the Debian packages chiark-utils-bin, \
             chiark-scripts and libio-fdpass-perl (./test installs them)"
        );
    }
}

/// chiark's client with our Perl module. (Its client cannot pass `-w`:
/// it would look for an interpreter called "perl,-w".)
fn chiark_client_our_perl() -> Harness {
    require_chiark();
    Harness::custom(
        Side::Perl,
        PathBuf::from(CHIARK_CLIENT),
        vec![OsString::from("perl")],
        None,
        &perl_agent_body(true),
    )
    .with_private_run()
}

/// Our client with chiark's Perl module.
fn our_client_chiark_perl() -> Harness {
    require_chiark();
    Harness::custom(
        Side::Perl,
        client(),
        vec![OsString::from("perl")],
        None,
        &perl_agent_body(false),
    )
}

/// chiark's client with our Python module.
fn chiark_client_our_python() -> Harness {
    require_chiark();
    Harness::custom(
        Side::Python,
        PathBuf::from(CHIARK_CLIENT),
        vec![python().into()],
        None,
        &python_agent_body(),
    )
    .with_private_run()
}

/// chiark's client with our Ruby side.
fn chiark_client_our_ruby() -> Harness {
    require_chiark();
    Harness::custom(
        Side::Ruby,
        PathBuf::from(CHIARK_CLIENT),
        vec![OsString::from("ruby")],
        None,
        &ruby_agent_body(),
    )
    .with_private_run()
}

/// chiark's client with our Rust library.
fn chiark_client_our_rust() -> Harness {
    require_chiark();
    let agent = example("agent");
    Harness::custom(
        Side::Rust,
        PathBuf::from(CHIARK_CLIENT),
        vec![agent.clone().into()],
        Some(agent),
        "",
    )
    .with_private_run()
}

fn hex_lines(words: &[&[u8]]) -> String {
    words.iter().map(|w| hex(w) + "\n").collect()
}

/// Exit statuses, death by signal, stdin to stdout, environment; and one
/// server serves them all (a script side that misreads PREFORK_INTERP
/// quits after each call, and every call pays for a cold start).
fn check_basic_calls(h: &Harness, exit: &str) {
    let server = |h: &Harness| {
        let out = h.call(&["@server", "@err:.", &format!("@{exit}:0")]).run();
        assert_success(&out);
        stdout_str(&out)
    };
    let first = server(h);
    for code in [0, 1, 3, 255] {
        let out = h
            .call(&["@out:x".to_string(), format!("@{exit}:{code}")])
            .run();
        assert_eq!(out.status.code(), Some(code), "{}", stderr_str(&out));
    }
    let out = h.call(&["@out:x", "@kill:TERM"]).run();
    assert_eq!(out.status.signal(), Some(libc::SIGTERM));
    // @err flushes stdout first, which @_exit would not.
    let out = h
        .call(&["@cat", "@err:.", &format!("@{exit}:0")])
        .stdin_bytes("piped\n")
        .run();
    assert_eq!(stdout_str(&out), "piped\n");
    let out = h
        .call(&["@env:PFI_X", "@err:.", &format!("@{exit}:0")])
        .env("PFI_X", "\u{e9}\u{e8}")
        .run();
    assert_eq!(
        stdout_str(&out),
        format!("{}\n", hex("\u{e9}\u{e8}".as_bytes()))
    );
    assert_eq!(server(h), first, "every call served by the same server");
}

#[test]
fn chiark_client_with_our_perl_module() {
    let h = chiark_client_our_perl();
    check_basic_calls(&h, "exit");
    assert_eq!(h.call(&["@die:boom"]).run().status.code(), Some(255));
    // The C client sends the interpreter and the script as arguments too.
    let out = h.call(&["@args", "a b"]).run();
    let script = h.script.to_str().unwrap().as_bytes();
    assert_eq!(
        stdout_str(&out),
        hex_lines(&[b"perl", script, b"@args", b"a b"])
    );
    h.finish();
}

#[test]
fn chiark_client_with_our_perl_module_plain_exit_under_load() {
    let h = chiark_client_our_perl();
    assert_success(&h.call(&["@out:start"]).run());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..15 {
                    let out = h.call(&["@out:payload", "@exit:3"]).run();
                    assert_eq!(out.status.code(), Some(3), "{:?}", out.status);
                    assert_eq!(stdout_str(&out), "payload\n");
                }
            });
        }
    });
    h.finish();
}

#[test]
fn chiark_client_with_our_python_module() {
    let h = chiark_client_our_python();
    check_basic_calls(&h, "exit");
    // An uncaught exception: 1, as in a normal run.
    assert_eq!(h.call(&["@die:boom"]).run().status.code(), Some(1));
    // sys.argv[1:] starts with the interpreter and the script path, which
    // the C client sends as arguments.
    let out = h.call(&["@args"]).run();
    let python = python();
    let script = h.script.to_str().unwrap().as_bytes();
    assert_eq!(
        stdout_str(&out),
        hex_lines(&[python.to_str().unwrap().as_bytes(), script, b"@args"])
    );
    h.finish();
}

#[test]
fn chiark_client_with_our_ruby_side() {
    let h = chiark_client_our_ruby();
    check_basic_calls(&h, "exit");
    // An uncaught exception: 1, as in a normal run.
    assert_eq!(h.call(&["@die:boom"]).run().status.code(), Some(1));
    // ARGV starts with the interpreter and the script path, which the C
    // client sends as arguments.
    let out = h.call(&["@args"]).run();
    let script = h.script.to_str().unwrap().as_bytes();
    assert_eq!(stdout_str(&out), hex_lines(&[b"ruby", script, b"@args"]));
    h.finish();
}

#[test]
fn chiark_client_with_our_rust_library() {
    let h = chiark_client_our_rust();
    check_basic_calls(&h, "exit");
    let out = h.call(&["@args"]).run();
    let agent = example("agent");
    let script = h.script.to_str().unwrap().as_bytes();
    assert_eq!(
        stdout_str(&out),
        hex_lines(&[agent.to_str().unwrap().as_bytes(), script, b"@args"])
    );
    h.finish();
}

#[test]
fn our_client_with_chiark_perl_module() {
    let h = our_client_chiark_perl();
    // POSIX::_exit gives exact statuses with the original module.
    check_basic_calls(&h, "_exit");
    // Our client sends only the caller's arguments.
    let out = h.call(&["@args", "a b", "@err:flush", "@_exit:0"]).run();
    assert_eq!(
        stdout_str(&out),
        hex_lines(&[b"@args", b"a b", b"@err:flush", b"@_exit:0"])
    );
    // Its EXECTERM race: a plain exit is reported as death by SIGINT
    // (measured every time on 7.0.0 and 8.0.0); if a later version fixes
    // it, the status is right.
    let out = h.call(&["@exit:3"]).run();
    assert!(
        out.status.code() == Some(3) || out.status.signal() == Some(libc::SIGINT),
        "{:?}",
        out.status
    );
    h.finish();
}

/// chiark's module does not watch its own socket (it offers nothing): our
/// client starts a watcher for it, after its greeting, which keeps
/// nothing of the first caller's environment; the watcher's end (killed,
/// or the socket removed) makes the server quit; the next call starts
/// another.
#[test]
fn our_client_gives_chiark_perl_module_a_watcher() {
    let h = our_client_chiark_perl();
    // (POSIX::_exit: the original module's exact status; @err flushes
    // stdout first.)
    let server_pid = || {
        let out = h.call(&["@server", "@err:.", "@_exit:0"]).run();
        assert_success(&out);
        stdout_str(&out).trim().parse::<u32>().unwrap()
    };
    // The call that starts the first server has a token in its
    // environment, which the watcher must not keep (man 1, PROCESS TITLES).
    let token = "pfi-token-5e2a71";
    let out = h
        .call(&["@out:x", "@err:.", "@_exit:0"])
        .env("PFI_TOKEN", token)
        .run();
    assert_success(&out);
    for fault in ["watcher killed", "socket removed"] {
        let server = server_pid();
        let watchers: Vec<u32> = h
            .processes()
            .into_iter()
            .filter(|(_, cmd)| cmd.starts_with("prefork-interp [watcher] "))
            .map(|(pid, _)| pid)
            .collect();
        assert_eq!(watchers.len(), 1, "{fault}: {:#?}", h.processes());
        for part in ["environ", "cmdline"] {
            let text = std::fs::read(format!("/proc/{}/{part}", watchers[0])).unwrap();
            assert!(
                !text.windows(token.len()).any(|w| w == token.as_bytes()),
                "the watcher keeps the first caller's token in its {part}"
            );
        }
        if fault == "watcher killed" {
            // SAFETY: killing a test process by pid.
            unsafe { libc::kill(watchers[0] as i32, libc::SIGKILL) };
        } else {
            std::fs::remove_file(h.socket()).unwrap();
        }
        wait_until("the server to quit", Duration::from_secs(10), || {
            !alive(server)
        })
        .unwrap();
        assert_ne!(server_pid(), server, "{fault}: a new server");
    }
    h.finish();
}

/// A caller's closed fd, with a script side that cannot be told (v1):
/// /dev/null stands in for it, and the call runs (man prefork-interp(1)).
#[test]
fn our_client_with_chiark_perl_module_closed_stdin_is_dev_null() {
    let h = our_client_chiark_perl();
    for _ in ["cold", "warm"] {
        let out = h
            .call(&["@fdlink:0", "@err:flush", "@_exit:0"])
            .closing(0)
            .run();
        assert_success(&out);
        assert_eq!(stdout_str(&out), "/dev/null\n");
    }
    h.finish();
}

/// chiark's module offers no extensions, so our client speaks pure v1 to
/// it: a signal sent to the client is not forwarded; the client dies of
/// it, and the executor gets SIGINT (the v1 fate of an orphaned call).
#[test]
fn our_client_with_chiark_perl_module_degrades_to_v1_signals() {
    let h = our_client_chiark_perl();
    let marker = h.path("got-sigint");
    let (client, _) = h.start_sleeper("executor", &[&format!("@onint:{}", marker.display())]);
    let limit = std::time::Duration::from_secs(10);
    // SAFETY: signalling our own test's client.
    unsafe { libc::kill(client.id() as i32, libc::SIGTERM) };
    let out = client.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGTERM));
    wait_until("the executor to get SIGINT", limit, || marker.exists()).unwrap();
    h.finish();
}

/// `--caller-dir` needs capability "context", which chiark's module does
/// not offer: a clear error, and the server made for it is gone again.
#[test]
fn caller_dir_with_chiark_perl_module_is_refused() {
    let h = our_client_chiark_perl();
    let out = h.call_with_options(&["--caller-dir"], &["@out:x"]).run();
    assert_eq!(out.status.code(), Some(127));
    let err = stderr_str(&out);
    assert!(err.contains("--caller-dir needs a script side"), "{err}");
    assert_eq!(stdout_str(&out), "");
    wait_until(
        "the server to go",
        std::time::Duration::from_secs(10),
        || h.processes().is_empty(),
    )
    .unwrap();
    h.finish();
}

/// `--list` shows a v1 server (chiark's module) with what can be known:
/// its pid and command, protocol v1, no counters nor idle time.
#[test]
fn list_shows_a_v1_server() {
    let h = our_client_chiark_perl();
    let out = h.call(&["@server", "@err:.", "@_exit:0"]).run();
    let server: u32 = stdout_str(&out).trim().parse().unwrap();
    let cols = h.listed(server);
    assert_eq!(cols[3..6], ["?", "?", "?"], "{cols:?}");
    assert_eq!(cols[7], "v1", "{cols:?}");
    // (That module renames its process "SCRIPT [server]".)
    assert!(
        cols[9..].join(" ").contains(h.script.to_str().unwrap()),
        "{cols:?}"
    );
    h.finish();
}

/// Our servers, started by chiark's client (which announces no extensions:
/// its setup environment has no pfi-caps), greet in pure v1, to the byte:
/// the magic and an empty xdata. Every script side.
#[test]
fn our_servers_greet_chiarks_client_in_v1() {
    for h in [
        chiark_client_our_perl(),
        chiark_client_our_python(),
        chiark_client_our_ruby(),
        chiark_client_our_rust(),
    ] {
        assert_success(&h.call(&["@out:x"]).run());
        let greeting = raw_greeting(&h.socket());
        assert!(
            greeting == b"PFI\n\x00\x00\x00\x00",
            "{:?}: {:?}",
            h.side,
            String::from_utf8_lossy(&greeting)
        );
        h.finish();
    }
}

/// chiark-utils documents the combined form as `[<option>,..],<interpreter>`:
/// any option may lead it, a long one too. Its client and ours both take
/// `--kill,-U,perl SCRIPT` (the server goes: the next call has another).
#[test]
fn combined_form_led_by_a_long_option_like_chiarks_client() {
    for h in [chiark_client_our_perl(), Harness::new(Side::Perl)] {
        let before = h.server_pid();
        let out = h.call_led_by("--kill", &[] as &[&str]).run();
        assert_success(&out);
        assert_ne!(
            h.server_pid(),
            before,
            "--kill,-U,...: the server is still there"
        );
        h.finish();
    }
}
