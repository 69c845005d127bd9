//! The wire as another implementation, or a hostile caller, would speak it:
//! the greeting's bytes, extended and v1 calls, other uids, bad requests,
//! a client that dies once it has its status.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;

use super::{LIMIT, Scenario, start_long_call};

/// The greeting, to the byte, from a server our client started, after
/// one call has come and gone: magic, xdata length (u32 big-endian),
/// then the offer, the server's world (the digest of its namespaces and
/// cgroups, which are the test's) and the counters (served: calls handed
/// over before this connection; idle: milliseconds since that call
/// ended, the one number not known in advance, bounded). Written out, not encoded
/// with the crate's encoder, which it pins too (the digest's formula
/// aside, which the codec's unit test pins on all sides' behalf).
scenario!(greeting_bytes_after_one_call, |side| {
    let h = Harness::new(side);
    let began = std::time::Instant::now();
    let (call, pid_file) = start_long_call(&h, "call");
    let executor: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_success(&call.wait_with_output().unwrap());
    // The monitor tells the server a call has ended before it tells the
    // client: the count is exact once the client is gone.
    assert!(
        reaped(executor),
        "the executor is reaped before its status is sent"
    );
    // The server's world is this test's (its namespaces and cgroups).
    let world = prefork_interp::protocol::world_digest(
        &prefork_interp::protocol::WORLD_NAMESPACES.map(|name| {
            std::fs::metadata(format!("/proc/self/ns/{name}"))
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        }),
        &std::fs::read("/proc/self/cgroup").unwrap(),
    );
    let got = raw_greeting(&h.socket());
    let idle_bound = began.elapsed().as_millis();
    // The idle line's number, as sent, if it is no more than the time
    // since the call began.
    let idle = got
        .strip_suffix(b"\n")
        .and_then(|g| g.rsplit(|&b| b == b'\n').next())
        .and_then(|line| line.strip_prefix(b"idle "))
        .and_then(|n| std::str::from_utf8(n).ok())
        .filter(|n| n.parse::<u128>().is_ok_and(|n| n <= idle_bound))
        .unwrap_or("(milliseconds, at most the time since the call began)");
    // Perl, Python and Ruby name their interpreter's start-up variables (a
    // list of each side's own), none of which this world sets; a Rust
    // program has none.
    let start = prefork_interp::protocol::decode_start_dependency(&got[8..]);
    let start_line = match (side, start) {
        (Side::Rust, None) => String::new(),
        (Side::Rust, Some(start)) => panic!("a start line from a Rust program: {start:?}"),
        (_, None) => panic!("no start line"),
        (_, Some(start)) => {
            let names: Vec<&str> = start
                .names
                .iter()
                .map(|n| std::str::from_utf8(n).unwrap())
                .collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(names, sorted, "sorted, unique");
            let own = match side {
                Side::Perl => "PERL5LIB",
                Side::Ruby => "RUBYOPT",
                _ => "PYTHONHASHSEED",
            };
            assert!(
                names.contains(&own) && names.contains(&"LC_ALL"),
                "{names:?}"
            );
            for (name, _) in h.base_env() {
                assert!(
                    !names.contains(&name.to_str().unwrap()),
                    "{name:?} in {names:?}"
                );
            }
            let unset = prefork_interp::protocol::env_digest(&start.names, |_| None);
            format!("start {unset} {}\n", names.join(" "))
        }
    };
    let xdata = [
        &b"pfi-caps 1\ncaps signals,context,tty,limits,closed,dispositions,watch,restore\n"[..],
        format!("world {world}\n").as_bytes(),
        start_line.as_bytes(),
        // (The call that started it had no terminal.)
        b"terminals 0\n",
        b"served 1\nrunning 0\n",
        format!("idle {idle}\n").as_bytes(),
    ]
    .concat();
    assert_eq!(xdata.len(), 185 + start_line.len() + idle.len());
    let expected = [&b"PFI\n"[..], &(xdata.len() as u32).to_be_bytes(), &xdata].concat();
    let expected = expected.as_slice();
    assert!(
        got == expected,
        "greeting\n got: {:?}\nwant: {:?}",
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
    h.finish();
});

/// The wire itself, as a fourth implementation would speak it: the server
/// (created by our client) offers `signals`; an extended call gets 'P'
/// with the executor's pid, then 'X' with its status; a v1 call on the
/// same server gets a bare status.
scenario!(wire_extended_and_v1_calls, |side| {
    use prefork_interp::protocol::{self, RequestKind};
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    let h = Harness::new(side);
    h.server_pid(); // creates the server
    let socket = h.socket();
    let null = std::fs::File::open("/dev/null").unwrap();
    let pid_file = h.path("executor.pid");
    let call = |extended: bool| {
        let conn = UnixStream::connect(&socket).unwrap();
        let xdata = protocol::io::read_greeting(&conn).unwrap();
        assert_eq!(protocol::decode_caps(&xdata), protocol::OUR_CAPS);
        let pid_arg = format!("@pid:{}", pid_file.display());
        let payload = request_payload(&h, &[pid_arg.as_bytes(), b"@exit:3"]);
        let kind = RequestKind {
            extended,
            ..RequestKind::default()
        };
        protocol::io::send_request(&conn, kind, [null.as_fd(); 3], &payload, None, None, None)
            .unwrap();
        conn
    };

    let mut conn = call(true);
    let protocol::Frame::ExecutorPid(pid) = protocol::io::read_frame(&conn).unwrap() else {
        panic!("the first frame is not 'P'");
    };
    assert_eq!(
        protocol::io::read_frame(&conn).unwrap(),
        protocol::Frame::Status(protocol::WaitStatus::exited(3)),
        "exit status 3"
    );
    let written: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_eq!(pid, written, "the 'P' frame names the executor");
    assert_eq!(
        conn.read(&mut [0u8; 1]).unwrap(),
        0,
        "'X' is the last frame"
    );

    std::fs::remove_file(&pid_file).unwrap();
    let mut conn = call(false);
    let mut status = [0u8; 4];
    conn.read_exact(&mut status).unwrap();
    assert_eq!(
        protocol::decode_status(status),
        protocol::WaitStatus::exited(3)
    );
    assert_eq!(
        conn.read(&mut status).unwrap(),
        0,
        "v1: the status and nothing else"
    );
    h.finish();
});

/// A request's payload as our client sends it: the world's environment,
/// then the script's arguments.
fn request_payload(h: &Harness, args: &[&[u8]]) -> Vec<u8> {
    let entries: Vec<Vec<u8>> = h
        .base_env()
        .iter()
        .map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes()].concat())
        .collect();
    prefork_interp::protocol::encode_request_payload(
        entries.iter().map(Vec::as_slice),
        args.iter().copied(),
    )
}

