//! The bytes themselves: pure encode/decode functions, no I/O (see the
//! [module docs](super) for the picture). Fuzzed and property-tested.

use std::fmt;

/// Name of the environment variable that hands the setup run its fds.
pub const ENV_VAR: &str = "PREFORK_INTERP";

/// The only version of the environment variable and greeting we speak.
pub const VERSION: &str = "v1";

/// First four bytes of every greeting.
pub const GREETING_MAGIC: &[u8; 4] = b"PFI\n";

/// Length of the fixed part of the greeting: magic and xdata length.
pub const GREETING_HEADER_LEN: usize = 8;

/// Largest greeting xdata a client accepts. v1 servers send none; anything
/// this large is not a server of ours.
pub const MAX_XDATA_LEN: u32 = 64 * 1024;

/// Largest request payload a monitor accepts. Linux limits the arguments
/// and environment of one exec to well under this (ARG_MAX is a quarter
/// of the stack limit, 2 MiB by default), so a real caller never hits it.
pub const MAX_PAYLOAD_LEN: u32 = 64 * 1024 * 1024;

/// A malformed message. Each variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The greeting did not start with `PFI\n`.
    BadGreetingMagic([u8; 4]),
    /// The greeting announced more xdata than [`MAX_XDATA_LEN`].
    XdataTooLong(u32),
    /// The request payload announced more than [`MAX_PAYLOAD_LEN`].
    PayloadTooLong(u32),
    /// The payload does not end with a NUL (a truncated last string).
    PayloadUnterminated,
    /// The payload has no empty string ending the environment.
    PayloadNoEnvEnd,
    /// The request did not start with the zero byte.
    BadRequestByte(u8),
    /// The second request byte has flags this implementation does not know.
    BadSecondRequestByte(u8),
    /// An executor's message to its monitor was not "ready".
    BadExecutorMessage(u8),
    /// `PREFORK_INTERP` is not of the form described in the module docs.
    BadSetupEnv(String),
    /// A limits message's body was not as long as its count says.
    BadLimits(usize),
    /// Terminal settings of this many bytes: fewer than
    /// [`TERMINAL_SETTINGS_FIXED`] or more than [`MAX_TERMINAL_SETTINGS`].
    BadTerminalSettings(usize),
    /// An 'R' frame's bytes, this many, are not a count byte C and twice
    /// 24 + C bytes of settings (C at most 64).
    BadRestore(usize),
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::BadGreetingMagic(m) => {
                write!(
                    f,
                    "bad greeting from server: {:?}",
                    String::from_utf8_lossy(m)
                )
            }
            ProtocolError::XdataTooLong(n) => {
                write!(
                    f,
                    "greeting extra data too long ({n} bytes, at most {MAX_XDATA_LEN})"
                )
            }
            ProtocolError::PayloadTooLong(n) => {
                write!(f, "request too long ({n} bytes, at most {MAX_PAYLOAD_LEN})")
            }
            ProtocolError::PayloadUnterminated => {
                write!(f, "request payload does not end with a NUL")
            }
            ProtocolError::PayloadNoEnvEnd => {
                write!(
                    f,
                    "request payload has no empty string ending the environment"
                )
            }
            ProtocolError::BadRequestByte(b) => {
                write!(f, "request starts with byte {b:#04x}, expected 0x00")
            }
            ProtocolError::BadSecondRequestByte(b) => {
                write!(f, "second request byte {b:#04x} has unknown flags")
            }
            ProtocolError::BadTerminalSettings(n) => write!(
                f,
                "terminal settings of {n} bytes ({TERMINAL_SETTINGS_FIXED} to {MAX_TERMINAL_SETTINGS})"
            ),
            ProtocolError::BadRestore(n) => write!(
                f,
                "terminal restore message of {n} bytes (a count C, then twice 24 + C, C at most 64)"
            ),
            ProtocolError::BadExecutorMessage(b) => {
                write!(f, "executor sent byte {b:#04x}, expected 'r' (ready)")
            }
            ProtocolError::BadSetupEnv(why) => write!(f, "bad {ENV_VAR}: {why}"),
            ProtocolError::BadLimits(len) => {
                write!(f, "limits message of {len} bytes does not match its count")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

// ---------------------------------------------------------------- greeting

/// The whole greeting a monitor sends: magic, length, xdata.
pub fn encode_greeting(xdata: &[u8]) -> Vec<u8> {
    let len = u32::try_from(xdata.len()).expect("xdata fits in u32");
    let mut out = Vec::with_capacity(GREETING_HEADER_LEN + xdata.len());
    out.extend_from_slice(GREETING_MAGIC);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(xdata);
    out
}

/// Checks the fixed greeting header; returns how many xdata bytes follow.
pub fn decode_greeting_header(header: &[u8; GREETING_HEADER_LEN]) -> Result<u32, ProtocolError> {
    let (magic, len) = header.split_at(4);
    if magic != GREETING_MAGIC {
        return Err(ProtocolError::BadGreetingMagic(magic.try_into().unwrap()));
    }
    let len = u32::from_be_bytes(len.try_into().unwrap());
    if len > MAX_XDATA_LEN {
        return Err(ProtocolError::XdataTooLong(len));
    }
    Ok(len)
}

// ------------------------------------------------------------ capabilities

/// First line of our greeting xdata.
pub const CAPS_MAGIC: &str = "pfi-caps 1";

/// Capability: extended requests with signal forwarding and frames.
pub const CAP_SIGNALS: &str = "signals";

/// Capability: the executor runs in the caller's directory and umask.
pub const CAP_CONTEXT: &str = "context";

/// Capability: a call may bring a pseudo-terminal of its own, which the
/// executor makes its controlling terminal (see [`RequestKind::pty`]);
/// the monitor then reports the executor's stops ([`FRAME_STOPPED`]).
pub const CAP_TTY: &str = "tty";

/// Capability: a call may bring the caller's resource limits, nice value
/// and OOM score adjustment, which the executor takes on
/// ([`REQUEST_FLAG_LIMITS`], [`CallerLimits`]).
pub const CAP_LIMITS: &str = "limits";

/// Capability: a call may say which of the caller's fds 0, 1, 2 are
/// closed ([`REQUEST_FLAG_SECOND_BYTE`], [`RequestKind::closed`]); the
/// executor closes them.
pub const CAP_CLOSED: &str = "closed";

/// Capability: a call may bring the signals the caller ignores and
/// blocks ([`REQUEST_SECOND_CALLER_SIGNALS`], [`CallerSignals`]), which
/// the executor takes on.
pub const CAP_DISPOSITIONS: &str = "dispositions";

/// Capability: the server watches its own socket path (and quits when
/// it is removed or replaced), so the client that created it starts no
/// watcher; the server ignores WATCHI and WATCHE (closes them).
pub const CAP_WATCH: &str = "watch";

/// Capability: the monitor puts the caller's terminal settings back if
/// the client goes away while it has that terminal raw ([`FRAME_RESTORE`],
/// [`TerminalSettings`]).
pub const CAP_RESTORE: &str = "restore";

/// The extensions this implementation speaks, in both roles.
pub const OUR_CAPS: [&str; 8] = [
    CAP_SIGNALS,
    CAP_CONTEXT,
    CAP_TTY,
    CAP_LIMITS,
    CAP_CLOSED,
    CAP_DISPOSITIONS,
    CAP_WATCH,
    CAP_RESTORE,
];

/// A server's counters, as its greeting gives them (for `--list`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounters {
    /// Connections accepted before this one.
    pub served: u64,
    /// Calls then running.
    pub running: u64,
    /// Milliseconds since the last call ended (or the server started),
    /// connections hung up before a request (such as `--list`'s) not
    /// counted; 0 while a call runs.
    pub idle_ms: u64,
}

