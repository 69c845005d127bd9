//! The caller's terminal: a call on a pty looks like a direct run (the
//! screen, /dev/tty, prompts, pagers, curses, ^C, the window's size), and
//! the terminal's settings are put back. The helpers here serve
//! job_control.rs too.

use std::os::unix::process::ExitStatusExt;

use crate::common::*;

use super::{LIMIT, Scenario, pid_in};

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

// The caller's terminal (issue 15). Each scenario drives an interactive
// bash on a pty that is its controlling terminal ([`Terminal`]), and does
// the same once with the agent run directly (`X=$D`) and once through us
// (`X=$S`): what the terminal shows must be the same, and the caller's
// terminal settings (`stty -a`) the same after as before.

/// How an interaction ran the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Run {
    Direct,
    Served,
}

/// A world and a shell on its terminal, the server started (so that
/// calls below are warm ones), and the terminal's settings as the shell
/// has them.
pub(super) fn terminal_world(side: Side) -> (Harness, Terminal, String) {
    let h = Harness::new(side);
    let mut t = Terminal::shell(&h);
    assert_eq!(t.output("$S @out:warm"), "warm\r\n");
    let settings = t.stty();
    (h, t, settings)
}

/// Checks the terminal's settings are what they were, ends the shell,
/// and tears the world down.
pub(super) fn terminal_done(h: Harness, mut t: Terminal, settings: &str) {
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
pub(super) fn direct_and_served<T>(
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
pub(super) fn assert_same_screen<T>(runs: &[(String, T); 2]) {
    assert_eq!(
        runs[1].0, runs[0].0,
        "what the terminal showed: through us (left), directly (right)"
    );
}

/// The pid a call wrote with `@pid:NAME`, once the script is asleep in
/// a blocking read or a sleep: a signal that comes then finds it in the
/// same place in every run (Python's traceback of a KeyboardInterrupt
/// names it).
pub(super) fn script_waiting(h: &Harness, name: &str) -> u32 {
    let pid = pid_in(h, name);
    let waiting = || {
        let asleep = proc_state(pid).is_some_and(|(state, _)| state == 'S');
        // The system call it is in (readable by root or its parent;
        // anyone else takes asleep for waiting).
        let call = std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<libc::c_long>().ok());
        // Python before 3.11 sleeps in select() (no fds, a timeout),
        // which glibc makes x86_64's select or pselect6; Ruby's reads
        // wait in ppoll (on its own wake-up fd too), and its sleep there
        // (3.1) or on a futex (3.3). Only for Ruby: a Perl or Python
        // script in ppoll or on a futex is not yet where the scenarios
        // wait for it.
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
                    || h.side == Side::Ruby && [libc::SYS_ppoll, libc::SYS_futex].contains(&call)
            })
    };
    wait_until("the script to wait (a read, a sleep)", LIMIT, waiting).unwrap();
    pid
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

/// `line`, a pipeline whose `$X @ask` asks at the terminal, answered
/// with `answer`: what the terminal showed after the prompt. (The answer
/// goes to the terminal, or a file, not through a pipe to it: the echo
/// of what is typed comes by way of the call's terminal, and a pipe's
/// reader would race it.)
fn asked_in_a_pipeline(t: &mut Terminal, run: Run, line: &str, answer: &str) -> String {
    t.start(line);
    t.expect("Say: ");
    if run == Run::Served {
        // The call takes the caller's terminal (raw) once the script
        // reads its own; a line typed before that would be echoed by
        // both terminals. (A person is slower than this.)
        wait_until("the call to take the terminal", LIMIT, || !t.echoes()).unwrap();
    }
    t.send(format!("{answer}\r").as_bytes());
    t.until("PROMPT> ")
}

