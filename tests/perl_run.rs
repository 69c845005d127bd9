//! sides/perl/lib/Proc/Prefork/Interp/Run.pm: an unchanged Perl program run
//! as `prefork-interp -U,perl,-MProc::Prefork::Interp::Run PROGRAM ARG...`
//! behaves as `perl PROGRAM ARG...` does (stdout, stderr and status, byte
//! for byte), in the cold call and in warm ones, which a server served.
mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

const RUNNER: &str = "-U,perl,-MProc::Prefork::Interp::Run";

/// One private world: a directory with the run directory and the test
/// programs; every call runs in it with the same small environment.
struct World {
    dir: tempfile::TempDir,
    /// Connections made to each program's server: calls through the
    /// client, and `--list`'s probes (which the server counts too, after
    /// answering): what `--list` must say the server has served.
    calls: HashMap<String, u64>,
}

impl World {
    fn new() -> Self {
        World {
            dir: new_world_dir(),
            calls: HashMap::new(),
        }
    }

    /// Writes a program (not executable: perl runs it by name).
    fn program(&self, name: &str, text: &str) -> String {
        std::fs::write(self.dir.path().join(name), text).unwrap();
        name.to_string()
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", self.dir.path().join("run"))
            .env("PERL5LIB", repo().join("sides/perl/lib"))
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run(cmd: Command, stdin: &[u8]) -> Output {
        output_with_stdin(cmd, stdin)
    }

    fn direct(&self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = self.command("perl");
        cmd.arg(program).args(args);
        Self::run(cmd, stdin)
    }

    fn through(&mut self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        let mut cmd = self.command(client().to_str().unwrap());
        cmd.arg(RUNNER).arg(program).args(args);
        *self.calls.entry(program.to_string()).or_default() += 1;
        Self::run(cmd, stdin)
    }

    /// The direct run and three runs through the runner (cold, then warm)
    /// give the same stdout, stderr and status; the server served them.
    #[track_caller]
    fn same_as_direct(&mut self, program: &str, args: &[&str], stdin: &[u8]) -> Output {
        let direct = self.direct(program, args, stdin);
        let what = format!("{program} {args:?} through the runner");
        assert_rounds_same_as_direct(&direct, 3, &what, || self.through(program, args, stdin));
        let expected = self.calls[program];
        assert_eq!(self.served(program), expected, "{program}");
        direct
    }

    /// SERVED in `--list` for the server running `program` (the probe
    /// then counts as one more).
    fn served(&mut self, program: &str) -> u64 {
        let out = self
            .command(client().to_str().unwrap())
            .arg("--list")
            .output()
            .unwrap();
        assert_success(&out);
        let text = stdout_str(&out);
        // IDENT PID STARTED SERVED RUNNING IDLE MEMORY PROTOCOL ENV PROGRAM
        // [server] (the server's title: $0 as perl was given it)
        let row: Vec<&str> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.len() == 11 && cols[9] == program && cols[10] == "[server]")
            .unwrap_or_else(|| panic!("no server for {program}:\n{text}"));
        let served = row[3].parse().unwrap();
        *self.calls.entry(program.to_string()).or_default() += 1;
        served
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for program in self.calls.keys() {
            let _ = self
                .command(client().to_str().unwrap())
                .arg(RUNNER.replacen("-U,", "-U,--kill,", 1))
                .arg(program)
                .output();
        }
    }
}