/// Greeting xdata of a server of ours: the capabilities it offers this
/// client, the digest of its world ([`world_digest`]), what its
/// initialisation read of the environment (if anything), what its
/// interpreter read of it as it started (`start`: Perl's and Python's
/// own variables, the locale), which of fds 0, 1, 2 were terminals in
/// its initialisation (`terminals`: bit N for fd N), what it does
/// without (`degraded`: one line of text, such as no inotify instance to
/// watch with), then its [`ServerCounters`]. Empty when nothing is offered (a v1 client, which
/// misreads any xdata). Every script side sends exactly these bytes (the
/// golden greeting scenario pins them).
pub fn encode_greeting_xdata(
    offered: &[&str],
    world: Option<&str>,
    env: Option<&EnvDependency>,
    start: Option<&EnvDependency>,
    terminals: Option<u8>,
    degraded: Option<&str>,
    counters: ServerCounters,
) -> Vec<u8> {
    if offered.is_empty() {
        return Vec::new();
    }
    let mut x = format!("{CAPS_MAGIC}\ncaps {}\n", offered.join(",")).into_bytes();
    if let Some(world) = world {
        x.extend_from_slice(format!("world {world}\n").as_bytes());
    }
    for (keyword, dependency) in [(&b"env "[..], env), (&b"start "[..], start)] {
        if let Some(dependency) = dependency {
            x.extend_from_slice(keyword);
            x.extend_from_slice(dependency.digest.as_bytes());
            for name in &dependency.names {
                x.push(b' ');
                x.extend_from_slice(name);
            }
            x.push(b'\n');
        }
    }
    if let Some(terminals) = terminals {
        x.extend_from_slice(format!("terminals {terminals}\n").as_bytes());
    }
    if let Some(text) = degraded {
        x.extend_from_slice(b"degraded ");
        x.extend(text.bytes().map(|b| if b == b'\n' { b' ' } else { b }));
        x.push(b'\n');
    }
    let ServerCounters {
        served,
        running,
        idle_ms,
    } = counters;
    x.extend_from_slice(format!("served {served}\nrunning {running}\nidle {idle_ms}\n").as_bytes());
    x
}

// ------------------------------------------------------------ the world

/// The namespaces whose inodes go into a [`world_digest`], in its order.
pub const WORLD_NAMESPACES: [&str; 8] =
    ["mnt", "pid", "net", "user", "uts", "ipc", "cgroup", "time"];

/// Lowercase hex SHA-256 of a process's world, which an unprivileged
/// executor cannot take on from its caller: for each of
/// [`WORLD_NAMESPACES`] in order, `NAME:INODE\n` (the inode of
/// /proc/self/ns/NAME in decimal, `-` if unreadable), then `cgroup\n` and
/// /proc/self/cgroup as it is. Greeting line `world DIGEST`: a caller
/// whose own differs belongs with a server started in its world.
pub fn world_digest(namespaces: &[Option<u64>], cgroups: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut text = Vec::with_capacity(256 + cgroups.len());
    for (name, inode) in WORLD_NAMESPACES.iter().zip(namespaces) {
        text.extend_from_slice(name.as_bytes());
        text.push(b':');
        match inode {
            Some(inode) => text.extend_from_slice(inode.to_string().as_bytes()),
            None => text.push(b'-'),
        }
        text.push(b'\n');
    }
    text.extend_from_slice(b"cgroup\n");
    text.extend_from_slice(cgroups);
    let mut h = Sha256::new();
    h.update(&text);
    hex_lower(&h.finalize())
}

/// The `terminals` line's bits (fd N a terminal in initialisation: bit
/// N), if the greeting has a well-formed one: a decimal number 0 to 7,
/// one digit. A caller whose fds differ belongs with a server
/// initialised with terminals where it has them.
pub fn decode_terminals(xdata: &[u8]) -> Option<u8> {
    match xdata_lines(xdata).find_map(|line| line.strip_prefix(b"terminals "))? {
        &[digit @ b'0'..=b'7'] => Some(digit - b'0'),
        _ => None,
    }
}

/// The digest on a greeting's `world` line, if it has a well-formed one.
pub fn decode_world(xdata: &[u8]) -> Option<String> {
    let line = xdata_lines(xdata).find_map(|line| line.strip_prefix(b"world "))?;
    let digest = std::str::from_utf8(line).ok()?;
    is_hex_digest(digest).then(|| digest.to_string())
}

/// `bytes` in lowercase hex (a digest's text on the wire, and an
/// identity's), without a formatter per byte: it is on every call's path.
pub fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 15)] as char);
    }
    text
}

/// 64 lowercase hex digits.
fn is_hex_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

// ------------------------------------------------ environment dependency

/// What a server's initialisation read of its environment: the names
/// (sorted, unique), and a digest of their values then. A caller whose
/// own values give another digest belongs with another server, one
/// initialised with its values. Greeting line: `env DIGEST NAME...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvDependency {
    /// Lowercase hex SHA-256 (see [`env_digest`]).
    pub digest: String,
    pub names: Vec<Vec<u8>>,
}

/// Whether a variable read can be a dependency: not `PREFORK_INTERP`
/// (ours), nor a name the greeting line cannot carry (space, newline) or
/// no environment can hold (empty, `=`, NUL).
pub fn trackable_env_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name != ENV_VAR.as_bytes()
        && !name.iter().any(|&b| matches!(b, b' ' | b'\n' | b'=' | 0))
}

/// The dependency on `names` (any order, repeats, untrackable ones
/// dropped), with the values `value_of` gives; `None` for no names.
pub fn env_dependency<'a>(
    names: impl IntoIterator<Item = &'a [u8]>,
    value_of: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Option<EnvDependency> {
    let mut names: Vec<Vec<u8>> = names
        .into_iter()
        .filter(|n| trackable_env_name(n))
        .map(<[u8]>::to_vec)
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return None;
    }
    Some(EnvDependency {
        digest: env_digest(&names, value_of),
        names,
    })
}

/// SHA-256, in lowercase hex, of `NAME=VALUE\0` for each name that has a
/// value and `NAME\0` for each that has none, in the order given.
pub fn env_digest(names: &[Vec<u8>], value_of: impl Fn(&[u8]) -> Option<Vec<u8>>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for name in names {
        h.update(name);
        if let Some(value) = value_of(name) {
            h.update(b"=");
            h.update(value);
        }
        h.update([0]);
    }
    hex_lower(&h.finalize())
}

/// The `env` line of a greeting's xdata, if it has a well-formed one.
pub fn decode_env_dependency(xdata: &[u8]) -> Option<EnvDependency> {
    decode_dependency_line(xdata, b"env ")
}

/// The `start` line of a greeting's xdata (what the interpreter read of
/// its environment as it started), if it has a well-formed one.
pub fn decode_start_dependency(xdata: &[u8]) -> Option<EnvDependency> {
    decode_dependency_line(xdata, b"start ")
}

/// A line `KEYWORD DIGEST NAME...`: an [`EnvDependency`].
fn decode_dependency_line(xdata: &[u8], keyword: &[u8]) -> Option<EnvDependency> {
    let line = xdata_lines(xdata).find_map(|line| line.strip_prefix(keyword))?;
    let mut words = line.split(|&b| b == b' ');
    let digest = std::str::from_utf8(words.next()?).ok()?;
    if !is_hex_digest(digest) {
        return None;
    }
    let names: Vec<Vec<u8>> = words.map(<[u8]>::to_vec).collect();
    if names.is_empty() || !names.iter().all(|n| trackable_env_name(n)) {
        return None;
    }
    Some(EnvDependency {
        digest: digest.to_string(),
        names,
    })
}

/// What a server says it does without (its `degraded` line), if anything.
pub fn decode_degraded(xdata: &[u8]) -> Option<String> {
    xdata_lines(xdata).find_map(|line| {
        let text = line.strip_prefix(b"degraded ")?;
        Some(String::from_utf8_lossy(text).into_owned())
    })
}

/// A numeric line `NAME N` of our greeting xdata, if there is one.
pub fn decode_xdata_number(xdata: &[u8], name: &str) -> Option<u64> {
    xdata_lines(xdata).find_map(|line| {
        let rest = line.strip_prefix(name.as_bytes())?.strip_prefix(b" ")?;
        std::str::from_utf8(rest).ok()?.parse().ok()
    })
}

/// The lines of our greeting xdata after its first (`pfi-caps 1`); none
/// for xdata that does not start so (v1's, or someone else's).
fn xdata_lines(xdata: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut lines = xdata.split(|&b| b == b'\n');
    let ours = lines.next() == Some(CAPS_MAGIC.as_bytes());
    lines.filter(move |_| ours)
}

/// The capabilities a greeting's xdata advertises (none for v1 servers,
/// or xdata we do not understand).
pub fn decode_caps(xdata: &[u8]) -> Vec<String> {
    xdata_lines(xdata)
        .filter_map(|line| line.strip_prefix(b"caps "))
        .flat_map(|list| list.split(|&b| b == b','))
        .filter(|cap| !cap.is_empty())
        .map(|cap| String::from_utf8_lossy(cap).into_owned())
        .collect()
}

