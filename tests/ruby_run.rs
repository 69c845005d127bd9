//! sides/ruby/lib/prefork_interp/run.rb: an unchanged Ruby program run as
//! `prefork-interp --run PROGRAM ARG...` (`ruby -rprefork_interp/run
//! PROGRAM ARG...` behind a server) behaves as `ruby PROGRAM ARG...` does
//! (stdout, stderr and status, byte for byte), in the cold call and in
//! warm ones, which a server served: our own programs for every way a
//! Ruby program starts and ends, and Debian's Ruby programs (rubocop
//! among them) with their error cases.
mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::*;

/// One private world: a directory with the run directory and the test
/// programs; every call runs in it with the same small environment.
struct World {
    dir: tempfile::TempDir,
    /// The programs whose servers were started: killed at the end.
    programs: BTreeSet<String>,
}

impl World {
    fn new() -> Self {
        let dir = new_world_dir();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        World {
            dir,
            programs: BTreeSet::new(),
        }
    }

    /// Writes an executable program (`#!/usr/bin/ruby` and `text`).
    fn program(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("#!/usr/bin/ruby\n{text}")).unwrap();
        set_mode(&path, 0o755);
        format!("./{name}")
    }

    fn file(&self, name: &str, text: &str) {
        std::fs::write(self.dir.path().join(name), text).unwrap();
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("LANG", "C.UTF-8")
            .env("RUBYLIB", repo().join("sides/ruby/lib"))
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn direct(&self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = self.command(program);
        cmd.args(args);
        output_with_stdin(cmd, stdin)
    }

    fn through(&mut self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = self.command(client());
        cmd.arg("--run").arg(program).args(args);
        self.programs.insert(program.to_string());
        output_with_stdin(cmd, stdin)
    }

    /// The direct run and three runs through `--run` (cold, then warm)
    /// give the same stdout, stderr and status.
    #[track_caller]
    fn same_as_direct(&mut self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        let direct = self.direct(program, args, stdin);
        let what = format!("{program} {args:?} through --run");
        assert_rounds_same_as_direct(&direct, 3, &what, || self.through(program, args, stdin));
        direct
    }

    /// The one server `--list` shows for `program`, by its pid.
    fn server_pid(&self, program: &str) -> u32 {
        let out = self.command(client()).arg("--list").output().unwrap();
        assert_success(&out);
        let text = stdout_str(&out);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .filter(|cols: &Vec<&str>| cols.iter().any(|c| c.ends_with(program)))
            .collect();
        assert_eq!(rows.len(), 1, "one server for {program}:\n{text}");
        rows[0][1].parse().unwrap()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for program in &self.programs {
            let _ = self
                .command(client())
                .args(["--kill", "--run"])
                .arg(program)
                .output();
        }
    }
}

/// A program of the usual kind (shared with the runner's own tests): a
/// magic comment, a standard library at top level, $0, __FILE__, ARGV,
/// STDIN, BEGIN and END, at_exit, DATA after __END__, and an ending chosen
/// by its first argument.
fn usual_program() -> &'static str {
    include_str!("../sides/ruby/test/programs/usual.rb")
}

#[test]
fn usual_program_ends_every_way_as_directly() {
    let mut w = World::new();
    let p = w.program("usual.rb", usual_program());
    for how in [
        "none",
        "raise",
        "exit",
        "exit_false",
        "exit300",
        "systemexit",
        "exit!",
        "abort",
        "throw",
        "int",
        "term",
        "nomethod",
    ] {
        w.same_as_direct(&p, &[how, "more args"], b"some input");
    }
    // A program with no __END__ has no DATA.
    let p = w.program("nodata.rb", "p defined?(DATA)\n");
    let out = w.same_as_direct(&p, &[], b"");
    assert_eq!(stdout_str(&out), "nil\n");
}

/// A syntax error, a warning of the parser under `-w` in the `#!` line,
/// and a library that cannot be loaded: as a direct run reports them.
#[test]
fn errors_and_warnings_as_directly() {
    let mut w = World::new();
    let p = w.program("syntax.rb", "puts 1\ndef broken(\nputs 2\n");
    w.same_as_direct(&p, &[], b"");
    let path = w.dir.path().join("warns.rb");
    std::fs::write(&path, "#!/usr/bin/ruby -w\nx = 1\nputs(-1.abs)\n").unwrap();
    set_mode(&path, 0o755);
    let out = w.same_as_direct("./warns.rb", &[], b"");
    assert!(
        stderr_str(&out).contains("assigned but unused variable"),
        "{out:?}"
    );
    let p = w.program(
        "missing.rb",
        "require \"no_such_library_anywhere\"\nputs 1\n",
    );
    let out = w.same_as_direct(&p, &[], b"");
    assert_eq!(out.status.code(), Some(1));
}

