//! Everything this crate reads from /proc, in one place: each file's
//! parser is a pure function of its text (tested on fixtures below), and
//! a reader next to it opens the real file.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::PathBuf;

/// How many threads this process has (/proc/self/task).
pub(crate) fn thread_count() -> io::Result<usize> {
    Ok(fs::read_dir("/proc/self/task")?.count())
}

/// This process's environment as it was at exec (/proc/self/environ: the
/// kernel's copy, which setenv and unsetenv never change), raw: entries
/// ending in NUL.
pub(crate) fn initial_environ() -> io::Result<Vec<u8>> {
    fs::read("/proc/self/environ")
}

/// Where this process's argument strings are: `arg_start` and `arg_end`
/// of /proc/self/stat.
pub(crate) fn own_argv_area() -> Option<(usize, usize)> {
    parse_stat_argv_area(&fs::read("/proc/self/stat").ok()?)
}

/// Where this process's environment strings are, as exec left them:
/// `env_start` and `env_end` of /proc/self/stat (what /proc/self/environ
/// shows).
pub(crate) fn own_environ_area() -> Option<(usize, usize)> {
    parse_stat_pair(&fs::read("/proc/self/stat").ok()?, 50)
}

/// `arg_start` and `arg_end` (fields 48 and 49) of a /proc/PID/stat text.
fn parse_stat_argv_area(stat: &[u8]) -> Option<(usize, usize)> {
    parse_stat_pair(stat, 48)
}

/// Fields `first` and `first + 1` of a /proc/PID/stat text, as numbers;
/// fields are counted after the last `)`, since the command name (field
/// 2) may hold spaces and parentheses.
fn parse_stat_pair(stat: &[u8], first: usize) -> Option<(usize, usize)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let text = std::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = text.split_ascii_whitespace().skip(first - 3);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    Some((start, end))
}

/// This process's world ([`crate::protocol::world_digest`]): its
/// namespaces and cgroups, which an executor forked elsewhere could not
/// take on. About 80 µs in a new process (the kernel makes its /proc
/// entries on first sight), so a client computes it while the server
/// prepares its greeting.
pub(crate) fn own_world() -> String {
    crate::protocol::world_digest(&own_namespaces(), &own_cgroups())
}