// ----------------------------------------------------------------- request

/// The zero byte that opens every v1 request.
pub const REQUEST_BYTE: u8 = 0;

/// Request flag: an extended call, in frames (needs `signals` offered).
pub const REQUEST_BYTE_EXTENDED: u8 = 1;

/// Request flag, with [`REQUEST_BYTE_EXTENDED`]: a context message follows
/// the payload (needs `context` offered): one byte 0x00 carrying the
/// caller's current directory (SCM_RIGHTS), then u32be umask.
pub const REQUEST_FLAG_CONTEXT: u8 = 2;

/// The one byte of every message that carries an fd (SCM_RIGHTS): each
/// of the request's fds 0, 1, 2, the context message's directory, and
/// the call socket handed from server to monitor to executor. Zero:
/// Perl's IO::FDPass refuses (EDOM) any other.
pub const FD_MESSAGE_BYTE: u8 = 0;

/// The caller's umask, after the context message's [`FD_MESSAGE_BYTE`]
/// (which carries the caller's directory): u32be.
pub fn encode_context_umask(umask: u32) -> [u8; 4] {
    umask.to_be_bytes()
}

/// The caller's umask from its wire form.
pub fn decode_context_umask(bytes: [u8; 4]) -> u32 {
    u32::from_be_bytes(bytes)
}

/// Request flags, with [`REQUEST_BYTE_EXTENDED`] (needs `tty` offered):
/// fd 0, 1 or 2 as sent is the slave of a pseudo-terminal the client
/// opened for this call. The executor starts a session of its own and
/// makes that terminal its controlling terminal (its process group is
/// then the terminal's foreground group).
pub const REQUEST_FLAG_PTY: [u8; 3] = [4, 8, 16];

/// Request flag, with a pty flag: the script starts in the background of
/// its terminal (the client is in a pipeline, or in the background
/// itself); it comes to the foreground when the client says so ('F').
pub const REQUEST_FLAG_PTY_BACKGROUND: u8 = 32;

/// Request flag, with [`REQUEST_BYTE_EXTENDED`] (needs `limits` offered):
/// a limits message follows the payload (and the context message, if
/// any): see [`encode_limits`].
pub const REQUEST_FLAG_LIMITS: u8 = 64;

/// Request flag, with [`REQUEST_BYTE_EXTENDED`]: a second request byte
/// follows at once, before the fds (the last free bit, so the second
/// byte holds what comes after).
pub const REQUEST_FLAG_SECOND_BYTE: u8 = 128;

/// Flags of the second request byte (needs `closed` offered): the
/// caller's fd 0, 1 or 2 is closed; its fd message carries /dev/null in
/// its place, which the executor closes.
pub const REQUEST_SECOND_CLOSED: [u8; 3] = [1, 2, 4];

/// Flag of the second request byte (needs `dispositions` offered): a
/// caller-signals message follows the payload (and the context and
/// limits messages, if any): see [`encode_caller_signals`].
pub const REQUEST_SECOND_CALLER_SIGNALS: u8 = 8;

/// What the request byte asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestKind {
    /// Frames after the request ('S', 'P', 'T', 'X').
    pub extended: bool,
    /// A context message after the payload.
    pub context: bool,
    /// Which of fds 0, 1, 2 are the call's own pseudo-terminal (only
    /// with `extended`).
    pub pty: [bool; 3],
    /// The script starts in the background of that terminal (only with
    /// a pty).
    pub pty_background: bool,
    /// A limits message follows.
    pub limits: bool,
    /// Which of the caller's fds 0, 1, 2 are closed (only with
    /// `extended`; in the second request byte).
    pub closed: [bool; 3],
    /// A caller-signals message follows (only with `extended`; in the
    /// second request byte).
    pub caller_signals: bool,
}

impl RequestKind {
    /// Whether the call runs on a pseudo-terminal of its own.
    pub fn on_pty(&self) -> bool {
        self.pty.contains(&true)
    }
}

/// The bytes that open a request of this kind: the request byte, and the
/// second byte if anything needs it.
pub fn encode_request_bytes(kind: RequestKind) -> Vec<u8> {
    let mut byte = REQUEST_BYTE;
    let mut second = 0;
    if kind.extended {
        byte |= REQUEST_BYTE_EXTENDED;
        if kind.context {
            byte |= REQUEST_FLAG_CONTEXT;
        }
        byte |= flag_bits(REQUEST_FLAG_PTY, kind.pty);
        if kind.pty_background && kind.on_pty() {
            byte |= REQUEST_FLAG_PTY_BACKGROUND;
        }
        if kind.limits {
            byte |= REQUEST_FLAG_LIMITS;
        }
        second = flag_bits(REQUEST_SECOND_CLOSED, kind.closed);
        if kind.caller_signals {
            second |= REQUEST_SECOND_CALLER_SIGNALS;
        }
    }
    if second == 0 {
        vec![byte]
    } else {
        vec![byte | REQUEST_FLAG_SECOND_BYTE, second]
    }
}

/// Checks the byte that opens a request: 0 (v1), or 1 with any of the
/// other flags. With [`REQUEST_FLAG_SECOND_BYTE`] the caller reads the
/// second byte and checks it with [`check_second_request_byte`].
pub fn check_request_byte(byte: u8) -> Result<RequestKind, ProtocolError> {
    // Every bit of the byte is a known flag now; what matters is that
    // flags come only with the extended bit, and background with a pty.
    if byte == REQUEST_BYTE {
        return Ok(RequestKind::default());
    }
    let background_without_pty = byte & REQUEST_FLAG_PTY_BACKGROUND != 0
        && byte & flag_bits(REQUEST_FLAG_PTY, [true; 3]) == 0;
    if byte & REQUEST_BYTE_EXTENDED == 0 || background_without_pty {
        return Err(ProtocolError::BadRequestByte(byte));
    }
    Ok(RequestKind {
        extended: true,
        context: byte & REQUEST_FLAG_CONTEXT != 0,
        pty: REQUEST_FLAG_PTY.map(|flag| byte & flag != 0),
        pty_background: byte & REQUEST_FLAG_PTY_BACKGROUND != 0,
        limits: byte & REQUEST_FLAG_LIMITS != 0,
        closed: [false; 3],
        caller_signals: false,
    })
}

/// The bits of `flags` whose entries in `on` are set: one flag per fd.
fn flag_bits(flags: [u8; 3], on: [bool; 3]) -> u8 {
    flags
        .into_iter()
        .zip(on)
        .fold(0, |bits, (flag, on)| if on { bits | flag } else { bits })
}

/// Whether a checked request byte says a second byte follows.
pub fn has_second_request_byte(byte: u8) -> bool {
    byte & REQUEST_FLAG_SECOND_BYTE != 0
}

/// Adds the second request byte's flags to `kind`.
pub fn check_second_request_byte(kind: &mut RequestKind, byte: u8) -> Result<(), ProtocolError> {
    if byte & !(flag_bits(REQUEST_SECOND_CLOSED, [true; 3]) | REQUEST_SECOND_CALLER_SIGNALS) != 0 {
        return Err(ProtocolError::BadSecondRequestByte(byte));
    }
    kind.closed = REQUEST_SECOND_CLOSED.map(|flag| byte & flag != 0);
    kind.caller_signals = byte & REQUEST_SECOND_CALLER_SIGNALS != 0;
    Ok(())
}

// ------------------------------------------------- the run directory

/// The lock file beside a server's socket (`BASE/s<ident>` →
/// `BASE/l<ident>`), to which a quitting server appends its
/// [`encode_quit_line`]. `None` for a socket not so named.
pub fn lock_path_for_socket(socket: &std::path::Path) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let name = socket.file_name()?.as_bytes();
    let ident = name.strip_prefix(b"s").filter(|i| !i.is_empty())?;
    let lock = [&b"l"[..], ident].concat();
    Some(socket.with_file_name(std::ffi::OsStr::from_bytes(&lock)))
}

/// What a quitting server appends to its lock file:
/// `quit SECONDS REASON` and a newline, SECONDS since the epoch, each
/// newline in REASON made a space.
pub fn encode_quit_line(secs: u64, reason: &str) -> Vec<u8> {
    format!("quit {secs} {}\n", reason.replace('\n', " ")).into_bytes()
}

