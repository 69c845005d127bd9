//! `--run PROGRAM` where the program's interpreter does not find our
//! runner: one line naming the program, the runner and the interpreter,
//! ending with the one command that installs it, in that interpreter's
//! own ecosystem (pip, pipx, cpanm, gem) and aimed at exactly it. The
//! command, run by `sh -c` exactly as printed, with only what points its
//! installer at a local index built here from this repository (no
//! network), installs the runner; then `--run PROGRAM` ends as a direct
//! run does, cold and warm, and `--kill --run PROGRAM` stops its server.
//! And for Perl, a runner without IO::FDPass: that line.
mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Before the command, in the line.
const INSTALL_WITH: &str = ": install it with: ";

/// One private world: the program, HOME, the run directory, the packages
/// built and their local index. Every command runs in it with a small
/// environment of its own, with nothing of ours in it (no PERL5LIB,
/// PYTHONPATH, RUBYLIB, RUBYOPT), as `user` if one is given.
struct World {
    dir: tempfile::TempDir,
    env: Vec<(&'static str, OsString)>,
    user: Option<(u32, u32)>,
}

impl World {
    fn new() -> World {
        let dir = new_world_dir();
        let env = World::env_in(dir.path());
        World {
            dir,
            env,
            user: None,
        }
    }

    /// A world of `uid`'s: its HOME and run directory are theirs.
    fn of_user((uid, gid): (u32, u32)) -> World {
        let dir = dir_owned_by(uid, gid);
        for (name, mode) in [("home", 0o755), ("run", 0o700)] {
            let path = dir.path().join(name);
            std::fs::create_dir(&path).unwrap();
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).unwrap();
            set_mode(&path, mode);
        }
        let env = World::env_in(dir.path());
        World {
            dir,
            env,
            user: Some((uid, gid)),
        }
    }