/// A program of the usual kind: #! line switches, strict, BEGIN, a core
/// module at top level, $0 and @ARGV, STDIN, __DATA__, and an ending
/// chosen by its first argument. Longer than perl's 8 KB read buffer, so
/// that each call must read the file itself (from its own offset).
fn usual_program() -> String {
    let mut text = String::from(
        r#"#!/usr/bin/perl -w
use strict;
use Data::Dumper;
use List::Util qw(sum);
BEGIN { print "begin\n" }
$Data::Dumper::Indent = 0;
$Data::Dumper::Sortkeys = 1;
print "0=$0 args=", Dumper(\@ARGV), "\n";
print "sum=", sum(0, grep { /^\d+$/ } @ARGV), "\n";
my @in = <STDIN>;
print "stdin: ", scalar(@in), " lines: @in";
print "data: $_" while <DATA>;
print STDERR "to stderr\n";
my $how = shift // 'end';
exit 3 if $how eq 'exit3';
die "msg" if $how eq 'die';
die "msg\n" if $how eq 'dienl';
if ($how eq 'errno') { open(my $f, '<', '/nonexistent/x') or die "cannot open: $!" }
if ($how eq 'status') { $? = 7 << 8; die "with status" }
if ($how eq 'warn') { my $x; print "undef: " . $x . "\n" }
print "the end\n";
"#,
    );
    // Padding past 8 KB, before __DATA__.
    for i in 0..200 {
        text += &format!("# padding line {i:04} .........................................\n");
    }
    text += "sub late { 'late' }\nprint late(), \"\\n\";\n__DATA__\ndata one\ndata two\n";
    text
}

#[test]
fn usual_program_ends_every_way_as_directly() {
    let mut w = World::new();
    let p = w.program("usual.pl", &usual_program());
    let stdin = b"line a\nline b\n";
    let end = w.same_as_direct(&p, &["end", "1", "2"], stdin);
    assert_eq!(end.status.code(), Some(0));
    assert!(stdout_str(&end).contains("data: data two\nthe end\nlate\n"));
    assert!(stdout_str(&end).contains("0=usual.pl args=$VAR1 = ['end','1','2'];"));
    assert!(stdout_str(&end).contains("stdin: 2 lines: line a\n line b\n"));
    let exit3 = w.same_as_direct(&p, &["exit3"], b"");
    assert_eq!(exit3.status.code(), Some(3));
    let die = w.same_as_direct(&p, &["die"], b"x\n");
    assert_eq!(die.status.code(), Some(255));
    assert!(
        stderr_str(&die).ends_with("msg at usual.pl line 16, <DATA> line 2.\n"),
        "{}",
        stderr_str(&die)
    );
    w.same_as_direct(&p, &["dienl"], b"");
    let errno = w.same_as_direct(&p, &["errno"], b"");
    assert_eq!(
        errno.status.code(),
        Some(2),
        "ENOENT: {}",
        stderr_str(&errno)
    );
    let status = w.same_as_direct(&p, &["status"], b"");
    assert_eq!(status.status.code(), Some(7));
    let warn = w.same_as_direct(&p, &["warn"], b"");
    assert!(stderr_str(&warn).contains("Use of uninitialized value $x"));
}

#[test]
fn syntax_error_is_reported_as_directly() {
    let mut w = World::new();
    let p = w.program(
        "broken.pl",
        "use strict;\nuse Data::Dumper;\nprint \"never\\n\";\nmy $x = ;\n$y = 1;\n",
    );
    let out = w.same_as_direct(&p, &[], b"");
    assert_eq!(out.status.code(), Some(255));
    assert!(
        stderr_str(&out).contains("syntax error at broken.pl line 4")
            && stderr_str(&out)
                .contains("Execution of broken.pl aborted due to compilation errors."),
        "{}",
        stderr_str(&out)
    );
}