/// The last `quit` line in a lock file's text: when, and why.
pub fn decode_last_quit(text: &[u8]) -> Option<(u64, &[u8])> {
    text.split(|&b| b == b'\n').rev().find_map(|line| {
        let rest = line.strip_prefix(b"quit ")?;
        let space = rest.iter().position(|&b| b == b' ')?;
        let secs = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        Some((secs, &rest[space + 1..]))
    })
}

// --------------------------------------------- script side, internal

// Not on the wire between client and server: how one script side's own
// processes hand a call along (man/prefork-interp.7, INSIDE A SCRIPT
// SIDE). Every side (Rust, Perl, Python) sends the same bytes.

/// Monitor to server: a call it was handed has ended.
pub const MONITOR_CALL_ENDED: u8 = b'd';

/// Monitor to server: a call it was handed has ended before its script
/// ran (its client hung up before a request: `--list`, or a client that
/// belongs with another server). Counted out of `running`, but the
/// server's idle time goes on.
pub const MONITOR_CALL_DROPPED: u8 = b'h';

/// Executor to monitor: the request is read; the request byte follows.
pub const EXECUTOR_READY: u8 = b'r';

/// Keeper to monitor: the script has stopped, by this signal (a frame).
pub const KEEPER_STOPPED: u8 = b't';

/// Keeper to monitor: the script has ended, with this wait status (a
/// frame); the keeper's last word.
pub const KEEPER_STATUS: u8 = b'x';

/// Monitor to keeper: the client's 'F', passed on (a frame, same value).
pub const KEEPER_FOREGROUND: u8 = b'f';

/// The executor's "ready" message for a request of this kind: `r` and the
/// request byte, and on a pseudo-terminal of its own the script's pid.
pub fn encode_executor_ready(kind: RequestKind, script: u32) -> Vec<u8> {
    let mut message = vec![EXECUTOR_READY, encode_request_bytes(kind)[0]];
    if kind.on_pty() {
        message.extend_from_slice(&script.to_be_bytes());
    }
    message
}

/// Decodes an executor's "ready" message.
pub fn decode_executor_ready(message: [u8; 2]) -> Result<RequestKind, ProtocolError> {
    if message[0] != EXECUTOR_READY {
        return Err(ProtocolError::BadExecutorMessage(message[0]));
    }
    check_request_byte(message[1])
}

// ------------------------------------------------------------------ frames

/// Length of every frame of an extended call.
pub const FRAME_LEN: usize = 5;

/// Client to monitor: deliver this signal to the executor's group.
pub const FRAME_SIGNAL: u8 = b'S';
/// Monitor to client: the pid of the script's process (the executor's,
/// or on a pseudo-terminal of its own the process the executor forked),
/// before its per-call code runs.
pub const FRAME_EXECUTOR_PID: u8 = b'P';
/// Monitor to client: the executor's wait status; the last frame.
pub const FRAME_STATUS: u8 = b'X';
/// Client to monitor, on a call with a pseudo-terminal of its own: value
/// 1, make the script's group its terminal's foreground and continue it
/// (the client is in the foreground, and has its terminal in raw mode);
/// 0, make it the background and continue it (the client is in the
/// background: the
/// script's reads of its terminal stop it, as a direct run's would).
pub const FRAME_FOREGROUND: u8 = b'F';
/// Monitor to client, on a call with a pseudo-terminal of its own: the
/// script has stopped, by this signal (SIGTSTP, SIGTTIN, SIGTTOU or
/// SIGSTOP). The client stops itself by the same signal, so that its
/// shell sees the job stop; the SIGCONT that resumes it is passed on.
pub const FRAME_STOPPED: u8 = b'T';

/// Client to monitor, with capability [`CAP_RESTORE`]: value N, then N
/// bytes ([`encode_restore`]: the settings to put back, and those the
/// client left on the terminal) and (N > 0) one byte 0x00 carrying the
/// caller's terminal (SCM_RIGHTS): if the client goes away before the
/// status is sent, and the terminal still has the settings it left, the
/// monitor puts the others back. N = 0: nothing to put back (the client
/// has restored them itself).
pub const FRAME_RESTORE: u8 = b'R';

/// The fixed part of [`TerminalSettings`] on the wire: four flag words
/// and two speeds, u32be each; the control characters follow.
pub const TERMINAL_SETTINGS_FIXED: usize = 24;

/// The most terminal settings bytes a monitor takes (64 control
/// characters: more than any platform has).
pub const MAX_TERMINAL_SETTINGS: usize = TERMINAL_SETTINGS_FIXED + 64;

/// A terminal's settings (`struct termios`), two of which a client sends
/// after [`FRAME_RESTORE`] ([`encode_restore`]): the flag words, the speeds as the platform's `B*`
/// values, and the control characters (`c_cc`, as many as the sender
/// has). Client and monitor run on one machine, so the values mean the
/// same to both.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TerminalSettings {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub ispeed: u32,
    pub ospeed: u32,
    pub cc: Vec<u8>,
}

/// One terminal's settings as a restore message holds them.
pub fn encode_terminal_settings(settings: &TerminalSettings) -> Vec<u8> {
    let mut out = Vec::with_capacity(TERMINAL_SETTINGS_FIXED + settings.cc.len());
    for word in [
        settings.iflag,
        settings.oflag,
        settings.cflag,
        settings.lflag,
        settings.ispeed,
        settings.ospeed,
    ] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(&settings.cc);
    out
}

/// Decodes one terminal's settings, as [`encode_terminal_settings`] gave.
pub fn decode_terminal_settings(bytes: &[u8]) -> Result<TerminalSettings, ProtocolError> {
    if !(TERMINAL_SETTINGS_FIXED..=MAX_TERMINAL_SETTINGS).contains(&bytes.len()) {
        return Err(ProtocolError::BadTerminalSettings(bytes.len()));
    }
    let word = |i: usize| u32::from_be_bytes(bytes[i * 4..i * 4 + 4].try_into().unwrap());
    Ok(TerminalSettings {
        iflag: word(0),
        oflag: word(1),
        cflag: word(2),
        lflag: word(3),
        ispeed: word(4),
        ospeed: word(5),
        cc: bytes[TERMINAL_SETTINGS_FIXED..].to_vec(),
    })
}

/// The most bytes an 'R' frame's value may say: a count byte and two
/// settings of 64 control characters each.
pub const MAX_RESTORE_LEN: usize = 1 + 2 * MAX_TERMINAL_SETTINGS;

/// The bytes after an 'R' frame: the control characters' count (the
/// sender's NCCS, one byte), the settings to put back, then the settings
/// the client leaves on the terminal (raw), each [`TerminalSettings`] of
/// that many control characters. Both must have as many as `put_back`.
pub fn encode_restore(put_back: &TerminalSettings, left: &TerminalSettings) -> Vec<u8> {
    let count = put_back
        .cc
        .len()
        .min(MAX_TERMINAL_SETTINGS - TERMINAL_SETTINGS_FIXED);
    let mut left = left.clone();
    left.cc.resize(count, 0);
    let mut put_back = put_back.clone();
    put_back.cc.truncate(count);
    let mut out = vec![count as u8];
    out.extend(encode_terminal_settings(&put_back));
    out.extend(encode_terminal_settings(&left));
    out
}

/// Decodes the bytes after an 'R' frame: (to put back, as left).
pub fn decode_restore(bytes: &[u8]) -> Result<(TerminalSettings, TerminalSettings), ProtocolError> {
    let bad = || ProtocolError::BadRestore(bytes.len());
    let (&count, rest) = bytes.split_first().ok_or_else(bad)?;
    let block = TERMINAL_SETTINGS_FIXED + count as usize;
    if block > MAX_TERMINAL_SETTINGS || rest.len() != 2 * block {
        return Err(bad());
    }
    let (put_back, left) = rest.split_at(block);
    Ok((
        decode_terminal_settings(put_back)?,
        decode_terminal_settings(left)?,
    ))
}

/// Signals a client may have delivered to the executor's process group.
pub const FORWARDED_SIGNALS: [i32; 10] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGALRM,
    libc::SIGTSTP,
    libc::SIGCONT,
];

