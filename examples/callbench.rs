//! Times whole calls, side by side, and prints tables of medians with
//! ratios to `/bin/true` (the floor for anything started from a #! line).
//!
//! ```text
//! cargo build --release --bins --examples
//! target/release/examples/callbench all [WARM_RUNS]      # ./bench
//! target/release/examples/callbench [WARM_RUNS]          # ./quickstart
//! target/release/examples/callbench perl [WARM_RUNS]     # ./bench perl
//! target/release/examples/callbench python [WARM_RUNS]   # ./bench python
//! target/release/examples/callbench python313 [WARM_RUNS]   # ./bench python313
//! ```
//!
//! Default: examples/primes run directly, and through prefork-interp cold
//! (server start + initialisation) and warm (a fork of the initialised
//! server).
//!
//! `perl`: a Perl script loading 20 modules, run directly; through our
//! client and module; through chiark-utils' client and module (Debian
//! chiark-utils-bin, chiark-scripts), and the two mixed pairs; and the
//! cost of the per-call auto-reload check with 300 modules loaded. Every
//! script ends with POSIX::_exit, so that the original module's
//! exit-status defect does not distort its row. The chiark client keeps
//! its servers in its own run directory (~/.prefork-interp), as it always
//! does; they are killed at the end.
//!
//! `python`: a Python script importing a heavy set of standard modules,
//! run directly, through our client and module cold and warm, and
//! through chiark-utils' client with our module.
//!
//! `python313`: Python 3.13 in the Debian trixie tree (target/trixie,
//! made by tools/trixie-chroot, which ./bench runs): this program, the
//! client and the module are copied into it and the table is made there
//! (`python313-inside`, chrooted in a mount namespace of its own): the
//! script run directly, and warm calls ending normally, with
//! `fast_exit=True` and with `os._exit`, against that tree's /bin/true.
//!
//! `ruby`: a Ruby script requiring twelve standard libraries, run
//! directly, cold, and warm ending normally and with `fast_exit: true`.
//!
//! `run`: programs nobody here wrote, unchanged (Debian's corelist,
//! json_pp and rubocop; PyPI's where installed), run directly and warm
//! through `--run`, with issue 29's rubocop goal.
//!
//! `all`: everything side by side in one run: latency of each script side
//! (the Rust example, Perl, Python, Ruby) cold, warm and run directly, the
//! chiark-utils pairs (Perl ending with `POSIX::_exit` and with a plain
//! `exit`, ours also with `fast_exit`), CPU per warm call, throughput
//! with 1, 2, 8 and 32 parallel callers, server and client memory, the
//! auto-reload check with 320 Perl modules, the instructions of the
//! client's own path (callgrind), the Python 3.13 table if the trixie
//! tree is there, and last the performance targets of issue 13 with this
//! run's ratios.
//!
//! Every row is measured the same way (spawn, wait, in this process), in
//! a private run directory that is removed afterwards.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/support/chroot.rs"]
mod chroot;
#[path = "../tests/support/proc_stat.rs"]
mod proc_stat;
#[path = "../tests/support/python.rs"]
mod python;

use proc_stat::proc_state;
use python::python;

/// Runs a command `runs` times (after `between()` each time), sorted times.
/// Every run must succeed.
fn time_runs(runs: usize, make: impl FnMut() -> Command, between: impl FnMut()) -> Vec<Duration> {
    all_succeeded(runs, time_runs_counting(runs, make, between))
}

/// The times of runs that must all have succeeded.
fn all_succeeded(
    runs: usize,
    (times, failed): (Vec<Duration>, Vec<(String, std::process::ExitStatus)>),
) -> Vec<Duration> {
    if let Some((cmd, status)) = failed.first() {
        panic!(
            "{} of {runs} runs failed, first {cmd}: {status}",
            failed.len()
        );
    }
    times
}

/// Like [`time_runs`], for a command that may fail (chiark's module reports
/// a plain `exit` as death by SIGINT now and then: its EXECTERM race):
/// the sorted times, and each failed run's command and status.
fn time_runs_counting(
    runs: usize,
    mut make: impl FnMut() -> Command,
    between: impl FnMut(),
) -> (Vec<Duration>, Vec<(String, std::process::ExitStatus)>) {
    let quiet = || {
        let mut cmd = make();
        cmd.stdout(Stdio::null());
        cmd
    };
    time_commands(runs, quiet, between)
}

/// The timing loop under the others: runs each command as `make` gives
/// it (its stdio untouched); the sorted times, and each failed run's
/// command and status.
fn time_commands(
    runs: usize,
    mut make: impl FnMut() -> Command,
    mut between: impl FnMut(),
) -> (Vec<Duration>, Vec<(String, std::process::ExitStatus)>) {
    let mut times = Vec::with_capacity(runs);
    let mut failed = Vec::new();
    for _ in 0..runs {
        between();
        let mut cmd = make();
        let start = Instant::now();
        let status = cmd.status().expect("spawn");
        times.push(start.elapsed());
        if !status.success() {
            failed.push((format!("{cmd:?}"), status));
        }
    }
    times.sort();
    (times, failed)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(times: &[Duration]) -> f64 {
    ms(times[times.len() / 2])
}

/// The first row of every table: exec of /bin/true, the floor.
/// A run of `script` by `interpreter` directly, without prefork-interp.
fn direct(interpreter: &Path, script: &Path) -> impl Fn() -> Command {
    let (interpreter, script) = (interpreter.to_path_buf(), script.to_path_buf());
    move || {
        let mut c = Command::new(&interpreter);
        c.arg(&script);
        c
    }
}

fn floor_row(runs: usize) -> (String, Vec<Duration>) {
    (
        "/bin/true (exec floor)".to_string(),
        time_runs(runs, || Command::new("/bin/true"), || {}),
    )
}

/// Prints rows of timings; the first row is the floor for the ratios.
fn print_table(rows: &[(String, Vec<Duration>)]) {
    let floor = median(&rows[0].1);
    let width = rows
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0)
        .max(48);
    println!();
    println!(
        "{:<width$} {:>6} {:>10} {:>10} {:>10} {:>11}",
        "call", "runs", "median ms", "p10 ms", "p90 ms", "x /bin/true"
    );
    for (name, times) in rows {
        let pick = |q: f64| quantile(times, q);
        println!(
            "{:<width$} {:>6} {:>10.3} {:>10.3} {:>10.3} {:>11.1}",
            name,
            times.len(),
            pick(0.5),
            pick(0.1),
            pick(0.9),
            pick(0.5) / floor
        );
    }
}

/// A private directory with a run directory for our client.
struct World {
    dir: PathBuf,
    run_dir: PathBuf,
    bin_dir: PathBuf,
    kills: Vec<Command>,
}

impl World {
    fn new(name: &str) -> Self {
        let bin_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        let dir = std::env::temp_dir().join(format!("pfi-{name}-{}", std::process::id()));
        let run_dir = dir.join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        World {
            dir,
            run_dir,
            bin_dir,
            kills: Vec::new(),
        }
    }

    fn client(&self) -> PathBuf {
        let client = self.bin_dir.join("prefork-interp");
        assert!(
            client.exists(),
            "{} missing: cargo build --release --bins --examples",
            client.display()
        );
        client
    }

