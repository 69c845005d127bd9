//! Job control on the caller's terminal: background reads stop, ^Z stops
//! the call and `fg` resumes it, and the terminal is put back when the
//! client is killed or stopped, with or without the shell's help.

use std::time::Duration;

use crate::common::*;

use super::terminal::{
    Run, assert_same_screen, direct_and_served, keeper_fds, script_waiting, terminal_done,
    terminal_world,
};
use super::{LIMIT, Scenario, pid_in};

/// Processes whose process group is `group`.
fn group_members(group: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
                    .split_whitespace()
                    .collect();
                fields[2] == group.to_string() && fields[0] != "Z"
            })
        })
        .collect()
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a test process.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// A call whose script reads its terminal from the background stops
/// (SIGTTIN), as a direct run's job does: started there (`&`), or sent
/// there (^Z, then `bg`) while it slept; `fg` gives it the terminal, and
/// it reads what is typed.
scenario!(terminal_background_read_stops, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let runs = direct_and_served(&mut t, |t, run| {
        let mut got = Vec::new();
        // Started in the background.
        t.run("$X @cat &");
        got.push(read_once_foreground(t, run, "$X @cat"));
        // Sent there while it sleeps, before it reads.
        let line = "$X @out:asleep @sleep:1 @cat";
        t.start(line);
        t.expect("asleep\r\n");
        t.send(b"\x1a");
        t.expect("Stopped");
        t.expect("PROMPT> ");
        t.run("bg");
        got.push(read_once_foreground(t, run, line));
        got
    });
    for (screen, got) in &runs {
        assert_eq!(*got, vec![("typed\r\n".to_string(), 0); 2], "{screen}");
    }
    terminal_done(h, t, &settings);
});

/// For [`terminal_background_read_stops`]: waits until the job `line`
/// stops for its terminal, brings it to the foreground, types a line and
/// ^D; returns what it copied and its status.
fn read_once_foreground(t: &mut Terminal, run: Run, line: &str) -> (String, i32) {
    // Asked until it shows: the job stops once it reads.
    let mut listed = String::new();
    let stopped = wait_until("the job to stop for its terminal", LIMIT, || {
        listed = t.output("jobs -l");
        listed.contains("Stopped (tty input)")
    });
    assert!(stopped.is_ok(), "{line}: {listed:?}");
    t.start("fg");
    t.expect(&format!("{line}\r\n"));
    if run == Run::Served {
        // Resumed in the foreground, the call takes the terminal (raw);
        // a line typed before that would be echoed by both terminals.
        wait_until("the call to take the terminal", LIMIT, || !t.echoes()).unwrap();
    }
    t.send(b"typed\r");
    t.expect("typed\r\n");
    t.send(b"\x04");
    let copied = t.until("PROMPT> ");
    (copied, t.status())
}

/// Whether process `pid` is stopped.
fn stopped(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(state, _)| state == 'T')
}

/// ^Z to the shell's foreground job, whose script wrote its pid to
/// `pid_file` (in the world's directory): returns that pid once the shell
/// says the job stopped, shows its prompt, and the job's processes (the
/// client and the script, or the script) are stopped.
fn stop_the_job(h: &Harness, t: &mut Terminal, pid_file: &str) -> u32 {
    let job = t.job();
    let executor = pid_in(h, pid_file);
    t.send(b"\x1a");
    t.expect("Stopped");
    t.expect("PROMPT> ");
    wait_until("the job's processes to stop", LIMIT, || {
        stopped(job) && stopped(executor)
    })
    .unwrap();
    executor
}

/// ^Z from an interactive bash stops the script (and the client: the job
/// is stopped as a whole), the shell says so; `fg` resumes it and its
/// output goes on; `bg` lets it run on in the background, where it
/// finishes, and `wait` gives its status.
scenario!(terminal_job_control, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let pid_file = h.path("exe.pid");
    // Starts the script, waits for its first line, and stops it with ^Z;
    // returns once the shell shows its prompt and the job's processes
    // (the client and the script, or the script) are stopped.
    let start_and_stop = |t: &mut Terminal, exit: u8| {
        let _ = std::fs::remove_file(&pid_file);
        t.start(&format!(
            "$X @pid:exe.pid @out:BEFORE @sleep:2 @out:AFTER @exit:{exit}"
        ));
        t.expect("BEFORE\r\n");
        stop_the_job(&h, t, "exe.pid");
    };
    let runs = direct_and_served(&mut t, |t, _| {
        start_and_stop(t, 0);
        t.start("fg");
        t.expect("AFTER\r\n");
        t.expect("PROMPT> ");
        let resumed = t.status();
        start_and_stop(t, 7);
        t.start("bg; wait %1; echo status=$?");
        t.expect("AFTER\r");
        t.expect("status=");
        let waited = t.until("\r\n");
        t.expect("PROMPT> ");
        (resumed, waited)
    });
    // In the background the client leaves its terminal's settings alone
    // (as it must), and undoes its own terminal's `\r\n` so that the
    // caller's makes it once.
    assert_same_screen(&runs);
    let [(_, direct_got), (_, served_got)] = runs;
    assert_eq!([direct_got, served_got], [(0, "7".into()), (0, "7".into())]);
    terminal_done(h, t, &settings);
});

