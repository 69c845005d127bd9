//! The Python distribution as PyPI would take it, with the client in it:
//! `python3 -m build` makes the sdist (which holds the crate) and, from
//! that sdist alone, the wheel (the module, the runner, the .pth file and
//! the static `prefork-interp`, tagged for every Linux libc). Installed
//! with `pip --no-index` into a fresh venv, and run with a PATH that has
//! the venv and the system's directories and no cargo, the venv's
//! `prefork-interp` runs a script cold and warm and `--run` on a PyPI
//! program, byte for byte as direct runs; for a Perl program it says in
//! one line that the Perl runner is missing. And `pip install
//! ./sides/python`, the README's command, in a copy of the repository.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// The wheel's platform tags for this machine: manylinux for glibc (with
/// its older name, for older pips) and musllinux, since the client is
/// static.
fn platform_tags() -> String {
    let arch = std::env::consts::ARCH;
    format!("manylinux_2_17_{arch}.manylinux2014_{arch}.musllinux_1_1_{arch}")
}

/// Where cargo builds the wheels' clients: in the repository's target/,
/// kept between runs (a wheel built from an sdist would otherwise build
/// every crate again, in a directory of its own).
fn wheel_target_dir() -> PathBuf {
    repo().join("target/wheel")
}

/// Whether the ELF executable at `path` asks for no program interpreter
/// (the dynamic loader): a static executable, which runs on any libc.
fn is_static_executable(path: &Path) -> bool {
    let elf = std::fs::read(path).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF", "{}", path.display());
    let word = |at: usize, len: usize| {
        elf[at..at + len]
            .iter()
            .rev()
            .fold(0usize, |n, &b| n << 8 | b as usize)
    };
    let (phoff, phentsize, phnum) = (word(32, 8), word(54, 2), word(56, 2));
    const PT_INTERP: usize = 3;
    (0..phnum).all(|i| word(phoff + i * phentsize, 4) != PT_INTERP)
}

/// A PATH with the venv's commands and the system's, and nothing that
/// holds cargo (nor rustc): what a user who only pip-installed has.
fn path_without_cargo(venv: &Path) -> String {
    let path = format!("{}:/usr/bin:/bin", venv.join("bin").display());
    for dir in path.split(':') {
        for tool in ["cargo", "rustc"] {
            assert!(
                !Path::new(dir).join(tool).exists(),
                "{tool} in {dir}: the test's PATH must have none"
            );
        }
    }
    path
}

/// A command with only PATH, the run directory and HOME, as in a login
/// without cargo.
fn clean(program: impl AsRef<std::ffi::OsStr>, path: &str, world: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", path)
        .env("HOME", world)
        .env("XDG_RUNTIME_DIR", world.join("run"))
        .current_dir(world);
    cmd
}

fn with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    output_with_stdin(cmd, stdin)
}

/// Lists the archives' files and the wheel's METADATA and WHEEL, through
/// Python's own readers: name and mode (octal) a line.
fn archive_listing(sdist: &Path, wheel: &Path) -> String {
    let out = succeeded(
        Command::new(python())
            .args([
                "-c",
                "import sys, tarfile, zipfile\n\
                 for m in tarfile.open(sys.argv[1]).getmembers(): print(m.name, oct(m.mode))\n\
                 w = zipfile.ZipFile(sys.argv[2])\n\
                 for i in w.infolist(): print(i.filename, oct(i.external_attr >> 16))\n\
                 print(w.read('prefork_interp-0.1.0.dist-info/METADATA').decode())\n\
                 print(w.read('prefork_interp-0.1.0.dist-info/WHEEL').decode())",
            ])
            .arg(sdist)
            .arg(wheel),
        "python3",
    );
    stdout_str(&out)
}

/// A fresh venv of the tests' python3 at `venv`.
fn new_venv(venv: &Path) -> PathBuf {
    succeeded(
        Command::new(python()).args(["-m", "venv"]).arg(venv),
        "python3",
    );
    venv.to_path_buf()
}

/// `pip install` with the venv's own pip, quietly.
fn pip_install(venv: &Path) -> Command {
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args(["install", "--quiet", "--disable-pip-version-check"]);
    pip
}

