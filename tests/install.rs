//! The install command on a clean prefix: install (tools/install.sh,
//! what `make install` runs after building), run the Perl and Python
//! examples and a Ruby script through the installed binary and modules,
//! uninstall, and find nothing left.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

/// Runs tools/install.sh ACTION for PREFIX, installing the binary the
/// tests use.
fn install_sh(action: &str, prefix: &Path) {
    let out = Command::new(repo().join("tools/install.sh"))
        .arg(action)
        .env("PREFIX", prefix)
        .env("CLIENT", client())
        .env("PYTHON", python())
        .env_remove("RUBYDIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh {action}: {}{}",
        stdout_str(&out),
        stderr_str(&out)
    );
}

/// The Ruby hello (as examples/hello.py, and which file of the library it
/// loaded), with its #! line pointing at `binary`.
fn ruby_hello(dir: &Path, binary: &Path) -> PathBuf {
    let path = dir.join("hello.rb");
    std::fs::write(
        &path,
        format!(
            "#!{} -U,ruby\n\
             require \"json\"\n\
             require \"prefork_interp\"\n\
             PreforkInterp.initialisation_complete\n\
             from = $LOADED_FEATURES.grep(%r{{/prefork_interp\\.rb\\z}})\n\
             puts JSON.generate({{hello: ARGV.fetch(0, \"world\"), pid: Process.pid, from: from}})\n\
             exit ARGV.fetch(1, \"0\").to_i\n",
            binary.display()
        ),
    )
    .unwrap();
    set_mode(&path, 0o755);
    path
}

/// An example script with its #! line pointing at `binary`.
fn example_script(dir: &Path, name: &str, binary: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("examples").join(name)).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    let options = first.split_once(' ').unwrap().1;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!{} {options}\n{rest}", binary.display())).unwrap();
    set_mode(&path, 0o755);
    path
}

#[test]
fn install_run_examples_uninstall() {
    let world = tempfile::tempdir().unwrap();
    let prefix = world.path().join("prefix");
    std::fs::create_dir(&prefix).unwrap();
    install_sh("install", &prefix);

    let manifest =
        std::fs::read_to_string(prefix.join("share/prefork-interp/installed-files")).unwrap();
    let installed: Vec<&Path> = manifest.lines().map(Path::new).collect();
    let find = |suffix: &str| {
        installed
            .iter()
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("{suffix} not installed: {manifest}"))
            .to_path_buf()
    };
    let binary = find("/bin/prefork-interp");
    let perl_lib = find("/Proc/Prefork/Interp.pm");
    let runner = find("/Proc/Prefork/Interp/Run.pm");
    assert_eq!(runner.parent().unwrap(), perl_lib.with_extension(""));
    let perl_lib = perl_lib.ancestors().nth(3).unwrap();
    let python_lib = find("/prefork_interp/__init__.py");
    let python_lib = python_lib.ancestors().nth(2).unwrap();
    // The Ruby library, the runner (prefork_interp/run) beside the API.
    let ruby_api = find("/prefork_interp.rb");
    let ruby_lib = ruby_api.parent().unwrap();
    for role in ["run.rb", "runner.rb", "setup.rb", "wire.rb"] {
        assert_eq!(
            find(&format!("/prefork_interp/{role}")),
            ruby_lib.join("prefork_interp").join(role)
        );
    }
    // Beside the package: site-packages runs it (reads above the import).
    assert_eq!(
        find("/prefork_interp_early.pth").parent().unwrap(),
        python_lib
    );
    for page in [
        "man1/prefork-interp.1",
        "man7/prefork-interp.7",
        "man3/Proc::Prefork::Interp.3pm",
        "man3/prefork_interp.3",
        "man3/prefork_interp.3rb",
    ] {
        find(page);
    }

    let run = world.path().join("run");
    std::fs::create_dir(&run).unwrap();
    set_mode(&run, 0o700);
    let scripts = [
        (example_script(world.path(), "hello.pl", &binary), "perl"),
        (example_script(world.path(), "hello.py", &binary), "python3"),
        (ruby_hello(world.path(), &binary), "ruby"),
    ];
    let call = |script: &Path, args: &[&str]| {
        Command::new(script)
            .args(args)
            .env("XDG_RUNTIME_DIR", &run)
            .env("PERL5LIB", perl_lib)
            .env("PYTHONPATH", python_lib)
            .env("RUBYLIB", ruby_lib)
            .env_remove("RUBYOPT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    for (script, interpreter) in &scripts {
        let cold = call(script, &["install-test"]);
        assert_success(&cold);
        let warm = call(script, &["again", "7"]);
        assert_eq!(warm.status.code(), Some(7), "{}", stderr_str(&warm));
        let (cold, warm) = (stdout_str(&cold), stdout_str(&warm));
        // JSON from each language's own encoder: {"hello": NAME, "pid": N}.
        let hello = |out: &str, name: &str| {
            out.starts_with("{\"hello\":") && out.contains(&format!("\"{name}\""))
        };
        assert!(hello(&cold, "install-test"), "{cold}");
        assert!(hello(&warm, "again"), "{warm}");
        if *interpreter == "ruby" {
            // The installed copy, not the repository's.
            let from = format!("\"from\":[\"{}\"]", ruby_api.display());
            assert!(cold.contains(&from) && warm.contains(&from), "{cold}{warm}");
        }
        let kill = Command::new(&binary)
            .arg(format!("-U,--kill,{interpreter}"))
            .arg(script)
            .env("XDG_RUNTIME_DIR", &run)
            // (RUBYLIB is one of the values a Ruby server is chosen by.)
            .env("PERL5LIB", perl_lib)
            .env("PYTHONPATH", python_lib)
            .env("RUBYLIB", ruby_lib)
            .env_remove("RUBYOPT")
            .output()
            .unwrap();
        assert_success(&kill);
    }

    install_sh("uninstall", &prefix);
    let left: Vec<_> = walk(&prefix);
    assert!(left.is_empty(), "left after uninstall: {left:#?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        found.push(entry.path());
        if entry.file_type().unwrap().is_dir() {
            found.extend(walk(&entry.path()));
        }
    }
    found
}