/// The inode of each of [`crate::protocol::WORLD_NAMESPACES`]
/// (/proc/self/ns/NAME), `None` where it cannot be read. The directory is
/// opened once, and each link read (`mnt:[4026531841]`) from it: reading
/// the eight links cost about a third less than following them (49–68 µs
/// against 73–105 in a new process; following makes the kernel build a
/// path to each namespace's own file).
fn own_namespaces() -> Vec<Option<u64>> {
    use nix::fcntl::{OFlag, open, readlinkat};
    use nix::sys::stat::Mode;
    let dir = open(
        "/proc/self/ns",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok();
    crate::protocol::WORLD_NAMESPACES
        .iter()
        .map(|name| {
            let link = readlinkat(dir.as_ref()?, *name).ok()?;
            parse_namespace_link(std::os::unix::ffi::OsStrExt::as_bytes(link.as_os_str()))
        })
        .collect()
}

/// The inode in a namespace link's text, `NAME:[INODE]`.
fn parse_namespace_link(link: &[u8]) -> Option<u64> {
    let start = link.iter().position(|&b| b == b'[')? + 1;
    let inode = link[start..].strip_suffix(b"]")?;
    std::str::from_utf8(inode).ok()?.parse().ok()
}

/// This process's cgroup membership, raw (/proc/self/cgroup: one line a
/// hierarchy, the unified one as `0::PATH`); empty if unreadable. Read
/// with one read into a page: the file shows a size of 0, and fs::read's
/// small growing reads would each be a system call.
fn own_cgroups() -> Vec<u8> {
    use std::io::Read;
    let mut text = vec![0; 4096];
    let mut len = 0;
    let Ok(mut file) = fs::File::open("/proc/self/cgroup") else {
        return Vec::new();
    };
    loop {
        if len == text.len() {
            text.resize(len * 2, 0);
        }
        match file.read(&mut text[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Vec::new(),
        }
    }
    text.truncate(len);
    text
}

// ------------------------------------------------------------ /proc/net/unix

/// Listening Unix sockets by path, with their socket inodes, in this
/// process's network namespace and in every one `processes` are in: each
/// namespace's table is read once, as /proc/PID/net/unix of one process
/// in it. A path may be listened on in more than one (a socket file
/// replaced while its old server still listens): ours come first.
pub(crate) fn listening_sockets_everywhere(processes: &[OwnProcess]) -> HashMap<PathBuf, Vec<u64>> {
    let mut tables = vec![fs::read("/proc/net/unix").unwrap_or_default()];
    let own = namespace_inode(std::process::id(), "net");
    let mut seen: Vec<u64> = own.into_iter().collect();
    for process in processes {
        let Some(ns) = process.net_ns else { continue };
        if seen.contains(&ns) {
            continue;
        }
        seen.push(ns);
        if let Ok(table) = fs::read(format!("/proc/{}/net/unix", process.pid)) {
            tables.push(table);
        }
    }
    let mut all: HashMap<PathBuf, Vec<u64>> = HashMap::new();
    for (path, inode) in tables.iter().flat_map(|t| parse_net_unix(t)) {
        let inodes = all.entry(path).or_default();
        if !inodes.contains(&inode) {
            inodes.push(inode);
        }
    }
    all
}

/// The listening sockets in the text of /proc/net/unix, in its order. A
/// path is the rest of its line after the inode (it may hold spaces),
/// taken as bytes (it need not be UTF-8).
fn parse_net_unix(table: &[u8]) -> Vec<(PathBuf, u64)> {
    use std::os::unix::ffi::OsStrExt;
    const ACCEPTING: u64 = 0x0001_0000; // __SO_ACCEPTCON
    table
        .split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path
            let mut rest = line;
            let mut fields = [&b""[..]; 7];
            for field in &mut fields {
                let start = rest.iter().position(|&b| b != b' ')?;
                rest = &rest[start..];
                let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
                *field = &rest[..end];
                rest = &rest[end..];
            }
            let path = rest.strip_prefix(b" ")?;
            let number = |field: &[u8], radix| {
                u64::from_str_radix(std::str::from_utf8(field).ok()?, radix).ok()
            };
            let flags = number(fields[3], 16)?;
            let inode = number(fields[6], 10)?;
            (flags & ACCEPTING != 0 && !path.is_empty())
                .then(|| (PathBuf::from(std::ffi::OsStr::from_bytes(path)), inode))
        })
        .collect()
}

// ---------------------------------------------------------------- processes

/// A process of this uid as /proc showed it at one look: its network
/// namespace and what its fds are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnProcess {
    pub(crate) pid: u32,
    /// The inode of its network namespace (/proc/PID/ns/net).
    pub(crate) net_ns: Option<u64>,
    /// Its fds and what each is (the text of /proc/PID/fd/N:
    /// `socket:[INODE]`, `pipe:[INODE]`, `anon_inode:inotify`, a path);
    /// empty where not read ([`listening_sockets_of_ours`]).
    pub(crate) fds: Vec<(u32, OsString)>,
}

/// This uid's processes: those whose /proc/PID directory it owns (a
/// process's effective uid). Others' fds are unreadable to a user, and
/// no server of ours runs as anyone else.
pub(crate) fn own_processes() -> Vec<OwnProcess> {
    scan_own_processes(true)
}

/// [`listening_sockets_everywhere`] for this uid's processes, found
/// without reading their fds (which only `--list` needs): what a client
/// creating a server looks at, for pre-clean and eviction.
pub(crate) fn listening_sockets_of_ours() -> HashMap<PathBuf, Vec<u64>> {
    listening_sockets_everywhere(&scan_own_processes(false))
}

/// [`own_processes`]; with `fds` false, each one's `fds` left empty.
fn scan_own_processes(fds: bool) -> Vec<OwnProcess> {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::geteuid().as_raw();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            if entry.metadata().ok()?.uid() != uid {
                return None;
            }
            Some(OwnProcess {
                pid,
                net_ns: namespace_inode(pid, "net"),
                fds: if fds { fd_links(pid) } else { Vec::new() },
            })
        })
        .collect()
}

/// The inode of process `pid`'s namespace `name` (/proc/PID/ns/NAME).
fn namespace_inode(pid: u32, name: &str) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let link = fs::read_link(format!("/proc/{pid}/ns/{name}")).ok()?;
    parse_namespace_link(link.as_os_str().as_bytes())
}