/// A fresh venv with `wheels` installed into it by pip from those files
/// alone (--no-index).
fn venv_with(world: &Path, wheels: &[&Path]) -> PathBuf {
    let venv = new_venv(&world.join("venv"));
    succeeded(
        pip_install(&venv).arg("--no-index").args(wheels),
        "python3's venv and pip",
    );
    venv
}

/// The script: what it was given and what it runs with, on stdout; a
/// line on stderr; the status its second argument says.
const GREET: &str = "#!/usr/bin/env -S prefork-interp -U,python3\n\
import json, sys\n\
import prefork_interp\n\
prefork_interp.initialisation_complete()\n\
print(json.dumps({'argv': sys.argv, 'executable': sys.executable,\n\
                  'module': prefork_interp.__file__, 'stdin': sys.stdin.read()}))\n\
print('said on stderr', file=sys.stderr)\n\
sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)\n";

#[test]
fn wheel_with_the_client_installs_and_runs_without_cargo() {
    let world_dir = tempfile::tempdir().unwrap();
    let world = world_dir.path();
    // The sdist from a copy of sides/python, which has no ../.. to find
    // the crate in: PREFORK_INTERP_CRATE says where it is.
    let target = wheel_target_dir();
    let target = target.to_str().unwrap();
    let dist = python_side_build(
        world,
        &["--sdist"],
        &[
            ("PREFORK_INTERP_CRATE", repo().to_str().unwrap()),
            ("CARGO_TARGET_DIR", target),
        ],
    );
    let sdist = dist.join("prefork-interp-0.1.0.tar.gz");
    // The wheel from the unpacked sdist alone, as pip builds one from
    // PyPI's sdist: its crate/ must hold all the client needs.
    let unpacked = world.join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    succeeded(
        Command::new("tar")
            .arg("-xzf")
            .arg(&sdist)
            .arg("-C")
            .arg(&unpacked),
        "tar",
    );
    python_build(
        &unpacked.join("prefork-interp-0.1.0"),
        &dist,
        &["--wheel"],
        &[("CARGO_TARGET_DIR", target)],
    );
    let mut names: Vec<String> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let wheel_name = format!("prefork_interp-0.1.0-py3-none-{}.whl", platform_tags());
    assert_eq!(
        names,
        ["prefork-interp-0.1.0.tar.gz".to_owned(), wheel_name.clone()]
    );
    let wheel = dist.join(&wheel_name);

    let listed = archive_listing(&sdist, &wheel);
    for wanted in [
        // The sdist: the package, its tests, the licences, and the crate.
        "/prefork_interp/__init__.py ",
        "/prefork_interp/_runner.py ",
        "/pyproject.toml ",
        "/setup.py ",
        "/LICENSE-MIT ",
        "/LICENSE-APACHE ",
        "/prefork_interp_early.pth ",
        "/tests/wire-vectors.json ",
        "/crate/Cargo.toml ",
        "/crate/Cargo.lock ",
        "/crate/src/bin/prefork-interp.rs ",
        "/crate/src/client/cli.rs ",
        // The wheel: the package, the .pth file beside it, the client.
        "\nprefork_interp/__main__.py 0o100644\n",
        "\nprefork_interp_early.pth 0o100644\n",
        "\nprefork_interp-0.1.0.data/scripts/prefork-interp 0o100755\n",
        "License: MIT OR Apache-2.0",
        "Requires-Python: >=3.9",
        "Summary: prefork-interp for Python: the client command and the script side",
        "Classifier: Operating System :: POSIX :: Linux",
        "Root-Is-Purelib: false",
    ] {
        assert!(listed.contains(wanted), "{wanted:?} missing:\n{listed}");
    }
    // Every tag the compressed name stands for, spelled out in WHEEL.
    for tag in platform_tags().split('.') {
        assert!(
            listed.contains(&format!("\nTag: py3-none-{tag}\n")),
            "{tag}: {listed}"
        );
    }

    let venv = venv_with(world, &[&wheel]);
    let installed = venv.join("bin/prefork-interp");
    assert!(is_static_executable(&installed), "{}", installed.display());
    // The wheel's .pth file: a run that starts a server (PREFORK_INTERP
    // set) has our package before its own first line; any other has not.
    for (setup, imported) in [(true, "True"), (false, "False")] {
        let mut python = Command::new(venv.join("bin/python3"));
        python.args(["-c", "import sys; print('prefork_interp' in sys.modules)"]);
        if setup {
            python.env("PREFORK_INTERP", "v1,0.0 3,4,5,6");
        }
        let out = python.output().unwrap();
        assert_eq!(
            (stdout_str(&out).trim(), stderr_str(&out)),
            (imported, String::new()),
            "PREFORK_INTERP set: {setup}"
        );
    }
    std::fs::create_dir(world.join("run")).unwrap();
    set_mode(&world.join("run"), 0o700);
    let path = path_without_cargo(&venv);

    // A script whose #! line finds prefork-interp in PATH: the venv's.
    let script = world.join("greet.py");
    std::fs::write(&script, GREET).unwrap();
    set_mode(&script, 0o755);
    let mut direct = clean("python3", &path, world);
    direct.arg(&script).args(["a b", "3"]);
    let direct = with_stdin(direct, b"typed\n");
    assert_eq!(direct.status.code(), Some(3), "{direct:?}");
    assert!(
        stdout_str(&direct).contains(&format!("{}/lib/python", venv.display())),
        "the venv's module: {}",
        stdout_str(&direct)
    );
    // Cold, then warm.
    assert_rounds_same_as_direct(&direct, 2, "the script", || {
        let mut through = clean(&script, &path, world);
        through.args(["a b", "3"]);
        with_stdin(through, b"typed\n")
    });
    assert_one_server_served_twice(&path, world);

    // --run on a program from PyPI, installed in the venv (./test puts
    // its wheel in target/wheelhouse), named as a shell would find it.
    let pygments = pypi_wheel("pygments");
    succeeded(pip_install(&venv).arg("--no-index").arg(&pygments), "pip");
    let code = world.join("code.py");
    std::fs::write(&code, "import os\nprint(os.getpid())  # a comment\n").unwrap();
    for args in [
        &["-l", "python", "-f", "terminal256", "code.py"][..],
        &["-l", "no-such-lexer", "code.py"],
        &["-V"],
    ] {
        let direct = clean("pygmentize", &path, world)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let what = format!("pygmentize {args:?}");
        assert_rounds_same_as_direct(&direct, 2, &what, || {
            clean("prefork-interp", &path, world)
                .arg("--run")
                .arg("pygmentize")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        });
    }

    // A Perl program: the wheel brings the client, not the Perl runner.
    let perl_tool = world.join("tool.pl");
    std::fs::write(&perl_tool, "#!/usr/bin/perl\nprint \"ran\\n\";\n").unwrap();
    set_mode(&perl_tool, 0o755);
    let out = clean("prefork-interp", &path, world)
        .arg("--run")
        .arg(&perl_tool)
        .env("PERL5LIB", world.join("no-perl-modules-here"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127), "{out:?}");
    let said = stderr_str(&out);
    assert_eq!(said.lines().count(), 1, "one line: {said}");
    assert!(
        said.contains("needs prefork-interp's Perl runner (Proc::Prefork::Interp::Run)")
            && said.ends_with(
                ", not installed for /usr/bin/perl: \
                 install it with: /usr/bin/perl -S cpanm Proc::Prefork::Interp\n"
            ),
        "{said}"
    );

    for kill in [
        &["--kill", "-U,python3", script.to_str().unwrap()][..],
        &["--kill", "--run", "pygmentize"],
    ] {
        succeeded(
            clean("prefork-interp", &path, world).args(kill),
            "the venv's client",
        );
    }
    let listed = succeeded(
        clean("prefork-interp", &path, world).args(["--list", "--json"]),
        "the venv's client",
    );
    assert_eq!(stdout_str(&listed).trim(), "[]", "servers left");
}