/// The Python side as PyPI would take it: an sdist and a wheel made by
/// `python3 -m build` (without its isolation, which would fetch
/// setuptools; from a copy of sides/python), with complete
/// metadata and the licence files; the wheel installed into a fresh venv
/// runs the Python example through the client, cold and warm.
#[test]
fn python_sdist_and_wheel_install_into_a_venv() {
    let world = tempfile::tempdir().unwrap();
    // (./test installs build and wheel with pip.)
    let dist = python_side_build(world.path(), &["--sdist", "--wheel"], &[]);
    let mut names: Vec<String> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort_by_key(|n| !n.ends_with(".whl"));
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[0], "prefork_interp-0.1.0-py3-none-any.whl");
    assert!(names[1].starts_with("prefork") && names[1].ends_with("-0.1.0.tar.gz"));
    let (wheel, sdist) = (dist.join(&names[0]), dist.join(&names[1]));

    // Each archive's file list, and the wheel's metadata, through Python's
    // own readers.
    let listed = Command::new(python())
        .args([
            "-c",
            "import sys, tarfile, zipfile\n\
             print('\\n'.join(tarfile.open(sys.argv[1]).getnames()))\n\
             w = zipfile.ZipFile(sys.argv[2])\n\
             print('\\n'.join(w.namelist()))\n\
             print(w.read('prefork_interp-0.1.0.dist-info/METADATA').decode())",
        ])
        .arg(&sdist)
        .arg(&wheel)
        .output()
        .unwrap();
    assert_success(&listed);
    let listed = stdout_str(&listed);
    for wanted in [
        "/prefork_interp/__init__.py",
        "/prefork_interp/_runner.py",
        "/pyproject.toml",
        "/LICENSE-MIT",
        "/LICENSE-APACHE",
        "prefork_interp/__main__.py",
        "/prefork_interp_early.pth",
        "/setup.py",
        "\nprefork_interp_early.pth\n",
        "License: MIT OR Apache-2.0",
        "Requires-Python: >=3.9",
        "Summary: Script side of prefork-interp",
        "Classifier: Operating System :: POSIX :: Linux",
    ] {
        assert!(listed.contains(wanted), "{wanted} missing:\n{listed}");
    }

    let venv = world.path().join("venv");
    let made = Command::new(python())
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .unwrap();
    assert_success(&made);
    let installed = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--no-index",
            "--disable-pip-version-check",
        ])
        .arg(&wheel)
        .output()
        .unwrap();
    assert_success(&installed);
    let run = world.path().join("run");
    std::fs::create_dir(&run).unwrap();
    set_mode(&run, 0o700);
    let script = example_script(world.path(), "hello.py", &client());
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let call = |args: &[&str]| {
        Command::new(&script)
            .args(args)
            .env("XDG_RUNTIME_DIR", &run)
            .env("PATH", &path)
            .env_remove("PYTHONPATH")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let cold = call(&["from-the-wheel"]);
    assert_success(&cold);
    assert!(
        stdout_str(&cold).contains("\"from-the-wheel\""),
        "{}",
        stdout_str(&cold)
    );
    let warm = call(&["again", "7"]);
    assert_eq!(warm.status.code(), Some(7), "{}", stderr_str(&warm));
    // The module came from the venv, not from the repository.
    let from = Command::new(venv.join("bin/python3"))
        .args([
            "-c",
            "import prefork_interp; print(prefork_interp.__file__)",
        ])
        .output()
        .unwrap();
    assert!(stdout_str(&from).starts_with(&venv.display().to_string()));
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
    let kill = Command::new(client())
        .arg("-U,--kill,python3")
        .arg(&script)
        .env("XDG_RUNTIME_DIR", &run)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert_success(&kill);
}

/// What debian/copyright says of the crates compiled into the client (a
/// static binary) stays true: each is under MIT or Apache-2.0 (one of
/// them may be chosen), and the copyright file names the crates whose
/// licence says more than those two. (`cargo tree -e normal`: what is
/// linked in, with the features a build of the client resolves; not the
/// proc macros or build scripts that run at build time.)
#[test]
fn compiled_in_crates_are_mit_or_apache() {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--no-dedupe",
            "--offline",
            "--locked",
        ])
        .args(["--format", "{p}|{l}"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert_success(&out);
    let copyright = std::fs::read_to_string(repo().join("debian/copyright")).unwrap();
    let tree = stdout_str(&out);
    let crates: std::collections::BTreeSet<&str> = tree.lines().collect();
    assert!(crates.len() > 10, "{tree}");
    for line in crates {
        let (package, license) = line.split_once('|').unwrap();
        let name = package.split(' ').next().unwrap();
        let choices: Vec<&str> = license.split(" OR ").map(str::trim).collect();
        assert!(
            choices.iter().any(|c| ["MIT", "Apache-2.0"].contains(c)),
            "{name} is under {license}, which debian/copyright does not allow for"
        );
        if !choices.iter().all(|c| ["MIT", "Apache-2.0"].contains(c)) {
            assert!(
                copyright.contains(&format!("{name} (")),
                "{name} is under {license}: debian/copyright must name it"
            );
        }
    }
}
