//! A small test harness for targets with `harness = false` whose tests are
//! made at run time (the conformance scenarios, one per registered name).
//!
//! libtest-mimic would do this, but it needs proc macros (clap's derive),
//! which this project's crt-static rustflags forbid. This speaks the part
//! of libtest's command line that `cargo test` and `cargo nextest` use:
//! nextest lists with `--list --format terse` (and `--ignored`, which
//! lists nothing: no trial is ignored) and runs each test in a process of
//! its own with `--exact NAME --nocapture`.
//!
//! Output is never captured: what a trial prints is shown as it comes
//! (nextest captures each process's output itself). A trial fails by
//! panicking; it runs on a thread named after it, so the panic message
//! names the test, as libtest's does.

use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// One test: its name and what it runs.
pub struct Trial {
    pub name: &'static str,
    pub run: Box<dyn Fn() + Send + Sync>,
}

/// What the command line asked for.
#[derive(Default)]
struct Arguments {
    list: bool,
    terse: bool,
    quiet: bool,
    ignored_only: bool,
    exact: bool,
    filters: Vec<String>,
    skip: Vec<String>,
    threads: Option<usize>,
}

impl Arguments {
    fn parse(args: impl Iterator<Item = String>) -> Result<Arguments, String> {
        let mut parsed = Arguments::default();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            // `--name=value` and `--name value` alike.
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| args.next())
                    .ok_or(format!("{name} needs a value"))
            };
            match name.as_str() {
                "--list" => parsed.list = true,
                "--format" => match value()?.as_str() {
                    "terse" => parsed.terse = true,
                    "pretty" => {}
                    other => return Err(format!("--format {other} is not supported")),
                },
                "-q" | "--quiet" => parsed.quiet = true,
                "--ignored" => parsed.ignored_only = true,
                // Nothing is ignored, so these change nothing.
                "--include-ignored" | "--nocapture" | "--no-capture" | "--show-output" => {}
                "--color" => {
                    value()?;
                }
                "--exact" => parsed.exact = true,
                "--skip" => parsed.skip.push(value()?),
                "--test-threads" => {
                    let n = value()?;
                    parsed.threads = Some(
                        n.parse()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or(format!("--test-threads {n}: not a positive number"))?,
                    );
                }
                option if option.starts_with('-') => {
                    // Refused rather than ignored: an option taken for
                    // granted (a filter, say) would silently run the wrong
                    // tests.
                    return Err(format!("option {option} is not supported"));
                }
                _ => parsed.filters.push(arg),
            }
        }
        Ok(parsed)
    }

    /// Is `name` selected by the filters (any of them) and not skipped?
    fn selects(&self, name: &str) -> bool {
        let matches = |pattern: &String| {
            if self.exact {
                name == pattern
            } else {
                name.contains(pattern.as_str())
            }
        };
        (self.filters.is_empty() || self.filters.iter().any(matches))
            && !self.skip.iter().any(matches)
    }
}

/// Runs (or lists) the trials the command line selects; the process's
/// exit status is libtest's: 0 if all passed, 101 if any failed.
pub fn run(mut trials: Vec<Trial>) -> ExitCode {
    let args = match Arguments::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    trials.sort_by_key(|t| t.name);
    let total = trials.len();
    // No trial is ignored: asked for the ignored ones, there are none.
    trials.retain(|t| !args.ignored_only && args.selects(t.name));
    let filtered_out = total - trials.len();

    if args.list {
        for t in &trials {
            println!("{}: test", t.name);
        }
        if !args.terse {
            println!("\n{} tests, 0 benchmarks", trials.len());
        }
        return ExitCode::SUCCESS;
    }

    let start = Instant::now();
    let plural = if trials.len() == 1 { "" } else { "s" };
    println!("\nrunning {} test{plural}", trials.len());
    let threads = args
        .threads
        .or_else(|| std::env::var("RUST_TEST_THREADS").ok()?.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(trials.len()) {
            scope.spawn(|| {
                while let Some(trial) = trials.get(next.fetch_add(1, Ordering::Relaxed)) {
                    // A thread of its own, named after the trial: a panic
                    // ends only it, and its message names the test.
                    let passed = std::thread::Builder::new()
                        .name(trial.name.to_string())
                        .spawn_scoped(scope, || (trial.run)())
                        .unwrap()
                        .join()
                        .is_ok();
                    if args.quiet {
                        print!("{}", if passed { "." } else { "F" });
                    } else {
                        let verdict = if passed { "ok" } else { "FAILED" };
                        println!("test {} ... {verdict}", trial.name);
                    }
                    if !passed {
                        failed.lock().unwrap().push(trial.name);
                    }
                }
            });
        }
    });

    let mut failed = failed.into_inner().unwrap();
    failed.sort();
    if args.quiet {
        println!();
    }
    if !failed.is_empty() {
        println!("\nfailures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; 0 ignored; 0 measured; {filtered_out} \
         filtered out; finished in {:.2}s\n",
        if failed.is_empty() { "ok" } else { "FAILED" },
        trials.len() - failed.len(),
        failed.len(),
        start.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(101)
    }
}
