//! The Ruby side as a gem (sides/ruby/prefork_interp.gemspec): `gem
//! build` in a copy of sides/ruby makes prefork_interp-VERSION.gem (the
//! crate's version) with the metadata the gemspec promises and exactly
//! the library (every file tools/module-files lists, the runner's among
//! them), the licence texts (regular files, the repository's) and the
//! README; `gem install --local` puts it in a fresh gem directory, and a
//! script through the client loads the installed copy (RUBYLIB unset),
//! cold and warm, with no process left after. Also: the manual page
//! documents the Ruby API.
mod common;

use std::process::{Command, Output};

use common::*;

/// The version the gem carries: PreforkInterp::VERSION, which must be
/// Cargo.toml's.
const VERSION: &str = PACKAGE_VERSION;

#[track_caller]
fn run_ok(cmd: &mut Command) -> Output {
    succeeded(cmd, "./test installs Debian's ruby")
}

/// The Ruby side's library files (tools/module-files: the one list).
fn ruby_modules() -> Vec<String> {
    let out = run_ok(Command::new(repo().join("tools/module-files")).arg("ruby"));
    let modules: Vec<String> = stdout_str(&out).lines().map(str::to_owned).collect();
    assert!(
        modules.contains(&"prefork_interp.rb".to_owned())
            && modules.contains(&"prefork_interp/setup.rb".to_owned()),
        "tools/module-files ruby: {modules:?}"
    );
    modules
}

/// Reads a .gem with RubyGems' own reader: its specification's fields,
/// then each entry of its data as `TYPEFLAG PATH` (0: a regular file, 2:
/// a symlink).
const READ_GEM: &str = r##"
require "rubygems/package"
require "zlib"
spec = Gem::Package.new(ARGV[0]).spec
puts "name=#{spec.name}", "version=#{spec.version}", "licenses=#{spec.licenses.join(" ")}",
     "ruby=#{spec.required_ruby_version}", "dependencies=#{spec.dependencies.size}",
     "require_paths=#{spec.require_paths.join(" ")}", "summary=#{spec.summary}"
File.open(ARGV[0], "rb") do |io|
  Gem::Package::TarReader.new(io).each do |entry|
    next unless entry.full_name == "data.tar.gz"

    Zlib::GzipReader.wrap(entry) do |gz|
      Gem::Package::TarReader.new(gz).each { |file| puts "#{file.header.typeflag} #{file.full_name}" }
    end
  end
end
"##;

