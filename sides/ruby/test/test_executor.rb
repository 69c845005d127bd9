# frozen_string_literal: true

# The executor on real processes, sockets and fds: this test plays the
# monitor (the executor's parent, its handover and its socket) and the
# client (the call socket's other end), and each executor reports, from
# inside the call it became, what it sees.

require "fileutils"
require "io/wait"
require "json"
require "minitest/autorun"
require_relative "process_helpers"
require "pty"
require "socket"
require "tmpdir"

require "prefork_interp/executor"
require "prefork_interp/sys"
require "prefork_interp/wire"

class TestExecutor < Minitest::Test
  include ProcessHelpers
  Sys = PreforkInterp::Sys
  Wire = PreforkInterp::Wire
  Executor = PreforkInterp::Executor

  SIG = Signal.list

  # Settings as the executor reads them.
  FakeSettings = Struct.new(:log, :titles, :keeper_program, :init_env_changes, :precopy)

  # The log: each message a line on an IO (the test reads them).
  class FakeLog
    attr_reader :closed

    def initialize(out)
      @out = out
      @closed = false
    end

    def call(priority, message)
      @out.syswrite("#{priority} #{message}\n")
    end

    def close
      @closed = true
    end

    def reopen; end
  end

  def setup
    @cleanup = []
  end

  def teardown
    @cleanup.reverse_each do |thing|
      thing.call
    rescue StandardError
      nil
    end
  end

  # ------------------------------------------------------------ helpers

  def send_fd(sock, file)
    Sys.send_fds(sock, Wire::FD_MESSAGE_BYTE, [file.is_a?(Integer) ? file : file.fileno])
  end

  def payload(env, args)
    body = (env + [""] + args).map { |s| "#{s}\0" }.join.b
    [body.bytesize].pack("N") + body
  end

  # What a process shows of its signals, from /proc/PID/status: the
  # numbers set in SigIgn, SigBlk...
  def signal_set(status, field)
    bits = status[/^#{field}:\s*(\h+)$/, 1].to_i(16)
    (1..64).select { |sig| bits[sig - 1] == 1 }
  end

  # An executor-to-be, forked as the monitor forks one: the block runs in
  # it with what Executor#run returned, once it is the call. Returns
  # [pid, the client's end of the call socket, the monitor's end of its
  # socket, the log's read end].
  def fork_executor(keeper_program: nil, init_env_changes: [], monitor_pid: Process.pid, &block)
    handover, handover_theirs = Socket.pair(:UNIX, :STREAM)
    to_monitor, monitor_theirs = Socket.pair(:UNIX, :STREAM)
    log_r, log_w = IO.pipe
    pid = fork do
      handover.close
      to_monitor.close
      log_r.close
      settings = FakeSettings.new(FakeLog.new(log_w), RecordedTitles.new, keeper_program, init_env_changes, false)
      mask = Executor::Executor.new(settings, handover_theirs, monitor_theirs, {}, monitor_pid, nil).run
      block.call(mask)
      exit!(0)
    end
    [handover_theirs, monitor_theirs, log_w].each(&:close)
    @cleanup << -> { Process.kill(:KILL, pid) && Process.waitpid(pid) }
    client, conn = Socket.pair(:UNIX, :STREAM)
    send_fd(handover, conn)
    conn.close
    [pid, client, to_monitor, log_r, handover]
  end

  # ------------------------------------------------------------- tests

  # Every part of a request there can be, as the client sends them.
  def send_full_request(client, byte, dir)
    client.write([byte, 0x02 | 0x08].pack("CC"))
    File.open(File::NULL) { |null| 3.times { send_fd(client, null) } }
    client.write(payload(%w[A=1 B=x=y], %w[one two]))
    File.open(dir) { |dir_io| send_fd(client, dir_io) }
    client.write(Wire.encode_context_umask(0o027))
    # One entry (RLIMIT_NOFILE, 100, none), nice 5, oom unknown.
    client.write([1].pack("C") + [7, 100, Wire::RLIM_INFINITY].pack("CQ>Q>") +
                 [5, Wire::OOM_SCORE_UNKNOWN].pack("l>l>"))
    client.write(Wire.encode_caller_signals([SIG["USR2"]], [SIG["HUP"], SIG["USR1"]]))
  end

  def inode(fileno)
    IO.for_fd(fileno, autoclose: false).stat.ino
  end

  def test_read_request_every_part
    client, conn = Socket.pair(:UNIX, :STREAM)
    dir = Dir.mktmpdir
    byte = 0x01 | 0x02 | 0x40 | 0x80
    send_full_request(client, byte, dir)
    got = Executor.read_request(conn)
    assert_equal [byte, 0x0A], got[0, 2]
    assert_equal([File.stat(File::NULL).ino] * 3, got[2].map { |fd| inode(fd) })
    got[2].each { |fd| Sys.close(fd) }
    assert_equal [%w[A=1 B=x=y], %w[one two]], [got[3], got[4]]
    assert_equal [File.stat(dir).ino, 0o027], [inode(got[5][0]), got[5][1]]
    Sys.close(got[5][0])
    assert_equal [[[7, 100, Wire::RLIM_INFINITY]], 5, Wire::OOM_SCORE_UNKNOWN], got[6]
    assert_equal [[SIG["USR2"]], [SIG["HUP"], SIG["USR1"]].sort], got[7]
  ensure
    client&.close
    conn&.close
    FileUtils.remove_entry(dir) if dir
  end

  def test_read_request_v1_and_hangups
    client, conn = Socket.pair(:UNIX, :STREAM)
    client.write("\0")
    client.close
    # The client went away mid-request: Hangup (private), not a protocol error.
    error = assert_raises(StandardError) { Executor.read_request(conn) }
    assert_equal "PreforkInterp::Executor::Hangup", error.class.name
    conn.close

    client, conn = Socket.pair(:UNIX, :STREAM)
    client.write("\x20")
    assert_raises(Wire::ProtocolError) { Executor.read_request(conn) }
  ensure
    client&.close
    conn&.close
  end

  # A plain extended call: group, 'P', 'r', directory, umask, fds (fd 2
  # closed by the caller), environment with initialisation's changes,
  # ARGV, std streams, the caller's ignored and blocked signals.
  def test_run_becomes_the_call
    report_r, report_w = IO.pipe
    dir = Dir.mktmpdir
    @cleanup << -> { FileUtils.remove_entry(dir) }
    sync_before = $stdout.sync
    pid, client, to_monitor, log_r, = fork_executor(init_env_changes: [%w[C 3], ["A", nil]]) do |mask|
      status = File.read("/proc/self/status")
      report = {
        mask: mask, argv: ARGV, argv_frozen: ARGV.all?(&:frozen?), env: ENV.to_h, pwd: Dir.pwd,
        umask: File.umask, pgid: Process.getpgrp, stdin: $stdin.read,
        std: [$stdin, $stdout, $stderr].map { |io| [io.fileno, io.inspect] },
        fd2: File.readlink("/proc/self/fd/2"), sync: $stdout.sync,
        ignored: signal_set(status, "SigIgn"), blocked: signal_set(status, "SigBlk"),
        stderr: begin
          $stderr.syswrite("x")
          :written
        rescue Errno::EPIPE
          :epipe
        end
      }
      $stdout.print "hello"
      $stdout.flush
      report_w.write(JSON.generate(report))
      report_w.close
    end
    report_w.close
    # Made after the fork: the executor has only what the call brings.
    in_r, in_w = IO.pipe
    out_r, out_w = IO.pipe
    byte = 0x01 | 0x02 | 0x80
    client.write([byte, 0x04 | 0x08].pack("CC"))
    File.open(File::NULL) { |null| [in_r, out_w, null].each { |io| send_fd(client, io) } }
    # (The fds sent are copies: ours go.)
    [in_r, out_w].each(&:close)
    client.write(payload(%w[A=1 B=2 PATH=/bin:/usr/bin], ["x", "y é"]))
    File.open(dir) { |d| send_fd(client, d) }
    client.write(Wire.encode_context_umask(0o027))
    client.write(Wire.encode_caller_signals([SIG["USR2"], SIG["KILL"]], [SIG["USR1"], SIG["STOP"]]))
    assert_equal Wire.encode_frame(Wire::FRAME_EXECUTOR_PID, pid), read_exactly(client, 5)
    assert_equal Wire.encode_executor_ready(byte), read_exactly(to_monitor, 2)
    in_w.write("input")
    in_w.close
    report = JSON.parse(read_to_eof(report_r))
    assert_equal "hello", read_to_eof(out_r)
    assert wait_child(pid).success?
    assert_nil report["mask"]
    assert_equal ["x", "y é"], report["argv"]
    assert report["argv_frozen"]
    assert_equal({ "B" => "2", "C" => "3", "PATH" => "/bin:/usr/bin" }, report["env"])
    assert_equal File.realpath(dir), report["pwd"]
    assert_equal 0o027, report["umask"]
    assert_equal pid, report["pgid"]
    assert_equal "input", report["stdin"]
    # The objects Ruby's start-up made, on fds 0, 1, 2.
    assert_equal [[0, "#<IO:<STDIN>>"], [1, "#<IO:<STDOUT>>"], [2, "#<IO:<STDERR>>"]], report["std"]
    # fd 2 closed in the caller: a pipe with no reader, as Ruby's start-up.
    assert_match(/\Apipe:/, report["fd2"])
    assert_equal "epipe", report["stderr"]
    assert_equal sync_before, report["sync"]
    assert_includes report["ignored"], SIG["USR2"]
    # The caller's blocked signals stay unblocked, as Ruby's start-up
    # unblocks every signal of a direct run.
    refute_includes report["blocked"], SIG["USR1"]
    assert_equal "", read_to_eof(log_r)
  end

  # STDOUT keeps Ruby's start-up flags: a write to a pipe whose reader
  # has gone ends the call as SIGPIPE would (IO#reopen would have made it
  # an Errno::EPIPE and status 1).
  def test_stdout_dies_of_sigpipe
    pid, client, to_monitor, = fork_executor do
      loop { $stdout.write("x" * 65_536) }
    end
    out_r, out_w = IO.pipe
    client.write("\0")
    [File.open(File::NULL), out_w, File.open(File::NULL)].each { |io| send_fd(client, io) }
    client.write(payload([], []))
    out_w.close
    assert_equal Wire.encode_executor_ready(0), read_exactly(to_monitor, 2)
    read_exactly(out_r, 1)
    out_r.close
    status = wait_child(pid)
    assert_equal SIG["PIPE"], status.termsig, status.inspect
  end

  # Every one of fds 0, 1, 2 closed by the caller: as Ruby's start-up
  # (fill_standard_fds) leaves them.
  def test_closed_fds_as_ruby_starts
    report_r, report_w = IO.pipe
    pid, client, to_monitor, = fork_executor do
      links = (0..2).map { |fd| File.readlink("/proc/self/fd/#{fd}") }
      flags = (0..2).map { |fd| File.read("/proc/self/fdinfo/#{fd}")[/flags:\s*(\d+)/, 1].to_i(8) }
      report_w.write(JSON.generate(links: links, flags: flags, stdin: $stdin.read))
      report_w.close
    end
    report_w.close
    client.write([0x81, 0x07].pack("CC"))
    3.times { File.open(File::NULL) { |null| send_fd(client, null) } }
    client.write(payload([], []))
    assert_equal Wire.encode_frame(Wire::FRAME_EXECUTOR_PID, pid), read_exactly(client, 5)
    assert_equal [0x81].pack("C"), read_exactly(to_monitor, 2)[1]
    report = JSON.parse(read_to_eof(report_r))
    assert wait_child(pid).success?
    links = report["links"]
    assert(links.all? { |link| link.start_with?("pipe:") }, links.inspect)
    refute_equal links[0], links[1]
    assert_equal links[1], links[2]
    assert_equal "", report["stdin"]
    # O_RDONLY, O_WRONLY, O_WRONLY; blocking (no O_NONBLOCK), not close-on-exec.
    assert_equal([0, 1, 1], report["flags"].map { |f| f & 0o3 })
    assert(report["flags"].none? { |f| f.anybits?(Sys::O_NONBLOCK) })
  end

  def test_hangup_before_request_is_logged
    pid, client, _, log_r = fork_executor { flunk "no call" }
    client.close
    assert wait_child(pid).success?
    assert_match(/client went away before sending its call/, read_to_eof(log_r))
  end

  def test_bad_request_fails_the_call
    pid, client, _, log_r = fork_executor { flunk "no call" }
    client.write("\x20")
    assert_equal 1, wait_child(pid).exitstatus
    assert_match(/call failed: .*ProtocolError/, read_to_eof(log_r))
  end

  def test_monitor_gone_before_a_call
    handover, handover_theirs = Socket.pair(:UNIX, :STREAM)
    _, monitor_theirs = Socket.pair(:UNIX, :STREAM)
    pid = fork do
      handover.close
      settings = FakeSettings.new(FakeLog.new($stderr), RecordedTitles.new, nil, [], false)
      Executor::Executor.new(settings, handover_theirs, monitor_theirs, {}, Process.ppid, nil).run
      exit!(3)
    end
    handover.close
    assert_equal 0, wait_child(pid).exitstatus
    # A parent that is not the monitor: it died before the executor asked.
    pid = fork do
      settings = FakeSettings.new(FakeLog.new($stderr), RecordedTitles.new, nil, [], false)
      Executor::Executor.new(settings, handover_theirs, monitor_theirs, {}, Process.pid + 1_000_000, nil).run
      exit!(3)
    end
    assert_equal 0, wait_child(pid).exitstatus
  end

  # A call on a pseudo-terminal of its own: a session, the script's
  # process its terminal's foreground group, the executor its keeper,
  # which reports the script's stop ('t') and end ('x'), and moves it to
  # the foreground and continues it on the monitor's 'f'.
  def test_pty_call_keeps_a_session
    report_r, report_w = IO.pipe
    pid, client, to_monitor, log_r = fork_executor do |mask|
      info = {
        pid: Process.pid, ppid: Process.ppid, pgid: Process.getpgrp, sid: Process.getsid,
        foreground: Sys.tcgetpgrp(0), mask: mask,
        blocked: signal_set(File.read("/proc/self/status"), "SigBlk"), tty: File.open("/dev/tty", &:tty?)
      }
      Sys.sigmask(Sys::SIG_SETMASK, mask)
      report_w.write("#{JSON.generate(info)}\n")
      report_w.close
      Process.kill(:STOP, Process.pid)
      exit!(7)
    end
    report_w.close
    master, slave = PTY.open
    byte = 0x01 | 0x04
    client.write([byte].pack("C"))
    File.open(File::NULL) { |null| [slave, null, null].each { |io| send_fd(client, io) } }
    client.write(payload(%w[TERM=dumb], []))
    slave.close
    kind, script = Wire.decode_frame(read_exactly(client, 5))
    assert_equal Wire::FRAME_EXECUTOR_PID, kind
    refute_equal pid, script
    ready = read_exactly(to_monitor, 6)
    assert_equal Wire.encode_executor_ready(byte, script), ready
    # (A line: the keeper holds the pipe's write end until its end.)
    wait_readable(report_r)
    info = JSON.parse(report_r.gets)
    assert_equal [script, pid, script, pid, script], info.values_at("pid", "ppid", "pgid", "sid", "foreground")
    assert info["tty"]
    # Held until then: the terminal's signals and SIGCHLD; the mask to
    # restore has neither.
    assert_empty(Sys::TERMINAL_SIGNALS - info["blocked"])
    assert_includes info["blocked"], SIG["CHLD"]
    refute_includes info["mask"], SIG["CHLD"]
    # The keeper says the script stopped; the monitor says foreground.
    assert_equal Wire.encode_frame(Wire::KEEPER_STOPPED, SIG["STOP"]), read_exactly(to_monitor, 5)
    Sys.send_all(to_monitor, Wire.encode_frame(Wire::KEEPER_FOREGROUND, 1))
    assert_equal Wire.encode_frame(Wire::KEEPER_STATUS, 7 << 8), read_exactly(to_monitor, 5)
    assert wait_child(pid).success?
    assert_equal "", read_to_eof(log_r)
    # Every copy of the slave is closed: the master reads EIO.
    assert_raises(Errno::EIO) { loop { master.readpartial(100) } }
  ensure
    master&.close
  end

  # --------------------------------------------------- signals and limits

  # The block's value (JSON's) from a child process, where it may change
  # what it likes.
  def in_child
    r, w = IO.pipe
    pid = fork do
      r.close
      result = begin
        ["ok", yield]
      rescue StandardError, Minitest::Assertion => e
        ["error", e.full_message]
      end
      w.write(JSON.generate(result))
      w.close
      exit!(0)
    end
    w.close
    outcome, result = JSON.parse(read_to_eof(r))
    assert wait_child(pid).success?
    flunk result unless outcome == "ok"
    result
  end

  def test_take_caller_signals
    result = in_child do
      trap("USR1") { nil } # initialisation's handler: kept
      trap("INT", "SYSTEM_DEFAULT") # initialisation's choice: kept
      trap("QUIT", "EXIT")
      ignored = %w[USR1 USR2 INT QUIT TSTP PIPE KILL SEGV CHLD].map { |n| SIG.fetch(n) } + [32, 40]
      returned = Executor.take_caller_signals(ignored, [SIG["HUP"], SIG["KILL"], 33], nil)
      status = File.read("/proc/self/status")
      with_mask = Executor.take_caller_signals([], [SIG["TERM"], SIG["KILL"], 33], [SIG["INT"]])
      {
        returned: returned, ignored: signal_set(status, "SigIgn"), blocked: signal_set(status, "SigBlk"),
        with_mask: with_mask, usr1: trap("USR1", "DEFAULT").class.name, quit: trap("QUIT", "DEFAULT")
      }
    end
    assert_nil result["returned"]
    # (And CHLD, which Ruby before 3.3 keeps handling, emulating SIG_IGN,
    # as it does when it starts with SIGCHLD ignored.)
    %w[USR2 TSTP PIPE].each { |n| assert_includes result["ignored"], SIG.fetch(n), n }
    assert_includes result["ignored"], 40
    %w[USR1 INT QUIT].each { |n| refute_includes result["ignored"], SIG.fetch(n), n }
    # Blocked signals are not laid over: a direct run's start-up unblocks
    # them all (the mask given comes back as it was).
    assert_equal [], result["blocked"]
    assert_equal [SIG["INT"]], result["with_mask"]
    assert_equal "Proc", result["usr1"]
    assert_equal "EXIT", result["quit"]
  end

  def test_take_limits
    result = in_child do
      soft, hard = Process.getrlimit(:NOFILE)
      limits = [[[Process::RLIMIT_NOFILE, soft - 1, hard], [Process::RLIMIT_CORE, 0, Wire::RLIM_INFINITY]],
                Process.getpriority(Process::PRIO_PROCESS, 0) + 1, 123]
      Executor.take_limits(limits, Executor.read_own_limits)
      [Process.getrlimit(:NOFILE), [soft - 1, hard], Process.getrlimit(:CORE)[1],
       Process.getpriority(Process::PRIO_PROCESS, 0), limits[1],
       File.read("/proc/self/oom_score_adj").to_i]
    end
    assert_equal result[1], result[0]
    assert_equal Process::RLIM_INFINITY, result[2]
    assert_equal result[4], result[3]
    assert_equal 123, result[5]
  end

  def test_refused_limit_is_said_and_ends_the_call
    err_r, err_w = IO.pipe
    pid = fork do
      err_r.close
      Sys.dup2(err_w.fileno, 2)
      # Above fs.nr_open: refused even to root.
      Executor.take_limits([[[Process::RLIMIT_NOFILE, 1 << 40, 1 << 40]], 0, Wire::OOM_SCORE_UNKNOWN], nil)
      exit!(0)
    end
    err_w.close
    assert_equal 127, wait_child(pid).exitstatus
    said = read_to_eof(err_r)
    assert_match(/\Aprefork-interp: cannot give the script the caller's RLIMIT_NOFILE \(soft 1099511627776, /, said)
    assert_match(/-f starts a fresh one\)\n\z/, said)
  end

  def test_raise_soft_limits_for_server
    result = in_child do
      hard = Process.getrlimit(:NOFILE)[1]
      Process.setrlimit(:NOFILE, 64, hard)
      Executor.raise_soft_limits_for_server
      [Process.getrlimit(:NOFILE), hard]
    end
    assert_equal [result[1], result[1]], result[0]
  end
end