    /// Writes an executable script; remembers how to kill its server.
    fn script(&mut self, name: &str, client: &Path, interpreter: &str, body: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(
            &path,
            format!("#!{} -U,{interpreter}\n{body}", client.display()),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let kill = self.kill_command(client, interpreter, &path);
        self.kills.push(kill);
        path
    }

    /// `--kill` for the server of `script` (run as `#!CLIENT -U,INTERPRETER`).
    fn kill_command(&self, client: &Path, interpreter: &str, script: &Path) -> Command {
        let mut kill = self.command(client);
        kill.arg(format!("-U,--kill,{interpreter}")).arg(script);
        kill
    }

    /// Kills the server of `script`, so that the next call is a cold one.
    fn kill_server(&self, client: &Path, interpreter: &str, script: &Path) {
        let mut kill = self.kill_command(client, interpreter, script);
        assert!(kill.status().unwrap().success(), "{kill:?}");
    }

    fn command(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.env("XDG_RUNTIME_DIR", &self.run_dir);
        c
    }

    /// Warm calls of `script`: one to start its server, then `runs` timed.
    fn warm(&self, script: &Path, runs: usize) -> Vec<Duration> {
        self.command(script).stdout(Stdio::null()).status().unwrap();
        time_runs(runs, || self.command(script), || {})
    }

    /// Warm calls that may fail: the times, and how many failed.
    fn warm_counting(&self, script: &Path, runs: usize) -> (Vec<Duration>, usize) {
        self.command(script).stdout(Stdio::null()).status().unwrap();
        let quiet = || {
            let mut c = self.command(script);
            c.stderr(Stdio::null());
            c
        };
        let (times, failed) = time_runs_counting(runs, quiet, || {});
        (times, failed.len())
    }

    fn kill_all(&mut self) {
        for kill in &mut self.kills {
            assert!(kill.status().unwrap().success(), "{kill:?}");
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Also after a panic: no server may outlive the benchmark.
        for kill in &mut self.kills {
            let _ = kill.stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.first().map(String::as_str) {
        Some(
            m @ ("perl" | "python" | "python313" | "python313-inside" | "ruby" | "run" | "tty"
            | "all"),
        ) => {
            let m = m.to_string();
            args.remove(0);
            m
        }
        _ => "primes".to_string(),
    };
    let warm_runs: usize = args
        .first()
        .map(|a| a.parse().expect("WARM_RUNS"))
        .unwrap_or(300);
    match mode.as_str() {
        "perl" => perl_tables(warm_runs, false),
        "python" => python_table(warm_runs),
        "ruby" => ruby_table(warm_runs),
        "python313" => {
            if python313_table(warm_runs).is_none() {
                std::process::exit(1);
            }
        }
        "python313-inside" => python313_inside(warm_runs),
        "run" => run_table(warm_runs),
        "tty" => terminal_table(warm_runs),
        "all" => full_table(warm_runs),
        _ => primes_table(warm_runs),
    }
}

fn primes_table(warm_runs: usize) {
    let slow_runs = (warm_runs / 30).max(5);
    let mut world = World::new("callbench");
    let client = world.client();
    let primes = world.bin_dir.join("examples").join("primes");
    let script = world.script("primes-script", &client, primes.to_str().unwrap(), "");
    let with_arg = |program: &Path| {
        let mut c = world.command(program);
        c.arg("1000003");
        c
    };
    let check = with_arg(&script).output().unwrap();
    println!(
        "the script says: {}",
        String::from_utf8_lossy(&check.stdout).trim()
    );
    let kill = || world.kill_server(&client, primes.to_str().unwrap(), &script);
    let rows = vec![
        floor_row(warm_runs),
        (
            "primes run directly".into(),
            time_runs(slow_runs, || with_arg(&primes), || {}),
        ),
        (
            "primes via prefork-interp, cold".into(),
            time_runs(slow_runs, || with_arg(&script), kill),
        ),
        ("primes via prefork-interp, warm".into(), {
            with_arg(&script).stdout(Stdio::null()).status().unwrap();
            time_runs(warm_runs, || with_arg(&script), || {})
        }),
    ];
    world.kill_all();
    print_table(&rows);
}

/// Twenty modules from Perl's core library: a typical script's start-up.
const PERL_MODULES: [&str; 20] = [
    "POSIX",
    "Data::Dumper",
    "Storable",
    "List::Util",
    "File::Spec",
    "File::Temp",
    "File::Path",
    "Getopt::Long",
    "Text::Wrap",
    "Time::Local",
    "Digest::SHA",
    "MIME::Base64",
    "Encode",
    "JSON::PP",
    "IO::Socket::INET",
    "Math::BigInt",
    "HTTP::Tiny",
    "Pod::Usage",
    "Text::Balanced",
    "File::Find",
];

const CHIARK_CLIENT: &str = "/usr/bin/prefork-interp";
const CHIARK_MODULE: &str = "/usr/share/perl5/Proc/Prefork/Interp.pm";

/// How a Perl benchmark script ends each call.
#[derive(Clone, Copy)]
enum PerlEnd {
    /// `POSIX::_exit(0)`: no exit work at all (and exact with chiark's
    /// module, whose plain `exit` races).
    Underscore,
    /// A plain `exit 0`, as real scripts end.
    Plain,
}

/// The Perl benchmark script (after its #! line): the module (ours, or
/// else whichever perl finds: chiark's), [`PERL_MODULES`], `extra`, then
/// initialisation with `options` and one line of output per call, ended
/// with `POSIX::_exit`.
fn perl_bench_body(with_our_module: bool, extra: &str, options: &str) -> String {
    perl_bench_body_ending(with_our_module, extra, options, PerlEnd::Underscore)
}

fn perl_bench_body_ending(
    with_our_module: bool,
    extra: &str,
    options: &str,
    end: PerlEnd,
) -> String {
    let repo = env!("CARGO_MANIFEST_DIR");
    let ours = if with_our_module {
        format!("use lib '{repo}/sides/perl/lib';\n")
    } else {
        String::new()
    };
    let uses: String = PERL_MODULES
        .iter()
        .map(|m| format!("use {m} ();\n"))
        .collect();
    let end = match end {
        PerlEnd::Underscore => "STDOUT->flush; POSIX::_exit(0);",
        PerlEnd::Plain => "exit 0;",
    };
    // The one line of output is the wall-clock time (ns) at which the
    // call's code runs: the stage breakdown reads it.
    format!(
        "{ours}use Proc::Prefork::Interp;\nuse Time::HiRes ();\n{uses}{extra}\
         prefork_initialisation_complete({options});\n\
         printf \"%.0f\\n\", Time::HiRes::time() * 1e9; {end}\n"
    )
}

/// `reload_only`: just the auto-reload rows (for `all`, which has the rest).
fn perl_tables(warm_runs: usize, reload_only: bool) {
    let slow_runs = (warm_runs / 30).max(5);
    let mut world = World::new("perlbench");
    let client = world.client();
    let repo = env!("CARGO_MANIFEST_DIR");
    let body = perl_bench_body;
    let chiark = Path::new(CHIARK_CLIENT).exists() && Path::new(CHIARK_MODULE).exists();
    let chiark_client = Path::new(CHIARK_CLIENT);

    // 300 more (tiny) modules, for the cost of auto-reload checks.
    let lib = world.dir.join("lib");
    std::fs::create_dir_all(&lib).unwrap();
    let mut many = format!("use lib '{}';\n", lib.display());
    for i in 0..300 {
        std::fs::write(
            lib.join(format!("PfiBench{i}.pm")),
            format!("package PfiBench{i};\nour $x = {i};\n1;\n"),
        )
        .unwrap();
        many += &format!("use PfiBench{i} ();\n");
    }

    let ours_script = world.script("ours", &client, "perl", &body(true, "", ""));
    let pairs = if reload_only {
        Vec::new()
    } else if chiark {
        vec![
            (
                "chiark client + chiark module, warm",
                world.script("chiark", chiark_client, "perl", &body(false, "", "")),
            ),
            (
                "chiark client + our module, warm",
                world.script("c-ours", chiark_client, "perl", &body(true, "", "")),
            ),
            (
                "our client + chiark module, warm",
                world.script("ours-c", &client, "perl", &body(false, "", "")),
            ),
        ]
    } else {
        println!("(chiark-utils-bin and chiark-scripts are not installed: no chiark rows)");
        Vec::new()
    };
    let reload_on = world.script("reload-on", &client, "perl", &body(true, &many, ""));
    let reload_off = world.script(
        "reload-off",
        &client,
        "perl",
        &body(true, &many, "autoreload_inc => 0"),
    );

    let mut rows = vec![floor_row(warm_runs)];
    if !reload_only {
        rows.extend([
            (
                "perl, 20 modules, run directly".into(),
                time_runs(slow_runs, direct(Path::new("perl"), &ours_script), || {}),
            ),
            (
                "our client + our module, cold".into(),
                time_runs(
                    slow_runs,
                    || world.command(&ours_script),
                    || world.kill_server(&client, "perl", &ours_script),
                ),
            ),
            (
                "our client + our module, warm".into(),
                world.warm(&ours_script, warm_runs),
            ),
        ]);
    }
    for (name, script) in &pairs {
        rows.push((name.to_string(), world.warm(script, warm_runs)));
    }
    rows.push((
        "our pair, 320 modules, reload check on, warm".into(),
        world.warm(&reload_on, warm_runs),
    ));
    rows.push((
        "our pair, 320 modules, reload check off, warm".into(),
        world.warm(&reload_off, warm_runs),
    ));
    world.kill_all();
    print_table(&rows);
    let n = rows.len();
    println!(
        "\nreload check, end to end: {:+.3} ms per call (on minus off, medians)",
        median(&rows[n - 2].1) - median(&rows[n - 1].1)
    );

    // The check itself, timed inside perl: stat of $0 and every %INC file.
    let micro = Command::new("perl")
        .arg(format!("-I{repo}/sides/perl/lib"))
        .arg(format!("-I{}", lib.display()))
        .arg("-e")
        .arg(format!(
            "use Proc::Prefork::Interp; use Proc::Prefork::Interp::Reload; use Time::HiRes; {}\
             my @f = grep {{ defined }} values %INC; my $n = 2000;\
             my $reload = Proc::Prefork::Interp::Reload->new(\\@f, 9e9); my $t = Time::HiRes::time();\
             $reload->changed_file for 1..$n;\
             printf \"full reload check (stat of every file; runs only after a watched file was touched, or every call without inotify): %.1f us for %d files\\n\", \
             (Time::HiRes::time() - $t) / $n * 1e6, scalar @f;",
            (0..300)
                .map(|i| format!("use PfiBench{i} (); "))
                .collect::<String>()
                + &PERL_MODULES
                    .iter()
                    .map(|m| format!("use {m} (); "))
                    .collect::<String>()
        ))
        .output()
        .unwrap();
    print!("{}", String::from_utf8_lossy(&micro.stdout));
    eprint!("{}", String::from_utf8_lossy(&micro.stderr));
}

/// The heavy standard modules the Python benchmark imports.
const PYTHON_IMPORTS: &str = "import email, email.mime.multipart, email.mime.text, email.parser, json, \
asyncio, decimal, http.client, xml.etree.ElementTree, urllib.request, logging, argparse, \
dataclasses, typing\n";

/// The Python benchmark script (after its #! line): our module, the heavy
/// imports, then one line of output per call.
fn python_bench_body() -> String {
    let repo = env!("CARGO_MANIFEST_DIR");
    python_bench_body_with(&format!("{repo}/sides/python"), "", "")
}

/// The Python benchmark script with the module in `module_dir`,
/// initialisation_complete's `options`, and `end` after the one line of
/// output (the wall-clock time, ns, at which the call's code runs: the
/// stage breakdown reads it).
fn python_bench_body_with(module_dir: &str, options: &str, end: &str) -> String {
    format!(
        "import sys; sys.path.insert(0, '{module_dir}')\n{PYTHON_IMPORTS}\
         import os, prefork_interp, time\nprefork_interp.initialisation_complete({options})\n\
         print(time.time_ns())\n{end}"
    )
}

/// Twelve standard libraries: a Ruby script's usual start-up.
const RUBY_REQUIRES: &str = "require 'json'; require 'net/http'; require 'uri'; require 'set'; \
require 'time'; require 'yaml'; require 'erb'; require 'optparse'; require 'fileutils'; \
require 'digest'; require 'securerandom'; require 'logger'\n";

/// The Ruby benchmark script (after its #! line, which names `-I` for our
/// library): [`RUBY_REQUIRES`], our library, one line of output per call,
/// and a normal end.
fn ruby_bench_body() -> String {
    ruby_bench_body_with("")
}

/// The Ruby benchmark script with initialisation_complete's `options`.
fn ruby_bench_body_with(options: &str) -> String {
    format!(
        "{RUBY_REQUIRES}require 'prefork_interp'\nPreforkInterp.initialisation_complete({options})\n\
         puts 1\n"
    )
}

/// The Ruby benchmark scripts' interpreter: ruby, with our library on its
/// `-I` (as an installed one would be found: the client's early `-r`
/// finds it, which fast_exit needs).
fn ruby_interpreter() -> String {
    format!("ruby,-I{}/sides/ruby/lib", env!("CARGO_MANIFEST_DIR"))
}

/// The Ruby benchmark `script` (run as [`ruby_interpreter`]) run directly,
/// cold, and warm (`warm_runs`): its rows.
fn ruby_rows(
    world: &World,
    client: &Path,
    script: &Path,
    slow_runs: usize,
    warm_runs: usize,
) -> Vec<(String, Vec<Duration>)> {
    let interpreter = ruby_interpreter();
    let direct = || {
        let mut c = Command::new("ruby");
        c.args(interpreter.split(',').skip(1)).arg(script);
        c
    };
    vec![
        (
            "Ruby, 12 standard libraries, run directly".into(),
            time_runs(slow_runs, direct, || {}),
        ),
        (
            "Ruby, cold".into(),
            time_runs(
                slow_runs,
                || world.command(script),
                || world.kill_server(client, &interpreter, script),
            ),
        ),
        ("Ruby, warm".into(), world.warm(script, warm_runs)),
    ]
}

/// `ruby`: the Ruby script ([`RUBY_REQUIRES`]) run directly, cold, warm
/// ending normally and warm with `fast_exit: true`, against /bin/true
/// and issue 29's goal.
fn ruby_table(warm_runs: usize) {
    let slow_runs = (warm_runs / 30).max(5);
    let mut world = World::new("rubybench");
    let client = world.client();
    let normal = world.script("ruby", &client, &ruby_interpreter(), &ruby_bench_body());
    let fast = world.script(
        "ruby-fast",
        &client,
        &ruby_interpreter(),
        &ruby_bench_body_with("fast_exit: true"),
    );
    let mut rows = vec![floor_row(warm_runs)];
    rows.extend(ruby_rows(&world, &client, &normal, slow_runs, warm_runs));
    rows.push((
        "Ruby, fast_exit: true, warm".into(),
        world.warm(&fast, warm_runs),
    ));
    world.kill_all();
    print_table(&rows);
    let row = |name: &str| rows.iter().find(|(n, _)| n == name).map(|(_, t)| median(t));
    let floor = row("/bin/true (exec floor)");
    println!("\n== targets (issue 29), ratios from this run ==");
    for name in ["Ruby, warm", "Ruby, fast_exit: true, warm"] {
        target_line(
            &format!("{name}: ours / /bin/true"),
            row(name).zip(floor).map(|(ruby, floor)| ruby / floor),
            Goal::AtMost(10.0),
        );
    }
}

/// Medians (ms) of the Python 3.13 table, made in the trixie tree.
struct Python313 {
    floor: f64,
    normal: f64,
    fast: f64,
}

const PY313_FLOOR: &str = "/bin/true (exec floor)";
const PY313_NORMAL: &str = "Python 3.13, warm, normal end";
const PY313_FAST: &str = "Python 3.13, warm, fast_exit=True";

/// `python313`: copies this program, the client and the module into the
/// trixie tree, makes the table there (`python313-inside`) and prints
/// it; its medians, or None (said why) without the tree.
fn python313_table(warm_runs: usize) -> Option<Python313> {
    let exe = std::env::current_exe().unwrap();
    // target/release/examples/callbench
    let target = exe.ancestors().nth(3).unwrap();
    let Some(tree) = chroot::Chroot::find(target) else {
        println!(
            "(no {}: tools/trixie-chroot makes it, as root; ./bench does)",
            target.join("trixie").display()
        );
        return None;
    };
    let inside = Path::new("/tmp").join(format!("pfi-bench313-{}", std::process::id()));
    let host = tree.host(&inside);
    let module = host.join("python/prefork_interp");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::create_dir_all(host.join("examples")).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The whole package: every module of it (tools/module-files python).
    for entry in std::fs::read_dir(repo.join("sides/python/prefork_interp")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            std::fs::copy(&path, module.join(path.file_name().unwrap())).unwrap();
        }
    }
    // Both static: they run in the tree as they are. The layout is
    // target/release's, for World (bin_dir: the client beside examples/).
    std::fs::copy(&exe, host.join("examples/callbench")).unwrap();
    let client = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("prefork-interp");
    std::fs::copy(&client, host.join("prefork-interp")).unwrap();
    let out = tree
        .command(&inside.join("examples/callbench"), &inside)
        .args(["python313-inside", &warm_runs.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("running callbench in the trixie tree");
    let _ = std::fs::remove_dir_all(&host);
    let mut medians = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.strip_prefix("median\t") {
            Some(row) => {
                let (name, ms) = row.rsplit_once('\t').unwrap();
                medians.push((name.to_string(), ms.parse::<f64>().unwrap()));
            }
            None => println!("{line}"),
        }
    }
    assert!(
        out.status.success(),
        "callbench in the trixie tree: {}",
        out.status
    );
    let of = |name: &str| medians.iter().find(|(n, _)| n == name).unwrap().1;
    let found = Python313 {
        floor: of(PY313_FLOOR),
        normal: of(PY313_NORMAL),
        fast: of(PY313_FAST),
    };
    println!();
    target_line(
        "Python 3.13, normal end: ours / /bin/true",
        Some(found.normal / found.floor),
        Goal::AtMost(8.0),
    );
    target_line(
        "Python 3.13, exact fast exit: ours / /bin/true",
        Some(found.fast / found.floor),
        Goal::AtMost(3.0),
    );
    Some(found)
}

/// `python313-inside`, run by [`python313_table`] inside the tree: the
/// rows, then a `median\tNAME\tMS` line for each.
fn python313_inside(warm_runs: usize) {
    let slow_runs = (warm_runs / 30).max(5);
    let mut world = World::new("py313");
    let client = world.client();
    let module = world.bin_dir.join("python").display().to_string();
    let python = "/usr/bin/python3";
    let version = Command::new(python).arg("--version").output().unwrap();
    println!(
        "{} in the trixie tree (median of {warm_runs} warm calls a row)",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    let body = |options: &str, end: &str| python_bench_body_with(&module, options, end);
    let normal = world.script("normal", &client, python, &body("", ""));
    let fast = world.script("fast", &client, python, &body("fast_exit=True", ""));
    let underscore = world.script(
        "underscore",
        &client,
        python,
        &body("", "sys.stdout.flush(); os._exit(0)\n"),
    );
    let rows = vec![
        (
            PY313_FLOOR.to_string(),
            time_runs(warm_runs, || Command::new("/bin/true"), || {}),
        ),
        (
            "Python 3.13, heavy imports, run directly".into(),
            time_runs(slow_runs, direct(Path::new(python), &normal), || {}),
        ),
        (PY313_NORMAL.into(), world.warm(&normal, warm_runs)),
        (PY313_FAST.into(), world.warm(&fast, warm_runs)),
        (
            "Python 3.13, warm, os._exit(0)".into(),
            world.warm(&underscore, warm_runs),
        ),
    ];
    print_table(&rows);
    println!("\nwhere a warm call's time goes: medians (ms)");
    println!("{:<48} {:>12} {:>12}", "call", "to script", "script to end");
    let stage_runs = warm_runs.clamp(30, 200);
    for (name, script) in [
        (PY313_NORMAL, &normal),
        (PY313_FAST, &fast),
        ("Python 3.13, warm, os._exit(0)", &underscore),
    ] {
        let (to_script, to_end) = stages(|| world.command(script), stage_runs);
        println!("{name:<48} {to_script:>12.3} {to_end:>12.3}");
    }
    world.kill_all();
    for (name, times) in &rows {
        println!("median\t{name}\t{}", median(times));
    }
}

/// CPU time (user + system) of everything a script's calls run, from
/// their own counters: our reaped children (the clients), and the
/// script's server with every process under it, each live one's own and
/// what it has reaped (the monitor reaps the executors). Unlike the whole
/// machine's (cpu_per_call_ms), it holds no other work, so it can be taken
/// over calls with pauses between them, on a busy machine.
struct CallsCpu {
    script: PathBuf,
    at_start_ms: f64,
}

impl CallsCpu {
    fn start(script: &Path) -> CallsCpu {
        CallsCpu {
            script: script.to_path_buf(),
            at_start_ms: Self::so_far_ms(script),
        }
    }

    /// CPU per call (ms) since start, over `calls` calls.
    fn per_call_ms(&self, calls: usize) -> f64 {
        // The last call's executor may still be exiting, and the spare
        // forked meanwhile still copying (ours, while idle): their work
        // is the calls' work.
        std::thread::sleep(Duration::from_millis(200));
        (Self::so_far_ms(&self.script) - self.at_start_ms) / calls as f64
    }

    fn so_far_ms(script: &Path) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let ticks_per_ms = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64 / 1000.0;
        // SAFETY: getrusage fills the struct it is given.
        let clients = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
            let ms = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
            ms(usage.ru_utime) + ms(usage.ru_stime)
        };
        let Some(server) = server_pid(script) else {
            return clients;
        };
        // Every process by its parent, then the server's tree.
        let mut parents = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            if let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>()
                && let Some((_, ppid)) = proc_state(pid)
            {
                parents.push((pid, ppid));
            }
        }
        let mut tree = vec![server];
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i];
            tree.extend(
                parents
                    .iter()
                    .filter(|&&(_, p)| p == parent)
                    .map(|&(c, _)| c),
            );
            i += 1;
        }
        let ticks: u64 = tree
            .iter()
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // utime, stime, cutime, cstime: fields 14 to 17, the 12th
                // to 15th after the command name.
                let fields: Vec<u64> = stat[stat.rfind(')')? + 2..]
                    .split_whitespace()
                    .skip(11)
                    .take(4)
                    .filter_map(|f| f.parse().ok())
                    .collect();
                Some(fields.iter().sum::<u64>())
            })
            .sum();
        clients + ticks as f64 / ticks_per_ms
    }
}