/// The program's libraries are loaded once, by the server: a library that
/// logs its loading (found through the program's require_relative) is
/// loaded once for three calls, and used in each.
#[test]
fn libraries_are_loaded_once_by_the_server() {
    let mut w = World::new();
    std::fs::create_dir(w.dir.path().join("lib")).unwrap();
    w.file(
        "lib/noisy.rb",
        "File.write(File.join(__dir__, \"..\", \"loads\"), \"x\", mode: \"a\")\n\
         module Noisy\n  def self.hi = \"hi from noisy\"\nend\n",
    );
    let p = w.program("uses.rb", "require_relative \"lib/noisy\"\nputs Noisy.hi\n");
    let out = w.through(&p, &[], b"");
    assert_success(&out);
    assert_eq!(stdout_str(&out), "hi from noisy\n");
    for _ in 0..2 {
        let out = w.through(&p, &[], b"");
        assert_eq!(stdout_str(&out), "hi from noisy\n");
    }
    let loads = std::fs::read_to_string(w.dir.path().join("loads")).unwrap();
    assert_eq!(loads, "x", "loaded by the server only");
}

/// Run directly (no PREFORK_INTERP), `-rprefork_interp/run` does nothing:
/// the program runs as without it, once.
#[test]
fn direct_run_with_the_runner_is_a_plain_run() {
    let w = World::new();
    let p = w.program("usual.rb", usual_program());
    for how in ["none", "raise", "exit"] {
        let plain = w.direct(&p, &[how], b"in");
        let mut cmd = w.command("ruby");
        cmd.args(["-rprefork_interp/run", &p, how]);
        let with = output_with_stdin(cmd, b"in");
        assert_eq!(
            (with.status.code(), stdout_str(&with), stderr_str(&with)),
            (plain.status.code(), stdout_str(&plain), stderr_str(&plain)),
        );
    }
}

/// A change to the program restarts its server: the next call runs the
/// new code, as a direct run would.
#[test]
fn run_option_follows_changes_to_the_program() {
    let mut w = World::new();
    let p = w.program("changes.rb", "puts \"first\"\n");
    assert_eq!(stdout_str(&w.through(&p, &[], b"")), "first\n");
    let first = w.server_pid(&p[2..]);
    // A later modification time, whatever the file system's resolution.
    std::thread::sleep(std::time::Duration::from_millis(20));
    w.program("changes.rb", "puts \"second\"\n");
    assert_eq!(stdout_str(&w.through(&p, &[], b"")), "second\n");
    assert_ne!(w.server_pid(&p[2..]), first, "a new server");
}

/// Where Debian puts its Ruby programs.
fn debian_program(name: &str) -> PathBuf {
    let path = PathBuf::from("/usr/bin").join(name);
    assert!(
        path.exists(),
        "{}: ./test installs ruby, rake and rubocop",
        path.display()
    );
    path
}

/// Debian's own Ruby programs, with their error cases, each as a direct
/// run, cold and warm: rubocop on a good file, a bad one, a missing one
/// and with an option it does not know; and gem, rake, erb, rdoc, irb,
/// ri, racc and bundle.
#[test]
fn debian_ruby_programs_like_a_direct_run() {
    let mut w = World::new();
    w.file(
        "good.rb",
        "# frozen_string_literal: true\n\n# Says hello.\nputs 'hello'\n",
    );
    w.file("bad.rb", "def  f( x )\n  x==1 ? true : false\nend\n");
    w.file("page.erb", "<% 3.times do |i| %>line <%= i %>\n<% end %>\n");
    w.file("Rakefile", "task :default do\n  puts 'raked'\nend\n");
    // racc and bundle carry the Ruby's version in their names.
    let out = Command::new("ruby")
        .args([
            "-e",
            "print RbConfig::CONFIG['ruby_version'][/\\d+\\.\\d+/]",
        ])
        .output()
        .unwrap();
    let ruby_version = stdout_str(&out);
    let racc = format!("racc{ruby_version}");
    let bundle = format!("bundle{ruby_version}");
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("rubocop".into(), vec!["--version"]),
        ("rubocop".into(), vec!["good.rb"]),
        ("rubocop".into(), vec!["bad.rb"]),
        ("rubocop".into(), vec!["--format", "simple", "bad.rb"]),
        ("rubocop".into(), vec!["no-such-file.rb"]),
        ("rubocop".into(), vec!["--no-such-option"]),
        ("gem".into(), vec!["--version"]),
        ("gem".into(), vec!["no-such-command"]),
        ("rake".into(), vec!["--version"]),
        ("rake".into(), vec![]),
        ("rake".into(), vec!["no_such_task"]),
        ("erb".into(), vec!["page.erb"]),
        ("erb".into(), vec!["no-such.erb"]),
        ("rdoc".into(), vec!["--version"]),
        ("irb".into(), vec!["--version"]),
        ("ri".into(), vec!["--version"]),
        (racc, vec!["--version"]),
        (bundle, vec!["--version"]),
    ];
    for (name, args) in &cases {
        let program = debian_program(name);
        w.same_as_direct(program.to_str().unwrap(), args, b"");
    }
}
