# frozen_string_literal: true

# PreforkInterp::FastExit's decisions, on real processes: every way a run
# can end is run twice, with fast_exit armed and without (Ruby's own
# end), and the two must be the same, exit status (or signal), stdout
# and stderr, but for what fast_exit skips: a global object's finalizer,
# which writes a line on stderr when it runs, says which end a run had
# (it runs at Ruby's own end only). As tests/python_fast_exit.rs does for
# the Python side, without the server: the script arms FastExit itself,
# under `ruby -rprefork_interp/init_env` (as the client starts a server).
#
#     cd sides/ruby && ruby -Ilib -Itest test/test_fast_exit.rb

require "minitest/autorun"
require "rbconfig"
require "tmpdir"
require_relative "../lib/prefork_interp/fast_exit"

class TestFastExit < Minitest::Test
  LIB = File.expand_path("../lib", __dir__)
  FINALISER = "finaliser of a global ran\n"

  # at_exit handlers registered before and after arming, a global object
  # whose finalizer writes FINALISER, output on both streams (more than a
  # buffer's worth on stdout, unless it is a broken pipe: that would fail
  # at once, not at the end), then the ending ARGV[0] names. PFI_FAST=0:
  # not armed.
  ENDINGS = <<~'RUBY'
    require "prefork_interp/fast_exit"
    at_exit { puts "at_exit handler registered before arming" unless $stdout.closed? }
    if ENV["PFI_FAST"] != "0"
      why = PreforkInterp::FastExit::FastExit.new.arm
      abort("not armed: #{why}") unless why.nil?
    end
    at_exit { puts "at_exit handler registered after arming" unless $stdout.closed? }
    $kept = Object.new
    ObjectSpace.define_finalizer($kept, proc { $stderr.write("finaliser of a global ran\n") })
    how = ARGV[0]
    print "out ", "x" * (%w[epipe full].include?(how) ? 20 : 20_000), "\n"
    $stderr.puts "err"
    case how
    when /\Aexit:(-?\d+)\z/ then exit Integer($1)
    when "exit-true" then exit true
    when "exit-false" then exit false
    when "abort" then abort "an abort's message"
    when "raise-systemexit" then raise SystemExit.new(4, "a message Ruby does not print")
    when "return" then return
    when "thread-joined" then Thread.new { sleep 0.2; puts "the thread ends" }.join
    when "exit-in-at_exit" then at_exit { exit 5 }
    when "stdout-closed" then $stdout.close
    when "stdout-not-an-io"
      sink = Object.new
      def sink.write(*parts)
        parts.sum(&:size)
      end
      def sink.flush
        raise "Ruby's end never calls this"
      end
      def sink.closed?
        false
      end
      $stdout = sink
      puts "lost"
    when "fork"
      child = fork { puts "child"; exit 9 }
      Process.wait(child)
      puts "child's status #{$?.exitstatus}"
    when "c-stdio"
      require "fiddle"
      c_puts = Fiddle::Function.new(Fiddle::Handle::DEFAULT["puts"], [Fiddle::TYPE_VOIDP], Fiddle::TYPE_INT)
      c_puts.call("written with C stdio, flushed by exit(3)")
    when "fork-in-at_exit"
      at_exit do
        child = fork { puts "a child forked in an at_exit handler" }
        Process.wait(child)
        puts "its status #{$?.exitstatus}"
      end
      exit 3
    # Left to Ruby:
    when "systemexit-subclass" then raise Class.new(SystemExit).new(6)
    when "exception" then raise ArgumentError, "an uncaught exception"
    when "interrupt" then raise Interrupt
    when "sigterm" then Process.kill(:TERM, Process.pid); sleep 5
    when "thread-running"
      started = Queue.new
      Thread.new do
        started << true
        sleep
      ensure
        puts "the running thread's ensure"
      end
      started.pop
    when "raise-in-at_exit" then at_exit { raise "a handler's exception" }
    when "exception-then-exit-in-at_exit"
      at_exit { exit 7 }
      raise "an exception a handler's exit overrides"
    when "exit-trap" then trap("EXIT") { puts "the script's own EXIT trap" }
    when "fd-1-closed" then IO.for_fd(1).close # Ruby keeps fds 0, 1 and 2 open
    end
  RUBY

  # [how, exit status (negative: the signal), whether fast_exit ends it,
  # where stdout goes (a pipe we read; :broken_pipe, one nobody reads;
  # :full, /dev/full)].
  CASES = [
    ["fall-off-the-end", 0, true],
    ["exit:0", 0, true],
    ["exit:3", 3, true],
    ["exit:256", 0, true],
    ["exit:-1", 255, true],
    ["exit-true", 0, true],
    ["exit-false", 1, true],
    ["abort", 1, true],
    ["raise-systemexit", 4, true],
    ["return", 0, true],
    ["thread-joined", 0, true],
    ["exit-in-at_exit", 5, true],
    ["stdout-closed", 0, true],
    ["stdout-not-an-io", 0, true],
    ["fd-1-closed", 0, true],
    ["c-stdio", 0, true],
    # (The child's end, which no EXIT trap of its own saw, is Ruby's.)
    ["fork-in-at_exit", 3, true],
    # Left to Ruby:
    ["systemexit-subclass", 6, false],
    ["exception", 1, false],
    ["interrupt", -Signal.list.fetch("INT"), false],
    ["sigterm", -Signal.list.fetch("TERM"), false],
    ["thread-running", 0, false],
    ["raise-in-at_exit", 1, false],
    ["exception-then-exit-in-at_exit", 7, false],
    ["exit-trap", 0, false],
    ["epipe", 0, false, :broken_pipe],
    ["full", 0, false, :full]
  ].freeze

  def setup
    @dir = Dir.mktmpdir("pfi-fast-exit")
    @script = File.join(@dir, "endings.rb")
    File.write(@script, ENDINGS)
  end

  def teardown
    FileUtils.remove_entry(@dir)
  end

  # [status (negative: the signal), stdout, stderr] of the script run
  # with `ruby -rprefork_interp/init_env`, PREFORK_INTERP set (as in a
  # server's setup run) unless started_late.
  def run_script(how, fast:, stdout: nil, script: @script, started_late: false)
    env = { "PFI_FAST" => fast ? "1" : "0", "PREFORK_INTERP" => started_late ? nil : "test" }
    args = [RbConfig.ruby, "-I", LIB]
    args << "-rprefork_interp/init_env" unless started_late
    spawned(env, args + [script, how], stdout)
  end

  def spawned(env, command, stdout)
    out_r, out_w = IO.pipe
    err_r, err_w = IO.pipe
    out = { nil => out_w, broken_pipe: out_w, full: "/dev/full" }.fetch(stdout)
    out_r.close unless stdout.nil?
    pid = Process.spawn(env, *command, in: File::NULL, out: out, err: err_w, chdir: @dir)
    [out_w, err_w].each(&:close)
    reader = Thread.new { out_r.closed? ? "" : out_r.read }
    stderr = err_r.read
    _, status = Process.wait2(pid)
    [status.signaled? ? -status.termsig : status.exitstatus, shortened(reader.value), stderr]
  ensure
    [out_r, err_r, out_w, err_w].each { |io| io.close unless io.closed? }
  end

  # The long line shortened: it makes a failure's message unreadable.
  def shortened(stdout)
    stdout.gsub(/x{100,}/) { |xs| "x*#{xs.size}" }
  end

  def test_every_ending_as_rubys_own_but_the_finalisation
    CASES.each do |how, status, fast, stdout|
      direct = run_script(how, fast: false, stdout: stdout)
      armed = run_script(how, fast: true, stdout: stdout)
      assert_equal status, direct[0], "#{how}: Ruby's own end: #{direct.inspect}"
      assert_includes direct[2], FINALISER, "#{how}: Ruby's own end runs the finalizer"
      expected = [direct[0], direct[1], fast ? direct[2].sub(FINALISER, "") : direct[2]]
      assert_equal expected, armed, "#{how}: fast_exit #{fast ? 'ends it' : 'leaves it to Ruby'}"
    end
  end

  def test_what_the_cases_rely_on
    _, stdout, = run_script("c-stdio", fast: true)
    assert stdout.end_with?("written with C stdio, flushed by exit(3)\n"), stdout
    _, stdout, stderr = run_script("fall-off-the-end", fast: true)
    assert_equal "out x*20000\nat_exit handler registered after arming\n" \
                 "at_exit handler registered before arming\n", stdout,
                 "every at_exit handler, once, last registered first, then the buffer flushed"
    assert_equal "err\n", stderr
    _, stdout, = run_script("thread-running", fast: true)
    assert stdout.end_with?("the running thread's ensure\n"), "Ruby killed the thread: #{stdout}"
    _, _, stderr = run_script("exception-then-exit-in-at_exit", fast: true)
    assert_includes stderr, "an exception a handler's exit overrides (RuntimeError)"
    _, _, stderr = run_script("abort", fast: true)
    assert_equal "err\nan abort's message\n", stderr
  end

  # A process the call forks ends as fast as the call: its finalizer
  # does not run either, and its status is its own.
  def test_a_forked_child_ends_fast_with_its_own_status
    status, stdout, stderr = run_script("fork", fast: true)
    assert_equal 0, status
    assert_includes stdout, "child\n"
    assert_includes stdout, "child's status 9\n"
    refute_includes stderr, FINALISER
    _, _, stderr = run_script("fork", fast: false)
    assert_equal 2, stderr.scan(FINALISER).size, "Ruby's own ends, the child's and the parent's"
  end

  # Started late (prefork_interp loaded by the script, not with -r): an
  # at_exit handler the script registered before might run after the last
  # one, so fast_exit does nothing.
  def test_not_armed_when_the_tracking_started_late
    script = File.join(@dir, "late.rb")
    File.write(script, <<~'RUBY')
      at_exit { puts "registered before prefork_interp loads" }
      require "prefork_interp/fast_exit"
      PreforkInterp::InitEnv.start
      puts PreforkInterp::FastExit::FastExit.new.arm
    RUBY
    status, stdout, = run_script("", fast: true, script: script, started_late: true)
    assert_equal 0, status
    assert_match(/\Aprefork_interp was loaded by the script, not before it .*\n/, stdout)
    assert stdout.end_with?("registered before prefork_interp loads\n")
  end

  # An EXIT trap the script set before arming stays, and fast_exit does
  # nothing.
  def test_not_armed_over_an_exit_trap_of_the_scripts
    script = File.join(@dir, "trap.rb")
    File.write(script, <<~'RUBY')
      require "prefork_interp/fast_exit"
      trap("EXIT") { puts "the script's EXIT trap" }
      ObjectSpace.define_finalizer($kept = Object.new, proc { puts "finalizer" })
      puts PreforkInterp::FastExit::FastExit.new.arm
    RUBY
    status, stdout, = run_script("", fast: true, script: script)
    assert_equal 0, status
    assert_equal "the script has an EXIT trap of its own\nthe script's EXIT trap\nfinalizer\n", stdout
  end

  def test_system_exit_status
    status = ->(exc) { PreforkInterp::FastExit.system_exit_status(exc) }
    assert_equal 0, status.call(SystemExit.new)
    assert_equal 3, status.call(SystemExit.new(3))
    assert_equal 0, status.call(SystemExit.new(256))
    assert_equal 255, status.call(SystemExit.new(-1))
    assert_equal 1, status.call(SystemExit.new(false))
    assert_nil status.call(Class.new(SystemExit).new(2))
    assert_nil status.call(RuntimeError.new("x"))
    assert_nil status.call(Interrupt.new)
    odd = SystemExit.new(3)
    def odd.status
      4
    end
    assert_equal 3, status.call(odd), "the status Ruby reads, not the object's own method"
  end
end