/// A connection from another uid that reaches the socket (its directories
/// opened up by hand) is refused before the greeting, and the server goes
/// on serving its own user. (Root only: it acts as a second user.)
scenario!(calls_from_another_uid_are_refused, |side| {
    let h = Harness::new(side);
    let server = h.server_pid();
    let socket = h.socket();
    let (uid, gid) = other_user();
    let opened = [h.dir().to_path_buf(), h.path("run"), h.base()];
    for dir in &opened {
        set_mode(dir, 0o711);
    }
    let socket_mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    set_mode(&socket, 0o777);
    let out = as_user(uid, gid, python())
        .args([
            "-c",
            "import socket, sys\n\
             s = socket.socket(socket.AF_UNIX)\n\
             s.settimeout(10)\n\
             s.connect(sys.argv[1])\n\
             print('connected, got %d bytes' % len(s.recv(100)))\n",
        ])
        .arg(&socket)
        .output()
        .unwrap();
    for dir in &opened {
        set_mode(dir, 0o700);
    }
    set_mode(&socket, socket_mode & 0o7777);
    assert_success(&out);
    assert_eq!(
        stdout_str(&out).trim(),
        "connected, got 0 bytes",
        "no greeting for another uid"
    );
    assert_eq!(h.server_pid(), server, "the same server serves its user");
    h.finish();
});

