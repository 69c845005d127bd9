# frozen_string_literal: true

# The Ruby side as a gem: `gem build prefork_interp.gemspec` here makes
# prefork_interp-VERSION.gem (VERSION: PreforkInterp::VERSION, which is
# the crate's, Cargo.toml's; tests/gem.rs holds the two together).
# Standard library only: no dependencies.

# Read, not required: loading prefork_interp would start its tracking of
# ENV in whatever process evaluates this spec.
version = File.read(File.join(__dir__, "lib/prefork_interp.rb"))[/^\s*VERSION = "([^"]+)"$/, 1]
raise "prefork_interp.gemspec: no VERSION in lib/prefork_interp.rb" if version.nil?

Gem::Specification.new do |spec|
  spec.name = "prefork_interp"
  spec.version = version
  spec.summary = "Script side of prefork-interp for Ruby: pay a script's start-up once, fork per call"
  spec.description = <<~DESCRIPTION
    prefork-interp goes in a script's #! line: the script's expensive start-up
    (requiring libraries, reading data) is paid once, by a server, and every call
    is a fork of that server with the caller's stdin, stdout, stderr, arguments
    and environment. This is the Ruby side: PreforkInterp.initialisation_complete
    after the expensive part; and prefork_interp/run, the runner of
    `prefork-interp --run` for unchanged Ruby programs. Needs the prefork-interp
    client (its Debian package, or `cargo install`), Linux 5.3 or later.
  DESCRIPTION
  spec.authors = ["prefork-interp developers"]
  spec.licenses = ["MIT", "Apache-2.0"]
  spec.required_ruby_version = ">= 2.7"
  spec.metadata["rubygems_mfa_required"] = "true"

  # Every library file (the runner's among them), by glob; the licence
  # texts (real files: a gem keeps a symlink as a symlink) and the README.
  spec.files = Dir.glob(["lib/**/*.rb", "LICENSE-*"], base: __dir__).sort + ["README.md"]
  spec.require_paths = ["lib"]
end