/// In a pipeline (stdout, or stdin, a pipe), the script is still in its
/// terminal's foreground, /dev/tty opens, and a line typed at a prompt
/// written to /dev/tty is echoed once and comes back, as in a direct run.
scenario!(terminal_in_a_pipeline, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let runs = direct_and_served(&mut t, |t, run| {
        let piped_out = t.output("$X @devtty @tty | cat");
        let piped_in = t.output("echo x | $X @devtty @tty");
        let asked = asked_in_a_pipeline(t, run, "echo x | $X @ask", "in a pipeline");
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

/// Keys typed before the call takes its terminal (while the command
/// before it runs, or the client starts) are echoed once, by the
/// caller's terminal, as in a direct run: a whole line, a line's start
/// with a key erased, and ^D at a line's start, which ends the script's
/// input as it would a direct run's (it is neither echoed nor read as a
/// byte).
scenario!(terminal_keys_typed_ahead_echoed_once, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let runs = direct_and_served(&mut t, |t, _| {
        let mut seen = Vec::new();
        // Three times each: the echo put back too soon (before the line
        // discipline's worker took the keys in) shows only when that
        // worker is late, as it is most times, not every time.
        let once = [
            ("sleep 0.3; $X @ask @ask", "ahead\rpx\x7f", "art\r"),
            ("sleep 0.3; $X @cat", "line\r\x04", ""),
        ];
        for (line, ahead, after) in [once; 3].concat() {
            t.start(line);
            let from = t.position();
            // Typed once the shell has given the terminal to `sleep`
            // (cooked, echoing), so that the caller's terminal takes
            // the keys in as it would for a direct run's.
            wait_until("sleep to have the terminal", LIMIT, || t.echoes()).unwrap();
            t.send(ahead.as_bytes());
            if !after.is_empty() {
                // Typed while the script waits for the rest of a line.
                t.expect("said ahead\r\nSay: ");
                t.send(after.as_bytes());
            }
            t.expect("PROMPT> ");
            seen.push((t.since(from), t.status()));
        }
        seen
    });
    assert_same_screen(&runs);
    let once = [
        (
            "ahead\r\npx\x08 \x08Say: said ahead\r\nSay: art\r\nsaid part\r\nPROMPT> ".to_string(),
            0,
        ),
        ("line\r\nline\r\nPROMPT> ".to_string(), 0),
    ];
    assert_eq!(runs[0].1, [once.clone(), once.clone(), once].concat());
    terminal_done(h, t, &settings);
});

/// What a session's keeper's fds are, sorted: "socket", "terminal" (a
/// pty), or where they lead.
pub(super) fn keeper_fds(keeper: u32) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{keeper}/fd"))
        .unwrap()
        .map(|fd| {
            let target = std::fs::read_link(fd.unwrap().path()).unwrap();
            let target = target.to_string_lossy();
            match target.split_once(':') {
                Some(("socket", _)) => "socket".to_string(),
                _ if target.starts_with("/dev/pts/") => "terminal".to_string(),
                _ => target.into_owned(),
            }
        })
        .collect();
    fds.sort();
    fds
}

/// On a call with a pseudo-terminal of its own, the session's keeper
/// (the script's parent, its session's leader) holds nothing of the call's
/// but the monitor's socket, the terminal, its signalfd and the
/// executor's stderr. On the Perl, Python and Ruby sides it is the client's
/// program, exec'd by the executor as `PROGRAM --session-keeper PID`
/// (PREFORK_INTERP's `pfi-keeper`): no copy of the interpreter stays
/// beside the script to share its pages. (The Rust side's executor keeps
/// the session itself: src/script/keeper.rs says why.)
scenario!(terminal_keeper_holds_no_copy_of_the_script, |side| {
    let (h, mut t, settings) = terminal_world(side);
    t.start("$S @pid:exe.pid @cat");
    let script = pid_in(&h, "exe.pid");
    let (_, keeper) = proc_state(script).unwrap();
    let exe = || std::fs::read_link(format!("/proc/{keeper}/exe")).unwrap();
    let command_line = || std::fs::read(format!("/proc/{keeper}/cmdline")).unwrap();
    if side == Side::Rust {
        assert_eq!(
            exe(),
            std::fs::read_link(format!("/proc/{script}/exe")).unwrap()
        );
    } else {
        // (It execs as the script starts, beside it.)
        let exec_done = wait_until("the keeper to exec", LIMIT, || exe() == client());
        assert!(exec_done.is_ok(), "the keeper runs {}", exe().display());
        assert_eq!(
            String::from_utf8_lossy(&command_line()),
            format!("{}\0--session-keeper\0{script}\0", client().display())
        );
    }
    // Once it has settled: a keeper program just exec'd has yet to close
    // what it does not keep and to make its signalfd.
    let kept = ["/dev/null", "anon_inode:[signalfd]", "socket", "terminal"];
    let settled = wait_until("the keeper's fds to settle", LIMIT, || {
        keeper_fds(keeper) == kept
    });
    assert!(settled.is_ok(), "the keeper holds {:?}", keeper_fds(keeper));
    t.send(b"\x04");
    t.expect("PROMPT> ");
    terminal_done(h, t, &settings);
});

/// Inside a command substitution an interactive shell ignores SIGTSTP,
/// SIGTTIN and SIGTTOU, and the script is in its terminal's foreground
/// (the shell's group): a direct run sees those ignored and reads its
/// terminal. So does a call, though its stdout is a pipe; and a server
/// first started there keeps none of that for the calls after it: a
/// pipeline's script (here one with the same terminals, stdout a pipe,
/// so served by that server), which starts in its terminal's background,
/// stops and comes forward when it reads its terminal, where an ignored
/// SIGTTIN would give it EIO.
scenario!(terminal_in_a_command_substitution, |side| {
    let h = Harness::new(side);
    let mut t = Terminal::shell(&h);
    // The server starts inside the substitution.
    assert_eq!(t.output("echo \"[$($S @out:cold)]\""), "[cold]\r\n");
    let settings = t.stty();
    let said = h.path("said.txt");
    let runs = direct_and_served(&mut t, |t, run| {
        let sigs = t.output("echo \"$($X @sigs)\"");
        t.start("v=$($X @ask); echo \"[$v]\"");
        t.expect("Say: ");
        t.send(b"substituted\r");
        let asked = t.until("PROMPT> ");
        let piped = asked_in_a_pipeline(t, run, "$X @ask | cat > said.txt", "piped");
        [sigs, asked, piped, std::fs::read_to_string(&said).unwrap()]
    });
    assert_same_screen(&runs);
    let [sigs, asked, piped, said] = &runs[0].1;
    let ignored = sigs
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:\t"))
        .unwrap();
    let ignored = u64::from_str_radix(ignored.trim(), 16).unwrap();
    for sig in [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU] {
        assert_ne!(
            ignored & 1 << (sig - 1),
            0,
            "{sig} ignored directly: {sigs}"
        );
    }
    assert_eq!(asked, "substituted\r\n[said substituted]\r\n");
    assert_eq!(piped, "piped\r\n");
    assert_eq!(said, "said piped\n");
    assert_eq!(runs[1].1[3], "said piped\n");
    terminal_done(h, t, &settings);
});

/// What initialisation sees of stdio is a direct run's: a library that
/// decides as it is imported whether it has a terminal (for a prompt,
/// for colours) decides as it would directly. A caller on a terminal, in
/// a pipeline, in `$(...)`, with stdin or stderr elsewhere, or with no
/// terminal at all, reaches a server initialised with terminals where
/// it has them, cold and then warm.
scenario!(initialisation_sees_the_callers_terminals, |side| {
    let h = Harness::new(side);
    let mut t = Terminal::shell(&h);
    let settings = t.stty();
    let runs = direct_and_served(&mut t, |t, _| {
        let mut seen = Vec::new();
        for _cold_then_warm in 0..2 {
            for line in [
                "$X @inittty @tty",
                "$X @inittty @tty | cat",
                "echo \"$($X @inittty @tty)\"",
                "$X @inittty @tty < /dev/null",
                "$X @inittty @tty 2>/dev/null",
            ] {
                seen.push(t.output(line));
            }
        }
        seen
    });
    assert_same_screen(&runs);
    let expected = [
        "1 1 1\r\n1 1 1\r\n",
        "1 0 1\r\n1 0 1\r\n",
        "1 0 1\r\n1 0 1\r\n",
        "0 1 1\r\n0 1 1\r\n",
        "1 1 0\r\n1 1 0\r\n",
    ];
    assert_eq!(runs[1].1, [expected, expected].concat());
    // From no terminal at all: none, as directly.
    let direct = h.direct(&["@inittty"]).run();
    let served = h.call(&["@inittty"]).run();
    assert_eq!(stdout_str(&direct), "0 0 0\n");
    assert_eq!(stdout_str(&served), stdout_str(&direct));
    terminal_done(h, t, &settings);
});

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