/// Process `pid`'s fds and what each is (the links in /proc/PID/fd), in
/// fd order; none if unreadable.
pub(crate) fn fd_links(pid: u32) -> Vec<(u32, OsString)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<(u32, OsString)> = dir
        .flatten()
        .filter_map(|fd| {
            let number = fd.file_name().to_str()?.parse().ok()?;
            Some((number, fs::read_link(fd.path()).ok()?.into_os_string()))
        })
        .collect();
    fds.sort();
    fds
}

/// How many inotify instances process `pid` holds: its fds that are one
/// (`anon_inode:inotify`; a forked copy of one would count again, and
/// none of our processes keeps one across fork).
pub(crate) fn inotify_count(pid: u32) -> usize {
    count_inotify(&fd_links(pid))
}

fn count_inotify(fds: &[(u32, OsString)]) -> usize {
    fds.iter()
        .filter(|(_, link)| link.as_os_str() == "anon_inode:inotify")
        .count()
}

/// The process of `processes` holding one of socket `inodes` (tried in
/// order); of several holding it (a child just forked), the one whose
/// parent does not.
pub(crate) fn socket_holder(processes: &[OwnProcess], inodes: &[u64]) -> Option<u32> {
    inodes.iter().find_map(|inode| {
        let wanted = format!("socket:[{inode}]");
        let holders: Vec<u32> = processes
            .iter()
            .filter(|p| {
                p.fds
                    .iter()
                    .any(|(_, link)| link.as_os_str() == wanted.as_str())
            })
            .map(|p| p.pid)
            .collect();
        holders
            .iter()
            .copied()
            .find(|&pid| parent(pid).is_none_or(|parent| !holders.contains(&parent)))
            .or(holders.first().copied())
    })
}

/// A process's parent (field 4 of /proc/PID/stat).
pub(crate) fn parent(pid: u32) -> Option<u32> {
    parse_stat_parent(&fs::read(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_stat_parent(stat: &[u8]) -> Option<u32> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let text = std::str::from_utf8(&stat[close + 1..]).ok()?;
    text.split_ascii_whitespace().nth(1)?.parse().ok()
}

/// Server `server`'s watcher, if it has one: a process of `processes`
/// titled `prefork-interp [watcher] ...` whose fd 0 is a pipe the server
/// holds beyond its stdio (the watcher's end of WATCHI, whose write end
/// only the server holds).
pub(crate) fn watcher_of(processes: &[OwnProcess], server: u32) -> Option<u32> {
    let server_fds = processes
        .iter()
        .find(|p| p.pid == server)
        .map(|p| p.fds.clone())
        .unwrap_or_else(|| fd_links(server));
    let pipes: Vec<&OsString> = server_fds
        .iter()
        .filter(|(fd, link)| *fd > 2 && link.as_encoded_bytes().starts_with(b"pipe:"))
        .map(|(_, link)| link)
        .collect();
    processes
        .iter()
        .filter(|p| p.pid != server)
        .filter(|p| {
            p.fds
                .iter()
                .any(|(fd, link)| *fd == 0 && pipes.contains(&link))
        })
        .map(|p| p.pid)
        .find(|&pid| command_line_bytes(pid).starts_with(WATCHER_TITLE))
}

/// How a watcher's title starts (its script follows).
const WATCHER_TITLE: &[u8] = b"prefork-interp [watcher] ";

/// A process's command line, arguments separated by spaces (bytes that
/// are not UTF-8 replaced by U+FFFD).
pub(crate) fn command_line(pid: u32) -> String {
    String::from_utf8_lossy(&command_line_bytes(pid)).into_owned()
}

/// A process's command line as it is, arguments separated by spaces.
pub(crate) fn command_line_bytes(pid: u32) -> Vec<u8> {
    join_cmdline(&fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
}

fn join_cmdline(raw: &[u8]) -> Vec<u8> {
    let words: Vec<&[u8]> = raw.split(|&b| b == 0).filter(|w| !w.is_empty()).collect();
    words.join(&b' ')
}

/// A process's children (/proc/PID/task/PID/children: those of its main
/// thread, which for our single-threaded servers is all of them).
pub(crate) fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// What a process really uses, from /proc/PID/smaps_rollup: resident
/// (RSS) and proportional (PSS: each shared page divided among its
/// sharers), in KiB. `None` if unreadable (gone, or not ours).
pub(crate) fn memory_kib(pid: u32) -> Option<MemoryKib> {
    parse_smaps_rollup(&fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// Resident and proportional set sizes, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemoryKib {
    pub(crate) rss: u64,
    pub(crate) pss: u64,
}

fn parse_smaps_rollup(text: &str) -> Option<MemoryKib> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.trim().strip_suffix("kB")?.trim().parse().ok()
        })
    };
    Some(MemoryKib {
        rss: field("Rss")?,
        pss: field("Pss")?,
    })
}