/// A frame: what one of [`FRAME_LEN`] bytes says. Between client and
/// monitor the kinds are upper case ('S' 'P' 'X' 'F' 'T'); inside a
/// script side, between a keeper and its monitor, lower case ('t' 'x'
/// 'f'). Decoding never fails: a kind this implementation does not know
/// is [`Frame::Unknown`], which a receiver ignores (forward
/// compatibility).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// [`FRAME_SIGNAL`]: deliver this signal to the script's group.
    Signal(i32),
    /// [`FRAME_EXECUTOR_PID`]: the script's pid.
    ExecutorPid(u32),
    /// [`FRAME_STATUS`]: the script's wait status; the last frame.
    Status(WaitStatus),
    /// [`FRAME_FOREGROUND`]: value 1 to the foreground (true), any other
    /// to the background.
    Foreground(bool),
    /// [`FRAME_STOPPED`]: the script has stopped, by this signal.
    Stopped(i32),
    /// [`FRAME_RESTORE`]: a restore message of this many bytes follows.
    Restore(u32),
    /// [`KEEPER_STOPPED`]: the keeper saw the script stop, by this signal.
    KeeperStopped(i32),
    /// [`KEEPER_STATUS`]: the keeper saw the script end; its last word.
    KeeperStatus(WaitStatus),
    /// [`KEEPER_FOREGROUND`]: the client's 'F', passed on to the keeper.
    KeeperForeground(bool),
    /// Any other kind, with its value.
    Unknown(u8, u32),
}

impl Frame {
    /// The frame's five bytes.
    pub fn encode(self) -> [u8; FRAME_LEN] {
        let (kind, value) = match self {
            Frame::Signal(signal) => (FRAME_SIGNAL, signal as u32),
            Frame::ExecutorPid(pid) => (FRAME_EXECUTOR_PID, pid),
            Frame::Status(status) => (FRAME_STATUS, status.raw() as u32),
            Frame::Foreground(on) => (FRAME_FOREGROUND, u32::from(on)),
            Frame::Stopped(signal) => (FRAME_STOPPED, signal as u32),
            Frame::Restore(len) => (FRAME_RESTORE, len),
            Frame::KeeperStopped(signal) => (KEEPER_STOPPED, signal as u32),
            Frame::KeeperStatus(status) => (KEEPER_STATUS, status.raw() as u32),
            Frame::KeeperForeground(on) => (KEEPER_FOREGROUND, u32::from(on)),
            Frame::Unknown(kind, value) => (kind, value),
        };
        let v = value.to_be_bytes();
        [kind, v[0], v[1], v[2], v[3]]
    }

    /// What five bytes say.
    pub fn decode(frame: [u8; FRAME_LEN]) -> Frame {
        let value = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
        match frame[0] {
            FRAME_SIGNAL => Frame::Signal(value as i32),
            FRAME_EXECUTOR_PID => Frame::ExecutorPid(value),
            FRAME_STATUS => Frame::Status(WaitStatus::from_raw(value as i32)),
            FRAME_FOREGROUND => Frame::Foreground(value == 1),
            FRAME_STOPPED => Frame::Stopped(value as i32),
            FRAME_RESTORE => Frame::Restore(value),
            KEEPER_STOPPED => Frame::KeeperStopped(value as i32),
            KEEPER_STATUS => Frame::KeeperStatus(WaitStatus::from_raw(value as i32)),
            KEEPER_FOREGROUND => Frame::KeeperForeground(value == 1),
            kind => Frame::Unknown(kind, value),
        }
    }
}

/// The length-prefixed part of a request: environment entries (each
/// `NAME=value`) and arguments. Entries must not contain NUL, and an
/// environment entry must not be empty (the empty string ends the list).
pub fn encode_request_payload<'a, E, A>(env: E, args: A) -> Vec<u8>
where
    E: IntoIterator<Item = &'a [u8]>,
    A: IntoIterator<Item = &'a [u8]>,
{
    let mut out = vec![0u8; 4];
    for entry in env {
        debug_assert!(!entry.is_empty() && !entry.contains(&0));
        out.extend_from_slice(entry);
        out.push(0);
    }
    out.push(0);
    for arg in args {
        debug_assert!(!arg.contains(&0));
        out.extend_from_slice(arg);
        out.push(0);
    }
    let len = u32::try_from(out.len() - 4).expect("payload fits in u32");
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Checks a payload length prefix against [`MAX_PAYLOAD_LEN`].
pub fn decode_payload_len(prefix: [u8; 4]) -> Result<u32, ProtocolError> {
    let len = u32::from_be_bytes(prefix);
    if len > MAX_PAYLOAD_LEN {
        return Err(ProtocolError::PayloadTooLong(len));
    }
    Ok(len)
}

/// A decoded request payload, borrowing from the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload<'a> {
    /// Environment entries as sent, normally `NAME=value`.
    pub env: Vec<&'a [u8]>,
    /// The caller's arguments (after the script).
    pub args: Vec<&'a [u8]>,
}

/// Splits a payload (without its length prefix) into env and args.
pub fn decode_payload(payload: &[u8]) -> Result<Payload<'_>, ProtocolError> {
    let body = payload
        .strip_suffix(&[0])
        .ok_or(ProtocolError::PayloadUnterminated)?;
    let mut strings = body.split(|&b| b == 0);
    let mut env = Vec::new();
    loop {
        match strings.next() {
            Some([]) => break,
            Some(entry) => env.push(entry),
            None => return Err(ProtocolError::PayloadNoEnvEnd),
        }
    }
    Ok(Payload {
        env,
        args: strings.collect(),
    })
}

/// Splits an environment entry at its first `=` (a leading `=` belongs to
/// the name, as in glibc). `None` for an entry with no `=` at all.
pub fn split_env_entry(entry: &[u8]) -> Option<(&[u8], &[u8])> {
    let eq = entry.iter().skip(1).position(|&b| b == b'=')? + 1;
    Some((&entry[..eq], &entry[eq + 1..]))
}

// ------------------------------------------------------------------ limits

/// What a caller's process has beyond fds, environment and directory,
/// which a direct run would inherit: `getrlimit` of each resource, the
/// nice value and `/proc/self/oom_score_adj`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallerLimits {
    /// (Linux resource number, soft, hard); [`RLIM_INFINITY`] for none.
    pub rlimits: Vec<(u8, u64, u64)>,
    /// The nice value, -20..19.
    pub nice: i32,
    /// `oom_score_adj`, -1000..1000; [`OOM_SCORE_UNKNOWN`] when the
    /// caller could not read its own.
    pub oom_score_adj: i32,
}

/// No limit, on the wire (the kernel's `RLIM_INFINITY` on every Linux).
pub const RLIM_INFINITY: u64 = u64::MAX;

/// An `oom_score_adj` the caller could not read: left as it is.
pub const OOM_SCORE_UNKNOWN: i32 = i32::MIN;

/// Bytes of one resource entry of a limits message.
pub const LIMITS_ENTRY_LEN: usize = 17;

/// Bytes after the entries: nice, then oom_score_adj.
pub const LIMITS_TAIL_LEN: usize = 8;

/// A limits message: u8 N, then N entries of u8 resource, u64be soft,
/// u64be hard, then i32be nice, i32be oom_score_adj.
pub fn encode_limits(limits: &CallerLimits) -> Vec<u8> {
    let n = u8::try_from(limits.rlimits.len()).expect("fewer than 256 resources");
    let mut out = Vec::with_capacity(1 + usize::from(n) * LIMITS_ENTRY_LEN + LIMITS_TAIL_LEN);
    out.push(n);
    for &(resource, soft, hard) in &limits.rlimits {
        out.push(resource);
        out.extend_from_slice(&soft.to_be_bytes());
        out.extend_from_slice(&hard.to_be_bytes());
    }
    out.extend_from_slice(&limits.nice.to_be_bytes());
    out.extend_from_slice(&limits.oom_score_adj.to_be_bytes());
    out
}

/// Decodes what follows a limits message's count byte: `n` entries and
/// the tail, `n * LIMITS_ENTRY_LEN + LIMITS_TAIL_LEN` bytes exactly.
pub fn decode_limits(n: u8, body: &[u8]) -> Result<CallerLimits, ProtocolError> {
    let entries = usize::from(n) * LIMITS_ENTRY_LEN;
    if body.len() != entries + LIMITS_TAIL_LEN {
        return Err(ProtocolError::BadLimits(body.len()));
    }
    let u64_at =
        |bytes: &[u8], at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
    let i32_at = |at: usize| i32::from_be_bytes(body[at..at + 4].try_into().unwrap());
    let rlimits = body[..entries]
        .chunks_exact(LIMITS_ENTRY_LEN)
        .map(|entry| (entry[0], u64_at(entry, 1), u64_at(entry, 9)))
        .collect();
    Ok(CallerLimits {
        rlimits,
        nice: i32_at(entries),
        oom_score_adj: i32_at(entries + 4),
    })
}

