//! `prefork-interp --list [--json]`: what servers cost (memory and inotify
//! instances, per server and in total), what they do without
//! (`degraded`), servers in other network namespaces, and script paths
//! that a line or UTF-8 cannot hold.
mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use common::*;

/// `--list --json` run by `call`: the array's objects.
fn json_of(call: Call) -> Vec<Value> {
    let out = call.run();
    assert_success(&out);
    let all: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout_str(&out)));
    all.as_array().expect("a JSON array").clone()
}

fn listed_json(h: &Harness) -> Vec<Value> {
    json_of(h.client_call(&["--list", "--json"]))
}

/// `--list`'s table.
fn table(h: &Harness) -> String {
    let out = h.client_call(&["--list"]).run();
    assert_success(&out);
    stdout_str(&out)
}

/// The object for the server whose pid is `pid`.
fn entry(all: &[Value], pid: u32) -> &Value {
    all.iter()
        .find(|s| s["pid"] == pid)
        .unwrap_or_else(|| panic!("server {pid} not in {all:#?}"))
}

/// The table's lines from the row of server `pid` up to the next row (a
/// line not indented) or the end.
fn row_and_notes(table: &str, pid: u32) -> Vec<&str> {
    let lines: Vec<&str> = table.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.split_whitespace().nth(1) == Some(&pid.to_string()))
        .unwrap_or_else(|| panic!("no row for {pid}:\n{table}"));
    let notes = lines[at + 1..]
        .iter()
        .take_while(|l| l.starts_with("    "))
        .count();
    lines[at..=at + notes].to_vec()
}

/// The inotify instances process `pid` holds (its fds that are one).
fn inotify_fds(pid: u64) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter(|t| t.as_os_str() == "anon_inode:inotify")
                .count()
        })
        .unwrap_or(0)
}

/// The inotify instances of a listed server's processes as /proc shows
/// them now: those its `memory` lists, and its `watcher`.
fn inotify_of(server: &Value) -> usize {
    let processes = server["memory"]["processes"].as_array().unwrap();
    let pids = processes.iter().map(|p| p["pid"].as_u64().unwrap());
    pids.chain(server["watcher"].as_u64())
        .map(inotify_fds)
        .sum()
}

/// The table's last line, `TOTAL  servers N  memory SIZE  inotify
/// instances N`, as (servers, memory, inotify instances).
fn table_totals(table: &str) -> (u64, String, u64) {
    let last = table.lines().last().unwrap();
    let words: Vec<&str> = last.split_whitespace().collect();
    assert_eq!(words.len(), 8, "{table}");
    assert_eq!(
        [words[0], words[1], words[3], words[5], words[6]],
        ["TOTAL", "servers", "memory", "inotify", "instances"],
        "{table}"
    );
    (
        words[2].parse().unwrap(),
        words[4].to_string(),
        words[7].parse().unwrap(),
    )
}

