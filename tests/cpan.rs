//! The Perl side as a CPAN-style distribution (sides/perl/Makefile.PL):
//! in a copy of sides/perl, `perl Makefile.PL && make && make test`
//! passes with the built client (the module's own t/, its calls through
//! the client included, not skipped), `make distcheck` finds MANIFEST
//! complete, `make dist` makes a tarball with the modules, the tests,
//! the licence files and t/wire-vectors.json (real files, though symlinks
//! in the repository) and
//! META.json (both licences, IO::FDPass); cpanm installs that tarball,
//! testing it, into a fresh local lib without reaching any network
//! (IO::FDPass is Debian's, installed system-wide), and a script using the
//! installed module runs through the client cold and warm.
mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// The version the tarball carries: the module's $VERSION, which is
/// Cargo.toml's.
const VERSION: &str = PACKAGE_VERSION;

#[track_caller]
fn run_ok(cmd: &mut Command) -> Output {
    succeeded(
        cmd,
        "./test installs perl, make and cpanminus from Debian's packages",
    )
}

/// `cpanm -l WORLD/local WHAT`, run in `dir`, with the module's tests
/// (they pass, calls through the client included). Its only mirror is an
/// empty directory: nothing is fetched, so a prerequisite missing from
/// the system fails here. The local lib's module directory.
fn cpanm_into_a_local_lib(world: &Path, dir: &Path, what: &OsStr) -> PathBuf {
    let local = world.join("local");
    let empty = world.join("empty-mirror");
    std::fs::create_dir(&empty).unwrap();
    let cpanm_home = world.join("cpanm-home");
    let installed = perl_tool(dir, "cpanm")
        .arg("-l")
        .arg(&local)
        .arg("--mirror")
        .arg(format!("file://{}", empty.display()))
        .arg("--mirror-only")
        .arg(what)
        .env("PERL_CPANM_HOME", &cpanm_home)
        .env("PREFORK_INTERP_CLIENT", client())
        .output()
        .expect("cpanm (./test installs Debian's cpanminus)");
    let build_log =
        std::fs::read_to_string(cpanm_home.join("latest-build/build.log")).unwrap_or_default();
    assert!(
        installed.status.success(),
        "cpanm {what:?}: {:?}\n{}{}\nbuild.log:\n{build_log}",
        installed.status,
        stdout_str(&installed),
        stderr_str(&installed)
    );
    assert_own_tests_ran(&build_log, false);
    local.join("lib/perl5")
}

/// The module's own tests passed, the calls through the client (t/10-client.t)
/// among them and not skipped. `verbose`: TAP lines are in `log`.
#[track_caller]
fn assert_own_tests_ran(log: &str, verbose: bool) {
    assert!(log.contains("Result: PASS"), "{log}");
    // Test::Harness's `t/FILE.t .. skipped: WHY` for a file, `ok N # skip
    // WHY` for a test (a test's own name may say "skipped").
    let skipped = |line: &str| {
        (line.starts_with("t/") && line.contains(" skipped: "))
            || line.to_lowercase().contains("# skip")
    };
    assert!(
        !log.lines().any(skipped),
        "a test file or test was skipped:\n{log}"
    );
    for file in [
        "t/00-load.t",
        "t/01-standalone.t",
        "t/02-errors.t",
        "t/03-run.t",
        "t/10-client.t",
        "t/wire.t",
    ] {
        assert!(log.contains(file), "{file} did not run:\n{log}");
    }
    if verbose {
        for line in [
            "ok 1 - cold call: the exit status",
            "ok 5 - warm call: the exit status",
            "ok 10 - warm calls: the initialisation ran once",
            "ok 15 - the server is gone",
        ] {
            assert!(log.contains(line), "{line:?} missing:\n{log}");
        }
    }
}

/// The Perl side's modules (tools/module-files: the one list).
fn perl_modules() -> Vec<String> {
    let out = run_ok(Command::new(repo().join("tools/module-files")).arg("perl"));
    let modules: Vec<String> = stdout_str(&out).lines().map(str::to_owned).collect();
    assert!(modules.len() >= 2, "tools/module-files perl: {modules:?}");
    modules
}