fn python_table(warm_runs: usize) {
    let slow_runs = (warm_runs / 30).max(5);
    let mut world = World::new("pybench");
    let client = world.client();
    let python = python().display().to_string();
    let body = python_bench_body();
    let ours = world.script("ours", &client, &python, &body);
    let chiark = Path::new(CHIARK_CLIENT)
        .exists()
        .then(|| world.script("chiark-client", Path::new(CHIARK_CLIENT), &python, &body));
    // A person's pace: calls 100 ms apart, so that the spare executor has
    // been waiting a while when each call comes (the same script, ending
    // normally: finalisation runs).
    let pause = || std::thread::sleep(Duration::from_millis(100));
    let spaced_runs = (warm_runs / 5).max(20);

    let mut rows = vec![
        floor_row(warm_runs),
        (
            // A pause costs even /bin/true: the machine wakes up.
            "/bin/true, 100 ms apart".into(),
            time_runs(spaced_runs, || Command::new("/bin/true"), pause),
        ),
        (
            "python3, heavy imports, run directly".into(),
            time_runs(slow_runs, direct(Path::new(&python), &ours), || {}),
        ),
        (
            "our client + our module, cold".into(),
            time_runs(
                slow_runs,
                || world.command(&ours),
                || world.kill_server(&client, &python, &ours),
            ),
        ),
    ];
    // Warm (World::warm, with the CPU it takes).
    world.command(&ours).stdout(Stdio::null()).status().unwrap();
    let cpu = CallsCpu::start(&ours);
    let back_to_back = time_runs(warm_runs, || world.command(&ours), || {});
    let back_to_back_cpu = cpu.per_call_ms(warm_runs);
    rows.push(("our client + our module, warm".into(), back_to_back));
    if let Some(script) = &chiark {
        rows.push((
            "chiark client + our module, warm".into(),
            world.warm(script, warm_runs),
        ));
    }
    let cpu = CallsCpu::start(&ours);
    let spaced = time_runs(spaced_runs, || world.command(&ours), pause);
    let spaced_cpu = cpu.per_call_ms(spaced_runs);
    rows.push((
        "our client + our module, warm, calls 100 ms apart".into(),
        spaced,
    ));
    let stage_runs = spaced_runs.min(warm_runs);
    let stages_back_to_back = stages(|| world.command(&ours), stage_runs);
    let stages_spaced = stages(
        || {
            pause();
            world.command(&ours)
        },
        stage_runs,
    );
    world.kill_all();
    print_table(&rows);
    println!("\nwhere a warm call's time goes, and its CPU: medians (ms)");
    println!(
        "{:<48} {:>12} {:>12} {:>12}",
        "our client + our module", "to script", "script to end", "CPU per call"
    );
    for (name, (to_script, to_end), cpu) in [
        ("back to back", stages_back_to_back, back_to_back_cpu),
        ("calls 100 ms apart", stages_spaced, spaced_cpu),
    ] {
        println!("{name:<48} {to_script:>12.3} {to_end:>12.3} {cpu:>12.2}");
    }
    println!(
        "(CPU: the clients', and the server's with every process under it, \
         the idle spare's work included)"
    );
    let floor = median(&rows[0].1);
    let of = |name: &str| rows.iter().find(|(n, _)| n == name).map(|r| median(&r.1));
    println!();
    if let Some(back_to_back) = of("our client + our module, warm") {
        println!(
            "{:<60} {:>8.2}  (beside it: no worse than today)",
            "Python, normal end, back to back: ours / /bin/true",
            back_to_back / floor
        );
    }
    target_line(
        "Python, normal end, 100 ms apart: ours / /bin/true (issue 28)",
        of("our client + our module, warm, calls 100 ms apart").map(|m| m / floor),
        Goal::AtMost(8.0),
    );
}

