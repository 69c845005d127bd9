# frozen_string_literal: true

# The keeper on real processes and a real pseudo-terminal: this test plays
# the monitor (the keeper's socket's other end) and the client (the
# terminal's master). The executor's pty test (test_executor.rb) has the
# whole of a call's session; these try the keeper's parts alone.

require "fileutils"
require "io/wait"
require "minitest/autorun"
require_relative "process_helpers"
require "pty"
require "socket"
require "tmpdir"

require "prefork_interp/keeper"
require "prefork_interp/sys"
require "prefork_interp/wire"

class TestKeeper < Minitest::Test
  include ProcessHelpers
  Sys = PreforkInterp::Sys
  Wire = PreforkInterp::Wire
  Keeper = PreforkInterp::Keeper

  SIG = Signal.list

  # The log: each message a line on an IO.
  class FakeLog
    def initialize(out)
      @out = out
    end

    def call(priority, message)
      @out.syswrite("#{priority} #{message}\n")
    end
  end

  def setup
    @dir = Dir.mktmpdir
    @children = []
  end

  def teardown
    @children.each do |pid|
      Process.kill(:KILL, pid)
      Process.waitpid(pid)
    rescue SystemCallError
      nil
    end
    FileUtils.remove_entry(@dir)
  end

  def spawn_child(&block)
    pid = fork(&block)
    @children << pid
    pid
  end

  # A program standing for the client's keeper program: it writes what
  # it got (arguments, fd 0, fd 1, its blocked signals, its open fds)
  # to OUT.
  def recording_program
    path = File.join(@dir, "keeper")
    File.write(path, <<~'SH')
      #!/bin/sh
      fd0=$(readlink /proc/$$/fd/0)
      fd1=$(readlink /proc/$$/fd/1)
      fds=$(for fd in /proc/$$/fd/*; do printf '%s=%s ' "${fd##*/}" "$(readlink "$fd")"; done)
      blocked=$(grep SigBlk /proc/$$/status)
      printf '%s\n' "$*" "$fd0" "$fd1" "$blocked" "$fds" > "$OUT"
    SH
    File.chmod(0o755, path)
    path
  end

  def test_exec_program
    out = File.join(@dir, "out")
    master, slave = PTY.open
    monitor, monitor_theirs = Socket.pair(:UNIX, :STREAM)
    pid = spawn_child do
      Sys.sigmask(Sys::SIG_BLOCK, [SIG["CHLD"]])
      ENV["OUT"] = out
      Keeper.exec_program(recording_program.b, 4242, monitor_theirs, slave.fileno)
      exit!(99)
    end
    [slave, monitor_theirs].each(&:close)
    assert wait_child(pid).success?
    args, fd0, fd1, blocked, fds = File.read(out).lines.map(&:chomp)
    assert_equal "--session-keeper 4242", args
    assert_match(/\Asocket:/, fd0)
    assert_match(%r{\A/dev/pts/}, fd1)
    bits = blocked[/\h+\z/].to_i(16)
    assert_equal 1, bits[SIG["CHLD"] - 1], blocked
    # Nothing of ours but those (Ruby opens its own close-on-exec): no
    # other socket, terminal, or the master. (Others there are the test
    # run's own, and the shell's.)
    others = fds.split.reject { |entry| entry.start_with?("0=", "1=") }
    assert(others.none? { |entry| entry.match?(%r{=(socket:|/dev/pt)}) }, fds)
  ensure
    master&.close
    monitor&.close
  end

  def test_exec_program_failing_leaves_null
    report_r, report_w = IO.pipe
    master, slave = PTY.open
    monitor, monitor_theirs = Socket.pair(:UNIX, :STREAM)
    pid = spawn_child do
      Keeper.exec_program(File.join(@dir, "missing").b, 4242, monitor_theirs, slave.fileno)
      report_w.write([0, 1].map { |fd| File.readlink("/proc/self/fd/#{fd}") }.join(" "))
      exit!(0)
    end
    [slave, monitor_theirs, report_w].each(&:close)
    assert_equal "/dev/null /dev/null", read_to_eof(report_r)
    assert wait_child(pid).success?
  ensure
    master&.close
    monitor&.close
  end

  # Anything that breaks the keeper's loop is logged, and it ends, 127.
  def test_keep_failing_is_logged
    log_r, log_w = IO.pipe
    monitor, monitor_theirs = Socket.pair(:UNIX, :STREAM)
    pid = spawn_child do
      Sys.sigmask(Sys::SIG_BLOCK, [SIG["CHLD"]])
      # Not our child: waitid says ECHILD.
      Keeper.keep(1, monitor_theirs, 0, FakeLog.new(log_w))
    end
    [log_w, monitor_theirs].each(&:close)
    assert_equal 127, wait_child(pid).exitstatus
    assert_match(/\A3 keeper of 1: #<Errno::ECHILD/, read_to_eof(log_r))
  ensure
    monitor&.close
  end

  # A session as the executor makes one, then the keeper: 'f' moves the
  # script's group to the terminal's background (0) and foreground (1);
  # after the monitor's EOF it still watches the script, and at its end
  # SIGINTs what is left in its group, reaps it, and exits 0 (its 'x' to
  # nobody).
  def test_keep_foreground_and_end
    master, slave = PTY.open
    monitor, monitor_theirs = Socket.pair(:UNIX, :STREAM)
    go_r, go_w = IO.pipe
    report_r, report_w = IO.pipe
    keeper = spawn_child do
      Process.setsid
      Sys.take_controlling_terminal(slave.fileno)
      Sys.sigmask(Sys::SIG_BLOCK, Sys::TERMINAL_SIGNALS | [SIG["CHLD"]])
      script = fork do
        Process.setpgid(0, 0)
        Sys.tcsetpgrp(slave.fileno, Process.pid)
        # Its mask back, as initialisation_complete gives it.
        Sys.sigmask(Sys::SIG_SETMASK, [])
        # In the script's group; deaf to the SIGHUP the keeper's exit
        # sends the terminal's foreground group: only SIGINT ends it.
        left = fork do
          trap("HUP", "IGNORE")
          exec("sleep", "30")
        end
        report_w.write("#{Process.pid} #{left}\n")
        go_r.read(1)
        exit!(5)
      end
      [go_r, report_w].each(&:close)
      Keeper.keep(script, monitor_theirs, slave.fileno, FakeLog.new($stderr))
    end
    [go_r, report_w, monitor_theirs, slave].each(&:close)
    assert report_r.wait_readable(10)
    script, left = report_r.gets.split.map(&:to_i)
    Sys.send_all(monitor, Wire.encode_frame(Wire::KEEPER_FOREGROUND, 0))
    assert_foreground(keeper, master)
    Sys.send_all(monitor, Wire.encode_frame(Wire::KEEPER_FOREGROUND, 1))
    assert_foreground(script, master)
    monitor.close
    go_w.write("x")
    assert_equal 0, wait_child(keeper).exitstatus
    assert_gone(left)
    # Every copy of the slave is closed: the master reads EIO.
    assert_raises(Errno::EIO) { loop { master.readpartial(100) } }
  ensure
    master&.close
  end

  def assert_foreground(group, master)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
    sleep 0.01 until Sys.tcgetpgrp(master.fileno) == group ||
                     Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
    assert_equal group, Sys.tcgetpgrp(master.fileno)
  end

  # pid has died (gone, or a zombie its new parent has not reaped).
  def assert_gone(pid)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 10
    loop do
      state = File.read("/proc/#{pid}/stat")[/\) (\S)/, 1]
      break if state == "Z"

      flunk "#{pid} still runs" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      sleep 0.01
    rescue Errno::ENOENT, Errno::ESRCH
      break
    end
  end

  # With another thread in the keeper's process, made before SIGCHLD was
  # blocked (as Ruby 3.3's timer thread is, in every process): the kernel
  # may deliver SIGCHLD there, not to the signalfd; the keeper still sees
  # the script end. (A race: tried a few times.)
  def test_keep_with_another_thread
    5.times do |round|
      monitor, monitor_theirs = Socket.pair(:UNIX, :STREAM)
      keeper = spawn_child do
        Thread.new { sleep }
        sleep 0.05 # (its native thread made)
        Sys.sigmask(Sys::SIG_BLOCK, [SIG["CHLD"]])
        script = fork do
          sleep 0.1
          exit!(round)
        end
        Keeper.keep(script, monitor_theirs, 0, FakeLog.new($stderr))
      end
      monitor_theirs.close
      assert_equal Wire.encode_frame(Wire::KEEPER_STATUS, round << 8), read_exactly(monitor, 5, 3)
      assert_equal 0, wait_child(keeper).exitstatus
      monitor.close
    end
  end

  # The keeper's last words: 'x', on fd 0, with nothing else open.
  def test_say_end
    monitor, monitor_theirs = Socket.pair(:UNIX, :STREAM)
    extra = File.open(File::NULL)
    pid = spawn_child { Keeper.say_end(monitor_theirs, 3 << 8) }
    monitor_theirs.close
    extra.close
    assert_equal Wire.encode_frame(Wire::KEEPER_STATUS, 3 << 8), read_exactly(monitor, 5)
    assert wait_child(pid).success?
  ensure
    monitor&.close
  end
end