/// The program's modules are loaded once, by the server: a module that
/// logs its loading (found through the program's own `use lib`) is loaded
/// once for three calls, and is used (imported) in each.
#[test]
fn modules_are_loaded_once_by_the_server() {
    let mut w = World::new();
    let lib = w.dir.path().join("mylib");
    std::fs::create_dir(&lib).unwrap();
    let record = w.dir.path().join("loaded");
    std::fs::write(
        lib.join("Counted.pm"),
        format!(
            "package Counted;\nuse Exporter 'import';\nour @EXPORT = ('counted');\n\
             open(my $f, '>>', '{}') or die; print $f \"loaded\\n\"; close $f;\n\
             sub counted {{ 'counted' }}\n1;\n",
            record.display()
        ),
    )
    .unwrap();
    let p = w.program(
        "counted.pl",
        "use strict;\nuse lib 'mylib';\nuse Counted;\nprint counted(), \"\\n\";\n",
    );
    for _ in 0..3 {
        let out = w.through(&p, &[], b"");
        assert_success(&out);
        assert_eq!(stdout_str(&out), "counted\n");
    }
    assert_eq!(std::fs::read_to_string(&record).unwrap(), "loaded\n");
    assert_eq!(w.served(&p), 3, "one server served the three calls");
    // And run directly, it loads it itself.
    assert_success(&w.direct(&p, &[], b""));
    assert_eq!(
        std::fs::read_to_string(&record).unwrap(),
        "loaded\n".repeat(2)
    );
}

/// A module the program names that cannot be loaded is no obstacle to
/// the server: the program fails on it as it does directly.
#[test]
fn missing_module_fails_as_directly() {
    let mut w = World::new();
    let p = w.program(
        "missing.pl",
        "use strict;\nuse No::Such::Module::Here;\nprint \"never\\n\";\n",
    );
    let out = w.same_as_direct(&p, &[], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_str(&out).starts_with("Can't locate No/Such/Module/Here.pm in @INC"));
}

#[test]
fn debian_corelist_as_directly() {
    let corelist = "/usr/bin/corelist";
    assert!(Path::new(corelist).exists(), "{corelist}: install perl");
    let mut w = World::new();
    let v = w.same_as_direct(corelist, &["-v", "5.036000"], b"");
    assert_eq!(v.status.code(), Some(0));
    assert!(
        stdout_str(&v).contains("Data::Dumper"),
        "{}",
        stdout_str(&v)
    );
    let dd = w.same_as_direct(corelist, &["Data::Dumper"], b"");
    assert!(stdout_str(&dd).contains("Data::Dumper was first released with perl"));
    w.same_as_direct(corelist, &["--no-such-option"], b"");
    w.same_as_direct(corelist, &[], b"");
}

#[test]
fn debian_json_pp_as_directly() {
    let json_pp = "/usr/bin/json_pp";
    assert!(Path::new(json_pp).exists(), "{json_pp}: install perl");
    let mut w = World::new();
    let out = w.same_as_direct(json_pp, &[], b"{\"b\":[1,2,{\"c\":null}],\"a\":\"x\"}");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout_str(&out).contains("\"c\" : null"),
        "{}",
        stdout_str(&out)
    );
    w.same_as_direct(
        json_pp,
        &["-json_opt", "canonical,pretty"],
        b"{\"b\":1,\"a\":2}",
    );
    let bad = w.same_as_direct(json_pp, &[], b"{not json");
    assert_ne!(bad.status.code(), Some(0));
    // `die` exits with $!: here the ENOENT of a direct run's module search
    // (2), which the preloading left in the server.
    let bad = w.same_as_direct(json_pp, &["-f", "nosuch"], b"");
    assert_eq!(bad.status.code(), Some(2));
}

/// Run directly (no PREFORK_INTERP), `-MProc::Prefork::Interp::Run` does
/// nothing: the program runs as without it.
#[test]
fn direct_run_with_the_module_is_a_plain_run() {
    let w = World::new();
    let p = w.program("usual.pl", &usual_program());
    for how in ["end", "exit3", "die"] {
        let plain = w.direct(&p, &[how], b"in\n");
        let mut cmd = w.command("perl");
        cmd.arg("-MProc::Prefork::Interp::Run").arg(&p).arg(how);
        let with = World::run(cmd, b"in\n");
        assert_eq!(with.status.code(), plain.status.code(), "{how}");
        assert_eq!(with.stdout, plain.stdout, "{how}");
        assert_eq!(with.stderr, plain.stderr, "{how}");
    }
}