/// One server, of ours (chiark-utils' client, in /usr/bin, keeps no
/// record that ours lists), has served a cold and a warm call.
#[track_caller]
fn assert_one_server_served_twice(path: &str, world: &Path) {
    let listed = succeeded(
        clean("prefork-interp", path, world).args(["--list", "--json"]),
        "the installed client",
    );
    let servers: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(servers.as_array().unwrap().len(), 1, "{servers}");
    assert_eq!(servers[0]["served"], 2, "cold, then warm: {servers}");
}

/// A wheel that ./test downloaded from PyPI into target/wheelhouse.
fn pypi_wheel(project: &str) -> PathBuf {
    let dir = repo().join("target/wheelhouse");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (./test downloads {project} there)", dir.display()))
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{project}-"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {project} wheel in {} (./test downloads it)",
                dir.display()
            )
        })
}

/// The README's command, `pip install ./sides/python`, run in a copy of
/// the repository's tracked files with a fresh venv's pip (build
/// isolation on: pip fetches setuptools and setuptools-rust, as a user's
/// would): the crate is found two directories up, and the venv gets the
/// client. And the module alone (PREFORK_INTERP_CLIENT=omit, what make
/// install uses) is a pure wheel without it.
#[test]
fn pip_install_of_the_source_directory_brings_the_client() {
    let world_dir = tempfile::tempdir().unwrap();
    let world = world_dir.path();
    let copy = clone_of_the_repository(world);
    for (client, wanted) in [("build", true), ("omit", false)] {
        let venv = new_venv(&world.join(format!("venv-{client}")));
        succeeded(
            pip_install(&venv)
                .arg("./sides/python")
                .current_dir(&copy)
                .env("PREFORK_INTERP_CLIENT", client)
                .env("CARGO_TARGET_DIR", wheel_target_dir()),
            "pip, with PyPI for the build's setuptools and setuptools-rust",
        );
        let installed = venv.join("bin/prefork-interp");
        assert_eq!(installed.exists(), wanted, "PREFORK_INTERP_CLIENT={client}");
        if wanted {
            let version = succeeded(Command::new(&installed).arg("--version"), "the client");
            assert!(
                stdout_str(&version).starts_with("prefork-interp 0.1.0"),
                "{}",
                stdout_str(&version)
            );
        }
        let module = succeeded(
            Command::new(venv.join("bin/python3")).args([
                "-c",
                "import prefork_interp, sys; print(prefork_interp.__file__)",
            ]),
            "the venv's python3",
        );
        assert!(
            stdout_str(&module).starts_with(&venv.display().to_string()),
            "{}",
            stdout_str(&module)
        );
    }
}