/// Hostile or broken requests: a bad request byte, a byte with no fd, an
/// oversized length, a truncated payload, a payload with no final NUL, a
/// caller that hangs up at once. Each call is dropped (no status, no
/// crash) and the same server goes on serving.
scenario!(bad_requests_are_dropped, |side| {
    use prefork_interp::protocol;
    use prefork_interp::protocol::io::send_fd;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    let h = Harness::new(side);
    let server = h.server_pid();
    let null = std::fs::File::open("/dev/null").unwrap();
    let with_fds = |conn: &UnixStream| {
        for _ in 0..3 {
            send_fd(conn, 0, &null).unwrap();
        }
    };
    type Send<'a> = Box<dyn Fn(&mut UnixStream) + 'a>;
    let cases: Vec<(&str, Send<'_>)> = vec![
        (
            "bad request byte",
            Box::new(|c| c.write_all(&[0x21]).unwrap()),
        ),
        (
            "a byte without its fd",
            Box::new(|c| c.write_all(&[0, 0, 0, 0]).unwrap()),
        ),
        (
            "oversized length",
            Box::new(|c| {
                c.write_all(&[0]).unwrap();
                with_fds(c);
                c.write_all(&(protocol::MAX_PAYLOAD_LEN + 1).to_be_bytes())
                    .unwrap();
            }),
        ),
        (
            "truncated payload",
            Box::new(|c| {
                c.write_all(&[0]).unwrap();
                with_fds(c);
                c.write_all(&10u32.to_be_bytes()).unwrap();
                c.write_all(b"A=1\0").unwrap();
                c.shutdown(std::net::Shutdown::Write).unwrap();
            }),
        ),
        (
            "payload without its final NUL",
            Box::new(|c| {
                c.write_all(&[0]).unwrap();
                with_fds(c);
                c.write_all(&3u32.to_be_bytes()).unwrap();
                c.write_all(b"abc").unwrap();
            }),
        ),
        (
            "hang-up before the request",
            Box::new(|c| c.shutdown(std::net::Shutdown::Write).unwrap()),
        ),
    ];
    for (name, send) in cases {
        let mut conn = UnixStream::connect(h.socket()).unwrap();
        conn.set_read_timeout(Some(LIMIT)).unwrap();
        protocol::io::read_greeting(&conn).unwrap();
        send(&mut conn);
        let mut rest = Vec::new();
        // Closed with our bytes still unread on its side: a reset.
        let got = conn.read_to_end(&mut rest);
        assert!(
            rest.is_empty()
                && match &got {
                    Ok(n) => *n == 0,
                    Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                },
            "{name}: expected the call dropped, got {got:?} {rest:?}"
        );
        assert_eq!(h.server_pid(), server, "{name}: the same server serves on");
    }
    h.finish();
});