// ---------------------------------------------------------- caller signals

/// What a caller's process has of signals that a direct run would
/// inherit: the signals it ignores (SIG_IGN) and those it blocks. Bit
/// `n - 1` stands for Linux's signal `n`, 1 to 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallerSignals {
    /// The signals whose disposition is "ignore".
    pub ignored: u64,
    /// The signals in the blocked mask.
    pub blocked: u64,
}

/// Bytes of a caller-signals message.
pub const CALLER_SIGNALS_LEN: usize = 16;

/// The highest signal number a caller-signals message can carry.
pub const MAX_SIGNAL: i32 = 64;

impl CallerSignals {
    /// Whether the caller neither ignores nor blocks any signal (the
    /// client then sends no message: the executor's are the server's).
    pub fn is_empty(&self) -> bool {
        self.ignored == 0 && self.blocked == 0
    }

    /// The bit of signal `sig` (1 to [`MAX_SIGNAL`]).
    pub fn bit(sig: i32) -> u64 {
        assert!((1..=MAX_SIGNAL).contains(&sig), "signal {sig}");
        1 << (sig - 1)
    }

    /// The signal numbers in `bits`, lowest first.
    pub fn numbers(bits: u64) -> impl Iterator<Item = i32> {
        (1..=MAX_SIGNAL).filter(move |&sig| bits & Self::bit(sig) != 0)
    }
}

/// A caller-signals message: u64be ignored, u64be blocked.
pub fn encode_caller_signals(signals: &CallerSignals) -> [u8; CALLER_SIGNALS_LEN] {
    let mut out = [0; CALLER_SIGNALS_LEN];
    out[..8].copy_from_slice(&signals.ignored.to_be_bytes());
    out[8..].copy_from_slice(&signals.blocked.to_be_bytes());
    out
}

/// Decodes a caller-signals message. Every bit pattern is valid: an
/// executor leaves alone what it cannot set (SIGKILL, SIGSTOP, the C
/// library's own real-time signals).
pub fn decode_caller_signals(bytes: [u8; CALLER_SIGNALS_LEN]) -> CallerSignals {
    CallerSignals {
        ignored: u64::from_be_bytes(bytes[..8].try_into().unwrap()),
        blocked: u64::from_be_bytes(bytes[8..].try_into().unwrap()),
    }
}

// ------------------------------------------------------------------ status

/// A raw `waitpid` status, as the wire carries it (v1's last four bytes,
/// the 'X' and 'x' frames): the same bits on every Linux, so a client
/// can end as its script did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WaitStatus(i32);

impl WaitStatus {
    /// The status `waitpid` gave.
    pub const fn from_raw(raw: i32) -> WaitStatus {
        WaitStatus(raw)
    }

    /// An exit with this code (`exit(code)`, 0..=255).
    pub const fn exited(code: u8) -> WaitStatus {
        WaitStatus((code as i32) << 8)
    }

    /// The bits, as `waitpid` gave them.
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// The exit code, for a process that exited.
    pub fn exit_code(self) -> Option<i32> {
        libc::WIFEXITED(self.0).then(|| libc::WEXITSTATUS(self.0))
    }

    /// The signal that killed the process, for one that was killed.
    pub fn signal(self) -> Option<i32> {
        libc::WIFSIGNALED(self.0).then(|| libc::WTERMSIG(self.0))
    }

    /// Whether the death by signal left a core dump.
    pub fn core_dumped(self) -> bool {
        libc::WIFSIGNALED(self.0) && libc::WCOREDUMP(self.0)
    }
}

/// A status in its v1 wire form (u32be of the raw bits).
pub fn encode_status(status: WaitStatus) -> [u8; 4] {
    (status.raw() as u32).to_be_bytes()
}

/// A status from its v1 wire form.
pub fn decode_status(bytes: [u8; 4]) -> WaitStatus {
    WaitStatus::from_raw(u32::from_be_bytes(bytes) as i32)
}

// ------------------------------------------------------- setup environment

/// What `PREFORK_INTERP` tells the setup run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupEnv {
    /// Seconds part of the fresh socket's mtime: "the server started at".
    pub started_secs: i64,
    /// Nanoseconds part, 0..1e9.
    pub started_nsecs: u32,
    /// The listening socket (nonblocking).
    pub listen: i32,
    /// The server end of the first call's socketpair.
    pub call: i32,
    /// Write end of the watcher's stdin: the watcher quits when it closes.
    pub watch_in: i32,
    /// Read end of the watcher's stderr (nonblocking): EOF or text = quit.
    pub watch_err: i32,
    /// The creating client reads greeting xdata and speaks these
    /// extensions (third word `pfi-caps=...`; empty from a v1 client).
    pub client_caps: Vec<String>,
    /// The longest the server may stay idle, in seconds (word
    /// `pfi-idle=SECONDS`): its own idle timeout, if shorter, still
    /// rules. Our client sets it for a folded identity's server.
    pub idle_limit: Option<u64>,
    /// The program a script side may exec as the session's keeper of a
    /// call on a pseudo-terminal of its own (word `pfi-keeper=HEX`, the
    /// path's bytes in hex: a path may hold spaces): our client's own
    /// path, run as `PROGRAM --session-keeper SCRIPT_PID`.
    pub keeper: Option<Vec<u8>>,
}

/// The word of `PREFORK_INTERP` that bounds the server's idle time.
pub const SETUP_IDLE_PREFIX: &str = "pfi-idle=";

/// The word of `PREFORK_INTERP` that names the keeper program.
pub const SETUP_KEEPER_PREFIX: &str = "pfi-keeper=";

/// The keeper program's first argument (then the script's pid).
pub const KEEPER_ARGUMENT: &str = "--session-keeper";

/// The third word of `PREFORK_INTERP` that our client adds.
pub const SETUP_CAPS_PREFIX: &str = "pfi-caps=";

/// Formats the value of `PREFORK_INTERP`.
///
/// The fds go in the order chiark-utils' client sends and its module
/// reads: LISTEN, CALL, WATCHI, WATCHE. (The project's PROTOCOL notes name
/// the last two the other way round; the implementations are the
/// contract, and `setup_env_matches_chiark` pins what they do.)
pub fn encode_setup_env(e: &SetupEnv) -> String {
    let mut value = format!(
        "{VERSION},{}.{:09} {},{},{},{}",
        e.started_secs, e.started_nsecs, e.listen, e.call, e.watch_in, e.watch_err
    );
    if !e.client_caps.is_empty() {
        value += &format!(" {SETUP_CAPS_PREFIX}{}", e.client_caps.join(","));
    }
    if let Some(idle) = e.idle_limit {
        value += &format!(" {SETUP_IDLE_PREFIX}{idle}");
    }
    if let Some(keeper) = e.keeper.as_ref().filter(|k| !k.is_empty()) {
        value += &format!(" {SETUP_KEEPER_PREFIX}{}", hex_lower(keeper));
    }
    value
}

