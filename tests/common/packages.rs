//! The script sides' packages, built in a test's own directory from a
//! copy of the repository's sides (the repository is never built in):
//! the Perl distribution, the Python wheel (and sdist), the Ruby gem.
//! For the tests that check the packages (tests/cpan.rs,
//! tests/install.rs, tests/gem.rs) and those that install from them
//! (tests/runner_install.rs).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{python, repo, succeeded};

/// The version every package carries: Cargo.toml's.
pub const PACKAGE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// sides/SIDE copied to `to` by `cp HOW` (`-a`: symlinks stay links;
/// `-rL`: they become the files they point at).
fn copy_side(side: &str, to: &Path, how: &str) {
    succeeded(
        Command::new("cp")
            .arg(how)
            .arg(repo().join("sides").join(side))
            .arg(to),
        "cp",
    );
}

/// A command in `dir` without the caller's Perl settings (a local::lib in
/// the environment would send installs and lookups elsewhere).
pub fn perl_tool(dir: &Path, program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir).stdin(Stdio::null());
    for var in [
        "PERL5LIB",
        "PERL5OPT",
        "PERL_MM_OPT",
        "PERL_MB_OPT",
        "PERL_LOCAL_LIB_ROOT",
        "PERL_CPANM_OPT",
        "PREFORK_INTERP",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// sides/perl copied into `world/repo/sides/perl`, as it is (its
/// LICENSE-* symlinks still point at ../../LICENSE-*, and
/// t/wire-vectors.json at ../../wire-vectors.json, which are copied to
/// the same places relative to it). Returns the copy.
pub fn perl_side_copy(world: &Path) -> PathBuf {
    let top = world.join("repo");
    std::fs::create_dir_all(top.join("sides")).unwrap();
    copy_side("perl", &top.join("sides/perl"), "-a");
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        std::fs::copy(repo().join(licence), top.join(licence)).unwrap();
        let link = top.join("sides/perl").join(licence);
        assert!(
            link.symlink_metadata().unwrap().file_type().is_symlink(),
            "sides/perl/{licence} should be a symlink to the root's"
        );
    }
    std::fs::copy(
        repo().join("sides/wire-vectors.json"),
        top.join("sides/wire-vectors.json"),
    )
    .unwrap();
    assert!(
        top.join("sides/perl/t/wire-vectors.json")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink(),
        "sides/perl/t/wire-vectors.json should be a symlink to sides/wire-vectors.json"
    );
    top.join("sides/perl")
}

/// `make dist` in `source` (a [`perl_side_copy`], configured): the
/// tarball.
pub fn perl_dist(source: &Path) -> PathBuf {
    succeeded(
        perl_tool(source, "make").arg("dist"),
        "./test installs make from Debian's packages",
    );
    let tarball = source.join(format!("Proc-Prefork-Interp-{PACKAGE_VERSION}.tar.gz"));
    assert!(tarball.exists(), "make dist made no {}", tarball.display());
    tarball
}

/// `python3 -m build --no-isolation` (its isolation would fetch
/// setuptools) of a copy of sides/python in `world`, with `formats`
/// (`--wheel`, `--sdist`) and `env` added: the directory of what it made.
pub fn python_side_build(world: &Path, formats: &[&str], env: &[(&str, &str)]) -> PathBuf {
    let source = world.join("python-source");
    copy_side("python", &source, "-rL");
    let dist = world.join("dist");
    python_build(&source, &dist, formats, env);
    dist
}

/// `python3 -m build --no-isolation FORMATS --outdir DIST SOURCE`, with
/// `env` added.
pub fn python_build(source: &Path, dist: &Path, formats: &[&str], env: &[(&str, &str)]) {
    succeeded(
        Command::new(python())
            .args(["-m", "build", "--no-isolation"])
            .args(formats)
            .arg("--outdir")
            .arg(dist)
            .arg(source)
            .envs(env.iter().copied()),
        "./test installs build, wheel and setuptools-rust with pip",
    );
}

/// A RubyGems command in `dir`, with nothing of the caller's Ruby or gem
/// settings and a HOME of its own (no ~/.gem, ~/.local/share/gem).
pub fn gem_tool(dir: &Path, home: &Path, program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .env("HOME", home)
        .env_remove("PREFORK_INTERP");
    for var in [
        "RUBYLIB",
        "RUBYOPT",
        "GEM_HOME",
        "GEM_PATH",
        "GEM_SPEC_CACHE",
        "BUNDLE_GEMFILE",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// `gem build` in a copy of sides/ruby in `world` (cp -a: a symlink
/// stays one, as gem build would find it), less any gem an earlier build
/// left there: the gem, and what gem build said.
pub fn ruby_gem(world: &Path, home: &Path) -> (PathBuf, String) {
    let source = world.join("ruby");
    copy_side("ruby", &source, "-a");
    for entry in std::fs::read_dir(&source).unwrap().flatten() {
        if entry.file_name().to_string_lossy().ends_with(".gem") {
            std::fs::remove_file(entry.path()).unwrap();
        }
    }
    let built = succeeded(
        gem_tool(&source, home, "gem").args(["build", "prefork_interp.gemspec"]),
        "./test installs Debian's ruby",
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    let file = source.join(format!("prefork_interp-{PACKAGE_VERSION}.gem"));
    assert!(
        file.exists(),
        "gem build made no {}:\n{said}",
        file.display()
    );
    (file, said)
}

/// A copy of the repository's tracked files in `world`, as a clone has
/// them.
pub fn clone_of_the_repository(world: &Path) -> PathBuf {
    let copy = world.join("prefork-interp");
    let files = succeeded(
        Command::new("git")
            .args(["ls-files", "-z"])
            .current_dir(repo()),
        "git",
    );
    for file in files.stdout.split(|&b| b == 0).filter(|f| !f.is_empty()) {
        let file = Path::new(std::str::from_utf8(file).unwrap());
        let (from, to) = (repo().join(file), copy.join(file));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if from.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else if from.is_file() {
            std::fs::copy(&from, &to).unwrap();
        }
    }
    copy
}
