# frozen_string_literal: true

# PreforkInterp::InitEnv: the tracking of ENV in child processes started
# as the client starts a server's setup run (`ruby
# -rprefork_interp/init_env`, PREFORK_INTERP set): which reads are
# recorded (a name, the whole environment), what a change and a delete
# leave in the delta, the exec-time environment, the greeting's
# dependencies, the last at_exit handler; and, in this process, the
# parsing of /proc/self/environ, world and apply.
#
#     cd sides/ruby && ruby -Ilib -Itest test/test_init_env.rb

require "English"
require "minitest/autorun"
require "rbconfig"
require "tmpdir"
require_relative "../lib/prefork_interp/init_env"
require_relative "../lib/prefork_interp/wire"

class TestInitEnv < Minitest::Test
  LIB = File.expand_path("../lib", __dir__)
  InitEnv = PreforkInterp::InitEnv
  Wire = PreforkInterp::Wire

  # What `code` (run with -e) leaves in `result`, Marshal'd back: run as
  # a server's setup run is (-rprefork_interp/init_env, PREFORK_INTERP
  # set; plain: not set). env: more variables; only_env: these and no
  # others.
  def child(code, env: {}, only_env: nil, plain: false, requires: [])
    args = [RbConfig.ruby, "-I", LIB, "-rprefork_interp/init_env"]
    requires.each { |path| args << "-r#{path}" }
    script = "tracker = PreforkInterp::InitEnv.started\nresult = nil\n#{code}\n" \
             "STDOUT.binmode.write(Marshal.dump(result))"
    spawn_env = plain ? env : { "PREFORK_INTERP" => "test" }.merge(env)
    options = { err: :err }
    options[:unsetenv_others] = true unless only_env.nil?
    spawn_env = only_env.merge(spawn_env) unless only_env.nil?
    out = IO.popen(spawn_env, args + ["-e", script], **options, &:read)
    assert $CHILD_STATUS.success?, "the child failed: #{code}"
    Marshal.load(out) # rubocop:disable Security/MarshalLoad (our own child's)
  end

  def test_a_read_by_name_is_recorded_by_each_method_that_looks_one_up
    reads = child(<<~'RUBY')
      ENV["BRACKETS"]
      ENV.fetch("FETCH", nil)
      ENV.fetch("FETCH_BLOCK") { "default" }
      ENV.key?("KEY"); ENV.has_key?("HAS_KEY"); ENV.include?("INCLUDE"); ENV.member?("MEMBER")
      ENV.values_at("VALUES_AT_1", "VALUES_AT_2")
      ENV.slice("SLICE")
      ENV.assoc("ASSOC")
      ENV.delete("DELETE")
      ENV.delete("DELETE_BLOCK") { nil }
      result = tracker.stop_tracking.sort
    RUBY
    # (A delete without a block only unsets: no read.)
    assert_equal %w[ASSOC BRACKETS DELETE_BLOCK FETCH FETCH_BLOCK HAS_KEY INCLUDE KEY MEMBER
                    SLICE VALUES_AT_1 VALUES_AT_2], reads
    assert(reads.all? { |name| name.encoding == Encoding::BINARY })
  end

  # A whole-environment read: the implicit conversion (**ENV, Hash[ENV],
  # hash.merge(ENV)) records every name, as Python's dict(os.environ)
  # and {**os.environ} do; iteration and the copy (to_h) record none, as
  # Python's iteration, items(), values() and copy().
  def test_a_read_of_the_whole_environment
    all = child(<<~'RUBY', env: { "SOME" => "1", "OTHER" => "2" })
      result = [ENV.keys.sort]
      { "to_hash" => -> { ENV.to_hash }, "**" => -> { { **ENV } }, "Hash[]" => -> { Hash[ENV] },
        "merge" => -> { {}.merge(ENV) } }.each do |how, read|
        tracker.instance_variable_get(:@reads).clear
        read.call
        result << [how, tracker.stop_tracking.sort]
        tracker.instance_variable_set(:@tracking, true)
      end
    RUBY
    names = all.shift
    all.each { |how, reads| assert_equal names, reads, how }
    assert_includes names, "SOME"
    none = child(<<~'RUBY', env: { "SOME" => "1" })
      ENV.each { |_name, _value| nil }; ENV.each_pair { |_name, _value| nil }
      ENV.each_key { |_name| nil }; ENV.each_value { |_value| nil }
      ENV.to_h; ENV.to_h { |name, value| [name, value] }; ENV.to_a; ENV.keys; ENV.values
      ENV.select { true }; ENV.filter { true }; ENV.reject { false }; ENV.find { false }
      ENV.map { |name, _| name }; ENV.inspect; ENV.to_s; ENV.rassoc("1"); ENV.key("1")
      ENV.value?("1"); ENV.has_value?("1"); ENV.size; ENV.length; ENV.empty?; ENV.invert
      ENV.to_h["SOME"] # a read from a copy
      result = tracker.stop_tracking
    RUBY
    assert_equal [], none
  end

  def test_update_with_a_block_reads_the_names_given
    reads = child(<<~'RUBY', env: { "OLD" => "1" })
      ENV.update("OLD" => "2", "NEW" => "3") { |_name, old, new| old + new }
      ENV.merge!("PLAIN" => "4")
      result = [tracker.stop_tracking.sort, ENV["OLD"], ENV["PLAIN"]]
    RUBY
    assert_equal [%w[NEW OLD], "12", "4"], reads
  end

  def test_not_a_name
    reads = child(<<~'RUBY')
      errors = [nil, :symbol, 1].map do |name|
        ENV[name]
      rescue TypeError
        "TypeError"
      end
      result = [errors, tracker.stop_tracking]
    RUBY
    assert_equal [%w[TypeError TypeError TypeError], []], reads
  end

  # From the interpreter's start: what a library loaded after ours with
  # -r reads is the initialisation's too.
  def test_reads_before_the_scripts_first_line
    Dir.mktmpdir do |dir|
      early = File.join(dir, "early.rb")
      File.write(early, "ENV['READ_BY_AN_EARLY_LIBRARY']\n")
      reads = child("result = tracker.stop_tracking", requires: [early])
      assert_equal ["READ_BY_AN_EARLY_LIBRARY"], reads
    end
  end

  # The later `require "prefork_interp"` finds the tracking running.
  def test_started_once
    result = child(<<~'RUBY')
      ENV["BEFORE"]
      require "prefork_interp/init_env"
      require_relative File.join($LOAD_PATH.first, "prefork_interp/init_env")
      again = PreforkInterp::InitEnv.start
      ENV["AFTER"]
      result = [again.equal?(tracker), tracker.stop_tracking.sort,
                ENV.singleton_class.ancestors.count(PreforkInterp::InitEnv::TrackedEnv)]
    RUBY
    assert_equal [true, %w[AFTER BEFORE], 1], result
  end

  def test_not_started_without_prefork_interp
    result = child(<<~'RUBY', plain: true)
      result = [tracker, ENV.singleton_class.include?(PreforkInterp::InitEnv::TrackedEnv)]
      ENV["UNSEEN"]
      started = PreforkInterp::InitEnv.start
      ENV["SEEN"]
      result += [started.stop_tracking, ENV.singleton_class.include?(PreforkInterp::InitEnv::TrackedEnv)]
    RUBY
    assert_equal [nil, false, ["SEEN"], true], result
  end

  def test_nothing_recorded_once_stopped_nor_untracked
    result = child(<<~'RUBY', env: { "UNTRACKED" => "value" })
      ENV["DURING"]
      value = PreforkInterp::InitEnv.untracked("UNTRACKED")
      reads = tracker.stop_tracking
      ENV["AFTER"]
      { **ENV }
      result = [reads, tracker.stop_tracking, value, tracker.tracking]
    RUBY
    assert_equal [["DURING"], ["DURING"], "value", false], result
  end

  # A change, a new variable and a delete are in the delta, with the
  # values they have then; PREFORK_INTERP (removed, as
  # initialisation_complete does) and what is unchanged are not.
  def test_a_change_and_a_delete_in_the_delta
    delta = child(<<~'RUBY', env: { "CHANGED" => "before", "DELETED" => "x", "KEPT" => "same" })
      ENV["CHANGED"] = "after"
      ENV["NEW"] = "made"
      ENV.delete("DELETED")
      ENV["KEPT"] = "same"
      ENV["SET_TWICE"] = "first"
      ENV["SET_TWICE"] = "second"
      ENV.delete("PREFORK_INTERP")
      result = tracker.delta
    RUBY
    assert_equal [%w[CHANGED after], %w[NEW made], %w[SET_TWICE second], ["DELETED", nil]].sort_by(&:first),
                 delta.sort_by(&:first)
    assert(delta.flatten.compact.all? { |s| s.encoding == Encoding::BINARY })
  end

  # Ruby writes a long $0 over the environment's memory (the kernel's
  # copy, /proc/self/environ): read before that, the exec-time
  # environment survives.
  def test_the_exec_time_environment_survives_a_long_program_name
    result = child(<<~'RUBY', env: { "AT_EXEC" => "value at exec" })
      ENV["AT_EXEC"] = "changed since"
      $0 = "y" * 4000
      result = [File.binread("/proc/self/environ").include?("AT_EXEC=value at exec"),
                tracker.exec_environ["AT_EXEC"]]
    RUBY
    assert_equal [false, "value at exec"], result
  end

  def test_the_exec_time_environment_parsed
    tracker = InitEnv::InitEnv.new
    tracker.instance_variable_set(:@initial, "A=1\0B=x=y\0A=2\0=C=3\0NOEQUALS\0E=\0\0".b)
    assert_equal({ "A" => "1", "B" => "x=y", "=C" => "3", "E" => "" }, tracker.exec_environ)
    tracker.instance_variable_set(:@initial, Errno::EACCES.new("/proc/self/environ"))
    error = assert_raises(Errno::EACCES) { tracker.exec_environ }
    assert_includes error.message, "prefork-interp: cannot read /proc/self/environ"
  end

  # The dependency's digest is of the exec-time values, whatever
  # initialisation made of them; PREFORK_INTERP and names no line can
  # carry are no dependency.
  def test_the_greetings_env_dependency
    result = child(<<~'RUBY', env: { "SET" => "at exec" })
      ENV["SET"]; ENV["UNSET"]; ENV["PREFORK_INTERP"]; ENV["TWO WORDS"]
      ENV["SET"] = "changed"
      reads = tracker.stop_tracking
      result = [tracker.dependency(reads), tracker.dependency(["PREFORK_INTERP", "TWO WORDS"])]
    RUBY
    expected = Wire.env_dependency(%w[SET UNSET], { "SET" => "at exec".b })
    assert_equal [expected, nil], result
    assert_equal %w[SET UNSET], expected[1]
  end

  def test_the_greetings_start_dependency
    env = { "PATH" => ENV.fetch("PATH"), "LANG" => "C.UTF-8", "RUBY_GC_MALLOC_LIMIT" => "20000000",
            "PREFORK_INTERP" => "test" }
    result = child("result = tracker.start_dependency", only_env: env)
    assert_equal Wire.env_dependency(InitEnv::INTERPRETER_VARIABLES, env.transform_values(&:b)), result
    assert_equal InitEnv::INTERPRETER_VARIABLES.uniq.sort, result[1]
    assert_includes result[1], "RUBYOPT"
  end

  # The at_exit handler the tracking's start registers runs after every
  # other, with $! as Ruby ends the run.
  def test_the_last_at_exit_handler
    script = <<~'RUBY'
      at_exit { puts "registered before" }
      p PreforkInterp::InitEnv.at_last_exit { puts "last, with #{$!.inspect}" }
      at_exit { puts "registered after" }
      exit 3
    RUBY
    out = IO.popen({ "PREFORK_INTERP" => "test" },
                   [RbConfig.ruby, "-I", LIB, "-rprefork_interp/init_env", "-e", script], &:read)
    assert_equal 3, $CHILD_STATUS.exitstatus
    assert_equal "nil\nregistered after\nregistered before\nlast, with #<SystemExit: exit>\n", out
  end

  # Started by the script (not with -r): a handler it registered before
  # would run after, so at_last_exit keeps nothing.
  def test_no_last_at_exit_handler_when_started_late
    out = IO.popen([RbConfig.ruby, "-I", LIB, "-e", <<~'RUBY'], &:read)
      at_exit { puts "registered before the start" }
      require "prefork_interp/init_env"
      p PreforkInterp::InitEnv.at_last_exit { puts "last" }
      PreforkInterp::InitEnv.start
      puts PreforkInterp::InitEnv.at_last_exit { puts "last" }
    RUBY
    assert_equal "\"prefork_interp's tracking never started\"\n" \
                 "prefork_interp was loaded by the script, not before it (ruby -rprefork_interp/init_env, " \
                 "as this project's client starts a server): an at_exit handler registered before that " \
                 "would run after its own\nregistered before the start\n", out
  end

  def test_world
    inodes = Wire::WORLD_NAMESPACES.map do |name|
      File.readlink("/proc/self/ns/#{name}")[/\[(\d+)\]/, 1]&.to_i
    rescue SystemCallError
      nil
    end
    expected = Wire.world_digest(inodes, File.binread("/proc/self/cgroup"))
    assert_equal expected, InitEnv.world
    assert_match(/\A\h{64}\z/, InitEnv.world)
  end

  def test_apply
    environ = { "KEPT" => "1", "CHANGED" => "old", "REMOVED" => "x" }
    InitEnv.apply([%w[CHANGED new], ["REMOVED", nil], ["ABSENT", nil], %w[ADDED 2]], environ)
    assert_equal({ "KEPT" => "1", "CHANGED" => "new", "ADDED" => "2" }, environ)
    result = child(<<~'RUBY', plain: true, env: { "REMOVED" => "x" })
      PreforkInterp::InitEnv.apply([["ADDED".b, "2".b], ["REMOVED".b, nil]], ENV)
      result = [ENV["ADDED"], ENV.key?("REMOVED"), `echo "$ADDED"`]
    RUBY
    assert_equal ["2", false, "2\n"], result
  end
end