/// Parses the value of `PREFORK_INTERP`. Extra words and extra
/// comma-separated items are ignored, for forward compatibility.
pub fn decode_setup_env(value: &[u8]) -> Result<SetupEnv, ProtocolError> {
    let bad = |why: &str| ProtocolError::BadSetupEnv(why.to_string());
    let mut words = value.split(|&b| b == b' ');
    let first = words.next().unwrap_or_default();
    let second = words.next().ok_or_else(|| bad("expected two words"))?;
    let rest: Vec<&[u8]> = words.collect();
    // (A malformed number is ignored, as an unknown word is.)
    let idle_limit = rest
        .iter()
        .find_map(|w| w.strip_prefix(SETUP_IDLE_PREFIX.as_bytes()))
        .and_then(parse_decimal);
    // (Likewise malformed hex.)
    let keeper = rest
        .iter()
        .find_map(|w| w.strip_prefix(SETUP_KEEPER_PREFIX.as_bytes()))
        .and_then(decode_hex)
        .filter(|k| !k.is_empty());
    let client_caps = rest
        .iter()
        .find_map(|w| w.strip_prefix(SETUP_CAPS_PREFIX.as_bytes()))
        .map(|list| {
            list.split(|&b| b == b',')
                .filter(|c| !c.is_empty())
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect()
        })
        .unwrap_or_default();

    let mut items = first.split(|&b| b == b',');
    let version = items.next().unwrap_or_default();
    if version != VERSION.as_bytes() {
        return Err(bad(&format!(
            "unsupported version {:?} (expected {VERSION})",
            String::from_utf8_lossy(version)
        )));
    }
    let time = items.next().ok_or_else(|| bad("no start time"))?;
    let (secs, nsecs) = split_once(time, b'.').ok_or_else(|| bad("start time has no '.'"))?;
    let started_secs = parse_decimal(secs)
        .and_then(|s| i64::try_from(s).ok())
        .ok_or_else(|| bad("start time seconds are not a number"))?;
    if nsecs.len() != 9 {
        return Err(bad("start time nanoseconds must have exactly 9 digits"));
    }
    let started_nsecs = parse_decimal(nsecs)
        .map(|n| n as u32)
        .ok_or_else(|| bad("start time nanoseconds are not a number"))?;

    let mut fds = second.split(|&b| b == b',').map(|f| {
        parse_decimal(f)
            .and_then(|n| i32::try_from(n).ok())
            .ok_or_else(|| bad("file descriptors must be four non-negative numbers"))
    });
    let mut next_fd = || {
        fds.next()
            .unwrap_or_else(|| Err(bad("expected four file descriptors")))
    };
    Ok(SetupEnv {
        started_secs,
        started_nsecs,
        listen: next_fd()?,
        call: next_fd()?,
        watch_in: next_fd()?,
        watch_err: next_fd()?,
        client_caps,
        idle_limit,
        keeper,
    })
}

/// Bytes from hex digits (either case), or `None` if `text` is not an
/// even run of them.
pub fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    let digit = |d: u8| char::from(d).to_digit(16);
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| Some((digit(pair[0])? << 4 | digit(pair[1])?) as u8))
        .collect()
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