/// The README's `pipx install ./sides/python` (Debian's pipx, homes of
/// the test's own): the command on pipx's PATH directory, which runs a
/// Perl script (the example, its module from the repository) cold and
/// warm.
#[test]
fn pipx_install_puts_the_command_on_the_path() {
    let world_dir = tempfile::tempdir().unwrap();
    let world = world_dir.path();
    let copy = clone_of_the_repository(world);
    let bin = world.join("bin");
    succeeded(
        Command::new("pipx")
            .args(["install", "./sides/python"])
            .current_dir(&copy)
            .env("PIPX_HOME", world.join("pipx"))
            .env("PIPX_BIN_DIR", &bin)
            .env("CARGO_TARGET_DIR", wheel_target_dir()),
        "./test installs Debian's pipx",
    );
    let command = bin.join("prefork-interp");
    std::fs::create_dir(world.join("run")).unwrap();
    set_mode(&world.join("run"), 0o700);
    let text = std::fs::read_to_string(repo().join("examples/hello.pl")).unwrap();
    let script = world.join("hello.pl");
    let rest = text.split_once('\n').unwrap().1;
    std::fs::write(
        &script,
        format!("#!/usr/bin/env -S prefork-interp -U,perl,-w\n{rest}"),
    )
    .unwrap();
    set_mode(&script, 0o755);
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let call = |args: &[&str]| {
        clean(&script, &path, world)
            .args(args)
            .env("PERL5LIB", repo().join("sides/perl/lib"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let cold = call(&["from-pipx"]);
    assert_success(&cold);
    assert!(stdout_str(&cold).contains("\"from-pipx\""), "{cold:?}");
    let warm = call(&["again", "7"]);
    assert_eq!(warm.status.code(), Some(7), "{warm:?}");
    assert_one_server_served_twice(&path, world);
    succeeded(
        clean(&command, &path, world)
            .args(["--kill", "-U,perl,-w"])
            .arg(&script)
            .env("PERL5LIB", repo().join("sides/perl/lib")),
        "the pipx-installed client",
    );
}