// ------------------------------------------------------------------ all

/// Calls per second with `parallel` callers making `total` calls in all.
fn throughput(parallel: usize, total: usize, program: &Path, run_dir: &Path) -> f64 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let issued = AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            scope.spawn(|| {
                while issued.fetch_add(1, Ordering::Relaxed) < total {
                    let status = Command::new(program)
                        .env("XDG_RUNTIME_DIR", run_dir)
                        .stdout(Stdio::null())
                        .status()
                        .expect("spawn");
                    assert!(status.success(), "{}: {status}", program.display());
                }
            });
        }
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// Peak RSS (kB) of one run of `program`, as GNU time reports it. (The
/// rusage of a child of ours would report our own size: the kernel
/// counts the pre-exec memory of a forked or vforked child.)
fn peak_rss_kb(program: &Path, run_dir: &Path) -> Option<u64> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M"])
        .arg(program)
        .env("XDG_RUNTIME_DIR", run_dir)
        .stdout(Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()?
        .trim()
        .parse()
        .ok()
}

/// The server of `script`: the process running it whose parent does not
/// (idle call handlers run it too), leaving out clients (argv[0] a
/// prefork-interp) and watchers.
fn server_pid(script: &Path) -> Option<u32> {
    let script = script.as_os_str().as_encoded_bytes();
    let mut matching = Vec::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
        if argv0.ends_with(b"prefork-interp") || !cmdline.windows(script.len()).any(|w| w == script)
        {
            continue;
        }
        let Some((_, ppid)) = proc_state(pid) else {
            continue;
        };
        matching.push((pid, ppid));
    }
    let pids: Vec<u32> = matching.iter().map(|&(pid, _)| pid).collect();
    matching
        .iter()
        .find(|(_, ppid)| !pids.contains(ppid))
        .map(|&(pid, _)| pid)
}

fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Instructions (callgrind) of the process that runs `script`: the
/// client's own path, the server's work excluded.
fn client_instructions(script: &Path, run_dir: &Path) -> Option<u64> {
    let under_callgrind = || {
        let mut cmd = Command::new("valgrind");
        cmd.args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
            .arg(script)
            .env("XDG_RUNTIME_DIR", run_dir)
            .stdout(Stdio::null());
        cmd
    };
    // Valgrind shows its client a lower file limit (it keeps fds for
    // itself), and a caller's hard limits are part of the identity: one
    // call first, to start that identity's server. Its stderr is not a
    // pipe, which the watcher (forked under valgrind, with valgrind's
    // copy of stderr) would keep open.
    under_callgrind().stderr(Stdio::null()).status().ok()?;
    let out = under_callgrind().output().ok()?;
    let text = String::from_utf8_lossy(&out.stderr);
    let line = text.lines().find(|l| l.contains("Collected :"))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

/// CPU time the whole machine spends per warm call of `script` (user and
/// system, every core, from /proc/stat, over `runs` calls one after
/// another): the work of client, server, monitor and executor, which
/// latency hides when it runs in parallel.
fn cpu_per_call_ms(world: &World, script: &Path, runs: usize) -> f64 {
    fn busy_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let cpu = stat.lines().next().unwrap();
        // user nice system idle iowait irq softirq steal ...
        let fields: Vec<u64> = cpu
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap())
            .collect();
        fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]
    }
    // SAFETY: sysconf has no preconditions.
    let ticks_per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    world
        .command(script)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let before = busy_ticks();
    for _ in 0..runs {
        world
            .command(script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("spawn");
    }
    // The last call's handler may still be exiting: let it finish.
    std::thread::sleep(Duration::from_millis(50));
    (busy_ticks() - before) as f64 / ticks_per_s * 1000.0 / runs as f64
}

/// Where a warm call's time goes, from the script's own clock: the
/// script prints the wall-clock time (ns) as its call's code starts.
/// Medians over `runs` calls (ms) of: spawn to the script's code (the
/// client's exec, connect, greeting, request, the executor's wake-up),
/// and the script's code to the caller's end of the wait (the script's
/// exit work, the monitor's reaping and status, the client's exit).
fn stages(make: impl Fn() -> Command, runs: usize) -> (f64, f64) {
    let (mut before, mut after) = (Vec::new(), Vec::new());
    make().output().unwrap();
    for _ in 0..runs {
        let mut cmd = make();
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let spawned = now_ns();
        let out = cmd.output().expect("spawn");
        let done = now_ns();
        let stamp: f64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no time stamp from {cmd:?}"));
        before.push((stamp - spawned) / 1e6);
        after.push((done - stamp) / 1e6);
    }
    (median_ms(before), median_ms(after))
}

/// The wall-clock time in ns, as the bench scripts print it.
fn now_ns() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as f64
}

/// The median of times in ms.
fn median_ms(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// A performance goal: a value at most, or at least, this.
#[derive(Clone, Copy)]
enum Goal {
    AtMost(f64),
    AtLeast(f64),
}

/// One line of the targets section: a measured ratio or value against
/// its goal.
fn target_line(what: &str, value: Option<f64>, goal: Goal) {
    let (shown, met) = match goal {
        Goal::AtMost(g) => (format!("<= {g}"), value.map(|v| v <= g)),
        Goal::AtLeast(g) => (format!(">= {g}"), value.map(|v| v >= g)),
    };
    match (value, met) {
        (Some(v), Some(met)) => println!(
            "{what:<60} {v:>8.2}  (goal {shown}) {}",
            if met { "met" } else { "NOT met" }
        ),
        _ => println!("{what:<60} {:>8}  (goal {shown}) not measured", "-"),
    }
}

/// Programs nobody here wrote, run directly and through `--run` (warm):
/// Debian's perl tools, and Python CLIs installed with the Python that
/// runs the tests. Those not installed are left out, and said so.
const RUN_PROGRAMS: [(&str, &[&str]); 7] = [
    ("corelist", &["-v", "5.036000"]),
    ("rubocop", &["--version"]),
    // A file of the bench's world (see run_table).
    ("rubocop", &["good.rb"]),
    ("json_pp", &["-v"]),
    ("pygmentize", &["-V"]),
    ("aws", &["--version"]),
    ("cfn-lint", &["--version"]),
];

/// Where a program is: /usr/bin, else beside the tests' Python (not a
/// pyenv shim, which is a shell script with no runner); a Perl, Python or
/// Ruby program.
fn find_program(name: &str) -> Option<PathBuf> {
    let python_bin = python().parent().map(Path::to_path_buf);
    [Some(PathBuf::from("/usr/bin")), python_bin]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(name))
        .find(|path| {
            std::fs::read(path).is_ok_and(|text| {
                text.starts_with(b"#!") && {
                    let line = text.split(|&b| b == b'\n').next().unwrap_or(&[]);
                    let line = String::from_utf8_lossy(line);
                    line.contains("perl") || line.contains("python") || line.contains("ruby")
                }
            })
        })
}

/// `./bench run`: existing programs, unchanged, run directly and through
/// `prefork-interp --run`.
fn run_table(warm_runs: usize) {
    let slow_runs = (warm_runs / 30).max(5);
    let world = World::new("runbench");
    let client = world.client();
    let repo = env!("CARGO_MANIFEST_DIR");
    let with_runners = |mut c: Command| {
        c.env("PERL5LIB", format!("{repo}/sides/perl/lib"))
            .env("PYTHONPATH", format!("{repo}/sides/python"))
            .env("RUBYLIB", format!("{repo}/sides/ruby/lib"))
            .current_dir(&world.dir);
        c
    };
    // What rubocop inspects: no offences.
    std::fs::write(
        world.dir.join("good.rb"),
        "# frozen_string_literal: true\n\n# Says hello.\nputs 'hello'\n",
    )
    .unwrap();
    let mut rows = vec![floor_row(warm_runs)];
    let mut kills = Vec::new();
    let mut killed = std::collections::BTreeSet::new();
    for (name, args) in RUN_PROGRAMS {
        let Some(program) = find_program(name) else {
            println!("{name}: not installed, left out");
            continue;
        };
        let shown = format!("{name} {}", args.join(" "));
        let direct = time_runs(
            slow_runs,
            || {
                let mut c = world.command(&program);
                c.args(args).current_dir(&world.dir);
                c
            },
            || {},
        );
        let through = || {
            let mut c = with_runners(world.command(&client));
            c.arg("--run").arg(&program).args(args);
            c
        };
        // One call to start the server (cold), then warm ones.
        through().stdout(Stdio::null()).status().unwrap();
        let warm = time_runs(warm_runs / 3, through, || {});
        if killed.insert(program.clone()) {
            let mut kill = with_runners(world.command(&client));
            kill.args(["--kill", "--run"]).arg(&program);
            kills.push(kill);
        }
        rows.push((format!("{shown}, run directly"), direct));
        rows.push((format!("{shown}, --run, warm"), warm));
    }
    print_table(&rows);
    for mut kill in kills {
        assert!(kill.status().unwrap().success(), "{kill:?}");
    }
    let row = |name: &str| rows.iter().find(|(n, _)| n == name).map(|(_, t)| median(t));
    println!("\n== targets: warm calls through --run, ratios from this run ==");
    for shown in ["rubocop --version", "rubocop good.rb"] {
        target_line(
            &format!("{shown}: run directly / --run, warm (issue 29)"),
            row(&format!("{shown}, run directly"))
                .zip(row(&format!("{shown}, --run, warm")))
                .map(|(direct, warm)| direct / warm),
            Goal::AtLeast(20.0),
        );
    }
}

/// A pseudo-terminal standing in for the caller's: its slave is what a
/// call gets as stdin, stdout and stderr; a thread drains the master, as
/// a terminal emulator would, and counts the bytes.
struct Terminal {
    slave: std::os::fd::OwnedFd,
    drained: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The last 4 KB drained, for the stage rows' time stamps.
    recent: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl Terminal {
    fn new() -> Terminal {
        use std::io::Read;
        use std::sync::atomic::Ordering;
        let pty = nix::pty::openpty(None, None).expect("openpty");
        // Output as a terminal shows it, no newline translation to cost
        // extra; the master's reader never falls behind.
        if let Ok(mut t) = nix::sys::termios::tcgetattr(&pty.slave) {
            nix::sys::termios::cfmakeraw(&mut t);
            let _ =
                nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &t);
        }
        let drained = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let recent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, kept) = (drained.clone(), recent.clone());
        let mut master = std::fs::File::from(pty.master);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            // Ends with EIO once every slave fd is closed.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                count.fetch_add(n as u64, Ordering::Relaxed);
                let mut kept = kept.lock().unwrap();
                kept.extend_from_slice(&buf[n.saturating_sub(4096)..n]);
                let excess = kept.len().saturating_sub(4096);
                kept.drain(..excess);
            }
        });
        Terminal {
            slave: pty.slave,
            drained,
            recent,
        }
    }

    /// `cmd` with the terminal as its stdio (stdin too, unless given).
    fn attach<'a>(&self, cmd: &'a mut Command, stdin_too: bool) -> &'a mut Command {
        let fd = || Stdio::from(self.slave.try_clone().unwrap());
        if stdin_too {
            cmd.stdin(fd());
        }
        cmd.stdout(fd()).stderr(fd())
    }
}

/// How a run has the terminal: as stdio only (the caller's terminal is
/// not its controlling terminal: a call gets it as it is), or also as its
/// controlling terminal, as in a shell (a call gets a pseudo-terminal of
/// its own, which the client relays).
#[derive(Clone, Copy, PartialEq)]
enum Attach {
    StdioOnly,
    Controlling,
}

