# frozen_string_literal: true

# PreforkInterp::Setup on real processes and fds: check_setup's checks of
# PREFORK_INTERP (one thread, Ruby's or not; the fds it names open),
# Settings, what the daemon does with fds 0, 1, 2, and whole setup runs
# (Setup.run in a process of its own, with a stand-in monitor reporting
# what it was given): the setup run's exit, the daemon's session, the
# caps offered, keeper_program, the first call greeted. Linux only, as
# the side is.
#
#     cd sides/ruby && ruby -Ilib -Itest test/test_setup.rb

require "English"
require "fiddle"
require "json"
require "minitest/autorun"
require_relative "process_helpers"
require "pty"
require "socket"
require "tmpdir"
require_relative "../lib/prefork_interp/setup"

module SetupTestHelpers
  include ProcessHelpers

  Setup = PreforkInterp::Setup
  Sys = PreforkInterp::Sys
  Wire = PreforkInterp::Wire

  # What a child says through a pipe (JSON), and its exit status:
  # [said, status]. The block gets the pipe's write end.
  def in_child(timeout = 20)
    reader, writer = IO.pipe
    pid = child do
      reader.close
      yield writer
    end
    writer.close
    ready = reader.wait_readable(timeout)
    data = ready ? reader.read : nil
    reader.close
    status = Process.waitpid2(pid)[1]
    [data.nil? || data.empty? ? nil : JSON.parse(data, symbolize_names: true), status]
  end

  def say(writer, value)
    writer.write(JSON.generate(value))
    writer.close
  end

  # What fd points at, or nil for a closed one.
  def fd_target(number)
    File.readlink("/proc/self/fd/#{number}")
  rescue SystemCallError
    nil
  end

  # A PREFORK_INTERP value naming these fds.
  def env_value(fds, words = "")
    "v1,1700000000.000000001 #{fds.join(',')}#{words}"
  end
end

# Setup.check_setup: PREFORK_INTERP's value, the threads, the fds.
class TestCheckSetup < Minitest::Test
  include SetupTestHelpers

  def setup
    @pipes = Array.new(2) { IO.pipe }.flatten
  end

  def teardown
    @pipes.each(&:close)
  end

  def fds
    @pipes.map(&:fileno)
  end

  # check_setup(value) in a child (this process has minitest's threads):
  # its result, or [error class, message, kind].
  def check(value)
    said, = in_child do |writer|
      say(writer, Setup.check_setup(value))
    rescue StandardError => e
      say(writer, [e.class.name, e.message, e.respond_to?(:kind) ? e.kind : nil])
    end
    said
  end

  def test_a_good_value_decoded
    setup = check(env_value(fds, " pfi-caps=signals,watch pfi-idle=30 pfi-keeper=2f78"))
    assert_equal(fds, setup.values_at(:listen, :call, :watch_in, :watch_err))
    assert_equal([1_700_000_000, 1], setup.values_at(:started_secs, :started_nsecs))
    assert_equal(%w[signals watch], setup[:client_caps])
    assert_equal(30, setup[:idle_limit])
    assert_equal("/x", setup[:keeper])
  end

  def test_a_malformed_value_is_refused
    assert_equal(["PreforkInterp::Wire::ProtocolError",
                  "prefork-interp: bad PREFORK_INTERP: unsupported version \"v2\" (expected v1)",
                  "BadSetupEnv"],
                 check("v2,1.000000000 3,4,5,6"))
  end

  def test_a_standard_fd_is_refused
    assert_equal(["ArgumentError", "prefork-interp: PREFORK_INTERP names fd 2, which is not open", nil],
                 check(env_value([fds[0], 2, fds[2], fds[3]])))
  end

  def test_a_closed_fd_is_refused
    closed = fds[3]
    @pipes.pop.close
    assert_equal(["ArgumentError", "prefork-interp: PREFORK_INTERP names fd #{closed}, which is not open", nil],
                 check(env_value(fds + [closed])))
  end

  def test_another_ruby_thread_is_refused
    said, = in_child do |writer|
      queue = Queue.new
      Thread.new { queue.pop }
      begin
        Setup.check_setup(env_value(fds))
        say(writer, "passed")
      rescue RuntimeError => e
        say(writer, e.message)
      end
    end
    assert_equal("prefork-interp: 2 threads are running; initialisation_complete must be called before " \
                 "any other thread starts (a fork would lose them)", said)
  end

  # Ruby keeps an ended thread's native thread a while, for reuse: no
  # thread of the script's, nothing a fork would lose.
  def test_a_ruby_thread_that_has_ended_is_waited_for
    said, = in_child do |writer|
      Thread.new { nil }.join
      before = Sys.thread_count
      started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      Setup.check_setup(env_value(fds))
      say(writer, [before, Process.clock_gettime(Process::CLOCK_MONOTONIC) - started, Sys.thread_count])
    end
    before, waited, after = said
    assert_equal(1, after)
    assert_operator(waited, :<, Setup::NATIVE_THREAD_CACHE_SECONDS + 1)
    assert_operator(waited, :>, 0.5, "the cached native thread was there (#{before})") if before > 1
  end

  # A thread Ruby does not know of (a C extension's): pthread_create
  # running libc's sleep(5), with every signal blocked (it inherits the
  # mask), so that no SIGCHLD (the check's own fork's) cuts its sleep short.
  def test_a_native_thread_not_rubys_is_refused
    said, = in_child do |writer|
      libc = Fiddle::Handle::DEFAULT
      create = Fiddle::Function.new(libc["pthread_create"], [Fiddle::TYPE_VOIDP] * 4, Fiddle::TYPE_INT)
      thread_id = Fiddle::Pointer.malloc(8, Fiddle::RUBY_FREE)
      old = Sys.sigmask(Sys::SIG_BLOCK, (1..31).to_a - [Signal.list["KILL"], Signal.list["STOP"]])
      created = create.call(thread_id, nil, libc["sleep"], 5)
      Sys.sigmask(Sys::SIG_SETMASK, old)
      raise "pthread_create failed" unless created.zero?

      begin
        Setup.check_setup(env_value(fds))
        say(writer, "passed")
      rescue RuntimeError => e
        say(writer, e.message)
      end
    end
    assert_match(/\Aprefork-interp: 2 threads are running; /, said)
  end