/// Capability `restore`, after the status: a client sends its status's
/// 'R' 0 once it has put its terminal back, and until then the monitor
/// keeps what to put back. Sent is not received: our client killed with
/// SIGKILL as its script waits closes its pseudo-terminal (fd 5, whose
/// hang-up ends the script) before its call socket (fd 9), and the status
/// went into a socket still open. Spoken here as such a client: a call
/// on a pseudo-terminal, an 'R' for another terminal left raw, the
/// status read; then either the socket closed without 'R' 0 (the monitor
/// puts the settings back), or 'R' 0 first (the terminal, still raw, is
/// the client's: the monitor lets go of it and leaves it so).
scenario!(
    wire_restore_kept_until_the_client_says_it_put_back,
    |side| {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        use prefork_interp::protocol::{self, Frame, RequestKind};
        use std::os::fd::{AsFd, AsRawFd};
        use std::os::unix::net::UnixStream;

        let h = Harness::new(side);
        h.server_pid(); // creates the server
        let settings = |fd: &std::os::fd::OwnedFd| {
            let t = libc::termios::from(tcgetattr(fd).unwrap());
            let speed = t.c_cflag & (libc::CBAUD | libc::CBAUDEX);
            protocol::TerminalSettings {
                iflag: t.c_iflag,
                oflag: t.c_oflag,
                cflag: t.c_cflag,
                lflag: t.c_lflag,
                ispeed: speed,
                ospeed: speed,
                cc: t.c_cc.to_vec(),
            }
        };
        // Which processes other than this one hold `path` open.
        let holders = |path: &std::path::Path| -> Vec<String> {
            let me = std::process::id().to_string();
            let mut found = Vec::new();
            for proc in std::fs::read_dir("/proc").unwrap().flatten() {
                let pid = proc.file_name().to_string_lossy().into_owned();
                if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
                    continue;
                }
                let Ok(fds) = std::fs::read_dir(proc.path().join("fd")) else {
                    continue;
                };
                if fds
                    .flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|to| to == path))
                {
                    found.push(pid);
                }
            }
            found
        };
        for says_put_back in [false, true] {
            let caller = nix::pty::openpty(None, None).unwrap();
            let caller_path =
                std::fs::read_link(format!("/proc/self/fd/{}", caller.slave.as_raw_fd())).unwrap();
            let found = settings(&caller.slave);
            let mut raw = tcgetattr(&caller.slave).unwrap();
            cfmakeraw(&mut raw);
            tcsetattr(&caller.slave, SetArg::TCSANOW, &raw).unwrap();
            let left = settings(&caller.slave);
            assert_ne!(found, left);

            let call_pty = nix::pty::openpty(None, None).unwrap();
            let conn = UnixStream::connect(h.socket()).unwrap();
            let xdata = protocol::io::read_greeting(&conn).unwrap();
            assert!(protocol::decode_caps(&xdata).iter().any(|c| c == "restore"));
            let payload = request_payload(&h, &[b"@out:x"]);
            let kind = RequestKind {
                extended: true,
                pty: [true; 3],
                ..RequestKind::default()
            };
            let slave = call_pty.slave.as_fd();
            protocol::io::send_request(&conn, kind, [slave; 3], &payload, None, None, None)
                .unwrap();
            drop(call_pty.slave);
            let restore = protocol::encode_restore(&found, &left);
            protocol::io::send_all(&conn, &Frame::Restore(restore.len() as u32).encode()).unwrap();
            protocol::io::send_all(&conn, &restore).unwrap();
            protocol::io::send_fd(&conn, protocol::FD_MESSAGE_BYTE, &caller.slave).unwrap();
            let status = loop {
                match protocol::io::read_frame(&conn).unwrap() {
                    Frame::Status(status) => break status,
                    _ => continue,
                }
            };
            assert_eq!(status, protocol::WaitStatus::exited(0));
            assert_eq!(
                settings(&caller.slave),
                left,
                "put back before 'R' 0 or EOF"
            );
            if says_put_back {
                protocol::io::send_all(&conn, &Frame::Restore(0).encode()).unwrap();
            }
            drop(conn);
            let let_go = wait_until("the monitor to let go of the terminal", LIMIT, || {
                holders(&caller_path).is_empty()
            });
            assert!(let_go.is_ok(), "held by {:?}", holders(&caller_path));
            let want = if says_put_back { &left } else { &found };
            assert_eq!(
                &settings(&caller.slave),
                want,
                "the caller's terminal after the client's end ('R' 0 sent: {says_put_back})"
            );
        }
        h.finish();
    }
);
