# frozen_string_literal: true

# The runner (lib/prefork_interp/run.rb, runner.rb): its static scan and
# its parts as functions, its preloading in a Ruby of its own, and whole
# programs run through `prefork-interp --run` (the client that `cargo
# build` makes), compared with direct runs byte for byte (stdout, stderr,
# status), cold and warm.

require "minitest/autorun"
require "fileutils"
require "open3"
require "rbconfig"
require "tmpdir"
require "ripper"
require "prefork_interp/runner"

# A private world for programs run directly and through the client: a
# directory with the run directory (servers live there), a home, and
# the programs; every run gets the same small environment. Its servers
# are killed, and waited for, by close.
class RunnerWorld
  LIB = File.expand_path("../lib", __dir__)
  # The client: the one the test runner built (nextest says where, and
  # cargo's integration tests may pass theirs on), else the repository's
  # debug build.
  CLIENT = [ENV.fetch("NEXTEST_BIN_EXE_prefork-interp", nil), ENV.fetch("NEXTEST_BIN_EXE_prefork_interp", nil),
            ENV.fetch("CARGO_BIN_EXE_prefork-interp", nil)].compact.find { |path| File.executable?(path) } ||
           File.expand_path("../../../target/debug/prefork-interp", __dir__)

  # What a run gave: stdout, stderr, exit status, terminating signal.
  Result = Struct.new(:out, :err, :status, :signal)

  attr_reader :dir

  def initialize
    @dir = File.realpath(Dir.mktmpdir("pfi-runner-"))
    FileUtils.mkdir_p(File.join(@dir, "home"))
    FileUtils.mkdir_p(File.join(@dir, "run"), mode: 0o700)
  end

  def env(extra = {})
    { "PATH" => ENV.fetch("PATH", "/usr/bin:/bin"), "HOME" => File.join(@dir, "home"),
      "XDG_RUNTIME_DIR" => File.join(@dir, "run"), "LANG" => "C.UTF-8", "RUBYLIB" => LIB }.merge(extra)
  end

  # Writes an executable program (this Ruby on its #! line, then text);
  # its name as the runs give it ("./NAME").
  def program(name, text, options: "")
    file(name, "#!#{RbConfig.ruby}#{" #{options}" unless options.empty?}\n#{text}")
    File.chmod(0o755, File.join(@dir, name))
    "./#{name}"
  end

  def file(name, text)
    RunnerWorld.write_under(@dir, name, text)
  end

  # Writes text to dir/name, making the directories on the way; the path.
  def self.write_under(dir, name, text)
    path = File.join(dir, name)
    FileUtils.mkdir_p(File.dirname(path))
    File.write(path, text)
    path
  end

  def run(command, stdin: "", env: {}, chdir: @dir)
    out, err, status = Open3.capture3(self.env(env), *command,
                                      stdin_data: stdin, chdir: chdir, unsetenv_others: true)
    Result.new(out, err, status.exitstatus, status.termsig)
  end

  def direct(program, args = [], **options)
    run([program, *args], **options)
  end

  def through(program, args = [], **options)
    run([CLIENT, "--run", program, *args], **options)
  end

  # [ident, pid, served] of each live server.
  def servers
    out = run([CLIENT, "--list"]).out
    out.lines.map(&:split).select { |cols| cols[0]&.match?(/\A\h{16,}\z/) && cols[1].match?(/\A\d+\z/) }
       .reject { |cols| cols.include?("stale") }
       .map { |cols| [cols[0], Integer(cols[1]), cols[3]] }
  end

  # Kills every server (each server's session with it) and waits for
  # them to be gone; the pids of any that had to be SIGKILLed, or that
  # --list did not show (a session leader still in this world's
  # directory).
  def close
    stubborn = []
    servers.each do |ident, pid, _|
      run([CLIENT, "--kill", "-g", ident])
      stubborn << pid unless wait_session_gone(pid, 5)
    end
    leaders.each do |pid|
      stubborn << pid
      wait_session_gone(pid, 0)
    end
    stubborn
  ensure
    FileUtils.rm_rf(@dir)
  end

  # Session leaders (servers) whose directory is in this world's.
  def leaders
    Dir.children("/proc").grep(/\A\d+\z/).map { |pid| Integer(pid) }.select do |pid|
      pid != Process.pid && session_of(pid) == pid && "#{File.readlink("/proc/#{pid}/cwd")}/".start_with?("#{@dir}/")
    rescue SystemCallError
      false
    end
  end

  def wait_session_gone(sid, timeout)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    until session(sid).empty?
      if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        session(sid).each { |pid| Process.kill(:KILL, pid) }
        return false
      end
      sleep(0.02)
    end
    true
  end

  # The pids of the processes in session sid.
  def session(sid)
    pids = Dir.children("/proc").grep(/\A\d+\z/).map { |pid| Integer(pid) }
    pids.select { |pid| session_of(pid) == sid }
  end

  # The session of process pid, or nil (gone).
  def session_of(pid)
    stat = File.read("/proc/#{pid}/stat")
    Integer(stat[(stat.rindex(")") + 2)..].split[3])
  rescue SystemCallError, ArgumentError
    nil
  end
end

# Runs through the client: a fresh world per test, its servers gone
# after it.
module ThroughClient
  def setup
    skip "no client: run `cargo build` at the repository's top first" unless File.executable?(RunnerWorld::CLIENT)
    @world = RunnerWorld.new
  end

  def teardown
    stubborn = @world&.close
    assert_empty stubborn.to_a, "servers that --kill did not end"
  end

  # The direct run and three through --run (the first cold, starting
  # the server; then warm) give the same stdout, stderr and status.
  # Returns the direct run's result.
  def assert_same_as_direct(program, args = [], stdin: "", env: {})
    direct = @world.direct(program, args, stdin: stdin, env: env)
    3.times do |round|
      through = @world.through(program, args, stdin: stdin, env: env)
      assert_equal direct.to_a, through.to_a, "#{program} #{args.inspect}: call #{round} (right) vs direct (left)"
    end
    direct
  end

  # How many calls the world's one server has served.
  def served
    servers = @world.servers
    assert_equal 1, servers.size, "one server: #{servers.inspect}"
    Integer(servers[0][2])
  end
end

# The static scan: the steps found in sample sources.
class TestRunnerScan < Minitest::Test
  Scan = PreforkInterp::Runner::Scan

  def steps(source, file = __FILE__)
    Scan.steps(source, file)
  end

  def requires(source, file = __FILE__)
    steps(source, file).select { |step| step[0] == :require }.map { |step| step[1] }
  end

  def test_top_level_requires_in_order_with_their_lines
    assert_equal [[:require, "json", 1], [:require, "set", 2], [:require, "a/b", 4]],
                 steps("require \"json\"\nrequire('set')\nputs 1\nrequire 'a/b'\n")
  end

  def test_requires_in_conditional_and_rescue_bodies
    source = <<~RUBY
      if x then require "i" elsif y then require "j" else require "k" end
      unless z
        require "u"
      else
        require "v"
      end
      begin; require "d"; rescue LoadError; require "e"; else; require "f"; ensure; require "g"; end
      require "h" rescue nil
      require "m" if foo
      require "n" unless foo
    RUBY
    assert_equal %w[i j k u v d e f g h m n], requires(source)
  end

  def test_begin_blocks_first_and_nothing_after_end
    assert_equal %w[early late], requires("require \"late\"\nBEGIN { require \"early\" }\n__END__\nrequire \"data\"\n")
  end

  def test_not_literal_or_not_top_level_requires_are_left_out
    source = <<~'RUBY'
      require name
      require "a\tb"
      Kernel.require "k"
      def later
        require "inside"
      end
      [1].each { require "block" }
      module M; require "module_body"; end
      require "ok"
    RUBY
    assert_equal %w[ok], requires(source)
  end

  def test_require_relative_from_the_files_real_directory
    Dir.mktmpdir do |dir|
      FileUtils.mkdir_p(File.join(dir, "real"))
      File.write(File.join(dir, "real", "prog.rb"), "")
      File.symlink(File.join(dir, "real", "prog.rb"), File.join(dir, "link.rb"))
      assert_equal [File.join(File.realpath(dir), "real", "lib", "x")],
                   requires("require_relative \"lib/x\"\n", File.join(dir, "link.rb"))
    end
  end

  # Sources, one a line, and the values they have for a program whose
  # __FILE__ is this file ("-": none known statically).
  STATIC_VALUES = <<~'SOURCES'
    "a#{__dir__}b"
    __FILE__
    File.expand_path("../lib", __dir__)
    File.expand_path('../lib', __FILE__)
    File.join(__dir__, "..", "lib")
    ::File.dirname(__FILE__) + "/x"
    'a' 'b'
    ("p")
    known
    unknown
    "#{x}"
    File.read("x")
    Dir.pwd
  SOURCES

  def test_static_values
    file = File.realpath(__FILE__)
    dir = File.dirname(file)
    wants = ["a#{dir}b", file, File.expand_path("../lib", dir), File.join(dir, "lib"), File.join(dir, "..", "lib"),
             "#{dir}/x", "ab", "p", "value", nil, nil, nil, nil]
    STATIC_VALUES.lines.map(&:chomp).zip(wants).each do |source, want|
      tree = Ripper.sexp("known = nil\n#{source}")[1][1] # (a local, as Ripper tells them)
      got = Scan.value(tree, file, { "known" => "value" })
      want.nil? ? assert_nil(got, source) : assert_equal(want, got, source)
    end
  end

  def test_load_path_changes_with_known_values
    dir = __dir__
    lib = File.expand_path("../lib", dir)
    source = <<~'RUBY'
      $LOAD_PATH.unshift("#{__dir__}/../lib")
      lib = File.expand_path("../lib", __dir__)
      $:.unshift(lib) unless $:.include?(lib)
      unless $LOAD_PATH.include?(lib) then $LOAD_PATH.unshift lib end
      $LOAD_PATH.push "/p", "/q"
      $-I << "/r"
      require "thing"
    RUBY
    assert_equal [[:load_path, :unshift, ["#{dir}/../lib"], nil],
                  [:load_path, :unshift, [lib], lib],
                  [:load_path, :unshift, [lib], lib],
                  [:load_path, :push, ["/p", "/q"], nil],
                  [:load_path, :push, ["/r"], nil],
                  [:require, "thing", 7]], steps(source)
  end

  def test_the_scan_ends_where_the_load_path_is_used_otherwise
    [
      "$LOAD_PATH.unshift(dir)",
      "$LOAD_PATH.replace([])",
      "$:.unshift(*dirs)",
      "paths = $LOAD_PATH",
      "if $LOAD_PATH.empty? then x end",
      "def f; $LOAD_PATH.clear; end",
      "if x then $LOAD_PATH << \"/d\" end",
      "$LOAD_PATH << \"/d\" if x",
      "lib = \"/l\" if x\n$LOAD_PATH << lib",
      "lib = \"/l\"\nlib += \"/m\"\n$LOAD_PATH << lib",
      "gem \"x\", version"
    ].each do |stop|
      assert_equal %w[before], requires("require \"before\"\n#{stop}\nrequire \"after\"\n"), stop
    end
  end

  def test_gem_calls
    assert_equal [[:gem, "rake", ">= 10"], [:require, "rake", 2]], steps("gem \"rake\", \">= 10\"\nrequire \"rake\"\n")
  end

  def test_syntax_error_or_unreadable_file_gives_nothing
    assert_equal [], steps("require \"x\"\ndef broken(\n")
    assert_equal [], Scan.file_steps("/nonexistent/program.rb")
  end

  # The shape RubyGems writes (Debian's /usr/bin/rubocop, rake, erb...).
  BINSTUB = <<~'RUBY'
    require 'rubygems'

    Gem.use_gemdeps

    version = ">= 0.a"

    str = ARGV.first
    if str
      str = str.b[/\A_(.*)_\z/, 1]
      if str and Gem::Version.correct?(str)
        version = str
        ARGV.shift
      end
    end

    if Gem.respond_to?(:activate_bin_path)
    load Gem.activate_bin_path('rubocop', 'rubocop', version)
    else
    gem "rubocop", version
    load Gem.bin_path("rubocop", "rubocop", version)
    end
  RUBY

  def test_binstub
    assert_equal [[:require, "rubygems", 1], [:binstub, "rubocop", "rubocop"]], steps(BINSTUB)
    %w[rake erb rdoc irb].each do |name|
      path = File.join("/usr/bin", name)
      next unless File.file?(path)

      assert_equal [:binstub, name, name], Scan.file_steps(path).last, path
    end
  end

  # The executable the binstub loads is scanned as a file of its own:
  # rubocop's puts its lib directory first, then requires rubocop in an
  # else branch.
  def test_rubocops_executable
    exe = begin
      Gem.bin_path("rubocop", "rubocop")
    rescue Gem::GemNotFoundException
      skip "no rubocop gem"
    end
    found = Scan.file_steps(exe)
    assert_equal [:load_path, :unshift, ["#{File.dirname(File.realpath(exe))}/../lib"], nil], found[0]
    assert_includes found.map { |step| step[0, 2] }, [:require, "rubocop"]
  end
end

# The runner's other parts, as functions.
class TestRunnerParts < Minitest::Test
  Runner = PreforkInterp::Runner

  def test_binstub_version
    assert_equal ">= 0.a", Runner.binstub_version(nil)
    assert_equal ">= 0.a", Runner.binstub_version("--version")
    assert_equal "1.2.3", Runner.binstub_version("_1.2.3_")
    assert_equal ">= 0.a", Runner.binstub_version("_not a version_")
  end

  def test_parse
    assert_equal [[], "prog", %w[a b]], Runner.parse(%w[prog a b])
    assert_equal [%w[x y z], "prog", ["--preload"]], Runner.parse(%w[--preload x,y --preload=z prog --preload])
    assert_equal [[], "-x", []], Runner.parse(%w[-- -x])
  end

  def test_parse_errors_exit_2_with_the_usage
    {
      %w[--bogus prog] => "prefork_interp: unknown option --bogus\n",
      %w[--preload] => "prefork_interp: --preload needs a library name\n",
      %w[] => "prefork_interp: no program given\n"
    }.each do |args, message|
      _, err = capture_io do
        error = assert_raises(SystemExit) { Runner.parse(args) }
        assert_equal 2, error.status
      end
      assert_equal message + Runner::USAGE, err
    end
  end

  # A direct run's options: those before the runner's -r (the #! line's),
  # not what comes after it (the client's, for a server).
  def test_the_runners_own_option_is_left_out
    assert_equal ["-w", "-Ilib"], Runner.without_runner(["-w", "-Ilib", "-rprefork_interp/run", "-r/run/early.rb"])
    assert_equal ["-W0"], Runner.without_runner(["-W0", "-r/x/prefork_interp/run.rb"])
    assert_equal ["-w", "-rjson"], Runner.without_runner(["-w", "-rjson"])
  end

  # Ruby's -s, as ruby.c's process_sflag makes globals of switches.
  def test_switches_as_rubys_s
    assert_equal [[["$x", true], ["$y", "3"], ["$a_b", ""]], 3], Runner.switches(%w[-x -y=3 -a-b= rest -z])
    assert_equal [[["$x", true]], 2], Runner.switches(%w[-x -- -y])
    assert_equal [[], 0], Runner.switches(%w[plain -x])
    assert_equal Encoding::BINARY, Runner.switches(["-y=\u00e9"])[0][0][1].encoding
    error = assert_raises(Runner::InvalidSwitch) { Runner.switches(%w[-x% a]) }
    assert_equal "invalid name for global variable - -x%", error.message
    error = assert_raises(Runner::InvalidSwitch) { Runner.switches(%w[-x%y=1]) }
    assert_equal "invalid name for global variable - -x%y", error.message
  end

  def test_sflag
    assert Runner.sflag?(["-w", "-s"])
    assert Runner.sflag?(["-ws"])
    refute Runner.sflag?(["-rset", "-Es", "-I/s", "--disable-gems", "-w"])
  end

  def test_ruby_command_is_this_rubys
    exe, = Runner.ruby_command(ARGV.size)
    assert_equal File.realpath(RbConfig.ruby), File.realpath(exe)
  end

  def test_taking_out_of_the_load_path
    saved = $LOAD_PATH.dup
    ours = +"/pfi/same"
    $LOAD_PATH.unshift(+"/pfi/same")
    $LOAD_PATH.push(ours)
    Runner.take_out_of_load_path(ours)
    # That very object, not the equal one before it.
    assert_equal "/pfi/same", $LOAD_PATH.first
    refute($LOAD_PATH.any? { |path| path.equal?(ours) })
    Runner.take_out_of_load_path(+"/pfi/same") # replaced by a copy: the first equal
    assert_equal saved, $LOAD_PATH
  ensure
    $LOAD_PATH.replace(saved)
  end

  # What is written to fds 1 and 2 (through Ruby's buffered streams,
  # by a child) is kept, not shown; written again by replay_output.
  def test_output_kept_not_shown
    kept = nil
    out, err = capture_subprocess_io do
      kept = Runner.capturing_output do
        system("echo from a child; echo its error >&2") # (which flushes Ruby's streams)
        warn "kept warning"
        $stdout.print "kept out"
      end
      $stdout.print "shown"
    end
    assert_equal ["from a child\nkept out", "its error\nkept warning\n"], kept
    assert_equal ["shown", ""], [out, err]
    out, err = capture_subprocess_io { Runner.replay_output(kept) }
    assert_equal kept, [out, err]
  end

  # Ruby's handle on a program: found by its file, and in a fork a
  # private open at the same offset in the same fd's place; not taken
  # once the file changed.
  def test_script_handle
    Dir.mktmpdir do |dir|
      path = File.join(dir, "prog.rb")
      File.write(path, "0123456789")
      File.open(path) do |handle|
        handle.sysread(4)
        script = PreforkInterp::Runner::Script.find(path)
        assert_equal [handle.fileno, 4], [script.fileno, script.offset]
        took = in_fork { script.take_private ? handle.sysread(3) + handle.close_on_exec?.to_s : "no" }
        assert_equal "456true", took
        # The fork read its own open: this one's offset did not move.
        assert_equal "456", handle.sysread(3)
        File.write(path, "changed!!!")
        took = in_fork { script.take_private ? "taken" : "no" }
        assert_equal "no", took
      end
    end
  end

  # The block's String, made in a fork.
  def in_fork
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      writer.write(yield)
    ensure
      exit!(0)
    end
    writer.close
    reader.read
  ensure
    reader.close
    Process.wait(pid)
  end
end

# Preloading, in a Ruby of its own (it changes the load path and loads
# libraries): what is loaded, and the load path left as a direct run has
# it at that point.
class TestRunnerPreload < Minitest::Test
  def setup
    @dir = File.realpath(Dir.mktmpdir("pfi-preload-"))
  end

  def teardown
    FileUtils.rm_rf(@dir)
  end

  def write(name, text)
    RunnerWorld.write_under(@dir, name, text)
  end

  # Preloads program in a fresh Ruby (RUBYLIB: rubylib): [load path
  # before, after, files of this test's directory loaded, failures,
  # executables followed, output kept].
  def preload(program, libraries: [], rubylib: nil)
    code = <<~RUBY
      before = $LOAD_PATH.dup
      preload = PreforkInterp::Runner::Preload.new(ARGV[0], ARGV[1..]).run
      plain = ->(list) { list.map { |item| item.is_a?(String) ? String.new(item) : item } }
      print Marshal.dump([plain.(before), plain.($LOAD_PATH), plain.($LOADED_FEATURES.grep(%r{\\A#{@dir}/})),
                          preload.failures, preload.followed, preload.output])
    RUBY
    env = { "RUBYLIB" => rubylib, "PREFORK_INTERP" => nil }
    out, err, status = Open3.capture3(env, RbConfig.ruby, "-I#{RunnerWorld::LIB}", "-rprefork_interp/runner",
                                      "-e", code, program, *libraries, chdir: @dir, binmode: true)
    assert status.success?, err
    Marshal.load(out) # rubocop:disable Security/MarshalLoad (our own child's)
  end

  # The program's own change of the load path holds while its require
  # is preloaded (not the same-named library the load path had before),
  # then is taken out; what loading did to the load path stays.
  def test_load_path_as_the_program_makes_it
    write("decoy/thing.rb", "raise 'the decoy was loaded'\n")
    write("lib/thing.rb", "$LOAD_PATH << '/added/by/thing'\n")
    program = write("prog.rb", "$LOAD_PATH.unshift(\"\#{__dir__}/lib\")\nrequire \"thing\"\n")
    before, after, loaded, failures, = preload(program, rubylib: File.join(@dir, "decoy"))
    assert_equal [], failures
    assert_equal ["#{@dir}/lib/thing.rb"], loaded
    assert_equal before + ["/added/by/thing"], after
  end

  def test_failures_are_kept_and_the_rest_loaded
    write("lib/bad.rb", "raise ArgumentError, 'bad at load'\n")
    write("lib/good.rb", "")
    write("lib/exits.rb", "exit 3\n")
    program = write("prog.rb", "require_relative 'lib/bad'\nrequire_relative 'lib/exits'\n" \
                               "require 'no_such_lib_anywhere'\nrequire_relative 'lib/good'\n")
    _, _, loaded, failures, = preload(program)
    assert_equal ["#{@dir}/lib/good.rb"], loaded
    assert_equal ["preloading #{@dir}/lib/bad failed: ArgumentError: bad at load",
                  "preloading #{@dir}/lib/exits failed: SystemExit: exit",
                  "preloading no_such_lib_anywhere failed: LoadError: cannot load such file -- no_such_lib_anywhere"],
                 failures
  end

  # Libraries named (PREFORK_INTERP_PRELOAD, --preload) are loaded too,
  # after the program's.
  def test_named_libraries
    write("lib/extra.rb", "")
    program = write("prog.rb", "puts 1\n")
    _, _, loaded, failures, = preload(program, libraries: ["extra"], rubylib: File.join(@dir, "lib"))
    assert_equal [[], ["#{@dir}/lib/extra.rb"]], [failures, loaded]
  end

  # What loading writes is kept (that of a library that failed is not:
  # the program loads it again); a warning points where a direct run's
  # would, at the program's line that requires the library.
  def test_output_kept_warnings_from_the_programs_line
    write("lib/warns.rb", "warn 'deprecated thing', uplevel: 1\nputs 'loaded'\n")
    write("lib/fails.rb", "puts 'failing'\nraise 'failed'\n")
    program = write("prog.rb", "# comment\nrequire_relative 'lib/warns'\nrequire_relative 'lib/fails'\n")
    *, output = preload(program)
    assert_equal ["loaded\n", "#{program}:2: warning: deprecated thing\n"], output
  end

  # A RubyGems binstub: the gem activated, its executable scanned and
  # preloaded; the load path as the binstub and the executable leave it
  # (the executable's own change taken out).
  def test_binstub_followed
    skip "no /usr/bin/rake" unless File.file?("/usr/bin/rake")
    before, after, _, failures, followed, = preload("/usr/bin/rake")
    exe = Gem.bin_path("rake", "rake")
    assert_equal [[], [exe]], [failures, followed]
    rake_lib = File.join(File.dirname(File.dirname(exe)), "lib")
    assert_includes after, rake_lib
    assert_equal before, after - [rake_lib]
  end
end

# Whole programs through `prefork-interp --run`, against direct runs.
class TestRunnerThrough < Minitest::Test
  include ThroughClient

  # $0, __FILE__, __dir__, ARGV, stdin, BEGIN and END, at_exit and $!,
  # DATA after __END__, and an ending chosen by the first argument (shared
  # with tests/ruby_run.rs).
  USUAL = File.read(File.join(__dir__, "programs", "usual.rb"))
  ENDINGS = %w[none raise exit exit_false exit300 systemexit exit! abort throw int term nomethod].freeze

  def test_every_ending_as_directly
    program = @world.program("usual.rb", USUAL)
    ENDINGS.each do |how|
      direct = assert_same_as_direct(program, [how, "more args"], stdin: "some input")
      assert_includes direct.out, "data: \"the data\\n  section\\n\"" if how == "none"
      assert_equal 2, direct.signal if how == "int"
    end
    assert_equal 3 * ENDINGS.size, served
  end

  # A program longer than what Ruby reads of it before the runner runs,
  # with a long DATA: each call reads its own copy from there on (the
  # server's open file is shared by every fork).
  def test_a_long_program_and_its_data
    filler = "# #{'x' * 70}\n" * 2000
    program = @world.program("long.rb", "#{filler}data = DATA.read\nputs data.size, data.lines.last\n" \
                                        "#{filler}puts :end\n__END__\n#{"data line\n" * 20_000}last\n")
    assert_equal "200005\nlast\nend\n", assert_same_as_direct(program).out
  end

  def test_no_data_without_end
    program = @world.program("nodata.rb", "p defined?(DATA)\n")
    assert_equal "nil\n", assert_same_as_direct(program).out
  end

  # The backtrace of an exception from a library's method, the
  # library's own frames and Ruby's labels as in a direct run.
  def test_backtrace_through_a_library
    @world.file("lib/boom.rb", "module Boom\n  def self.go\n    raise 'deep'\n  end\nend\n")
    program = @world.program("boom.rb", "require_relative \"lib/boom\"\n\ndef outer\n  Boom.go\nend\nouter\n")
    direct = assert_same_as_direct(program)
    assert_match(%r{lib/boom\.rb:3:in `go': deep \(RuntimeError\)\n}, direct.err)
    assert_match(%r{\tfrom \./boom\.rb:5:in `outer'\n\tfrom \./boom\.rb:7:in `<main>'\n\z}, direct.err)
  end

  # The parser's warnings (-w on the #! line) in every call; a syntax
  # error; a library that cannot be found; one that fails as it loads
  # (preloading it failed too, and was not shown).
  def test_errors_and_warnings_as_directly
    program = @world.program("warns.rb", "x = 1\nputs(-1.abs)\nputs [1].first\n", options: "-w")
    assert_match(/assigned but unused variable - x/, assert_same_as_direct(program).err)
    program = @world.program("syntax.rb", "puts 1\ndef broken(\nputs 2\n")
    assert_equal 1, assert_same_as_direct(program).status
    program = @world.program("missing.rb", "require \"no_such_library_anywhere\"\nputs 1\n")
    assert_equal 1, assert_same_as_direct(program).status
    @world.file("lib/bad.rb", "puts 'bad loading'\nraise ArgumentError, 'bad at load'\n")
    program = @world.program("bad.rb", "require_relative \"lib/bad\"\nputs 1\n")
    assert_match(/bad at load/, assert_same_as_direct(program).err)
  end

  # What a library warns as it loads is warned in every call, from the
  # program's line, as in a direct run (the server loaded it once).
  def test_load_warnings_in_every_call
    @world.file("lib/warns.rb", "warn 'loading warns'\nwarn 'deprecated', uplevel: 1\n")
    program = @world.program("loads.rb", "# a comment\nrequire_relative \"lib/warns\"\nputs 1\n")
    assert_equal "loading warns\n#{program}:3: warning: deprecated\n", assert_same_as_direct(program).err
  end

  # The program's libraries are loaded once, by the server, found where
  # the program's own change of the load path points (not the
  # same-named library earlier on RUBYLIB); the load path the program
  # sees is a direct run's.
  def test_load_path_and_libraries_loaded_once
    @world.file("decoy/thing.rb", "puts 'the decoy'\n")
    @world.file("lib/thing.rb", <<~RUBY)
      File.write(File.join(__dir__, "..", "loads"), "x", mode: "a")
      $LOAD_PATH << "/added/by/thing"
      module Thing
        def self.hi
          "hi from thing"
        end
      end
    RUBY
    program = @world.program("uses.rb", <<~'RUBY')
      $LOAD_PATH.unshift(File.expand_path("lib", __dir__))
      require "thing"
      puts Thing.hi, $LOAD_PATH, $LOADED_FEATURES.grep(/thing/)
    RUBY
    env = { "RUBYLIB" => "#{@world.dir}/decoy:#{RunnerWorld::LIB}" }
    out = assert_same_as_direct(program, env: env).out
    assert_equal "hi from thing\n#{@world.dir}/lib\n", out.lines.first(2).join
    assert_equal "xx", File.read(File.join(@world.dir, "loads")), "once by the direct run, once by the server"
  end

  # Run directly (no PREFORK_INTERP), -rprefork_interp/run does nothing:
  # the program runs as without it, once, nothing of ours loaded.
  def test_direct_run_with_the_runner_is_a_plain_run
    program = @world.program("usual.rb", USUAL)
    %w[none raise exit].each do |how|
      plain = @world.run([RbConfig.ruby, program, how], stdin: "in")
      with = @world.run([RbConfig.ruby, "-rprefork_interp/run", program, how], stdin: "in")
      assert_equal plain.to_a, with.to_a
    end
    program = @world.program("features.rb", "puts $LOADED_FEATURES.grep(/prefork_interp/)\n")
    out = @world.run([RbConfig.ruby, "-rprefork_interp/run", program]).out
    assert_equal ["#{RunnerWorld::LIB}/prefork_interp/run.rb"], out.lines.map(&:chomp)
  end

  # A change to the program restarts its server: the next call runs the
  # new code, as a direct run would.
  def test_a_changed_program_restarts_the_server
    program = @world.program("changes.rb", "puts \"first\"\n")
    assert_equal "first\n", @world.through(program).out
    first = @world.servers.map { |server| server[1] }
    sleep(0.02) # a later modification time, whatever the file system's resolution
    @world.program("changes.rb", "puts \"second\"\n")
    assert_equal "second\n", @world.through(program).out
    refute_equal(first, @world.servers.map { |server| server[1] })
  end

  # One server serves every directory: the same relative name in
  # another directory is another program, run as it is there.
  def test_the_same_name_in_another_directory
    @world.program("a/prog.rb", "puts \"a: \#{__dir__ == Dir.pwd}\"\n")
    @world.program("b/prog.rb", "puts \"b: \#{__dir__ == Dir.pwd}\"\n")
    %w[a b a b].each do |name|
      chdir = File.join(@world.dir, name)
      assert_equal ["#{name}: true\n", "", 0, nil], @world.through("./prog.rb", chdir: chdir).to_a, name
    end
  end

  # One server serves the program from every directory, each call in
  # its caller's, with the program's name as given there.
  def test_one_program_from_two_directories
    @world.program("a/prog.rb", "puts [$0, __FILE__, __dir__, File.basename(Dir.pwd)].inspect\n")
    program = File.join(@world.dir, "a", "prog.rb")
    FileUtils.mkdir_p(File.join(@world.dir, "b"))
    %w[a b a].each do |dir|
      chdir = File.join(@world.dir, dir)
      direct = @world.direct(program, chdir: chdir)
      assert_equal direct.to_a, @world.through(program, chdir: chdir).to_a
    end
    assert_equal 3, served
  end

  # A program changed without its server restarting (its modification
  # time set back: the reload check passes it) is not the file Ruby
  # opened for the server: the call runs it directly, as it is now.
  def test_a_program_changed_behind_the_servers_back
    program = @world.program("sly.rb", "puts \"first\"\n")
    long_ago = Time.now - 3600
    File.utime(long_ago, long_ago, File.join(@world.dir, "sly.rb"))
    assert_equal "first\n", @world.through(program).out
    @world.program("sly.rb", "puts \"second, and longer\"\n")
    File.utime(long_ago, long_ago, File.join(@world.dir, "sly.rb"))
    assert_same_as_direct(program)
    assert_equal 4, served
  end

  # -s on the #! line: each call's leading switches are its globals, not
  # the first caller's; an invalid one ends the call as it ends a direct
  # run.
  def test_switches
    program = @world.program("switches.rb", "p [$x, $y, $a_b, ARGV]\n", options: "-s")
    [%w[-x -y=3 a], %w[b], %w[-x% a], %w[-a-b=1 -- -c d]].each do |args|
      assert_same_as_direct(program, args)
    end
  end

  # PREFORK_INTERP_PRELOAD and run.rb's --preload (run.rb run as the
  # interpreter's program) name more libraries for the server to load.
  def test_named_libraries_preloaded
    @world.file("extra/extra.rb", "File.write(File.join(__dir__, \"loads\"), \"x\", mode: \"a\")\n")
    program = @world.program("plain.rb", "puts ARGV.inspect\n")
    env = { "RUBYLIB" => "#{RunnerWorld::LIB}:#{@world.dir}/extra", "PREFORK_INTERP_PRELOAD" => "extra" }
    assert_same_as_direct(program, ["x"], env: env)
    assert_equal "x", File.read(File.join(@world.dir, "extra", "loads"))

    run_rb = File.join(RunnerWorld::LIB, "prefork_interp", "run.rb")
    env = { "RUBYLIB" => "#{RunnerWorld::LIB}:#{@world.dir}/extra" }
    direct = @world.direct(program, %w[y z], env: env)
    # Run directly, run.rb runs the program as ruby would.
    plain = @world.run([RbConfig.ruby, run_rb, "--preload", "extra", program, "y", "z"], env: env)
    assert_equal direct.to_a, plain.to_a
    3.times do
      through = @world.run([RunnerWorld::CLIENT, "-U,#{RbConfig.ruby},#{run_rb},--preload,extra", program, "y", "z"],
                           env: env)
      assert_equal direct.to_a, through.to_a
    end
    assert_equal "xx", File.read(File.join(@world.dir, "extra", "loads"))
  end

  # A RubyGems binstub (for a gem made here): its gem's executable is
  # followed, and what that requires loaded by the server.
  def test_binstub_of_a_gem
    gems = File.join(@world.dir, "gems")
    fake_gem
    program = @world.program("fakegem", TestRunnerScan::BINSTUB.gsub("rubocop", "fakegem"))
    env = { "GEM_PATH" => gems }
    out = assert_same_as_direct(program, %w[a b], env: env).out
    assert_equal "hello [\"a\", \"b\"]\n#{gems}/gems/fakegem-1.0/exe/../lib\n", out.lines.first(2).join
    assert_equal "xx", File.read(File.join(gems, "gems", "fakegem-1.0", "lib", "loads")), "direct, then the server"
    # A change to the executable restarts the server too.
    server = @world.servers.map { |entry| entry[1] }
    sleep(0.02)
    File.write(File.join(gems, "gems", "fakegem-1.0", "exe", "fakegem"), "puts :changed\n")
    assert_equal "changed\n", @world.through(program, env: env).out
    refute_equal(server, @world.servers.map { |entry| entry[1] })
  end

  def fake_gem
    @world.file("gems/gems/fakegem-1.0/lib/fakegem.rb", <<~'RUBY')
      File.write(File.join(__dir__, "loads"), "x", mode: "a")
      module Fakegem
        def self.hello(args)
          "hello #{args.inspect}"
        end
      end
    RUBY
    @world.file("gems/gems/fakegem-1.0/exe/fakegem", <<~'RUBY')
      $LOAD_PATH.unshift("#{__dir__}/../lib")
      if ENV["FAKEGEM_NOTHING"]
        puts "nothing"
      else
        require "fakegem"
      end
      puts Fakegem.hello(ARGV), $LOAD_PATH.grep(/fakegem/), __FILE__
    RUBY
    spec = Gem::Specification.new do |s|
      s.name = "fakegem"
      s.version = "1.0"
      s.summary = "for the runner's test"
      s.authors = ["test"]
      s.bindir = "exe"
      s.executables = ["fakegem"]
      s.files = ["exe/fakegem", "lib/fakegem.rb"]
    end
    @world.file("gems/specifications/fakegem-1.0.gemspec", spec.to_ruby)
  end

  # Debian's rubocop, the point of it all: the same output, and a warm
  # call much faster than a direct run (the server loaded rubocop).
  def test_rubocop
    skip "no /usr/bin/rubocop" unless File.file?("/usr/bin/rubocop")
    @world.file("bad.rb", "def  f( x )\n  x==1 ? true : false\nend\n")
    assert_same_as_direct("/usr/bin/rubocop", ["--version"])
    assert_same_as_direct("/usr/bin/rubocop", ["--format", "simple", "bad.rb"])
    assert_same_as_direct("/usr/bin/rubocop", ["--no-such-option"])
    direct = Array.new(3) { timed { @world.direct("/usr/bin/rubocop", ["--version"]) } }.min
    warm = Array.new(3) { timed { @world.through("/usr/bin/rubocop", ["--version"]) } }.min
    assert_operator warm * 4, :<, direct, "warm #{warm.round(3)} s, direct #{direct.round(3)} s"
  end

  def timed
    start = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    yield
    Process.clock_gettime(Process::CLOCK_MONOTONIC) - start
  end
end