/// Times runs of `make` with the terminal as stdio (stdin from `stdin`
/// when given). Every run must succeed.
fn time_on_terminal(
    term: &Terminal,
    attach: Attach,
    runs: usize,
    stdin: Option<&Path>,
    make: impl Fn() -> Command,
) -> Vec<Duration> {
    all_succeeded(
        runs,
        time_commands(runs, on_terminal(term, attach, stdin, make), || {}),
    )
}

/// `make`'s commands with the terminal as stdio (stdin from `stdin` when
/// given), and as their controlling terminal with [`Attach::Controlling`].
fn on_terminal<'a>(
    term: &'a Terminal,
    attach: Attach,
    stdin: Option<&'a Path>,
    make: impl Fn() -> Command + 'a,
) -> impl Fn() -> Command + 'a {
    move || {
        let mut cmd = make();
        if attach == Attach::Controlling {
            // SAFETY: setsid and ioctl are async-signal-safe. Each run's
            // session ends with it, freeing the terminal for the next.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                    if libc::setsid() < 0 || libc::ioctl(1, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        match stdin {
            Some(file) => {
                term.attach(&mut cmd, false)
                    .stdin(std::fs::File::open(file).unwrap());
            }
            None => {
                term.attach(&mut cmd, true);
            }
        }
        cmd
    }
}

/// `make`'s commands with no terminal at all: stdin, stdout and stderr
/// on /dev/null.
fn without_terminal(make: impl Fn() -> Command) -> impl Fn() -> Command {
    move || {
        let mut cmd = make();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }
}

/// Several calls timed in turn, round after round, so that what a noisy
/// machine does weighs on each alike: each one's sorted times. Every run
/// must succeed.
fn time_interleaved(runs: usize, makers: &[&dyn Fn() -> Command]) -> Vec<Vec<Duration>> {
    let mut times = vec![Vec::with_capacity(runs); makers.len()];
    for _ in 0..runs {
        for (make, times) in makers.iter().zip(&mut times) {
            let mut cmd = make();
            let start = Instant::now();
            let status = cmd.status().expect("spawn");
            times.push(start.elapsed());
            assert!(status.success(), "{cmd:?}: {status}");
        }
    }
    for t in &mut times {
        t.sort();
    }
    times
}

/// The time at quantile `q` of sorted `times`, in ms.
fn quantile(times: &[Duration], q: f64) -> f64 {
    ms(times[((times.len() - 1) as f64 * q).round() as usize])
}

/// Like [`stages`], for calls on the terminal as their controlling
/// terminal: the script's time stamp is the last line the terminal got.
fn terminal_stages(term: &Terminal, make: impl Fn() -> Command, runs: usize) -> (f64, f64) {
    let run = on_terminal(term, Attach::Controlling, None, make);
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        term.recent.lock().unwrap().clear();
        let mut cmd = run();
        let spawned = now_ns();
        let status = cmd.status().expect("spawn");
        let done = now_ns();
        assert!(status.success(), "{cmd:?}: {status}");
        // The client has relayed it all before it exits; the drain
        // thread may still be copying it out of the master.
        let deadline = Instant::now() + Duration::from_secs(2);
        let stamp = loop {
            let text = String::from_utf8_lossy(&term.recent.lock().unwrap()).into_owned();
            if let Some(stamp) = text
                .lines()
                .rev()
                .find_map(|l| l.trim().parse::<f64>().ok())
            {
                break stamp;
            }
            assert!(Instant::now() < deadline, "no time stamp from {cmd:?}");
            std::thread::sleep(Duration::from_millis(1));
        };
        before.push((stamp - spawned) / 1e6);
        after.push((done - stamp) / 1e6);
    }
    (median_ms(before), median_ms(after))
}

/// The client's own work for a call on a pseudo-terminal, stage by stage,
/// done here on the bench's terminal as the client does it on its
/// caller's (µs, medians of `runs`): what a call on a terminal costs
/// before any process of the script's is involved.
fn client_terminal_stages(term: &Terminal, runs: usize) -> Vec<(&'static str, f64)> {
    use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
    use std::os::fd::AsFd;
    let path = nix::unistd::ttyname(&term.slave).expect("ttyname");
    let mut times: Vec<(&'static str, Vec<f64>)> = [
        "open the caller's terminal again (/dev/tty)",
        "read its settings and window size",
        "openpty with those settings and size",
        "master non-blocking",
        "caller's terminal raw (tcsetattr, TCSADRAIN)",
        "caller's terminal restored (tcsetattr, TCSADRAIN)",
        "close the pseudo-terminal and the terminal",
    ]
    .into_iter()
    .map(|name| (name, Vec::with_capacity(runs)))
    .collect();
    for _ in 0..runs {
        let mut lap = Instant::now();
        let mut stage = 0;
        let mut mark = |times: &mut Vec<(&'static str, Vec<f64>)>| {
            times[stage].1.push(lap.elapsed().as_secs_f64() * 1e6);
            stage += 1;
            lap = Instant::now();
        };
        let user = nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_NONBLOCK,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open the terminal");
        mark(&mut times);
        let saved = tcgetattr(&user).unwrap();
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ fills in a winsize.
        unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&user),
                libc::TIOCGWINSZ,
                &mut size,
            )
        };
        mark(&mut times);
        let winsize = nix::pty::Winsize {
            ws_row: size.ws_row,
            ws_col: size.ws_col,
            ws_xpixel: size.ws_xpixel,
            ws_ypixel: size.ws_ypixel,
        };
        let pty = nix::pty::openpty(Some(&winsize), Some(&saved)).expect("openpty");
        mark(&mut times);
        let flags = nix::fcntl::fcntl(pty.master.as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
        let _ = nix::fcntl::fcntl(
            pty.master.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK,
            ),
        );
        mark(&mut times);
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&user, SetArg::TCSADRAIN, &raw).unwrap();
        mark(&mut times);
        tcsetattr(&user, SetArg::TCSADRAIN, &saved).unwrap();
        mark(&mut times);
        drop((pty, user));
        mark(&mut times);
    }
    times
        .into_iter()
        .map(|(name, mut t)| {
            t.sort_by(f64::total_cmp);
            (name, t[t.len() / 2])
        })
        .collect()
}