#[test]
fn cpan_distribution_builds_tests_packs_and_installs_with_cpanm() {
    let world = tempfile::tempdir().unwrap();
    let source = perl_side_copy(world.path());

    run_ok(perl_tool(&source, "perl").arg("Makefile.PL"));
    run_ok(&mut perl_tool(&source, "make"));
    let tested = run_ok(
        perl_tool(&source, "make")
            .arg("test")
            .arg(format!("PREFORK_INTERP_CLIENT={}", client().display()))
            .arg("TEST_VERBOSE=1"),
    );
    assert_own_tests_ran(
        &format!("{}{}", stdout_str(&tested), stderr_str(&tested)),
        true,
    );

    // distcheck prints the files MANIFEST lacks or lists wrongly, and only
    // the command itself when all is well.
    let checked = run_ok(perl_tool(&source, "make").arg("distcheck"));
    let said = stdout_str(&checked);
    let complaints: Vec<&str> = said
        .lines()
        .filter(|l| !l.contains("-MExtUtils::Manifest=fullcheck"))
        .collect();
    assert!(
        complaints.is_empty() && checked.stderr.is_empty(),
        "make distcheck: {complaints:#?}\n{}",
        stderr_str(&checked)
    );

    let tarball = perl_dist(&source);
    let name = format!("Proc-Prefork-Interp-{VERSION}");

    // Its entries, as `tar tv` shows them: type and path.
    let listed = run_ok(Command::new("tar").arg("-tvzf").arg(&tarball));
    let entries: Vec<(char, String)> = stdout_str(&listed)
        .lines()
        .map(|l| {
            let kind = l.chars().next().unwrap();
            let path = l.split_whitespace().last().unwrap().to_owned();
            (kind, path)
        })
        .collect();
    // MANIFEST's files (distcheck above held it against the directory)
    // and the generated metadata, as regular files.
    let manifest: Vec<String> = std::fs::read_to_string(repo().join("sides/perl/MANIFEST"))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_owned())
        .filter(|f| !f.is_empty())
        .collect();
    for file in manifest
        .iter()
        .map(String::as_str)
        .chain(["META.json", "META.yml"])
    {
        let path = format!("{name}/{file}");
        assert!(
            entries.contains(&('-', path.clone())),
            "{path} is not a regular file in the tarball: {entries:#?}"
        );
    }
    for (_, path) in &entries {
        for product in ["/blib/", "/Makefile", "/MYMETA", "/pm_to_blib"] {
            if product == "/Makefile" && path.ends_with("/Makefile.PL") {
                continue;
            }
            assert!(
                !path.contains(product),
                "build product {path} in the tarball"
            );
        }
    }

    let unpacked = world.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xzf")
            .arg(&tarball)
            .arg("-C")
            .arg(&unpacked),
    );
    let unpacked = unpacked.join(&name);
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert_eq!(
            std::fs::read(unpacked.join(licence)).unwrap(),
            std::fs::read(repo().join(licence)).unwrap(),
            "{licence} in the tarball differs from the repository's"
        );
    }
    assert_eq!(
        std::fs::read(unpacked.join("t/wire-vectors.json")).unwrap(),
        std::fs::read(repo().join("sides/wire-vectors.json")).unwrap(),
        "t/wire-vectors.json in the tarball differs from sides/wire-vectors.json"
    );
    for module in perl_modules() {
        assert_eq!(
            std::fs::read(unpacked.join("lib").join(&module)).unwrap(),
            std::fs::read(repo().join("sides/perl/lib").join(&module)).unwrap(),
            "{module} in the tarball"
        );
    }
    // META.json through Perl's own JSON reader.
    let meta = run_ok(
        perl_tool(&unpacked, "perl")
            .args([
                "-MJSON::PP",
                "-0777",
                "-ne",
                r#"my $m = decode_json($_);
                   my $r = $m->{prereqs}{runtime}{requires};
                   print "name=$m->{name}\n";
                   print "version=$m->{version}\n";
                   print "license=@{$m->{license}}\n";
                   print "abstract=$m->{abstract}\n";
                   print "author=@{$m->{author}}\n";
                   print "fdpass=", $r->{'IO::FDPass'} // 'missing', "\n";
                   print "perl=", $r->{perl} // 'missing', "\n";
                   print "spec=$m->{'meta-spec'}{version}\n";"#,
            ])
            .arg("META.json"),
    );
    assert_eq!(
        stdout_str(&meta),
        format!(
            "name=Proc-Prefork-Interp\nversion=v{VERSION}\nlicense=mit apache_2_0\n\
             abstract=script side of prefork-interp, for Perl\n\
             author=prefork-interp developers\nfdpass=0\nperl=5.032\nspec=2\n"
        )
    );

    // cpanm, from the tarball, tests included (with the client), into a
    // fresh local lib. Its only mirror is an empty directory: nothing is
    // fetched, so a prerequisite missing from the system fails here.
    let lib = cpanm_into_a_local_lib(world.path(), world.path(), tarball.as_os_str());
    for module in perl_modules() {
        assert_eq!(
            std::fs::read(lib.join(&module)).unwrap(),
            std::fs::read(repo().join("sides/perl/lib").join(&module)).unwrap(),
            "{module} as cpanm installed it"
        );
    }
    assert!(
        lib.join("../../man/man3/Proc::Prefork::Interp.3pm")
            .exists()
    );

    // A script using the installed module (found through PERL5LIB alone),
    // through the client: cold, then warm.
    let run = world.path().join("run");
    std::fs::create_dir(&run).unwrap();
    set_mode(&run, 0o700);
    let inits = world.path().join("inits");
    let script = world.path().join("installed.pl");
    std::fs::write(
        &script,
        format!(
            "#!{} -U,perl,-w\nuse strict;\nuse Proc::Prefork::Interp;\n\
             open(my $f, '>>', '{}') or die; print $f \"$$\\n\"; close $f;\n\
             prefork_initialisation_complete();\n\
             print \"$INC{{'Proc/Prefork/Interp.pm'}} @ARGV\\n\";\nexit $ARGV[-1];\n",
            client().display(),
            inits.display()
        ),
    )
    .unwrap();
    set_mode(&script, 0o755);
    let module = lib.join("Proc/Prefork/Interp.pm");
    let call = |args: &[&str]| {
        perl_tool(world.path(), &script)
            .args(args)
            .env("PERL5LIB", &lib)
            .env("XDG_RUNTIME_DIR", &run)
            .output()
            .unwrap()
    };
    let cold = call(&["cold", "0"]);
    assert_success(&cold);
    assert_eq!(stdout_str(&cold), format!("{} cold 0\n", module.display()));
    let warm = call(&["warm", "two words", "7"]);
    assert_eq!(warm.status.code(), Some(7), "{}", stderr_str(&warm));
    assert_eq!(
        stdout_str(&warm),
        format!("{} warm two words 7\n", module.display())
    );
    let inits_seen = std::fs::read_to_string(&inits).unwrap();
    assert_eq!(
        inits_seen.lines().count(),
        1,
        "initialised once, the warm call a fork: {inits_seen}"
    );
    let kill = perl_tool(world.path(), client())
        .arg("--kill")
        .arg("-U,perl,-w")
        .arg(&script)
        .env("PERL5LIB", &lib)
        .env("XDG_RUNTIME_DIR", &run)
        .output()
        .unwrap();
    assert_success(&kill);
}

/// The README's command, `cpanm ./sides/perl`, in a copy of the
/// repository's files (cpanm builds in the directory it is given): the
/// module's tests pass with the client and it installs, here into a
/// fresh local lib with an empty mirror (nothing fetched), every module
/// file as in the repository.
#[test]
fn cpanm_of_the_source_directory_installs() {
    let world = tempfile::tempdir().unwrap();
    let copy = clone_of_the_repository(world.path());
    let lib = cpanm_into_a_local_lib(world.path(), &copy, "./sides/perl".as_ref());
    for module in perl_modules() {
        assert_eq!(
            std::fs::read(lib.join(&module)).unwrap(),
            std::fs::read(repo().join("sides/perl/lib").join(&module)).unwrap(),
            "{module} as cpanm ./sides/perl installed it"
        );
    }
}