    fn env_in(dir: &Path) -> Vec<(&'static str, OsString)> {
        vec![
            ("PATH", std::env::var_os("PATH").unwrap_or_default()),
            ("HOME", dir.join("home").into()),
            ("XDG_RUNTIME_DIR", dir.join("run").into()),
            ("LANG", "C.UTF-8".into()),
        ]
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Every later command gets `var`.
    fn set(&mut self, var: &'static str, value: impl Into<OsString>) {
        self.env.push((var, value.into()));
    }

    /// An executable program.
    fn program(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        set_mode(&path, 0o755);
        path
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>, extra: &[(&str, OsString)]) -> Command {
        let mut cmd = match self.user {
            Some((uid, gid)) => as_user(uid, gid, program),
            None => Command::new(program),
        };
        cmd.env_clear()
            .envs(self.env.iter().map(|(var, value)| (var, value)))
            .envs(extra.iter().map(|(var, value)| (var, value)))
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        cmd
    }

    /// What is in the run directory (made on first use).
    fn run_dir_entries(&self) -> Vec<String> {
        match std::fs::read_dir(self.path("run/prefork-interp")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// What a test program does: its arguments on stdout, a line on stderr,
/// exit status 3 (so that a run that is not the program's shows).
const ARGS: [&str; 2] = ["one", "two words"];

/// The runner's installation, as the line prints it and as a user would
/// run it.
struct Case<'a> {
    program: &'a Path,
    /// The runner as the line names it, and the interpreter.
    runner: &'a str,
    interpreter: &'a str,
    /// The command the line must end with.
    command: String,
    /// What points the installer at the world's local index.
    install_env: Vec<(&'a str, OsString)>,
    /// What makes the installed runner visible to the interpreter, if
    /// where it installed is not already.
    visible_env: Vec<(&'a str, OsString)>,
}

/// `--run PROGRAM` says the one line (status 127, nothing left in the run
/// directory); its command, by `sh -c` as printed, installs the runner;
/// then `--run PROGRAM` works as a direct run, cold and warm.
fn install_as_printed(w: &World, case: Case) {
    let program = case.program;
    let missing = w
        .command(client(), &[])
        .arg("--run")
        .arg(program)
        .args(ARGS)
        .output()
        .unwrap();
    let line = stderr_str(&missing);
    assert_eq!(missing.status.code(), Some(127), "{line}");
    assert_eq!(
        line,
        format!(
            "prefork-interp: --run: {} needs prefork-interp's {}, not installed for {}{INSTALL_WITH}{}\n",
            program.display(),
            case.runner,
            case.interpreter,
            case.command
        )
    );
    assert!(missing.stdout.is_empty(), "{}", stdout_str(&missing));
    assert_eq!(w.run_dir_entries(), Vec::<String>::new());

    // The command as printed: everything after the marker.
    let command = &line[line.find(INSTALL_WITH).unwrap() + INSTALL_WITH.len()..line.len() - 1];
    let installed = w
        .command("sh", &case.install_env)
        .args(["-c", command])
        .output()
        .unwrap();
    assert_success(&installed);

    let direct = w
        .command(program, &case.visible_env)
        .args(ARGS)
        .output()
        .unwrap();
    assert_eq!(direct.status.code(), Some(3), "{}", stderr_str(&direct));
    for which in ["cold", "warm"] {
        let through = w
            .command(client(), &case.visible_env)
            .arg("--run")
            .arg(program)
            .args(ARGS)
            .output()
            .unwrap();
        assert_same_run(&through, &direct, &format!("{which} --run after {command}"));
    }
    let kill = w
        .command(client(), &case.visible_env)
        .args(["--kill", "--run"])
        .arg(program)
        .output()
        .unwrap();
    assert_success(&kill);
    wait_until("the server's files to go", Duration::from_secs(10), || {
        w.run_dir_entries().is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", w.run_dir_entries()));
}

/// The Python test program, for `interpreter`.
fn python_program(w: &World, interpreter: &Path) -> PathBuf {
    w.program(
        "tool.py",
        &format!(
            "#!{}\nimport json, sys\nprint('out', json.dumps(sys.argv[1:]))\n\
             print('err', file=sys.stderr)\nsys.exit(3)\n",
            interpreter.display()
        ),
    )
}

/// The wheel, built from this repository (module only: the client is
/// the one under test), in a directory of its own; and pip's environment
/// that installs from there and nowhere else.
fn wheel_index(w: &World) -> (PathBuf, Vec<(&'static str, OsString)>) {
    let dist = python_side_build(
        w.dir.path(),
        &["--wheel"],
        &[("PREFORK_INTERP_CLIENT", "omit")],
    );
    let env = vec![
        ("PIP_NO_INDEX", "1".into()),
        ("PIP_FIND_LINKS", dist.clone().into()),
        ("PIP_DISABLE_PIP_VERSION_CHECK", "1".into()),
    ];
    (dist, env)
}

/// `program`, whose interpreter is `interpreter`, installs the Python
/// runner with the line's `command`, pip taking the world's wheel (`pip`).
fn python_install_as_printed(
    w: &World,
    program: &Path,
    interpreter: &Path,
    command: String,
    pip: Vec<(&'static str, OsString)>,
) {
    install_as_printed(
        w,
        Case {
            program,
            runner: "Python runner (the prefork_interp package)",
            interpreter: &interpreter.display().to_string(),
            command,
            install_env: pip,
            visible_env: Vec::new(),
        },
    );
}

/// Debian's python3 is "externally managed" (PEP 668): pip installs
/// nothing into it unless told, so the command says so, and installs into
/// the user's site, where that python3 looks with nothing else set.
#[test]
fn debians_python_runner_installs_into_the_user_site() {
    let system = Path::new("/usr/bin/python3");
    let marker = Command::new(system)
        .args([
            "-c",
            "import os, sysconfig; \
             print(os.path.isfile(os.path.join(sysconfig.get_path('stdlib'), 'EXTERNALLY-MANAGED')))",
        ])
        .output()
        .expect("Debian's python3");
    assert_eq!(
        stdout_str(&marker),
        "True\n",
        "Debian's python3 (12 and later) is externally managed"
    );
    let w = World::new();
    let program = python_program(&w, system);
    python_install_as_printed(
        &w,
        &program,
        system,
        "/usr/bin/python3 -m pip install --user --break-system-packages prefork-interp".into(),
        wheel_index(&w).1,
    );
}

/// A venv's python (of the host's python3): its own pip, into the venv.
#[test]
fn venv_python_runner_installs_with_its_pip() {
    let w = World::new();
    let venv = w.path("venv");
    succeeded(
        Command::new(python()).args(["-m", "venv"]).arg(&venv),
        "./test installs Debian's python3-venv",
    );
    let interpreter = venv.join("bin/python3");
    let program = python_program(&w, &interpreter);
    python_install_as_printed(
        &w,
        &program,
        &interpreter,
        format!("{} -m pip install prefork-interp", interpreter.display()),
        wheel_index(&w).1,
    );
}

/// A program that pipx installed: its venv is pipx's, so `pipx inject`;
/// with the venv's PIPX_HOME, which is not where pipx looks by default.
#[test]
fn pipx_program_runner_installs_with_pipx_inject() {
    let w = World::new();
    let (dist, pip) = wheel_index(&w);
    // An application of our own, with a console script.
    let app = w.path("app");
    std::fs::create_dir_all(app.join("pfi_app")).unwrap();
    std::fs::write(
        app.join("pyproject.toml"),
        "[build-system]\nrequires = [\"setuptools\"]\nbuild-backend = \"setuptools.build_meta\"\n\
         [project]\nname = \"pfi-app\"\nversion = \"1.0\"\n\
         [project.scripts]\npfi-app = \"pfi_app:main\"\n",
    )
    .unwrap();
    std::fs::write(
        app.join("pfi_app/__init__.py"),
        "import json, sys\n\ndef main():\n    print('out', json.dumps(sys.argv[1:]))\n    \
         print('err', file=sys.stderr)\n    sys.exit(3)\n",
    )
    .unwrap();
    python_build(&app, &dist, &["--wheel"], &[]);
    let pipx_home = w.path("pipx");
    let mut pipx_env = pip.clone();
    pipx_env.push(("PIPX_HOME", pipx_home.clone().into()));
    pipx_env.push(("PIPX_BIN_DIR", w.path("bin").into()));
    succeeded(
        w.command("pipx", &pipx_env).args(["install", "pfi-app"]),
        "./test installs Debian's pipx",
    );
    let program = w.path("bin/pfi-app");
    let interpreter = pipx_home.join("venvs/pfi-app/bin/python");
    python_install_as_printed(
        &w,
        &program,
        &interpreter,
        format!(
            "PIPX_HOME={} pipx inject pfi-app prefork-interp",
            pipx_home.display()
        ),
        pip,
    );
}

/// The Perl test program.
fn perl_program(w: &World) -> PathBuf {
    w.program(
        "tool.pl",
        "#!/usr/bin/perl\nuse strict;\nuse JSON::PP;\n\
         print 'out ', JSON::PP->new->canonical->encode([@ARGV]), \"\\n\";\n\
         print STDERR \"err\\n\";\nexit 3;\n",
    )
}

/// cpanm, from a mini CPAN mirror holding the distribution `make dist`
/// makes (IO::FDPass is Debian's, installed system-wide), into a local
/// lib; PERL5LIB shows it to perl.
#[test]
fn perl_runner_installs_with_cpanm() {
    let w = World::new();
    let source = perl_side_copy(w.dir.path());
    succeeded(
        perl_tool(&source, "perl").arg("Makefile.PL"),
        "./test installs Debian's perl",
    );
    let tarball = perl_dist(&source);
    let mirror = w.path("mirror");
    let author = "P/PF/PFI";
    let authors = mirror.join("authors/id").join(author);
    std::fs::create_dir_all(&authors).unwrap();
    std::fs::create_dir_all(mirror.join("modules")).unwrap();
    let file = tarball.file_name().unwrap().to_str().unwrap();
    std::fs::copy(&tarball, authors.join(file)).unwrap();
    // The index cpanm resolves a module name by.
    let index = format!(
        "File:         02packages.details.txt\nLine-Count:   1\n\n\
         Proc::Prefork::Interp {PACKAGE_VERSION} {author}/{file}\n"
    );
    let packages = mirror.join("modules/02packages.details.txt");
    std::fs::write(&packages, index).unwrap();
    succeeded(Command::new("gzip").arg("-n").arg(&packages), "gzip");
    let lib = w.path("perl-lib");
    let program = perl_program(&w);
    install_as_printed(
        &w,
        Case {
            program: &program,
            runner: "Perl runner (Proc::Prefork::Interp::Run)",
            interpreter: "/usr/bin/perl",
            command: "/usr/bin/perl -S cpanm Proc::Prefork::Interp".into(),
            install_env: vec![(
                "PERL_CPANM_OPT",
                format!(
                    "--mirror file://{} --mirror-only -l {}",
                    mirror.display(),
                    lib.display()
                )
                .into(),
            )],
            visible_env: vec![("PERL5LIB", lib.join("lib/perl5").into())],
        },
    );
}

/// Our runner findable, IO::FDPass not (in a mount namespace where
/// Debian's IO::FDPass directories are empty, as on a machine without
/// libio-fdpass-perl): the line says so, with its cpanm command (not run:
/// IO::FDPass's source is not here to install from). The same module
/// copied elsewhere and put on PERL5LIB (as cpanm -l would), the program
/// runs.
#[test]
fn perl_runner_without_io_fdpass_says_so() {
    if !running_as_root("a mount namespace") {
        return;
    }
    let vendorarch = succeeded(
        Command::new("/usr/bin/perl").args(["-MConfig", "-e", "print $Config{vendorarch}"]),
        "./test installs Debian's perl",
    );
    let vendorarch = PathBuf::from(stdout_str(&vendorarch));
    let module_dirs = [vendorarch.join("IO"), vendorarch.join("auto/IO/FDPass")];
    assert!(
        module_dirs[0].join("FDPass.pm").is_file(),
        "./test installs Debian's libio-fdpass-perl into {}",
        vendorarch.display()
    );
    let w = World::new();
    let copy = w.path("fdpass");
    for (dir, under) in module_dirs.iter().zip(["IO", "auto/IO/FDPass"]) {
        std::fs::create_dir_all(copy.join(under)).unwrap();
        for file in std::fs::read_dir(dir).unwrap() {
            let file = file.unwrap().path();
            std::fs::copy(&file, copy.join(under).join(file.file_name().unwrap())).unwrap();
        }
    }
    let empty = w.path("empty");
    std::fs::create_dir(&empty).unwrap();
    let hidden = NamespaceHolder::after(
        &["-m", "--propagation", "private"],
        &[
            "sh",
            "-c",
            "mount --bind \"$0\" \"$1\" && mount --bind \"$0\" \"$2\"",
            empty.to_str().unwrap(),
            module_dirs[0].to_str().unwrap(),
            module_dirs[1].to_str().unwrap(),
        ],
    );
    let run = |program: &Path, perl5lib: String, args: &[&str]| {
        Call::from(w.command(program, &[("PERL5LIB", perl5lib.into())]))
            .inside(hidden.pid)
            .cmd
            .args(args)
            .output()
            .unwrap()
    };
    let ours = repo().join("sides/perl/lib").display().to_string();
    let program = perl_program(&w);
    let missing = run(
        &client(),
        ours.clone(),
        &["--run", program.to_str().unwrap()],
    );
    assert_eq!(missing.status.code(), Some(127), "{}", stderr_str(&missing));
    assert_eq!(
        stderr_str(&missing),
        format!(
            "prefork-interp: --run: {} needs IO::FDPass (Debian's libio-fdpass-perl) for \
             prefork-interp's Perl runner, not installed for /usr/bin/perl{INSTALL_WITH}\
             /usr/bin/perl -S cpanm IO::FDPass\n",
            program.display()
        )
    );
    assert_eq!(w.run_dir_entries(), Vec::<String>::new());

    let found = format!("{ours}:{}", copy.display());
    let direct = run(&program, found.clone(), &ARGS);
    assert_eq!(direct.status.code(), Some(3), "{}", stderr_str(&direct));
    let mut through = vec!["--run", program.to_str().unwrap()];
    through.extend(ARGS);
    assert_same_run(
        &run(&client(), found.clone(), &through),
        &direct,
        "--run with IO::FDPass found",
    );
    through.insert(0, "--kill");
    assert_success(&run(&client(), found, &through[..3]));
}

/// The Ruby test program.
fn ruby_program(w: &World) -> PathBuf {
    w.program(
        "tool.rb",
        "#!/usr/bin/ruby\nrequire \"json\"\nputs \"out #{JSON.generate(ARGV)}\"\n\
         warn \"err\"\nexit 3\n",
    )
}

/// A local gem source, built here from this repository: `gem
/// generate_index` in a directory holding the gem, named as the only
/// source in a gemrc of its own; the environment that points gem at it.
fn gem_source(w: &World) -> Vec<(&'static str, OsString)> {
    let home = w.path("build-home");
    std::fs::create_dir(&home).unwrap();
    let (gem, _) = ruby_gem(w.dir.path(), &home);
    let index = w.path("gem-index");
    std::fs::create_dir_all(index.join("gems")).unwrap();
    std::fs::copy(&gem, index.join("gems").join(gem.file_name().unwrap())).unwrap();
    succeeded(
        gem_tool(w.dir.path(), &home, "gem")
            .args(["generate_index", "--directory"])
            .arg(&index),
        "./test installs Debian's ruby",
    );
    let gemrc = w.path("gemrc");
    std::fs::write(
        &gemrc,
        format!("---\n:sources:\n- file://{}/\n", index.display()),
    )
    .unwrap();
    vec![("GEMRC", gemrc.into())]
}

/// The Ruby program installs its runner with the line's command,
/// `/usr/bin/ruby -S gem install[OPTIONS] prefork_interp`.
fn ruby_install_as_printed(w: &World, options: &str) {
    let program = ruby_program(w);
    install_as_printed(
        w,
        Case {
            program: &program,
            runner: "Ruby runner (prefork_interp/run)",
            interpreter: "/usr/bin/ruby",
            command: format!("/usr/bin/ruby -S gem install{options} prefork_interp"),
            install_env: gem_source(w),
            visible_env: Vec::new(),
        },
    );
}

/// GEM_HOME a fresh directory (GEM_PATH another): `gem install` puts the
/// gem there, where ruby looks.
#[test]
fn ruby_runner_installs_with_gem() {
    let mut w = World::new();
    for (var, dir) in [("GEM_HOME", "gems"), ("GEM_PATH", "gem-path")] {
        std::fs::create_dir(w.path(dir)).unwrap();
        w.set(var, w.path(dir));
    }
    ruby_install_as_printed(&w, "");
}

/// Not root, with Debian's ruby: its gem directory is not the user's to
/// write, so `--user-install`, into the user's gem directory, on ruby's
/// default path (nothing else set).
#[test]
fn ruby_runner_installs_for_a_user() {
    if !running_as_root("a user of the tests' own") {
        return;
    }
    ruby_install_as_printed(
        &World::of_user(test_user("pfi-gem-user")),
        " --user-install",
    );
}