/// `./bench tty`: calls whose stdio is a terminal, against the same calls
/// with no terminal: each side's warm call's latency, all taken in turn
/// (with chiark-utils' pair, which passes the terminal as it is), and a
/// chatty call's throughput (100 MB copied to the terminal), directly and
/// through us; then the goals a call on a terminal must meet: at most
/// 1.15x the same call without one, a p90 at most 1.5x its median, Perl
/// at most 0.6x chiark-utils' pair.
fn terminal_table(warm_runs: usize) {
    use Attach::{Controlling, StdioOnly};
    let mut world = World::new("ttybench");
    let client = world.client();
    let agent = world.bin_dir.join("examples").join("agent");
    let script = world.script("tty-agent", &client, agent.to_str().unwrap(), "");
    let perl = world.script("tty-perl", &client, "perl", &perl_bench_body(true, "", ""));
    let python_bin = python().display().to_string();
    let python = world.script("tty-python", &client, &python_bin, &python_bench_body());
    // chiark-utils' pair, which passes the terminal as it is.
    let chiark_pair = (Path::new(CHIARK_CLIENT).exists() && Path::new(CHIARK_MODULE).exists())
        .then(|| {
            world.script(
                "tty-perl-chiark",
                Path::new(CHIARK_CLIENT),
                "perl",
                &perl_bench_body(false, "", ""),
            )
        });
    let term = Terminal::new();
    let big = world.dir.join("100MB");
    std::fs::write(&big, vec![b'x'; 100 << 20]).unwrap();
    let chatty_runs = (warm_runs / 60).max(3);
    let call = |program: &Path, args: &[&str]| {
        let (program, args): (PathBuf, Vec<String>) = (
            program.to_path_buf(),
            args.iter().map(|a| a.to_string()).collect(),
        );
        let world = &world;
        move || {
            let mut c = world.command(&program);
            c.args(&args);
            c
        }
    };
    // One call each to start the servers.
    for server in [&script, &perl, &python]
        .into_iter()
        .chain(chiark_pair.as_ref())
    {
        world
            .command(server)
            .stdout(Stdio::null())
            .status()
            .unwrap();
    }
    let before = term.drained.load(std::sync::atomic::Ordering::Relaxed);
    // A warm call with no terminal and on one, for each side (and
    // chiark-utils' pair), all in turn: the ratios compare like with like.
    let sides: Vec<(&str, PathBuf, Vec<&str>)> = [
        Some(("Rust agent", script.clone(), vec!["@out:x"])),
        Some(("Perl (20 modules, _exit)", perl.clone(), vec![])),
        Some(("Python (14 modules)", python.clone(), vec![])),
        chiark_pair
            .clone()
            .map(|pair| ("chiark-utils' pair, Perl", pair, vec![])),
    ]
    .into_iter()
    .flatten()
    .collect();
    let boxed: Vec<Box<dyn Fn() -> Command + '_>> = sides
        .iter()
        .flat_map(|(_, program, args)| {
            let plain: Box<dyn Fn() -> Command> = Box::new(without_terminal(call(program, args)));
            let tty: Box<dyn Fn() -> Command> =
                Box::new(on_terminal(&term, Controlling, None, call(program, args)));
            [plain, tty]
        })
        .collect();
    let makers: Vec<&dyn Fn() -> Command> = boxed.iter().map(|m| m.as_ref()).collect();
    let mut paired = time_interleaved(warm_runs, &makers).into_iter();
    drop(makers);
    drop(boxed);
    let mut latency = Vec::new();
    for (name, _, _) in &sides {
        let (plain, tty) = (paired.next().unwrap(), paired.next().unwrap());
        latency.push((format!("{name}, warm, no terminal"), plain));
        let how = if name.starts_with("chiark") {
            "passed as is"
        } else {
            "own pty"
        };
        latency.push((format!("{name}, warm, on a terminal ({how})"), tty));
    }
    let rows = vec![
        floor_row(warm_runs),
        (
            "/bin/true, stdio a terminal".to_string(),
            time_on_terminal(&term, StdioOnly, warm_runs, None, || {
                Command::new("/bin/true")
            }),
        ),
        (
            "/bin/true, its controlling terminal".to_string(),
            time_on_terminal(&term, Controlling, warm_runs, None, || {
                Command::new("/bin/true")
            }),
        ),
        (
            "Rust agent, warm, stdio a terminal (passed as is)".to_string(),
            time_on_terminal(
                &term,
                StdioOnly,
                warm_runs,
                None,
                call(&script, &["@out:x"]),
            ),
        ),
    ]
    .into_iter()
    .chain(latency)
    .chain([
        (
            "100 MB to the terminal, agent run directly".to_string(),
            time_on_terminal(
                &term,
                Controlling,
                chatty_runs,
                Some(&big),
                call(&agent, &["@cat"]),
            ),
        ),
        (
            "100 MB to the terminal, agent, warm, passed as is".to_string(),
            time_on_terminal(
                &term,
                StdioOnly,
                chatty_runs,
                Some(&big),
                call(&script, &["@cat"]),
            ),
        ),
        (
            "100 MB to the terminal, agent, warm, own pty".to_string(),
            time_on_terminal(
                &term,
                Controlling,
                chatty_runs,
                Some(&big),
                call(&script, &["@cat"]),
            ),
        ),
    ])
    .collect::<Vec<_>>();
    print_table(&rows);
    let copied = term.drained.load(std::sync::atomic::Ordering::Relaxed) - before;
    let chatty = |name: &str| {
        let t = &rows.iter().find(|(n, _)| n == name).unwrap().1;
        100.0 / (median(t) / 1000.0)
    };
    println!(
        "\nthroughput to the terminal: directly {:.0} MB/s, through us {:.0} MB/s with the \
         terminal passed as is, {:.0} MB/s relayed from its own pty ({} MB drained in all)",
        chatty("100 MB to the terminal, agent run directly"),
        chatty("100 MB to the terminal, agent, warm, passed as is"),
        chatty("100 MB to the terminal, agent, warm, own pty"),
        copied >> 20
    );
    // Where a call's time goes, with no terminal and on one: before the
    // script's code runs (client, pty, hand-over, the executor's fork of
    // the script on a terminal) and after (exit, status, relay's end).
    let stage_runs = (warm_runs / 4).max(20);
    println!(
        "\n== where a warm call's time goes, no terminal | on a terminal (ms, medians of {stage_runs}) =="
    );
    println!(
        "{:<28} {:>14} {:>14}   {:>14} {:>14}",
        "", "to its code", "code to end", "to its code", "code to end"
    );
    for (name, program) in [
        ("Perl (20 modules, _exit)", &perl),
        ("Python (14 modules)", &python),
    ] {
        let plain = call(program, &[]);
        let (plain_to, plain_end) = stages(
            || {
                let mut c = plain();
                c.stdin(Stdio::null());
                c
            },
            stage_runs,
        );
        let (tty_to, tty_end) = terminal_stages(&term, call(program, &[]), stage_runs);
        println!("{name:<28} {plain_to:>14.3} {plain_end:>14.3}   {tty_to:>14.3} {tty_end:>14.3}");
    }
    println!("\n== the client's own terminal work per call (µs, medians of {warm_runs}) ==");
    let client_stages = client_terminal_stages(&term, warm_runs);
    for (name, us) in &client_stages {
        println!("{name:<60} {us:>8.1}");
    }
    println!(
        "{:<60} {:>8.1}",
        "in all",
        client_stages.iter().map(|(_, us)| us).sum::<f64>()
    );
    let row = |name: &str| rows.iter().find(|(n, _)| n.starts_with(name)).map(|r| &r.1);
    println!("\n== goals on a terminal (issue 28), from this run ==");
    for (name, _, _) in sides.iter().filter(|(n, _, _)| !n.starts_with("chiark")) {
        let plain = row(&format!("{name}, warm, no terminal")).unwrap();
        let tty = row(&format!("{name}, warm, on a terminal")).unwrap();
        target_line(
            &format!("{name}: on a terminal / without, medians"),
            Some(quantile(tty, 0.5) / quantile(plain, 0.5)),
            Goal::AtMost(1.15),
        );
        target_line(
            &format!("{name}: on a terminal, p90 / median"),
            Some(quantile(tty, 0.9) / quantile(tty, 0.5)),
            Goal::AtMost(1.5),
        );
    }
    let perl_tty = row("Perl (20 modules, _exit), warm, on a terminal").unwrap();
    target_line(
        "Perl on a terminal / chiark-utils' pair on it, medians",
        row("chiark-utils' pair, Perl, warm, on a terminal")
            .map(|chiark| quantile(perl_tty, 0.5) / quantile(chiark, 0.5)),
        Goal::AtMost(0.6),
    );
    world.kill_all();
}