/// `prefork-interp --run PROGRAM`: the program's own `#!` line picks perl
/// and the runner; a bare name is found in PATH; one server serves every
/// directory (each call in its caller's); `--kill --run` ends it.
#[test]
fn run_option_serves_an_installed_program_from_every_directory() {
    let w = World::new();
    let elsewhere = w.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let direct = World::run(
        {
            let mut c = w.command("/usr/bin/corelist");
            c.arg("Data::Dumper");
            c
        },
        b"",
    );
    assert_eq!(direct.status.code(), Some(0), "{direct:?}");
    for (program, dir) in [
        ("corelist", w.dir.path()),
        ("/usr/bin/corelist", elsewhere.as_path()),
        ("corelist", elsewhere.as_path()),
    ] {
        let mut cmd = w.command(client().to_str().unwrap());
        cmd.args(["--run", program, "Data::Dumper"])
            .current_dir(dir);
        let through = World::run(cmd, b"");
        assert_eq!(through.status.code(), direct.status.code(), "{through:?}");
        assert_eq!(
            through.stdout,
            direct.stdout,
            "{program} in {}",
            dir.display()
        );
        assert_eq!(through.stderr, direct.stderr);
    }
    let list = w
        .command(client().to_str().unwrap())
        .arg("--list")
        .output()
        .unwrap();
    let servers = stdout_str(&list)
        .lines()
        .filter(|l| l.contains("/usr/bin/corelist"))
        .count();
    assert_eq!(
        servers,
        1,
        "one server for every directory:\n{}",
        stdout_str(&list)
    );
    let kill = w
        .command(client().to_str().unwrap())
        .args(["--kill", "--run", "corelist"])
        .output()
        .unwrap();
    assert_success(&kill);
    let list = w
        .command(client().to_str().unwrap())
        .arg("--list")
        .output()
        .unwrap();
    assert!(
        !stdout_str(&list).contains("/usr/bin/corelist"),
        "{}",
        stdout_str(&list)
    );
}

/// A change to the program, or to a module it uses, restarts its server:
/// the next call (through `--run`) runs the new code, as a direct run
/// would.
#[test]
fn run_option_follows_changes_to_the_program_and_its_modules() {
    let w = World::new();
    let dir = w.dir.path().to_path_buf();
    let program = dir.join("prog");
    let module = dir.join("Helper.pm");
    let write_program = |version: &str| {
        std::fs::write(
            &program,
            format!(
                "#!/usr/bin/perl\nuse lib '{}';\nuse Helper;\nprint \"program {version} \", Helper::value(), \"\\n\";\n",
                dir.display()
            ),
        )
        .unwrap();
        set_mode(&program, 0o755);
    };
    let write_module = |version: &str| {
        std::fs::write(
            &module,
            format!("package Helper;\nsub value {{ 'helper {version}' }}\n1;\n"),
        )
        .unwrap();
    };
    write_program("one");
    write_module("one");
    let call = || {
        let mut c = w.command(client().to_str().unwrap());
        c.arg("--run").arg(&program);
        let out = World::run(c, b"");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        stdout_str(&out)
    };
    assert_eq!(call(), "program one helper one\n");
    assert_eq!(call(), "program one helper one\n");
    write_module("two");
    assert_eq!(call(), "program one helper two\n");
    write_program("two");
    assert_eq!(call(), "program two helper two\n");
    let kill = w
        .command(client().to_str().unwrap())
        .arg("--kill")
        .arg("--run")
        .arg(&program)
        .output()
        .unwrap();
    assert_success(&kill);
}