#[test]
fn ruby_gem_builds_installs_and_runs_a_script() {
    let world = tempfile::tempdir().unwrap();
    let home = world.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let (file, said) = ruby_gem(world.path(), &home);
    // RubyGems warns of what it packs badly (a symlink), and of a missing
    // homepage, which this project has none to give.
    let warnings: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("WARNING") && !l.contains("no homepage specified"))
        .filter(|l| !l.contains("specification-reference"))
        .collect();
    assert!(warnings.is_empty(), "gem build: {warnings:#?}\n{said}");

    let read = run_ok(
        gem_tool(world.path(), &home, "ruby")
            .args(["-e", READ_GEM])
            .arg(&file),
    );
    let read = stdout_str(&read);
    let (fields, entries): (Vec<&str>, Vec<&str>) = read.lines().partition(|l| l.contains('='));
    assert_eq!(
        fields.join("\n"),
        format!(
            "name=prefork_interp\nversion={VERSION}\nlicenses=MIT Apache-2.0\nruby=>= 2.7\n\
             dependencies=0\nrequire_paths=lib\n\
             summary=Script side of prefork-interp for Ruby: pay a script's start-up once, \
             fork per call"
        )
    );
    // Exactly the library, the licences and the README, each a regular
    // file (a symlink would be packed as one, and refused at install).
    let mut wanted: Vec<String> = ruby_modules()
        .iter()
        .map(|module| format!("0 lib/{module}"))
        .chain(["0 LICENSE-APACHE", "0 LICENSE-MIT", "0 README.md"].map(String::from))
        .collect();
    wanted.sort();
    let mut packed: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
    packed.sort();
    assert_eq!(packed, wanted, "the gem's files");

    // Installed into a gem directory of its own, from the file alone.
    let gems = world.path().join("gems");
    run_ok(
        gem_tool(world.path(), &home, "gem")
            .args(["install", "--local", "--install-dir"])
            .arg(&gems)
            .arg("--no-document")
            .arg(&file),
    );
    let installed = gems.join(format!("gems/prefork_interp-{VERSION}"));
    for module in ruby_modules() {
        assert_eq!(
            std::fs::read(installed.join("lib").join(&module)).unwrap(),
            std::fs::read(repo().join("sides/ruby/lib").join(&module)).unwrap(),
            "{module} as gem installed it"
        );
    }
    for licence in ["LICENSE-MIT", "LICENSE-APACHE"] {
        assert_eq!(
            std::fs::read(installed.join(licence)).unwrap(),
            std::fs::read(repo().join(licence)).unwrap(),
            "{licence} in the gem differs from the repository's"
        );
    }
    let api = installed.join("lib/prefork_interp.rb");

    // The runner's -r name resolves to the gem's file through RubyGems.
    let runner = run_ok(
        gem_tool(world.path(), &home, "ruby")
            .env("GEM_HOME", &gems)
            .env("GEM_PATH", &gems)
            .args([
                "-rprefork_interp/run",
                "-e",
                "puts $LOADED_FEATURES.grep(%r{/prefork_interp/run\\.rb\\z})",
            ]),
    );
    assert_eq!(
        stdout_str(&runner),
        format!(
            "{}\n",
            installed.join("lib/prefork_interp/run.rb").display()
        )
    );

    // A script through the client, in a world of its own (calls get a
    // clean environment: no RUBYLIB), with the gem directory its only
    // source of prefork_interp.
    let h = Harness::custom(
        Side::Ruby,
        client(),
        vec!["ruby".into()],
        None,
        &format!(
            "require \"prefork_interp\"\n\
             File.write({:?}, \"#{{Process.pid}}\\n\", mode: \"a\")\n\
             PreforkInterp.initialisation_complete\n\
             puts [$LOADED_FEATURES.grep(%r{{/prefork_interp\\.rb\\z}}), ENV.key?(\"RUBYLIB\"), *ARGV].join(\" \")\n\
             exit Integer(ARGV.last)\n",
            world.path().join("inits").display().to_string()
        ),
    );
    let call = |args: &[&str]| {
        h.call(args)
            .env("GEM_HOME", &gems)
            .env("GEM_PATH", &gems)
            .run()
    };
    let cold = call(&["cold", "0"]);
    assert_success(&cold);
    assert_eq!(
        stdout_str(&cold),
        format!("{} false cold 0\n", api.display())
    );
    let warm = call(&["warm", "7"]);
    assert_eq!(warm.status.code(), Some(7), "{}", stderr_str(&warm));
    assert_eq!(
        stdout_str(&warm),
        format!("{} false warm 7\n", api.display())
    );
    let inits = std::fs::read_to_string(world.path().join("inits")).unwrap();
    assert_eq!(
        inits.lines().count(),
        1,
        "initialised once, the warm call a fork: {inits}"
    );
    // Its server (and any other of this world's) killed, nothing left.
    h.finish();
}

/// man/prefork_interp.3rb documents the Ruby API: each public method of
/// PreforkInterp in a heading of its own that names each of its
/// parameters, as Ruby itself lists them, and each keyword option in an
/// entry of its own.
#[test]
fn ruby_manual_page_documents_the_api() {
    let page = std::fs::read_to_string(repo().join("man/prefork_interp.3rb")).unwrap();
    assert!(
        page.starts_with(".TH PREFORK_INTERP 3rb "),
        "{}",
        page.lines().next().unwrap_or("")
    );
    let out = run_ok(
        Command::new("ruby")
            .arg("-I")
            .arg(repo().join("sides/ruby/lib"))
            .args([
                "-rprefork_interp",
                "-e",
                "PreforkInterp.singleton_methods(false).sort.each do |m|\n\
                   PreforkInterp.method(m).parameters.each { |kind, name| puts \"#{m} #{kind} #{name}\" }\n\
                 end",
            ])
            .env_remove("PREFORK_INTERP"),
    );
    let listed = stdout_str(&out);
    let mut methods = std::collections::BTreeSet::new();
    for line in listed.lines() {
        let mut words = line.split(' ');
        let (method, kind, name) = (
            words.next().unwrap(),
            words.next().unwrap(),
            words.next().unwrap(),
        );
        methods.insert(method);
        let heading = page
            .lines()
            .find(|l| l.starts_with(".BI") && l.contains(&format!("PreforkInterp.{method}(")))
            .unwrap_or_else(|| panic!("man/prefork_interp.3rb has no heading for {method}"));
        assert!(
            heading.contains(&format!("\"{name}\"")) || heading.contains(&format!("\"*{name}\"")),
            "man/prefork_interp.3rb: {method}'s heading does not name {name}: {heading}"
        );
        if kind == "key" {
            assert!(
                page.contains(&format!("\n.I {name}\n")),
                "man/prefork_interp.3rb: no entry for {method}'s {name}"
            );
        }
    }
    assert_eq!(
        methods.into_iter().collect::<Vec<_>>(),
        ["autoreload_also_check", "initialisation_complete"],
        "{listed}"
    );
}