/// A server whose keeper program has gone from its path (the client that
/// started it was removed or replaced since) keeps its calls' sessions
/// in the executor instead (the exec fails): the keeper is a copy of the
/// script, and ^Z, `fg`, the terminal's keys and the SIGINT to what the
/// script leaves behind work as ever.
scenario!(terminal_keeper_program_gone, |side| {
    let h = Harness::new(side);
    let old_client = h.path("old-client");
    std::fs::copy(client(), &old_client).unwrap();
    let script = std::fs::read_to_string(&h.script).unwrap();
    let options = script
        .lines()
        .next()
        .and_then(|line| line.split_once(' '))
        .map_or("", |(_, options)| options)
        .to_owned();
    // (A short command line: readline scrolls a longer one.)
    let start_old = h.path("start-old");
    std::fs::write(
        &start_old,
        format!(
            "#!/bin/sh\nexec {} {options} \"$@\"\n",
            old_client.display()
        ),
    )
    .unwrap();
    set_mode(&start_old, 0o755);
    let mut t = Terminal::shell(&h);
    assert_eq!(t.output("./start-old $S @out:cold"), "cold\r\n");
    std::fs::remove_file(&old_client).unwrap();
    let settings = t.stty();
    t.start("$S @pid:exe.pid @out:BEFORE @cat");
    t.expect("BEFORE\r\n");
    let script = stop_the_job(&h, &mut t, "exe.pid");
    let (_, keeper) = proc_state(script).unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{keeper}/exe")).unwrap(),
        std::fs::read_link(format!("/proc/{script}/exe")).unwrap(),
        "the keeper is a copy of the script"
    );
    // Its copy of the terminal goes with the script's end, before 'x'
    // (the client ends at the last one's closing).
    let fds = keeper_fds(keeper);
    assert_eq!(
        fds.iter().filter(|fd| *fd == "terminal").count(),
        1,
        "{fds:?}"
    );
    t.start("fg");
    wait_until("the call to take the terminal", LIMIT, || !t.echoes()).unwrap();
    t.send(b"typed\r");
    t.expect("typed\r\n");
    t.send(b"\x04");
    assert_eq!(t.until("PROMPT> "), "typed\r\n");
    assert_eq!(t.status(), 0);
    // What the script leaves in its group gets SIGINT from this keeper
    // too (a child that the terminal's hang-up would not end).
    assert_eq!(
        t.output("$S @spawn:child.pid @out:done @exit:5"),
        "done\r\n"
    );
    assert_eq!(t.status(), 5);
    let child = pid_in(&h, "child.pid");
    wait_until("the child left behind to end", LIMIT, || !alive(child)).unwrap();
    terminal_done(h, t, &settings);
});