fn full_table(warm_runs: usize) {
    let slow_runs = (warm_runs / 30).max(5);
    let mut world = World::new("fullbench");
    let client = world.client();
    let chiark = Path::new(CHIARK_CLIENT).exists() && Path::new(CHIARK_MODULE).exists();
    let chiark_client = Path::new(CHIARK_CLIENT);

    // The three script sides.
    let primes = world.bin_dir.join("examples").join("primes");
    let rust = world.script("rust", &client, primes.to_str().unwrap(), "");
    let perl_body = |ours: bool| perl_bench_body(ours, "", "");
    let perl = world.script("perl", &client, "perl", &perl_body(true));
    let perl_chiark =
        chiark.then(|| world.script("perl-chiark", chiark_client, "perl", &perl_body(false)));
    let plain =
        |ours: bool, options: &str| perl_bench_body_ending(ours, "", options, PerlEnd::Plain);
    let perl_plain = world.script("perl-plain", &client, "perl", &plain(true, ""));
    let perl_fast = world.script("perl-fast", &client, "perl", &plain(true, "fast_exit => 1"));
    let perl_chiark_plain = chiark.then(|| {
        world.script(
            "perl-chiark-plain",
            chiark_client,
            "perl",
            &plain(false, ""),
        )
    });
    let perl_chiark_ours =
        chiark.then(|| world.script("perl-c-ours", chiark_client, "perl", &perl_body(true)));
    let python_bin = python().display().to_string();
    let python = world.script("python", &client, &python_bin, &python_bench_body());
    let ruby = world.script("ruby", &client, &ruby_interpreter(), &ruby_bench_body());
    let kill = |script: &Path, interpreter: &str| world.kill_server(&client, interpreter, script);

    println!("== latency: one caller, calls one after another (ms) ==");
    let mut rows = vec![floor_row(warm_runs)];
    rows.push((
        "Rust example (primes), run directly".into(),
        time_runs(slow_runs, || Command::new(&primes), || {}),
    ));
    rows.push((
        "Rust example, cold".into(),
        time_runs(
            slow_runs,
            || world.command(&rust),
            || kill(&rust, primes.to_str().unwrap()),
        ),
    ));
    rows.push(("Rust example, warm".into(), world.warm(&rust, warm_runs)));
    rows.push((
        "Perl, 20 modules, run directly".into(),
        time_runs(slow_runs, direct(Path::new("perl"), &perl), || {}),
    ));
    rows.push((
        "Perl, our pair, cold".into(),
        time_runs(slow_runs, || world.command(&perl), || kill(&perl, "perl")),
    ));
    rows.push((
        "Perl, our pair, _exit, warm".into(),
        world.warm(&perl, warm_runs),
    ));
    rows.push((
        "Perl, our pair, plain exit, warm".into(),
        world.warm(&perl_plain, warm_runs),
    ));
    rows.push((
        "Perl, our pair, plain exit + fast_exit, warm".into(),
        world.warm(&perl_fast, warm_runs),
    ));
    let mut chiark_plain_wrong = None;
    if let (Some(c), Some(cp), Some(co)) = (&perl_chiark, &perl_chiark_plain, &perl_chiark_ours) {
        rows.push((
            "Perl, chiark pair, _exit, warm".into(),
            world.warm(c, warm_runs),
        ));
        let (times, wrong) = world.warm_counting(cp, warm_runs);
        chiark_plain_wrong = Some(wrong);
        rows.push(("Perl, chiark pair, plain exit, warm".into(), times));
        rows.push((
            "Perl, chiark client + our module, warm".into(),
            world.warm(co, warm_runs),
        ));
    }
    rows.push((
        "Python, heavy imports, run directly".into(),
        time_runs(slow_runs, direct(Path::new(&python_bin), &python), || {}),
    ));
    rows.push((
        "Python, cold".into(),
        time_runs(
            slow_runs,
            || world.command(&python),
            || kill(&python, &python_bin),
        ),
    ));
    rows.push(("Python, warm".into(), world.warm(&python, warm_runs)));
    rows.extend(ruby_rows(&world, &client, &ruby, slow_runs, warm_runs / 3));
    print_table(&rows);
    let row = |name: &str| rows.iter().find(|(n, _)| n == name).map(|(_, t)| median(t));
    if let Some(wrong) = chiark_plain_wrong {
        println!(
            "\nchiark pair, plain exit: {wrong} of {warm_runs} calls ended with a wrong status \
             (its EXECTERM race)"
        );
    }

    println!("\n== where a warm call's time goes: medians (ms) ==");
    println!("{:<48} {:>12} {:>12}", "call", "to script", "script to end");
    let agent = world.bin_dir.join("examples").join("agent");
    let rust_agent = world.script("rust-agent", &client, agent.to_str().unwrap(), "");
    let stage_runs = warm_runs.clamp(30, 200);
    // (name, script, its arguments, runs)
    let mut staged: Vec<(&str, &Path, &[&str], usize)> = vec![
        (
            "Rust agent (small), ours",
            &rust_agent,
            &["@time"],
            stage_runs,
        ),
        ("Perl, our pair, _exit", &perl, &[], stage_runs),
        ("Perl, our pair, plain exit", &perl_plain, &[], stage_runs),
        (
            "Perl, our pair, plain exit + fast_exit",
            &perl_fast,
            &[],
            stage_runs,
        ),
    ];
    if let (Some(c), Some(cp)) = (&perl_chiark, &perl_chiark_plain) {
        staged.push(("Perl, chiark pair, _exit", c, &[], stage_runs));
        staged.push(("Perl, chiark pair, plain exit", cp, &[], stage_runs));
    }
    staged.push(("Python, ours", &python, &[], stage_runs / 3));
    for (name, script, args, runs) in staged {
        let (to_script, to_end) = stages(
            || {
                let mut c = world.command(script);
                c.args(args);
                c
            },
            runs,
        );
        println!("{name:<48} {to_script:>12.3} {to_end:>12.3}");
    }

    println!("\n== CPU per warm call: the whole machine, user + system (ms) ==");
    let cpu_runs = warm_runs.max(100);
    let mut cpu_rows: Vec<(&str, &Path)> = vec![
        ("Rust example, ours", &rust),
        ("Perl, our pair, _exit", &perl),
        ("Perl, our pair, plain exit", &perl_plain),
        ("Perl, our pair, plain exit + fast_exit", &perl_fast),
    ];
    if let (Some(c), Some(cp)) = (&perl_chiark, &perl_chiark_plain) {
        cpu_rows.push(("Perl, chiark pair, _exit", c));
        cpu_rows.push(("Perl, chiark pair, plain exit", cp));
    }
    cpu_rows.push(("Python, ours", &python));
    let mut cpu = Vec::new();
    for (name, script) in cpu_rows {
        let runs = if name.starts_with("Python") {
            cpu_runs / 3
        } else {
            cpu_runs
        };
        let ms = cpu_per_call_ms(&world, script, runs);
        println!("{name:<48} {ms:>8.2}");
        cpu.push((name, ms));
    }
    let cpu_of = |name: &str| cpu.iter().find(|(n, _)| *n == name).map(|&(_, ms)| ms);

    println!("\n== throughput: calls per second, N callers in parallel ==");
    let total = warm_runs.max(64);
    let mut sides: Vec<(&str, &Path)> =
        vec![("Rust example, ours", &rust), ("Perl, our pair", &perl)];
    if let Some(c) = &perl_chiark {
        sides.push(("Perl, chiark pair", c));
    }
    sides.push(("Python, ours", &python));
    println!(
        "{:<48} {:>9} {:>9} {:>9} {:>9}",
        "script", "1", "2", "8", "32"
    );
    let mut at8 = Vec::new();
    for (name, script) in &sides {
        let rates: Vec<f64> = [1, 2, 8, 32]
            .iter()
            .map(|&n| {
                throughput(
                    n,
                    if name.starts_with("Python") {
                        total / 4
                    } else {
                        total
                    },
                    script,
                    &world.run_dir,
                )
            })
            .collect();
        at8.push((*name, rates[2]));
        println!(
            "{:<48} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
            name, rates[0], rates[1], rates[2], rates[3]
        );
    }
    let rate = |name: &str| at8.iter().find(|(n, _)| *n == name).map(|&(_, r)| r);

    println!("\n== memory ==");
    for (name, script) in &sides {
        match server_pid(script).and_then(rss_kb) {
            Some(kb) => println!("{:<48} {:>7} kB  server RSS", name, kb),
            None => println!("{:<48} {:>7}     server RSS", name, "?"),
        }
    }
    let mut peaks = vec![
        ("/bin/true", Path::new("/bin/true")),
        ("our client (Perl, warm call)", perl.as_path()),
    ];
    if let Some(c) = &perl_chiark {
        peaks.push(("chiark's client (Perl, warm call)", c.as_path()));
    }
    for (name, program) in peaks {
        match peak_rss_kb(program, &world.run_dir) {
            Some(kb) => println!("{:<48} {:>7} kB  peak RSS", name, kb),
            None => println!(
                "{:<48} {:>7}     peak RSS (GNU time not installed)",
                name, "?"
            ),
        }
    }

    println!("\n== the client's own path: instructions (callgrind), a warm call ==");
    let mut counted = vec![(
        "our client (Perl server)",
        client_instructions(&perl, &world.run_dir),
    )];
    if let Some(c) = &perl_chiark {
        counted.push((
            "chiark's client (Perl server)",
            client_instructions(c, &world.run_dir),
        ));
    }
    for (name, count) in counted {
        match count {
            Some(n) => println!("{:<48} {:>9}", name, n),
            None => println!("{:<48} {:>9}  (valgrind not installed)", name, "?"),
        }
    }
    world.kill_all();

    println!("\n== auto-reload check, Perl (our pair), 320 modules in %INC ==");
    perl_tables(warm_runs, true);

    println!("\n== on a terminal: a warm call's latency, a chatty call's throughput ==");
    terminal_table(warm_runs);

    println!("\n== Python 3.13 (Debian trixie tree): normal end and fast_exit ==");
    let py313 = python313_table(warm_runs);

    // The goals of issue 13, from the rows above (medians, this run).
    println!("\n== targets: warm calls, ratios from this run ==");
    let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
    let floor = row("/bin/true (exec floor)");
    // (what, this run's value, goal: at most / at least this)
    let targets = [
        (
            "1. Perl, plain exit: ours / chiark pair",
            ratio(
                row("Perl, our pair, plain exit, warm"),
                row("Perl, chiark pair, plain exit, warm"),
            ),
            Goal::AtMost(0.40),
        ),
        (
            "2. Perl, fast_exit: ours / chiark pair with _exit",
            ratio(
                row("Perl, our pair, plain exit + fast_exit, warm"),
                row("Perl, chiark pair, _exit, warm"),
            ),
            Goal::AtMost(0.33),
        ),
        (
            "2. Perl, _exit: ours / chiark pair with _exit",
            ratio(
                row("Perl, our pair, _exit, warm"),
                row("Perl, chiark pair, _exit, warm"),
            ),
            Goal::AtMost(0.33),
        ),
        (
            "2. Perl, fast_exit: ours / /bin/true",
            ratio(row("Perl, our pair, plain exit + fast_exit, warm"), floor),
            Goal::AtMost(2.5),
        ),
        (
            "3. Python (host's), normal end: ours / /bin/true",
            ratio(row("Python, warm"), floor),
            Goal::AtMost(8.0),
        ),
        (
            "3. Python 3.13, normal end: ours / /bin/true",
            py313.as_ref().map(|p| p.normal / p.floor),
            Goal::AtMost(8.0),
        ),
        (
            "3. Python 3.13, exact fast exit: ours / /bin/true",
            py313.as_ref().map(|p| p.fast / p.floor),
            Goal::AtMost(3.0),
        ),
        (
            "Ruby, normal end: ours / /bin/true (issue 29)",
            ratio(row("Ruby, warm"), floor),
            Goal::AtMost(10.0),
        ),
        (
            "4. Rust example: ours / /bin/true",
            ratio(row("Rust example, warm"), floor),
            Goal::AtMost(1.5),
        ),
        (
            "5. CPU per warm call, Perl, _exit, ours (ms)",
            cpu_of("Perl, our pair, _exit"),
            Goal::AtMost(2.5),
        ),
        (
            "5. Perl, 8 callers: ours / chiark pair (calls/s)",
            ratio(rate("Perl, our pair"), rate("Perl, chiark pair")),
            Goal::AtLeast(2.5),
        ),
    ];
    for (what, value, goal) in targets {
        target_line(what, value, goal);
    }
}