/// A process's command name (/proc/PID/comm).
pub(crate) fn command_name(pid: u32) -> String {
    let name = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    name.trim().to_string()
}

// ---------------------------------------------------------------- /proc/locks

/// The pid holding a flock on the file with device `dev` and inode `ino`.
pub(crate) fn flock_holder(dev: u64, ino: u64) -> Option<u32> {
    let locks = fs::read_to_string("/proc/locks").ok()?;
    parse_flock_holder(&locks, (libc::major(dev), libc::minor(dev), ino))
}

/// Lines are "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF": major and
/// minor in hex, inode in decimal.
fn parse_flock_holder(locks: &str, file: (u32, u32, u64)) -> Option<u32> {
    locks.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (pid, id) = (words.get(4)?, words.get(5)?);
        let mut parts = id.split(':');
        let major = u32::from_str_radix(parts.next()?, 16).ok()?;
        let minor = u32::from_str_radix(parts.next()?, 16).ok()?;
        let ino: u64 = parts.next()?.parse().ok()?;
        (words.get(1) == Some(&"FLOCK") && (major, minor, ino) == file).then(|| pid.parse().ok())?
    })
}

// ----------------------------------------------------------- /proc/self/smaps

/// One mapping of /proc/self/smaps, with what the huge-page policy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub(crate) start: usize,
    pub(crate) end: usize,
    /// Private, writable, and backed by no file (heap or anonymous).
    pub(crate) private_anonymous_writable: bool,
    pub(crate) rss_kb: usize,
}

/// This process's mappings.
pub(crate) fn own_mappings() -> io::Result<Vec<Mapping>> {
    Ok(parse_smaps(&fs::read_to_string("/proc/self/smaps")?))
}

