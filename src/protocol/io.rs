//! Blocking socket I/O over the [`codec`]: whole messages in,
//! whole messages out. The client, every role of the Rust script side and
//! the tests speak the wire through these functions and no other way.
//!
//! Sends never raise SIGPIPE (`MSG_NOSIGNAL`): a peer that has gone is an
//! error value, which [`hung_up`] recognises. Every call retries on EINTR.
//! Received fds are close-on-exec.

use std::io::{self, IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, send, sendmsg};

use super::codec::{self, ProtocolError, RequestKind};

impl From<ProtocolError> for io::Error {
    /// A malformed message is `InvalidData`, carrying what was wrong.
    fn from(e: ProtocolError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Did the peer hang up (EOF, reset, broken pipe)? Then it was killed or
/// lost interest: worth an info line, not an error.
pub fn hung_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
    )
}

/// Writes all of `buf` to a socket.
pub fn send_all(sock: impl AsFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match send(sock.as_fd().as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Sends one byte carrying one fd (SCM_RIGHTS).
pub fn send_fd(sock: impl AsFd, byte: u8, fd: impl AsFd) -> io::Result<()> {
    let iov = [IoSlice::new(std::slice::from_ref(&byte))];
    let fds = [fd.as_fd().as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    loop {
        match sendmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &iov,
            &cmsg,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(io::ErrorKind::WriteZero.into()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one byte that must carry exactly one fd.
pub fn recv_fd(sock: impl AsFd) -> io::Result<(u8, OwnedFd)> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 3]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => break m,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: the kernel installed these fds for us just now.
            fds.extend(
                received
                    .into_iter()
                    .map(|f| unsafe { OwnedFd::from_raw_fd(f) }),
            );
        }
    }
    let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
    if msg.bytes == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(bad("too many file descriptors in one message".into()));
    }
    match <[OwnedFd; 1]>::try_from(fds) {
        Ok([fd]) => Ok((byte[0], fd)),
        Err(fds) => Err(bad(format!(
            "expected one file descriptor, got {}",
            fds.len()
        ))),
    }
}

/// Reads a whole greeting and returns its xdata. A malformed header is an
/// `InvalidData` error carrying the [`ProtocolError`].
pub fn read_greeting(mut conn: impl Read) -> io::Result<Vec<u8>> {
    let mut header = [0u8; codec::GREETING_HEADER_LEN];
    conn.read_exact(&mut header)?;
    let len = codec::decode_greeting_header(&header)?;
    let mut xdata = vec![0u8; len as usize];
    conn.read_exact(&mut xdata)?;
    Ok(xdata)
}

/// Reads one frame.
pub fn read_frame(mut conn: impl Read) -> io::Result<codec::Frame> {
    let mut frame = [0u8; codec::FRAME_LEN];
    conn.read_exact(&mut frame)?;
    Ok(codec::Frame::decode(frame))
}

/// The caller's current directory (an fd) and umask: capability
/// `context`.
#[derive(Debug)]
pub struct CallerContext {
    pub cwd: OwnedFd,
    pub umask: u32,
}

/// A request as sent by a client and read by an executor.
#[derive(Debug)]
pub struct Request {
    pub kind: RequestKind,
    /// The caller's fds 0, 1 and 2.
    pub stdio: [OwnedFd; 3],
    /// The payload, without its length prefix (see
    /// [`decode_payload`](super::decode_payload)).
    pub payload: Vec<u8>,
    /// With `kind.context`.
    pub context: Option<CallerContext>,
    /// With `limits`: the caller's resource limits, nice value and OOM
    /// score adjustment.
    pub limits: Option<codec::CallerLimits>,
    /// With `kind.caller_signals`: the signals the caller ignores and
    /// blocks.
    pub caller_signals: Option<codec::CallerSignals>,
}

/// Sends a whole request on a greeted connection. `payload` is
/// [`encode_request_payload`](super::encode_request_payload)'s output;
/// `context` (the caller's directory and umask) goes with a `context`
/// request and only then.
pub fn send_request(
    sock: impl AsFd,
    kind: RequestKind,
    stdio: [BorrowedFd<'_>; 3],
    payload: &[u8],
    context: Option<(BorrowedFd<'_>, u32)>,
    limits: Option<&codec::CallerLimits>,
    caller_signals: Option<&codec::CallerSignals>,
) -> io::Result<()> {
    debug_assert_eq!(kind.context, context.is_some());
    debug_assert_eq!(kind.limits, limits.is_some());
    debug_assert_eq!(kind.caller_signals, caller_signals.is_some());
    let sock = sock.as_fd();
    send_all(sock, &codec::encode_request_bytes(kind))?;
    for fd in stdio {
        send_fd(sock, codec::FD_MESSAGE_BYTE, fd)?;
    }
    send_all(sock, payload)?;
    if let Some((cwd, umask)) = context {
        send_fd(sock, codec::FD_MESSAGE_BYTE, cwd)?;
        send_all(sock, &codec::encode_context_umask(umask))?;
    }
    if let Some(limits) = limits {
        send_all(sock, &codec::encode_limits(limits))?;
    }
    if let Some(signals) = caller_signals {
        send_all(sock, &codec::encode_caller_signals(signals))?;
    }
    Ok(())
}

/// Reads a whole request: its byte(s), fd 0, 1, 2, the payload, then
/// with `context` the caller's directory and umask, with `limits` its
/// limits, with `caller_signals` its ignored and blocked signals.
pub fn read_request(sock: impl AsFd + Read) -> io::Result<Request> {
    let mut sock = sock;
    let mut byte = [0u8; 1];
    sock.read_exact(&mut byte)?;
    let mut kind = codec::check_request_byte(byte[0])?;
    if codec::has_second_request_byte(byte[0]) {
        sock.read_exact(&mut byte)?;
        codec::check_second_request_byte(&mut kind, byte[0])?;
    }
    let stdio = [recv_fd(&sock)?.1, recv_fd(&sock)?.1, recv_fd(&sock)?.1];
    let mut len = [0u8; 4];
    sock.read_exact(&mut len)?;
    let len = codec::decode_payload_len(len)?;
    let mut payload = vec![0u8; len as usize];
    sock.read_exact(&mut payload)?;
    let context = if kind.context {
        let (_, cwd) = recv_fd(&sock)?;
        let mut umask = [0u8; 4];
        sock.read_exact(&mut umask)?;
        Some(CallerContext {
            cwd,
            umask: codec::decode_context_umask(umask),
        })
    } else {
        None
    };
    let limits = if kind.limits {
        let mut n = [0u8; 1];
        sock.read_exact(&mut n)?;
        let mut body =
            vec![0u8; usize::from(n[0]) * codec::LIMITS_ENTRY_LEN + codec::LIMITS_TAIL_LEN];
        sock.read_exact(&mut body)?;
        Some(codec::decode_limits(n[0], &body)?)
    } else {
        None
    };
    let caller_signals = if kind.caller_signals {
        let mut message = [0u8; codec::CALLER_SIGNALS_LEN];
        sock.read_exact(&mut message)?;
        Some(codec::decode_caller_signals(message))
    } else {
        None
    };
    Ok(Request {
        kind,
        stdio,
        payload,
        context,
        limits,
        caller_signals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn request_round_trip_over_a_socket() {
        let (client, executor) = UnixStream::pair().unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let dir = std::fs::File::open(".").unwrap();
        let payload = codec::encode_request_payload([&b"A=1"[..]], [&b"x"[..]]);
        let kind = RequestKind {
            extended: true,
            context: true,
            pty: [false; 3],
            pty_background: false,
            limits: false,
            closed: [false, true, false],
            caller_signals: true,
        };
        let signals = codec::CallerSignals {
            ignored: 1 << (libc::SIGHUP - 1),
            blocked: 1 << 63,
        };
        send_request(
            &client,
            kind,
            [null.as_fd(); 3],
            &payload,
            Some((dir.as_fd(), 0o027)),
            None,
            Some(&signals),
        )
        .unwrap();
        let request = read_request(&executor).unwrap();
        assert_eq!(request.kind, kind);
        assert_eq!(request.payload, &payload[4..]);
        assert_eq!(request.context.unwrap().umask, 0o027);
        assert_eq!(request.caller_signals, Some(signals));
        drop(client);
        assert!(hung_up(&recv_fd(&executor).unwrap_err()));
    }

    #[test]
    fn greeting_and_frames() {
        let (server, client) = UnixStream::pair().unwrap();
        let xdata = codec::encode_greeting_xdata(
            &[codec::CAP_SIGNALS],
            None,
            None,
            None,
            None,
            None,
            codec::ServerCounters {
                served: 2,
                running: 1,
                idle_ms: 3,
            },
        );
        send_all(&server, &codec::encode_greeting(&xdata)).unwrap();
        send_all(
            &server,
            &codec::Frame::Status(codec::WaitStatus::from_raw(7)).encode(),
        )
        .unwrap();
        assert_eq!(read_greeting(&client).unwrap(), xdata);
        assert_eq!(
            read_frame(&client).unwrap(),
            codec::Frame::Status(codec::WaitStatus::from_raw(7))
        );
        send_all(&server, b"PFX\n\0\0\0\0").unwrap();
        assert_eq!(
            read_greeting(&client).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
