//! Everything this crate reads from /proc, in one place: each file's
//! parser is a pure function of its text (tested on fixtures below), and
//! a reader next to it opens the real file.

use std::collections::HashMap;
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

/// Listening Unix sockets by path, with their socket inodes.
pub(crate) fn listening_sockets() -> HashMap<PathBuf, u64> {
    parse_net_unix(&fs::read_to_string("/proc/net/unix").unwrap_or_default())
}

/// The listening sockets in the text of /proc/net/unix.
fn parse_net_unix(table: &str) -> HashMap<PathBuf, u64> {
    const ACCEPTING: u32 = 0x0001_0000; // __SO_ACCEPTCON
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let inode = fields.get(6)?.parse().ok()?;
            let path = fields.get(7)?;
            (flags & ACCEPTING != 0).then(|| (PathBuf::from(path), inode))
        })
        .collect()
}

// ---------------------------------------------------------------- processes

/// The process (of ours: others' fds are unreadable) holding socket
/// `inode`, from /proc/PID/fd.
pub(crate) fn socket_holder(inode: u64) -> Option<u32> {
    let wanted = format!("socket:[{inode}]");
    fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|proc_entry| {
            let pid: u32 = proc_entry.file_name().to_str()?.parse().ok()?;
            let fds = fs::read_dir(proc_entry.path().join("fd")).ok()?;
            fds.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t.as_os_str() == wanted.as_str()))
                .then_some(pid)
        })
}

/// A process's command line, arguments separated by spaces.
pub(crate) fn command_line(pid: u32) -> String {
    join_cmdline(&fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
}

fn join_cmdline(raw: &[u8]) -> String {
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    words.join(" ")
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
        let table = "\
Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 41234 /run/user/0/prefork-interp/sabc
0000000000000000: 00000003 00000000 00000000 0001 03 41235 /run/user/0/prefork-interp/sabc
0000000000000000: 00000002 00000000 00010000 0001 01 17 @abstract
0000000000000000: 00000002 00000000 00000000 0002 01 18
";
        let got = parse_net_unix(table);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[&PathBuf::from("/run/user/0/prefork-interp/sabc")],
            41234
        );
    }

    #[test]
    fn finds_a_listening_socket_and_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let inode = *listening_sockets()
            .get(&path)
            .expect("listed in /proc/net/unix");
        assert_eq!(socket_holder(inode), Some(std::process::id()));
        drop(listener);
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
        assert_eq!(join_cmdline(b"perl\0-w\0/x y\0"), "perl -w /x y");
        assert_eq!(join_cmdline(b""), "");
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
