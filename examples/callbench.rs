//! Times whole calls, side by side: `/bin/true` (the floor for anything
//! started from a #! line), examples/primes run directly, and the same
//! program through prefork-interp cold (server start + initialisation)
//! and warm (a fork of the initialised server). Prints one table of
//! medians with ratios. Run by `./quickstart`, or:
//!
//! ```text
//! cargo build --release --bins --examples
//! target/release/examples/callbench [WARM_RUNS]
//! ```
//!
//! Every row is measured the same way (spawn, wait, in this process), in
//! a private run directory that is removed afterwards.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn time_runs(
    runs: usize,
    mut make: impl FnMut() -> Command,
    mut between: impl FnMut(),
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        between();
        let mut cmd = make();
        cmd.stdout(Stdio::null());
        let start = Instant::now();
        let status = cmd.status().expect("spawn");
        times.push(start.elapsed());
        assert!(status.success(), "{cmd:?}: {status}");
    }
    times.sort();
    times
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let warm_runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("WARM_RUNS"))
        .unwrap_or(300);
    let slow_runs = (warm_runs / 30).max(5);
    let bin_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let client = bin_dir.join("prefork-interp");
    let primes = bin_dir.join("examples").join("primes");
    for p in [&client, &primes] {
        assert!(
            p.exists(),
            "{} missing: cargo build --release --bins --examples",
            p.display()
        );
    }

    let dir = std::env::temp_dir().join(format!("pfi-callbench-{}", std::process::id()));
    let run_dir = dir.join("run");
    std::fs::create_dir_all(&run_dir).unwrap();
    std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let script = dir.join("primes-script");
    std::fs::write(
        &script,
        format!("#!{} -U,{}\n", client.display(), primes.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();

    let with_env = |program: &Path| {
        let mut c = Command::new(program);
        c.env("XDG_RUNTIME_DIR", &run_dir).arg("1000003");
        c
    };
    let kill = || {
        let status = Command::new(&client)
            .env("XDG_RUNTIME_DIR", &run_dir)
            .arg(format!("-U,--kill,{}", primes.display()))
            .arg(&script)
            .status()
            .unwrap();
        assert!(status.success());
    };

    let check = with_env(&script).output().unwrap();
    println!(
        "the script says: {}",
        String::from_utf8_lossy(&check.stdout).trim()
    );

    let rows: Vec<(&str, Vec<Duration>)> = vec![
        (
            "/bin/true (exec floor)",
            time_runs(warm_runs, || Command::new("/bin/true"), || {}),
        ),
        (
            "primes run directly",
            time_runs(slow_runs, || with_env(&primes), || {}),
        ),
        (
            "primes via prefork-interp, cold",
            time_runs(slow_runs, || with_env(&script), kill),
        ),
        ("primes via prefork-interp, warm", {
            with_env(&script).stdout(Stdio::null()).status().unwrap();
            time_runs(warm_runs, || with_env(&script), || {})
        }),
    ];
    kill();
    std::fs::remove_dir_all(&dir).unwrap();

    let floor = ms(rows[0].1[rows[0].1.len() / 2]);
    println!();
    println!(
        "{:<34} {:>6} {:>10} {:>10} {:>10} {:>10}",
        "call", "runs", "median ms", "p10 ms", "p90 ms", "x /bin/true"
    );
    for (name, times) in &rows {
        let pick = |q: f64| ms(times[((times.len() - 1) as f64 * q).round() as usize]);
        println!(
            "{:<34} {:>6} {:>10.3} {:>10.3} {:>10.3} {:>10.1}",
            name,
            times.len(),
            pick(0.5),
            pick(0.1),
            pick(0.9),
            pick(0.5) / floor
        );
    }
}