fn parse_smaps(smaps: &str) -> Vec<Mapping> {
    let mut mappings: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            let perms = words.next().unwrap_or("");
            let inode = words.nth(2).unwrap_or("");
            let name = words.next().unwrap_or("");
            let anonymous = inode == "0" && (name.is_empty() || name == "[heap]");
            mappings.push(Mapping {
                start,
                end,
                private_anonymous_writable: perms.starts_with("rw")
                    && perms.ends_with('p')
                    && anonymous,
                rss_kb: 0,
            });
        } else if first == "Rss:"
            && let Some(mapping) = mappings.last_mut()
        {
            mapping.rss_kb = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        }
    }
    mappings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_rollup_sizes() {
        let text = "55d0c0a00000-7ffd1c9f4000 ---p 00000000 00:00 0                          [rollup]\n\
                    Rss:               10240 kB\n\
                    Pss:                3021 kB\n\
                    Pss_Dirty:          1200 kB\n\
                    Pss_Anon:           1100 kB\n";
        assert_eq!(
            parse_smaps_rollup(text),
            Some(MemoryKib {
                rss: 10240,
                pss: 3021
            })
        );
        assert_eq!(parse_smaps_rollup("Rss: 1 kB\n"), None);
    }

    #[test]
    fn net_unix_lists_listening_sockets_only() {
        let table = b"\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 41234 /run/user/0/prefork-interp/sabc
0000000000000000: 00000003 00000000 00000000 0001 03 41235 /run/user/0/prefork-interp/sabc
0000000000000000: 00000002 00000000 00010000 0001 01 17 @abstract
0000000000000000: 00000002 00000000 00010000 0001 01    42 /tmp/a dir/with  spaces
0000000000000000: 00000002 00000000 00010000 0001 01 43 /tmp/caf\xe9/s
0000000000000000: 00000002 00000000 00010000 0001 01 19
0000000000000000: 00000002 00000000 00000000 0002 01 18
";
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            parse_net_unix(table),
            vec![
                (PathBuf::from("/run/user/0/prefork-interp/sabc"), 41234),
                (PathBuf::from("@abstract"), 17),
                (PathBuf::from("/tmp/a dir/with  spaces"), 42),
                (
                    PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/caf\xe9/s")),
                    43
                ),
            ]
        );
    }

    #[test]
    fn finds_a_listening_socket_and_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let processes = own_processes();
        let inodes = listening_sockets_everywhere(&processes)
            .remove(&path)
            .expect("listed in /proc/net/unix");
        assert_eq!(inodes.len(), 1);
        let inode = inodes[0];
        assert_eq!(
            socket_holder(&processes, &[inode]),
            Some(std::process::id())
        );
        assert_eq!(socket_holder(&processes, &[1]), None);
        drop(listener);
    }

    #[test]
    fn stat_parent() {
        assert_eq!(parse_stat_parent(b"42 (a) b (c) S 17 42 42 0"), Some(17));
        assert_eq!(parse_stat_parent(b"42 (x)"), None);
        assert_eq!(
            parent(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }

    #[test]
    fn inotify_instances_counted_by_fd() {
        let fds: Vec<(u32, OsString)> = [
            "/dev/null",
            "anon_inode:inotify",
            "anon_inode:[eventfd]",
            "anon_inode:inotify",
        ]
        .iter()
        .enumerate()
        .map(|(n, link)| (n as u32, OsString::from(link)))
        .collect();
        assert_eq!(count_inotify(&fds), 2);
        // (Other tests' threads may make instances meanwhile: this one's
        // fd is what must be seen.)
        use std::os::fd::{AsFd, AsRawFd};
        let instance =
            nix::sys::inotify::Inotify::init(nix::sys::inotify::InitFlags::IN_CLOEXEC).unwrap();
        let fd = instance.as_fd().as_raw_fd() as u32;
        assert!(
            fd_links(std::process::id()).contains(&(fd, "anon_inode:inotify".into())),
            "{:?}",
            fd_links(std::process::id())
        );
        assert!(inotify_count(std::process::id()) >= 1);
        drop(instance);
    }

    #[test]
    fn argv_area_fields_counted_after_the_command_name() {
        let tail: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        let stat = format!("42 (a) b (c) {}\n", tail.join(" "));
        assert_eq!(parse_stat_argv_area(stat.as_bytes()), Some((48, 49)));
        assert_eq!(parse_stat_argv_area(b"42 (x) S 1 2"), None);
    }

    #[test]
    fn namespace_links() {
        assert_eq!(parse_namespace_link(b"mnt:[4026531841]"), Some(4026531841));
        assert_eq!(parse_namespace_link(b"mnt:[]"), None);
        assert_eq!(parse_namespace_link(b"weird"), None);
    }

    #[test]
    fn cmdline_words() {
        assert_eq!(join_cmdline(b"perl\0-w\0/x y\0"), b"perl -w /x y");
        assert_eq!(join_cmdline(b"a\n\xff\0b\0"), b"a\n\xff b");
        assert_eq!(join_cmdline(b""), b"");
    }

    #[test]
    fn locks_name_the_flock_holder() {
        let locks = "\
1: POSIX  ADVISORY  WRITE 99 08:01:5678 0 EOF
2: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF
3: FLOCK  ADVISORY  WRITE 4321 fd:1a:77 0 EOF
";
        assert_eq!(parse_flock_holder(locks, (8, 1, 5678)), Some(1234));
        assert_eq!(parse_flock_holder(locks, (0xfd, 0x1a, 77)), Some(4321));
        assert_eq!(parse_flock_holder(locks, (8, 1, 1)), None);
    }

    #[test]
    fn smaps_mappings() {
        let smaps = "\
55d591000000-55d592100000 rw-p 00000000 00:00 0                          [heap]
Size:              17408 kB
Rss:               16000 kB
7f1000000000-7f1000400000 r--p 00000000 08:01 1234                       /usr/lib/libperl.so
Size:               4096 kB
Rss:                4096 kB
7f2000000000-7f2000400000 rw-s 00000000 00:01 99                         /dev/zero (deleted)
Rss:                4096 kB
7f3000000000-7f3000300000 rw-p 00000000 00:00 0 
Rss:                3072 kB
";
        let got = parse_smaps(smaps);
        let summary: Vec<(usize, bool, usize)> = got
            .iter()
            .map(|m| (m.start, m.private_anonymous_writable, m.rss_kb))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0x55d591000000, true, 16000),
                (0x7f1000000000, false, 4096),
                (0x7f2000000000, false, 4096),
                (0x7f3000000000, true, 3072),
            ]
        );
        assert_eq!(got[0].end, 0x55d592100000);
    }
}