end

# Setup::Settings, and what the daemon does with fds 0, 1, 2.
class TestSetupParts < Minitest::Test
  include SetupTestHelpers

  OPTIONS = { max_servers: 3, idle_timeout: 60, autoreload_modules: true, autoreload_extra: [],
              max_errors: 7, facility: nil, spare_handlers: 2, fast_exit: false,
              interrupt_grace: nil, calls_finalise: true }.freeze

  def test_settings
    settings = Setup::Settings.new(OPTIONS, :log, :titles)
    assert_equal([3, 60, 7, 2, nil, :log, :titles],
                 [settings.max_servers, settings.idle_timeout, settings.max_errors,
                  settings.spare_handlers, settings.interrupt_grace, settings.log, settings.titles])
    assert_equal([[], nil, nil, nil, nil, [], nil, false],
                 [settings.offered, settings.world, settings.env_dependency, settings.start_dependency,
                  settings.terminals, settings.init_env_changes, settings.keeper_program,
                  settings.precopy])
    settings.keeper_program = "/usr/bin/prefork-interp".b
    assert_equal("/usr/bin/prefork-interp", settings.keeper_program)
  end

  def test_stdio_becomes_dev_null_even_where_closed
    said, = in_child do |writer|
      # fd 0 closed: /dev/null's own fd is 0; fd 1 closed too; fd 2 a pipe.
      reader, = IO.pipe
      Sys.dup2(reader.fileno, 2)
      Sys.close(0)
      Sys.close(1)
      before = Dir.children("/proc/self/fd").length
      Setup.send(:null_stdio)
      say(writer, [(0..2).map { |fd| fd_target(fd) }, Dir.children("/proc/self/fd").length - before])
    end
    targets, more = said
    assert_equal(["/dev/null"] * 3, targets)
    assert_equal(2, more, "fds 0 and 1 taken again, nothing else left open")
  end

  def test_stdio_opened_elsewhere_leaves_no_fd_behind
    said, = in_child do |writer|
      before = Dir.children("/proc/self/fd").length
      Setup.send(:null_stdio)
      say(writer, [(0..2).map { |fd| fd_target(fd) }, Dir.children("/proc/self/fd").length - before])
    end
    assert_equal([["/dev/null"] * 3, 0], said)
  end

  def test_which_stdio_fds_are_terminals
    said, = in_child do |writer|
      master, slave = PTY.open
      Sys.dup2(slave.fileno, 0)
      Sys.dup2(slave.fileno, 2)
      reader, pipe = IO.pipe
      Sys.dup2(pipe.fileno, 1)
      terminals = Setup.send(:stdio_terminals)
      Sys.close(2)
      say(writer, [terminals, Setup.send(:stdio_terminals)])
      [master, reader].each(&:close)
    end
    assert_equal([0b101, 0b001], said)
  end