/// A non-empty run of ASCII digits that fits in u64.
fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_round_trip() {
        let g = encode_greeting(b"caps");
        let header: [u8; 8] = g[..8].try_into().unwrap();
        assert_eq!(decode_greeting_header(&header), Ok(4));
        assert_eq!(&g[8..], b"caps");
        assert_eq!(encode_greeting(b""), b"PFI\n\0\0\0\0");
    }

    #[test]
    fn greeting_rejects_garbage() {
        assert!(matches!(
            decode_greeting_header(b"HTTP/1.1"),
            Err(ProtocolError::BadGreetingMagic(_))
        ));
        assert_eq!(
            decode_greeting_header(b"PFI\n\xff\xff\xff\xff"),
            Err(ProtocolError::XdataTooLong(u32::MAX))
        );
    }

    #[test]
    fn payload_round_trip_with_non_utf8() {
        let env: Vec<&[u8]> = vec![b"A=1", b"B=\xff\xfe", b"=weird=x"];
        let args: Vec<&[u8]> = vec![b"", b"a b", b"\x80"];
        let p = encode_request_payload(env.clone(), args.clone());
        let len = decode_payload_len(p[..4].try_into().unwrap()).unwrap();
        assert_eq!(len as usize, p.len() - 4);
        let d = decode_payload(&p[4..]).unwrap();
        assert_eq!(d.env, env);
        assert_eq!(d.args, args);
    }

    #[test]
    fn payload_empty_lists() {
        let p = encode_request_payload(std::iter::empty(), std::iter::empty());
        assert_eq!(p, b"\0\0\0\x01\0");
        let d = decode_payload(&p[4..]).unwrap();
        assert!(d.env.is_empty() && d.args.is_empty());
    }

    #[test]
    fn payload_rejects_malformed() {
        assert_eq!(decode_payload(b""), Err(ProtocolError::PayloadUnterminated));
        assert_eq!(
            decode_payload(b"A=1\0x"),
            Err(ProtocolError::PayloadUnterminated)
        );
        assert_eq!(
            decode_payload(b"A=1\0"),
            Err(ProtocolError::PayloadNoEnvEnd)
        );
        assert_eq!(
            decode_payload_len([0xff; 4]),
            Err(ProtocolError::PayloadTooLong(u32::MAX))
        );
        assert_eq!(check_request_byte(2), Err(ProtocolError::BadRequestByte(2)));
        assert_eq!(check_request_byte(4), Err(ProtocolError::BadRequestByte(4)));
        assert_eq!(
            check_request_byte(0x20 | 1),
            Err(ProtocolError::BadRequestByte(0x21))
        );
        assert_eq!(
            check_request_byte(0x80),
            Err(ProtocolError::BadRequestByte(0x80))
        );
        let mut kind = check_request_byte(0x81).unwrap();
        assert_eq!(
            check_second_request_byte(&mut kind, 16),
            Err(ProtocolError::BadSecondRequestByte(16))
        );
        for extended in [false, true] {
            for context in [false, true] {
                for pty in 0..16u8 {
                    for closed in 0..8u8 {
                        let on = [0, 1, 2].map(|fd| extended && pty & (1 << fd) != 0);
                        let kind = RequestKind {
                            extended,
                            context: context && extended,
                            pty: on,
                            pty_background: pty & 8 != 0 && on.contains(&true),
                            limits: extended && context,
                            closed: [0, 1, 2].map(|fd| extended && closed & (1 << fd) != 0),
                            caller_signals: extended && pty & 4 != 0,
                        };
                        let bytes = encode_request_bytes(kind);
                        let mut decoded = check_request_byte(bytes[0]).unwrap();
                        assert_eq!(has_second_request_byte(bytes[0]), bytes.len() == 2);
                        if let Some(&second) = bytes.get(1) {
                            check_second_request_byte(&mut decoded, second).unwrap();
                        }
                        assert_eq!(decoded, kind);
                    }
                }
            }
        }
    }

    #[test]
    fn caller_signals_round_trip() {
        let signals = CallerSignals {
            ignored: CallerSignals::bit(libc::SIGHUP) | CallerSignals::bit(MAX_SIGNAL),
            blocked: CallerSignals::bit(libc::SIGUSR2),
        };
        assert_eq!(
            decode_caller_signals(encode_caller_signals(&signals)),
            signals
        );
        let ignored: Vec<i32> = CallerSignals::numbers(signals.ignored).collect();
        assert_eq!(ignored, [libc::SIGHUP, MAX_SIGNAL]);
        assert!(CallerSignals::default().is_empty() && !signals.is_empty());
    }

    #[test]
    fn limits_round_trip() {
        let limits = CallerLimits {
            rlimits: vec![(7, 1024, 4096), (0, RLIM_INFINITY, RLIM_INFINITY)],
            nice: -3,
            oom_score_adj: OOM_SCORE_UNKNOWN,
        };
        let bytes = encode_limits(&limits);
        assert_eq!(bytes.len(), 1 + 2 * LIMITS_ENTRY_LEN + LIMITS_TAIL_LEN);
        assert_eq!(decode_limits(bytes[0], &bytes[1..]), Ok(limits));
        assert_eq!(
            decode_limits(1, &bytes[1..]),
            Err(ProtocolError::BadLimits(bytes.len() - 1))
        );
    }

    #[test]
    fn env_entry_split() {
        assert_eq!(split_env_entry(b"A=b=c"), Some((&b"A"[..], &b"b=c"[..])));
        assert_eq!(split_env_entry(b"=A=b"), Some((&b"=A"[..], &b"b"[..])));
        assert_eq!(split_env_entry(b"A="), Some((&b"A"[..], &b""[..])));
        assert_eq!(split_env_entry(b"novalue"), None);
    }

    #[test]
    fn caps_round_trip_and_tolerance() {
        let x = encode_greeting_xdata(
            &[CAP_SIGNALS, "future"],
            None,
            None,
            None,
            None,
            None,
            ServerCounters {
                served: 0,
                running: 0,
                idle_ms: 0,
            },
        );
        assert_eq!(
            x,
            b"pfi-caps 1\ncaps signals,future\nserved 0\nrunning 0\nidle 0\n"
        );
        assert!(
            encode_greeting_xdata(
                &[],
                None,
                None,
                None,
                None,
                None,
                ServerCounters {
                    served: 5,
                    running: 1,
                    idle_ms: 0
                }
            )
            .is_empty(),
            "v1: no xdata"
        );
        assert_eq!(decode_caps(&x), vec!["signals", "future"]);
        // v1 (no xdata), someone else's xdata, extra lines.
        assert!(decode_caps(b"").is_empty());
        assert!(decode_caps(b"something else\ncaps signals\n").is_empty());
        assert_eq!(
            decode_caps(b"pfi-caps 1\nversion 9\ncaps a\ncaps b,,c\n"),
            vec!["a", "b", "c"]
        );
    }

    #[test]
    fn quit_lines_in_the_lock_file() {
        use std::path::Path;
        assert_eq!(
            lock_path_for_socket(Path::new("/run/p/sabc")).unwrap(),
            Path::new("/run/p/labc")
        );
        assert_eq!(lock_path_for_socket(Path::new("/run/p/s")), None);
        assert_eq!(lock_path_for_socket(Path::new("/run/p/xabc")), None);
        let line = encode_quit_line(1_795_467_572, "/a/b\nc changed");
        assert_eq!(line, b"quit 1795467572 /a/b c changed\n");
        let text = [&b"{\"record\":1}\nquit 5 idle timeout\n"[..], &line].concat();
        assert_eq!(
            decode_last_quit(&text),
            Some((1_795_467_572, &b"/a/b c changed"[..]))
        );
        assert_eq!(decode_last_quit(b"{}\nquit x y\n"), None);
        assert_eq!(decode_last_quit(b""), None);
    }

    #[test]
    fn stats_in_xdata() {
        let x = encode_greeting_xdata(
            &[CAP_SIGNALS],
            None,
            None,
            None,
            None,
            None,
            ServerCounters {
                served: 12,
                running: 3,
                idle_ms: 4500,
            },
        );
        assert_eq!(decode_caps(&x), vec!["signals"]);
        assert_eq!(decode_xdata_number(&x, "served"), Some(12));
        assert_eq!(decode_xdata_number(&x, "running"), Some(3));
        assert_eq!(decode_xdata_number(&x, "idle"), Some(4500));
        assert_eq!(decode_xdata_number(&x, "other"), None);
        assert_eq!(decode_xdata_number(b"served 1\n", "served"), None);
    }

    #[test]
    fn env_dependency_line() {
        let values = |name: &[u8]| (name == b"LANG").then(|| b"C.UTF-8".to_vec());
        let names: [&[u8]; 5] = [b"LANG", b"HOME", b"LANG", b"PREFORK_INTERP", b"A B"];
        let env = env_dependency(names, values).unwrap();
        assert_eq!(env.names, [b"HOME".to_vec(), b"LANG".to_vec()]);
        // sha256("HOME\0LANG=C.UTF-8\0"), as Perl's Digest::SHA and
        // Python's hashlib compute it.
        assert_eq!(
            env.digest,
            "f432bd1ad73898b12209f4a97d57dcbd6ca4ad1b51d0401a9dc396edfb84d906"
        );
        let world = world_digest(
            &[Some(1), None, Some(3), None, None, None, None, None],
            b"0::/\n",
        );
        let x = encode_greeting_xdata(
            &[CAP_SIGNALS],
            Some(&world),
            Some(&env),
            None,
            None,
            None,
            ServerCounters {
                served: 1,
                running: 0,
                idle_ms: 0,
            },
        );
        assert!(x.starts_with(format!("pfi-caps 1\ncaps signals\nworld {world}\nenv ").as_bytes()));
        // sha256("mnt:1\npid:-\nnet:3\nuser:-\nuts:-\nipc:-\ncgroup:-\ntime:-\ncgroup\n0::/\n"),
        // as Perl's Digest::SHA and Python's hashlib compute it.
        assert_eq!(
            decode_world(&x).unwrap(),
            "d15d2c0ff084b76b1f2adcd05f584fc5a49de96efd56a35d970e5da36e42d8b3"
        );
        let line = format!("env {} HOME LANG\n", env.digest);
        assert!(x.windows(line.len()).any(|w| w == line.as_bytes()));
        assert_eq!(decode_env_dependency(&x), Some(env));
        assert_eq!(decode_caps(&x), vec!["signals"]);
        assert_eq!(decode_xdata_number(&x, "served"), Some(1));
        assert!(env_dependency([&b"PREFORK_INTERP"[..]], values).is_none());
        assert!(decode_env_dependency(b"pfi-caps 1\nenv 00 A\n").is_none());
    }

    #[test]
    fn frames_round_trip() {
        let f = Frame::Status(WaitStatus::exited(3)).encode();
        assert_eq!(f, [b'X', 0, 0, 3, 0]);
        assert_eq!(Frame::decode(f), Frame::Status(WaitStatus::exited(3)));
        assert_eq!(Frame::decode(*b"?\0\0\0\x07"), Frame::Unknown(b'?', 7));
        assert_eq!(Frame::decode(*b"F\0\0\0\x02"), Frame::Foreground(false));
    }

    #[test]
    fn status_round_trip() {
        for s in [0, 3 << 8, 2, 0x8b, -1, i32::MIN].map(WaitStatus::from_raw) {
            assert_eq!(decode_status(encode_status(s)), s);
        }
    }

    #[test]
    fn setup_env_round_trip() {
        let e = SetupEnv {
            started_secs: 1_700_000_000,
            started_nsecs: 5,
            listen: 3,
            call: 4,
            watch_in: 5,
            watch_err: 6,
            client_caps: Vec::new(),
            idle_limit: None,
            keeper: None,
        };
        let s = encode_setup_env(&e);
        assert_eq!(s, "v1,1700000000.000000005 3,4,5,6");
        assert_eq!(decode_setup_env(s.as_bytes()), Ok(e.clone()));
        let ours = SetupEnv {
            client_caps: vec![CAP_SIGNALS.into()],
            ..e.clone()
        };
        let s = encode_setup_env(&ours);
        assert_eq!(s, "v1,1700000000.000000005 3,4,5,6 pfi-caps=signals");
        assert_eq!(decode_setup_env(s.as_bytes()), Ok(ours));
        let folded = SetupEnv {
            idle_limit: Some(3600),
            ..e.clone()
        };
        let s = encode_setup_env(&folded);
        assert_eq!(s, "v1,1700000000.000000005 3,4,5,6 pfi-idle=3600");
        assert_eq!(decode_setup_env(s.as_bytes()), Ok(folded));
        let keeper = SetupEnv {
            keeper: Some(b"/a b".to_vec()),
            ..e.clone()
        };
        let s = encode_setup_env(&keeper);
        assert_eq!(s, "v1,1700000000.000000005 3,4,5,6 pfi-keeper=2f612062");
        assert_eq!(decode_setup_env(s.as_bytes()), Ok(keeper));
        // Extra items and words are ignored.
        assert_eq!(
            decode_setup_env(b"v1,1700000000.000000005,x 3,4,5,6,7 more"),
            Ok(e)
        );
    }

    #[test]
    fn hex_back_to_bytes() {
        assert_eq!(decode_hex(b"2f78E90a"), Some(b"/x\xe9\n".to_vec()));
        assert_eq!(decode_hex(b""), Some(Vec::new()));
        for bad in [&b"2f7"[..], b"zz", b"+f", b"\xc3\xa9"] {
            assert_eq!(decode_hex(bad), None, "{bad:?}");
        }
    }

    /// What chiark-utils 7.0.0's client set (captured from a setup run):
    /// fd 7 was the write end of a pipe (the watcher's stdin), fd 8 the
    /// nonblocking read end of another (the watcher's stderr).
    #[test]
    fn setup_env_matches_chiark() {
        let e = decode_setup_env(b"v1,1795467572.582498935 5,9,7,8").unwrap();
        assert_eq!((e.listen, e.call, e.watch_in, e.watch_err), (5, 9, 7, 8));
        assert_eq!(
            (e.started_secs, e.started_nsecs),
            (1_795_467_572, 582_498_935)
        );
    }

    #[test]
    fn setup_env_rejects_malformed() {
        for bad in [
            &b""[..],
            b"v1,1.000000000",
            b"v2,1.000000000 3,4,5,6",
            b"v1,1.0 3,4,5,6",
            b"v1,1 3,4,5,6",
            b"v1,x.000000000 3,4,5,6",
            b"v1,1.000000000 3,4,5",
            b"v1,1.000000000 3,4,-5,6",
            b"v1,1.000000000 3,4,,6",
        ] {
            assert!(
                matches!(decode_setup_env(bad), Err(ProtocolError::BadSetupEnv(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