/// ^Z at an interactive bash stops a job whose stdin, stdout and stderr
/// are all elsewhere (so no pseudo-terminal: the call's signals are
/// passed on as they come): the script and the client stop, the shell
/// says so, `fg` and `bg` resume it, its output goes on, and `wait` gives
/// its status, as for a direct run.
scenario!(terminal_job_control_with_stdio_elsewhere, |side| {
    let (h, mut t, settings) = terminal_world(side);
    let pid_file = h.path("p");
    let log = h.path("log");
    let logged = |text: &str| std::fs::read_to_string(&log).is_ok_and(|said| said.contains(text));
    let start_and_stop = |t: &mut Terminal, run: Run, exit: u8| {
        let _ = std::fs::remove_file(&pid_file);
        t.start(&format!(
            // (Short: readline scrolls a line longer than the screen.
            // Stderr: a file as stdout would be block-buffered.)
            "$X @pid:p @err:BEFORE @sleep:1 @err:AFTER @exit:{exit} <&- >log 2>&1"
        ));
        wait_until("the script's first line", LIMIT, || logged("BEFORE\n")).unwrap();
        let executor = stop_the_job(&h, t, "p");
        // Stopped, it stays so: its sleep's end does not come.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            stopped(executor) && !logged("AFTER"),
            "{run:?}: a stopped script ran on: {:?}",
            std::fs::read_to_string(&log)
        );
    };
    let runs = direct_and_served(&mut t, |t, run| {
        start_and_stop(t, run, 0);
        t.run("fg");
        let resumed = (t.status(), std::fs::read_to_string(&log).unwrap());
        start_and_stop(t, run, 7);
        t.start("bg; wait %1; echo status=$?");
        t.expect("status=");
        let waited = t.until("\r\n");
        t.expect("PROMPT> ");
        (resumed, waited, std::fs::read_to_string(&log).unwrap())
    });
    assert_same_screen(&runs);
    for (screen, got) in &runs {
        let expected = (
            (0, "BEFORE\nAFTER\n".to_string()),
            "7".to_string(),
            "BEFORE\nAFTER\n".to_string(),
        );
        assert_eq!(*got, expected, "{screen}");
    }
    terminal_done(h, t, &settings);
});

/// The client killed (SIGKILL, SIGTERM, SIGHUP) while the script waits at
/// a password prompt with echo off: the shell's terminal is as it was
/// before the call (`stty -a`), and the script's process group goes (a
/// direct run's dies of the signal; ours gets SIGHUP from its terminal's
/// end, or SIGINT from its monitor, or the signal passed on).
scenario!(terminal_client_killed_mid_prompt, |side| {
    let (h, mut t, settings) = terminal_world(side);
    for (name, sig) in [
        ("KILL", libc::SIGKILL),
        ("TERM", libc::SIGTERM),
        ("HUP", libc::SIGHUP),
    ] {
        let runs = direct_and_served(&mut t, |t, run| {
            let _ = std::fs::remove_file(h.path("exe.pid"));
            t.start("$X @pid:exe.pid @secret");
            t.expect("Password: ");
            let script = script_waiting(&h, "exe.pid");
            // The shell's job: the script run directly, or our client.
            let job = t.job();
            assert_eq!(job == script, run == Run::Direct, "{run:?}: the job {job}");
            signal(job, sig);
            let killed = std::time::Instant::now();
            wait_until("the script's process group to go", LIMIT, || {
                group_members(script).is_empty()
            })
            .unwrap();
            // For the record (shown with --no-capture).
            eprintln!(
                "{side:?}: {run:?}, SIG{name}: the script's group gone after {:.1} ms",
                killed.elapsed().as_secs_f64() * 1000.0
            );
            t.expect("PROMPT> ");
            let status = t.status();
            assert_eq!(t.stty(), settings, "{name}: the terminal's settings");
            status
        });
        assert_same_screen(&runs);
        assert_eq!(runs.each_ref().map(|r| r.1), [128 + sig; 2], "{name}");
    }
    terminal_done(h, t, &settings);
});

/// Our client killed outright (SIGKILL, which it cannot catch) while the
/// script reads a password with echo off, under `sh -c`, where no shell
/// puts the terminal back: the terminal's settings are soon what they
/// were before the call (the monitor put back what the client had saved:
/// capability `restore`), and `stty -a` shows them. A direct run killed
/// so would leave echo off; a client that could not restore left the
/// terminal raw. (A command that `sh -c` runs at once after the client
/// may see the terminal before the monitor has put it back: the monitor
/// must first be scheduled. Measured here under load: 1 round in 36.)
scenario!(terminal_restored_after_the_client_is_sigkilled, |side| {
    let h = Harness::new(side);
    let mut t = Terminal::dash(&h);
    assert_eq!(t.output("$S @out:warm"), "warm\r\n");
    let settings = t.stty();
    let modes = t.modes();
    let pid_file = h.path("exe.pid");
    for round in 0..3 {
        let _ = std::fs::remove_file(&pid_file);
        t.start("sh -c \"$S @pid:exe.pid @secret; echo sh-went-on\"");
        t.expect("Password: ");
        let script = script_waiting(&h, "exe.pid");
        // `sh -c` forks the client (a command follows it), and waits.
        let sh = t.job();
        let children =
            std::fs::read_to_string(format!("/proc/{sh}/task/{sh}/children")).unwrap_or_default();
        let client: u32 = children
            .split_whitespace()
            .next()
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("no client under sh {sh}: {children:?}"));
        assert_ne!(client, script, "the client, not the script");
        signal(client, libc::SIGKILL);
        t.expect("sh-went-on");
        t.expect("PROMPT> ");
        let restored = wait_until("the terminal's settings put back", LIMIT, || {
            t.modes() == modes
        });
        assert!(
            restored.is_ok(),
            "round {round}: after the client's SIGKILL: {}\nbefore: {modes}",
            t.modes()
        );
        assert_eq!(t.stty(), settings, "round {round}: stty -a");
        wait_until("the script's process group to go", LIMIT, || {
            group_members(script).is_empty()
        })
        .unwrap();
    }
    t.exit();
    h.finish();
});