end

# Whole setup runs: Setup.run in a process of its own (the setup run),
# whose daemon serves with a stand-in monitor that reports what it was
# given, answers the first call, and ends the daemon.
class TestSetupRun < Minitest::Test
  include SetupTestHelpers

  # What InitEnv::InitEnv gives Setup.run.
  FakeInitEnv = Struct.new(:also_check) do
    def delta
      [["FOO".b, "1".b], ["BAR".b, nil]]
    end

    def dependency(reads)
      ["e" * 64, reads.sort]
    end

    def start_dependency
      ["s" * 64, ["RUBYOPT".b]]
    end
  end

  OPTIONS = { max_servers: 4, idle_timeout: nil, autoreload_modules: false, autoreload_extra: [],
              max_errors: 100, facility: nil, spare_handlers: 1, fast_exit: false,
              interrupt_grace: 2, calls_finalise: true }.freeze

  def setup
    @dir = Dir.mktmpdir("pfi-setup")
    @socket_path = File.join(@dir, "sident")
    File.write(File.join(@dir, "lident"), "")
    @listen = Socket.new(:UNIX, :STREAM)
    @listen.bind(Addrinfo.unix(@socket_path))
    @listen.listen(4)
    @client, @call = Socket.pair(:UNIX, :STREAM)
    @watch_in_r, @watch_in = IO.pipe
    @watch_err, @watch_err_w = IO.pipe
  end

  def teardown
    [@listen, @client, @call, @watch_in_r, @watch_in, @watch_err, @watch_err_w].each do |io|
      io.close unless io.closed?
    end
    FileUtils.remove_entry(@dir)
  end

  def setup_env(caps)
    st = File.lstat(@socket_path)
    value = format("v1,%<secs>d.%<nsecs>09d %<fds>s pfi-caps=%<caps>s pfi-keeper=%<keeper>s",
                   secs: st.mtime.to_i, nsecs: st.mtime.nsec,
                   fds: [@listen, @call, @watch_in, @watch_err].map(&:fileno).join(","),
                   caps: caps.join(","), keeper: "/usr/bin/prefork-interp".unpack1("H*"))
    Wire.decode_setup_env(value)
  end

  # The monitor's stand-in: reports, answers the call handed to it, and
  # ends the daemon (its parent) and itself.
  def stand_in_monitor(report)
    PreforkInterp::Monitor::Monitor.class_eval do
      define_method(:initialize) do |control, settings|
        @control = control
        @settings = settings
      end
      define_method(:run) do
        s = @settings
        ignored = File.read("/proc/self/status")[/SigIgn:\s*(\h+)/, 1].to_i(16)
        said = { offered: s.offered, keeper_program: s.keeper_program, world: s.world,
                 env_dependency: s.env_dependency, start_dependency: s.start_dependency,
                 terminals: s.terminals, init_env_changes: s.init_env_changes,
                 precopy: s.precopy, max_servers: s.max_servers,
                 nofile: Process.getrlimit(:NOFILE),
                 session_leader: Process.getsid(0) == Process.ppid,
                 stdio: (0..2).map { |fd| File.readlink("/proc/self/fd/#{fd}") },
                 chld_ignored: ignored[Signal.list["CHLD"] - 1] == 1 }
        _, _, _, *controls = @control.recvmsg(1, 0, 64, scm_rights: true)
        controls.flat_map { |c| c.unix_rights.to_a }.each { |conn| conn.write("served\n") }
        report.write(JSON.generate(said))
        report.close
        Process.kill(:KILL, Process.ppid)
        exit!(0)
      end
    end
  end

  # SIGCHLD ignored, as a caller ignoring it leaves it to the setup run
  # (SIG_IGN: Ruby's trap("CHLD", "IGNORE") is Ruby's own doing).
  def ignore_sigchld
    libc = Fiddle::Handle::DEFAULT
    signal = Fiddle::Function.new(libc["signal"], [Fiddle::TYPE_INT, Fiddle::TYPE_VOIDP], Fiddle::TYPE_VOIDP)
    signal.call(Signal.list["CHLD"], 1) # SIG_IGN
  end

  # A setup run with these caps: [what the monitor said, the setup run's
  # status, the first call's greeting and answer].
  def setup_run(caps, nofile: nil)
    setup = setup_env(caps)
    reader, writer = IO.pipe
    pid = child do
      reader.close
      Process.setrlimit(:NOFILE, nofile, Process.getrlimit(:NOFILE)[1]) unless nofile.nil?
      ignore_sigchld
      stand_in_monitor(writer)
      Setup.run(FakeInitEnv.new([]), ["HOME".b], setup, OPTIONS)
    end
    writer.close
    [@call, @listen, @watch_in, @watch_err].each(&:close)
    status = Process.waitpid2(pid)[1]
    said = reader.wait_readable(20) ? reader.read : ""
    reader.close
    greeting = @client.read
    [said.empty? ? nil : JSON.parse(said, symbolize_names: true), status, greeting]
  end

  def test_a_setup_run_exits_and_its_daemon_serves
    said, status, greeting = setup_run(%w[signals closed tty watch bogus])
    assert_equal(0, status.exitstatus, "the setup run ends at once")
    refute_nil(said, "the monitor reported")
    assert_equal(%w[signals tty closed watch], said[:offered])
    assert_equal("/usr/bin/prefork-interp".b, said[:keeper_program])
    assert_equal(PreforkInterp::InitEnv.world, said[:world])
    assert_equal(["e" * 64, ["HOME"]], said[:env_dependency])
    assert_equal(["s" * 64, ["RUBYOPT"]], said[:start_dependency])
    assert_equal([%w[FOO 1], ["BAR", nil]], said[:init_env_changes])
    assert_equal([false, 4], [said[:precopy], said[:max_servers]])
    assert(said[:session_leader], "the daemon leads a session of its own")
    assert_equal(["/dev/null"] * 3, said[:stdio])
    refute(said[:chld_ignored])
    assert_kind_of(Integer, said[:terminals])
    # The first call: greeted with what was offered, then the monitor's.
    assert_equal("PFI\n", greeting.byteslice(0, 4))
    xdata = greeting.byteslice(8, greeting.byteslice(4, 4).unpack1("N"))
    assert_includes(xdata.lines, "caps signals,tty,closed,watch\n")
    assert_equal("served\n", greeting.byteslice((8 + xdata.bytesize)..))
  end

  def test_closed_is_offered_only_with_signals
    said, = setup_run(%w[closed watch limits])
    assert_equal(%w[limits watch], said[:offered])
  end

  def test_a_v1_client_is_offered_nothing
    said, _, greeting = setup_run([])
    assert_equal([], said[:offered])
    assert_equal("PFI\n\0\0\0\0served\n".b, greeting)
  end

  def test_limits_raises_the_servers_own_soft_limits
    hard = Process.getrlimit(:NOFILE)[1]
    skip "no room under the hard limit" if hard < 128
    said, = setup_run(%w[signals limits], nofile: 64)
    assert_equal([hard, hard], said[:nofile])
  end

  def test_without_limits_the_callers_soft_limits_stay
    hard = Process.getrlimit(:NOFILE)[1]
    skip "no room under the hard limit" if hard < 128
    said, = setup_run(["signals"], nofile: 64)
    assert_equal([64, hard], said[:nofile])
  end
end