/// `--run ./tool` typed in two directories runs each directory's own
/// file, as a direct `./tool` does there (its output, `$0` and
/// `$FindBin::Bin`), cold and warm; and a change to the second
/// directory's file reaches the calls made there.
#[test]
fn relative_program_is_the_file_it_names_from_each_directory() {
    let w = World::new();
    let write = |dir: &str, version: &str| {
        let path = w.dir.path().join(dir).join("tool");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            format!(
                "#!/usr/bin/perl\nuse FindBin;\nprint \"{dir} {version} \", \
                 ($FindBin::Bin =~ m{{/([^/]+)$}})[0], \" $0\\n\";\n"
            ),
        )
        .unwrap();
        set_mode(&path, 0o755);
    };
    write("a", "one");
    write("b", "one");
    let run = |dir: &str, through: bool| {
        let mut c = if through {
            let mut c = w.command(client().to_str().unwrap());
            c.arg("--run").arg("./tool");
            c
        } else {
            w.command("./tool")
        };
        c.current_dir(w.dir.path().join(dir));
        let out = World::run(c, b"");
        (out.status.code(), stdout_str(&out), stderr_str(&out))
    };
    for _ in 0..2 {
        for dir in ["a", "b"] {
            assert_eq!(run(dir, true), run(dir, false), "--run ./tool in {dir}");
        }
    }
    assert_eq!(run("b", false).1, "b one b ./tool\n");
    write("b", "two");
    assert_eq!(run("b", true), run("b", false), "after b's tool changed");
    assert_eq!(run("a", true).1, "a one a ./tool\n");
    for dir in ["a", "b"] {
        let mut kill = w.command(client().to_str().unwrap());
        kill.args(["--kill", "--run", "./tool"])
            .current_dir(w.dir.path().join(dir));
        assert_success(&kill.output().unwrap());
    }
}

/// What a module warns as it is compiled (its own `use warnings`: a
/// masked `my`, a redefined sub) is warned in every call, as a direct
/// run's compile of the program's `use` lines warns it, though the server
/// compiled the module once.
#[test]
fn compile_warnings_of_modules_like_a_direct_run() {
    let mut w = World::new();
    let lib = w.dir.path().join("mylib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::write(
        lib.join("Noisy.pm"),
        "package Noisy;\nuse warnings;\nmy $x = 1;\nmy $x = 2;\nsub f { 1 }\nsub f { 2 }\n1;\n",
    )
    .unwrap();
    let p = w.program(
        "noisy.pl",
        "use strict;\nuse lib 'mylib';\nuse Noisy;\nprint \"ok\\n\";\n",
    );
    let out = w.same_as_direct(&p, &[], b"");
    assert!(
        stderr_str(&out).contains("masks earlier declaration"),
        "{out:?}"
    );
}

/// Debian's own Perl programs (the perl package's), with their error
/// cases, each as a direct run, cold and warm. (Not enc2xs -h: it prints
/// a hash, whose order a direct run draws afresh each time.)
#[test]
fn debian_perl_tools_like_a_direct_run() {
    let mut w = World::new();
    w.program(
        "doc.pod",
        "=head1 NAME\n\nx - y\n\n=head1 DESCRIPTION\n\nText.\n",
    );
    w.program("text.txt", "hello\n");
    for (program, args) in [
        ("/usr/bin/pod2text", &["doc.pod"][..]),
        ("/usr/bin/pod2text", &["no-such.pod"]),
        ("/usr/bin/podchecker", &["doc.pod"]),
        ("/usr/bin/podchecker", &["no-such.pod"]),
        ("/usr/bin/pod2man", &["doc.pod"]),
        ("/usr/bin/pod2usage", &["doc.pod"]),
        ("/usr/bin/shasum", &["text.txt"]),
        ("/usr/bin/shasum", &["-a", "999", "text.txt"]),
        (
            "/usr/bin/piconv",
            &["-f", "utf8", "-t", "latin1", "text.txt"],
        ),
        ("/usr/bin/piconv", &["-f", "no-such-encoding", "text.txt"]),
        ("/usr/bin/prove", &["--version"]),
        ("/usr/bin/zipdetails", &["-h"]),
        ("/usr/bin/ptar", &["-h"]),
        ("/usr/bin/h2ph", &["-h"]),
    ] {
        assert!(Path::new(program).exists(), "{program}: install perl");
        w.same_as_direct(program, args, b"");
    }
}