/// A copy of the world's script at `path` (in its directory), run as a
/// user would (through the kernel's #! handling), with `args`.
fn run_copy_at(h: &Harness, path: &Path, args: &[&str]) -> Output {
    if !path.exists() {
        std::fs::copy(&h.script, path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    Command::new(path)
        .args(args)
        .env_clear()
        .envs(h.base_env())
        .current_dir(h.dir())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The server's pid, asked of a call of the script copy at `path`.
fn server_of_copy_at(h: &Harness, path: &Path) -> u32 {
    let out = run_copy_at(h, path, &["@server"]);
    assert_success(&out);
    stdout_str(&out).trim().parse().unwrap()
}

/// Each server shows the inotify instances its processes hold (a Rust
/// server watches its files and socket with one), and the totals sum the
/// servers: in the table a line under each row and a last line, in JSON
/// `inotify` and `totals` (the same in every object, the array still one
/// of servers).
#[test]
fn totals_and_inotify_instances_per_server() {
    let h = Harness::new(Side::Rust);
    let first = h.server_pid();
    let out = h.call_with_options(&["-G", "second"], &["@server"]).run();
    assert_success(&out);
    let second: u32 = stdout_str(&out).trim().parse().unwrap();
    assert_ne!(first, second);

    let all = listed_json(&h);
    assert_eq!(all.len(), 2, "{all:#?}");
    let totals = &all[0]["totals"];
    assert_eq!(&all[1]["totals"], totals, "the same totals in every object");
    for server in [first, second] {
        let listed = entry(&all, server);
        assert_eq!(
            listed["inotify"], 1,
            "a Rust server's one instance: {listed:#}"
        );
        assert_eq!(listed["inotify"], inotify_of(listed), "{listed:#}");
        assert_eq!(listed["watcher"], Value::Null, "{listed:#}");
    }
    let sum = |key: &str| -> u64 { all.iter().map(|s| s["memory"][key].as_u64().unwrap()).sum() };
    assert_eq!(totals["servers"], 2, "{totals:#}");
    assert_eq!(totals["pss_kib"], sum("pss_kib"), "{totals:#}");
    assert_eq!(totals["rss_kib"], sum("rss_kib"), "{totals:#}");
    assert_eq!(totals["unseen"], 0, "{totals:#}");
    // Every instance of this world's processes, and none other.
    let world: usize = h
        .processes()
        .iter()
        .map(|&(pid, _)| inotify_fds(pid.into()))
        .sum();
    assert_eq!(totals["inotify"], world, "{totals:#} {:#?}", h.processes());

    let text = table(&h);
    for server in [first, second] {
        let lines = row_and_notes(&text, server);
        assert_eq!(lines[1..], ["    inotify instances 1"], "{text}");
    }
    let (servers, memory, inotify) = table_totals(&text);
    assert_eq!((servers, inotify), (2, 2), "{text}");
    let (size, unit) = memory.split_at(memory.len() - 1);
    assert!(
        ["K", "M"].contains(&unit) && size.parse::<f64>().is_ok_and(|m| m > 0.0),
        "{text}"
    );
    h.finish();
}

/// With no server, the table still ends with the totals: none.
#[test]
fn totals_of_no_server() {
    let h = Harness::new(Side::Rust);
    let text = table(&h);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert_eq!(table_totals(&text), (0, "0K".to_string(), 0), "{text}");
    assert_eq!(listed_json(&h), Vec::<Value>::new());
    h.finish();
}

/// A server that needs a watcher (chiark-utils' Perl module, which offers
/// no `watch`) has one, titled `prefork-interp [watcher] SCRIPT`: `--list
/// --json` names it, and counts its inotify instance as the server's.
#[test]
fn a_watchers_inotify_instance_is_its_servers() {
    let module = "/usr/share/perl5/Proc/Prefork/Interp.pm";
    assert!(
        Path::new(module).exists(),
        "{module} is missing: this test needs the Debian package chiark-scripts \
         (./test installs it)"
    );
    let h = Harness::custom(
        Side::Perl,
        client(),
        vec!["perl".into()],
        None,
        &perl_agent_body(false),
    );
    let out = h.call(&["@server", "@err:.", "@_exit:0"]).run();
    let server: u32 = stdout_str(&out).trim().parse().unwrap();
    let watchers: Vec<u32> = h
        .processes()
        .into_iter()
        .filter(|(_, shown)| shown.starts_with("prefork-interp [watcher] "))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(watchers.len(), 1, "{:#?}", h.processes());
    let watcher = watchers[0];
    assert_eq!(inotify_fds(watcher.into()), 1, "the watcher's instance");

    let all = listed_json(&h);
    let listed = entry(&all, server);
    assert_eq!(listed["watcher"], watcher, "{listed:#}");
    assert_eq!(listed["inotify"], inotify_of(listed), "{listed:#}");
    assert!(listed["inotify"].as_u64().unwrap() >= 1, "{listed:#}");
    assert_eq!(listed["totals"]["inotify"], listed["inotify"]);
    let text = table(&h);
    assert_eq!(
        row_and_notes(&text, server)[1],
        format!("    inotify instances {}", listed["inotify"]),
        "{text}"
    );
    h.finish();
}

/// The pid of the server that serves a call made inside `holder`'s
/// namespaces (started there, if none was).
fn server_inside(h: &Harness, holder: &NamespaceHolder) -> u32 {
    let out = h.call(&["@server"]).inside(holder.pid).run();
    assert_success(&out);
    stdout_str(&out).trim().parse().unwrap()
}

/// Takes down the server inside `holder`'s namespaces (the harness's
/// own clean-up reaches the one outside), then ends the world.
fn kill_inside_then_finish(h: Harness, holder: &NamespaceHolder) {
    let out = h
        .call_with_options(&["--kill"], &[] as &[&str])
        .inside(holder.pid)
        .run();
    assert_success(&out);
    h.finish();
}

/// A server that cannot have an inotify instance (started where the
/// user's limit is 0) says so in its greeting (`degraded`): `--list`
/// shows the text under its row, `--list --json` as `degraded`; a server
/// that lacks nothing has no such line, and `null`. (Root only: the
/// limit is set in a user namespace of the test's.)
#[test]
fn degraded_servers_say_what_they_do_without() {
    if !running_as_root("to make a user namespace") {
        return;
    }
    let h = Harness::new(Side::Rust);
    let whole = h.server_pid();
    let holder = NamespaceHolder::after(
        &["--user", "--map-root-user"],
        &["sh", "-c", "echo 0 >/proc/sys/user/max_inotify_instances"],
    );
    let degraded = server_inside(&h, &holder);
    assert_ne!(degraded, whole);

    let all = listed_json(&h);
    let listed = entry(&all, degraded);
    let text = listed["degraded"]
        .as_str()
        .unwrap_or_else(|| panic!("{listed:#}"));
    assert!(text.starts_with("no inotify ("), "{listed:#}");
    assert_eq!(listed["inotify"], 0, "{listed:#}");
    assert_eq!(entry(&all, whole)["degraded"], Value::Null);

    let table = table(&h);
    assert_eq!(
        row_and_notes(&table, degraded)[1..],
        [
            "    inotify instances 0".to_string(),
            format!("    degraded: {text}")
        ],
        "{table}"
    );
    assert_eq!(
        row_and_notes(&table, whole)[1..],
        ["    inotify instances 1"],
        "{table}"
    );
    kill_inside_then_finish(h, &holder);
}

/// A server started in another network namespace (`unshare -n`) shows its
/// pid and memory in a listing from outside, and one started outside in a
/// listing from inside: each namespace's listening sockets are looked at.
/// (Root only.)
#[test]
fn servers_in_other_network_namespaces_show_pid_and_memory() {
    if !running_as_root("to make a network namespace") {
        return;
    }
    let h = Harness::new(Side::Rust);
    let outside = h.server_pid();
    let holder = NamespaceHolder::new(&["--net"]);
    let inside = server_inside(&h, &holder);
    assert_ne!(inside, outside);

    let from_outside = listed_json(&h);
    let from_inside = json_of(h.client_call(&["--list", "--json"]).inside(holder.pid));
    for (all, seen_from) in [(&from_outside, "outside"), (&from_inside, "inside")] {
        assert_eq!(all.len(), 2, "from {seen_from}: {all:#?}");
        for server in [outside, inside] {
            let listed = entry(all, server);
            assert_eq!(listed["state"], "live", "from {seen_from}: {listed:#}");
            assert!(
                listed["memory"]["pss_kib"].as_u64().unwrap() > 0,
                "from {seen_from}: {listed:#}"
            );
            assert_eq!(listed["inotify"], 1, "from {seen_from}: {listed:#}");
        }
        assert_eq!(all[0]["totals"]["unseen"], 0, "from {seen_from}");
    }
    // The table's row has the pid and memory.
    let text = table(&h);
    let row: Vec<&str> = row_and_notes(&text, inside)[0].split_whitespace().collect();
    assert_ne!(row[6], "-", "{text}");
    kill_inside_then_finish(h, &holder);
}

/// A script whose path holds a newline: the table's row stays one line
/// (the server's title, which shows the path, has it as `\n`), and
/// `--list --json` has the path as it is.
#[test]
fn a_newline_in_the_script_path() {
    let h = Harness::new(Side::Perl);
    let path = h.path("new\nline");
    let server = server_of_copy_at(&h, &path);

    let text = table(&h);
    let lines = row_and_notes(&text, server);
    let escaped = format!("{}/new\\nline [server]", h.dir().display());
    assert!(lines[0].ends_with(&escaped), "{text}");
    assert_eq!(lines[1..], ["    inotify instances 1"], "{text}");
    // Header, row, its note, totals.
    assert_eq!(text.lines().count(), 4, "{text}");

    let all = listed_json(&h);
    let listed = entry(&all, server);
    assert_eq!(listed["script"], path.to_str().unwrap(), "{listed:#}");
    assert_eq!(
        listed["script_hex"],
        hex(path.as_os_str().as_bytes()),
        "{listed:#}"
    );
    h.finish();
}

/// A script whose path is not UTF-8: the table shows the byte as `\xHH`.
#[test]
fn a_path_not_in_utf8_escaped_in_the_table() {
    let h = Harness::new(Side::Perl);
    let path = non_utf8_path(&h);
    let server = server_of_copy_at(&h, &path);
    let text = table(&h);
    let escaped = format!("{}/caf\\xe9 [server]", h.dir().display());
    assert!(
        row_and_notes(&text, server)[0].ends_with(&escaped),
        "{text}"
    );
    h.finish();
}

/// A script whose path is not UTF-8: `--list --json`'s `script` is text
/// (U+FFFD for the byte), `script_hex` the path's exact bytes.
#[test]
fn a_path_not_in_utf8_exact_in_json() {
    let h = Harness::new(Side::Rust);
    let path = non_utf8_path(&h);
    let server = server_of_copy_at(&h, &path);
    let all = listed_json(&h);
    let listed = entry(&all, server);
    assert_eq!(
        listed["script"],
        path.to_string_lossy().as_ref(),
        "{listed:#}"
    );
    assert_eq!(
        listed["script_hex"],
        hex(path.as_os_str().as_bytes()),
        "{listed:#}"
    );
    h.finish();
}

/// `caf\xe9` in the world's directory.
fn non_utf8_path(h: &Harness) -> PathBuf {
    h.dir().join(OsStr::from_bytes(b"caf\xe9"))
}