/// Where no shell puts the terminal back (dash, with job control but
/// without bash's restoring), the settings after a call are still what
/// they were, as after a direct run: after calls that end normally, with
/// a status, by a signal of their own, by ^C; while a call stopped by ^Z
/// waits, and after `fg` has let it finish. And after our client itself
/// was killed (TERM, HUP) while the script read a password with echo off
/// (a direct run killed so would leave echo off; ours puts back what it
/// took, and the script's echo-off was on its own pseudo-terminal).
scenario!(terminal_restored_without_the_shells_help, |side| {
    let h = Harness::new(side);
    let mut t = Terminal::dash(&h);
    assert_eq!(t.output("$S @out:warm"), "warm\r\n");
    let settings = t.stty();
    let modes = t.modes();
    // After a call: its status, and the terminal as it was. The modes
    // first: a terminal left raw would not echo `echo $?`, nor `stty -a`.
    let ended = |t: &mut Terminal, after: &str| {
        assert_eq!(t.modes(), modes, "the terminal's modes {after}");
        let status = t.status();
        assert_eq!(t.stty(), settings, "the terminal's settings {after}");
        status
    };
    let pid_file = h.path("exe.pid");
    let runs = direct_and_served(&mut t, |t, _| {
        let mut statuses = Vec::new();
        for call in ["@out:x", "@exit:3", "@kill:TERM", "@kill:INT", "@kill:HUP"] {
            t.run(&format!("$X {call}"));
            statuses.push(ended(t, &format!("after $X {call}")));
        }
        // ^C while it sleeps.
        let _ = std::fs::remove_file(&pid_file);
        t.start("$X @pid:exe.pid @sleep:30");
        let script = script_waiting(&h, "exe.pid");
        t.send(b"\x03");
        t.expect("PROMPT> ");
        statuses.push(ended(t, "after ^C"));
        wait_until("the script to be gone", LIMIT, || !alive(script)).unwrap();
        // ^Z, the settings while it is stopped, then fg.
        let _ = std::fs::remove_file(&pid_file);
        t.start("$X @pid:exe.pid @out:BEFORE @sleep:1 @out:AFTER");
        t.expect("BEFORE\r\n");
        stop_the_job(&h, t, "exe.pid");
        assert_eq!(ended(t, "while stopped by ^Z"), 128 + libc::SIGTSTP);
        t.start("fg");
        t.expect("AFTER\r\n");
        t.expect("PROMPT> ");
        statuses.push(ended(t, "after fg"));
        statuses
    });
    let [int, hup, term] = [libc::SIGINT, libc::SIGHUP, libc::SIGTERM].map(|sig| 128 + sig);
    for (_, statuses) in &runs {
        assert_eq!(*statuses, [0, 3, term, int, hup, int, 0], "the statuses");
    }
    t.run("X=$S");
    for (name, sig) in [("TERM", libc::SIGTERM), ("HUP", libc::SIGHUP)] {
        let _ = std::fs::remove_file(&pid_file);
        t.start("$X @pid:exe.pid @secret");
        t.expect("Password: ");
        let script = script_waiting(&h, "exe.pid");
        signal(t.job(), sig);
        wait_until("the script's process group to go", LIMIT, || {
            group_members(script).is_empty()
        })
        .unwrap();
        t.expect("PROMPT> ");
        let status = ended(&mut t, &format!("after the client's SIG{name} mid-prompt"));
        assert_eq!(status, 128 + sig, "{name}");
    }
    t.exit();
    h.finish();
});
