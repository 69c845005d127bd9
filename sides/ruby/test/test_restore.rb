# frozen_string_literal: true

# The monitor's side of capability "restore" (man/prefork-interp.7, the
# 'R' frame): a real pseudo-terminal stands for the caller's terminal, a
# socketpair for the call socket, a child process in a group of its own
# for the script. The client's frames go through the monitor's own
# reading (hear_client, send_status), as they would after the executor's
# 'r'. As the Python side's tests/test_restore.py, test for test (and that
# the fds kept are no garbage's to close); then the spares
# (TestMonitorSpares: forked in advance, handed the server's calls, forked
# for a call when none is idle, let go at the server's EOF), and the
# monitor's other messages on a call (TestMonitorFrames): the executor's
# 'r', the keeper's 't' and 'x', the client's 'S' and 'F', 'd' and 'h' to
# the server, and the grace of an abandoned call.
#
#     cd sides/ruby && ruby -Ilib -Itest test/test_restore.rb

require "fiddle"
require "io/console"
require "io/wait"
require "minitest/autorun"
require_relative "process_helpers"
require "pty"
require "rbconfig"
require "socket"
require "timeout"
require_relative "../lib/prefork_interp/monitor"

# A terminal's settings as Python's termios module has them, through the
# C library (Ruby has no termios): [iflag, oflag, cflag, lflag, ispeed,
# ospeed, cc], cc an Array of Integers; as a client reads and sets them.
module TestTermios
  # glibc's struct termios on x86_64 Linux: four u32 flag words, c_line,
  # c_cc[32], padding, c_ispeed, c_ospeed (60 bytes).
  NCCS = 32
  SIZE = 60
  CC_OFFSET = 17
  TCSANOW = 0
  # Indexes in cc and bits of lflag (asm-generic/termbits.h).
  VINTR = 0
  VTIME = 5
  VMIN = 6
  ISIG = 0o1
  ICANON = 0o2

  LIBC = Fiddle::Handle::DEFAULT
  INT = Fiddle::TYPE_INT
  VOIDP = Fiddle::TYPE_VOIDP
  TCGETATTR = Fiddle::Function.new(LIBC["tcgetattr"], [INT, VOIDP], INT)
  TCSETATTR = Fiddle::Function.new(LIBC["tcsetattr"], [INT, INT, VOIDP], INT)
  CFGETISPEED = Fiddle::Function.new(LIBC["cfgetispeed"], [VOIDP], INT)
  CFGETOSPEED = Fiddle::Function.new(LIBC["cfgetospeed"], [VOIDP], INT)
  CFSETISPEED = Fiddle::Function.new(LIBC["cfsetispeed"], [VOIDP, INT], INT)
  CFSETOSPEED = Fiddle::Function.new(LIBC["cfsetospeed"], [VOIDP, INT], INT)

  module_function

  def raw_get(terminal)
    termios = "\0".b * SIZE
    raise SystemCallError.new("tcgetattr", Fiddle.last_error) if TCGETATTR.call(terminal, termios) == -1

    termios
  end

  def get(terminal)
    termios = raw_get(terminal)
    termios.unpack("L4") + [CFGETISPEED.call(termios), CFGETOSPEED.call(termios),
                            termios.byteslice(CC_OFFSET, NCCS).bytes]
  end

  def set(terminal, attrs)
    termios = raw_get(terminal)
    termios[0, 16] = attrs[0, 4].pack("L4")
    termios[CC_OFFSET, NCCS] = attrs[6].pack("C*")
    CFSETISPEED.call(termios, attrs[4])
    CFSETOSPEED.call(termios, attrs[5])
    raise SystemCallError.new("tcsetattr", Fiddle.last_error) if TCSETATTR.call(terminal, TCSANOW, termios) == -1
  end
end

# What the monitor needs of the server's processes, and its log.
module MonitorTesting
  include ProcessHelpers

  Monitor = PreforkInterp::Monitor
  Wire = PreforkInterp::Wire
  Sys = PreforkInterp::Sys

  Settings = Struct.new(:log, :spare_handlers, :interrupt_grace, :titles)

  # The monitor's log: what it said, in order.
  class Logged
    attr_reader :messages

    def initialize
      @messages = []
    end

    def call(_priority, message)
      @messages << message
    end

    def reopen; end
  end

  def make_monitor(control = nil, grace: nil)
    @logged = Logged.new
    @monitor = Monitor::Monitor.new(control, Settings.new(@logged, 1, grace, RecordedTitles.new))
    # A monitor that blocks where it must not fails the test.
    main = Thread.current
    @watchdog = Thread.new do
      sleep 30
      main.raise(Timeout::Error, "stuck for 30 s")
    end
  end

  # The monitor ignores the signals it forwards: not this process's.
  def unmake_monitor
    @watchdog&.kill
    @monitor&.saved&.each { |sig, old| trap(sig, old) }
  end

  def ready_within(io, seconds = 5)
    !io.wait_readable(seconds).nil?
  end

  # What arrives on sock within 5 s (at most length bytes).
  def receive(sock, length)
    assert ready_within(sock), "nothing came"
    sock.recv(length).to_s # EOF: "" (Ruby 3.3: nil)
  end

  def assert_not_open(number)
    assert_raises(Errno::EBADF) { IO.for_fd(number, autoclose: false) }
  end

  def assert_open(number)
    assert IO.for_fd(number, autoclose: false)
  end

  # What a client sends of tcgetattr's list.
  def wire_settings(attrs)
    Wire::TerminalSettings.new(*attrs[0, 6], attrs[6])
  end
end

# The 'R' frame, on a real pseudo-terminal (test_restore.py's Restore).
class TestRestore < Minitest::Test
  include MonitorTesting

  # The script: tells the test it is ready, then, at the signal the
  # monitor sends when the client goes away, what its terminal (the fd
  # numbered ARGV[0]) looked like at that moment: whether it was back in
  # canonical mode (TCGETS, the kernel's struct termios: c_lflag at 12,
  # ICANON 2).
  SCRIPT = <<~'RUBY'
    terminal = IO.for_fd(Integer(ARGV[0]), autoclose: false)
    said = lambda do
      termios = "\0".b * 64
      terminal.ioctl(0x5401, termios)
      $stdout.syswrite(termios.unpack1("@12L").anybits?(2) ? "canonical\n" : "raw\n")
      exit!(0)
    end
    trap("HUP") { said.call }
    trap("INT") { said.call }
    trap("WINCH") { $stdout.syswrite("winch\n") }
    $stdout.syswrite("ready\n")
    # Gone with the test, should it be killed (SIGTERM is ignored here).
    parent = Process.ppid
    sleep 0.5 while Process.ppid == parent
    exit!(1)
  RUBY

  def setup
    make_monitor
    @master, @terminal = PTY.open
    @found = TestTermios.get(@terminal.fileno)
    assert @found[3].anybits?(TestTermios::ICANON)
    @client, conn = Socket.pair(:UNIX, :STREAM)
    # A group of its own, as an executor's.
    @script_out, out = IO.pipe
    @script = Process.spawn(RbConfig.ruby, "-e", SCRIPT, @terminal.fileno.to_s,
                            out: out, @terminal => @terminal, pgroup: true)
    out.close
    assert ready_within(@script_out), "the script never started"
    assert_equal "ready\n", @script_out.gets
    spare = Monitor::Spare.new(@script, nil, nil, nil)
    @call = Monitor::Call.new(spare, conn)
    @call.phase = Monitor::RUNNING
    @call.extended = true
    @call.script = @script # a terminal of its own: SIGHUP
  end

  def teardown
    @call&.forget_terminal
    @call&.conn&.close
    reap
    @client&.close
    @terminal&.close
    @master&.close
    unmake_monitor
  end

  def reap
    return if @script.nil?

    begin
      Process.kill(:KILL, @script) if Process.waitpid(@script, Process::WNOHANG).nil?
      Process.waitpid(@script)
    rescue Errno::ECHILD
      # Reaped already.
    end
    @script_out.close
  end

  # As the client does: the terminal raw, then the settings it found and
  # those it left, as the terminal has them.
  def restore_message
    found = wire_settings(TestTermios.get(@terminal.fileno))
    raw
    Wire.encode_restore(found, wire_settings(TestTermios.get(@terminal.fileno)))
  end

  # The client's 'R', with the terminal (or what is sent as that); the
  # monitor reads it (if hear).
  def make_raw(terminal = nil, hear: true)
    message = restore_message
    send_data(Wire.encode_frame(Wire::FRAME_RESTORE, message.bytesize) + message)
    send_terminal(terminal || @terminal)
    self.hear if hear
  end

  def send_terminal(terminal)
    @client.sendmsg(Wire::FD_MESSAGE_BYTE, 0, nil, Socket::AncillaryData.unix_rights(terminal))
  end

  # The terminal raw, as a full-screen program may leave it: the control
  # characters changed too.
  def raw
    @terminal.raw!
    change(chars: { TestTermios::VINTR => 1, TestTermios::VMIN => 0, TestTermios::VTIME => 5 })
  end

  def change(lflag: 0, chars: {})
    attrs = TestTermios.get(@terminal.fileno)
    attrs[3] |= lflag
    chars.each { |index, value| attrs[6][index] = value }
    TestTermios.set(@terminal.fileno, attrs)
    TestTermios.get(@terminal.fileno)
  end

  def send_data(data)
    @client.write(data)
  end

  # What the monitor does when select finds the call socket readable.
  def hear
    assert ready_within(@call.conn)
    @monitor.hear_client(@call)
  end

  def client_gone
    @client.close
    hear
    assert_equal Monitor::ABANDONED, @call.phase
  end

  # What the script found on its terminal at the monitor's signal (nil:
  # it said nothing).
  def script_saw(timeout = 5)
    return nil unless ready_within(@script_out, timeout)

    @script_out.gets
  end

  def terminal_now
    TestTermios.get(@terminal.fileno)
  end

  def test_client_gone_puts_the_settings_back_before_the_signal
    make_raw
    kept = @call.restore[2]
    refute_equal @found, terminal_now
    client_gone
    assert_equal @found, terminal_now
    assert_equal "canonical\n", script_saw
    assert_nil @call.restore
    assert_not_open kept
    assert_empty @logged.messages
  end

  def test_a_shell_that_took_its_terminal_back_keeps_its_mode
    # As bash's readline does once it has seen the client die: its own
    # mode (here: signals on), which the monitor leaves alone.
    make_raw
    shells = change(lflag: TestTermios::ISIG)
    client_gone
    assert_equal shells, terminal_now
    assert_equal "raw\n", script_saw
    assert_nil @call.restore
  end

  def test_a_control_character_set_since_keeps_the_terminal
    make_raw
    shells = change(chars: { TestTermios::VINTR => 3 })
    client_gone
    assert_equal shells, terminal_now
  end

  def test_settings_and_fd_in_pieces
    message = restore_message
    frame = Wire.encode_frame(Wire::FRAME_RESTORE, message.bytesize)
    # An 'S' first, in the same read: frames before an 'R' still act.
    send_data(Wire.encode_frame(Wire::FRAME_SIGNAL, Signal.list.fetch("WINCH")) + frame.byteslice(0, 3))
    hear
    assert_equal "winch\n", script_saw
    send_data(frame.byteslice(3..) + message.byteslice(0, 10))
    hear
    send_data(message.byteslice(10..))
    hear
    assert_nil @call.restore
    assert_equal Monitor::RUNNING, @call.phase
    send_terminal(@terminal)
    hear
    refute_nil @call.restore
    client_gone
    assert_equal @found, terminal_now
    assert_equal "canonical\n", script_saw
  end

  def test_nothing_to_put_back_after_r_zero
    make_raw
    kept = @call.restore[2]
    send_data(Wire.encode_frame(Wire::FRAME_RESTORE, 0))
    hear
    assert_nil @call.restore
    assert_not_open kept
    raw = terminal_now
    client_gone
    assert_equal raw, terminal_now
    assert_equal "raw\n", script_saw
  end

  def test_the_terminal_kept_is_no_garbage
    # The fd is the call's, not the IO object's Ruby made of it.
    make_raw
    GC.start
    IO.for_fd(@call.restore[2], autoclose: false)
    client_gone
    assert_equal @found, terminal_now
  end

  def test_a_second_r_replaces_the_first
    make_raw
    first = @call.restore[2]
    make_raw # from raw: the second settings to put back are raw
    assert_not_open first
    raw = terminal_now
    client_gone
    assert_equal raw, terminal_now
  end

  # The script's status (after its keeper's 'x') to the client, which
  # still has its terminal raw: sent is not received, so the monitor
  # keeps what to put back, the call ending, and leaves the terminal
  # alone. [the terminal's fd kept, the terminal raw]
  def status_sent
    make_raw
    kept = @call.restore[2]
    raw = terminal_now
    @call.phase = Monitor::REPORTED
    @monitor.send_status(@call, 0)
    assert_equal Wire.encode_frame(Wire::FRAME_STATUS, 0), receive(@client, 5)
    assert_equal [@call], @monitor.ending
    assert_equal kept, @call.restore[2]
    assert_open kept
    refute @call.conn.closed?
    assert_equal raw, terminal_now
    [kept, raw]
  end

  # What the monitor does when select finds an ending call's socket
  # readable.
  def hear_ending
    assert ready_within(@call.conn)
    @monitor.hear_ending(@call)
  end

  def test_status_sent_then_r_zero_drops_them
    kept, raw = status_sent
    # The client has restored its terminal, and says so.
    send_data(Wire.encode_frame(Wire::FRAME_RESTORE, 0))
    hear_ending
    assert_empty @monitor.ending
    assert_nil @call.restore
    assert_not_open kept
    assert @call.conn.closed?
    assert_equal raw, terminal_now
    assert_empty @logged.messages
  end

  def test_client_gone_after_its_status_puts_them_back
    # Killed as the script ended: its pseudo-terminal's master closed (the
    # script's hang-up) before its call socket, which took the status.
    kept, = status_sent
    @client.close
    hear_ending
    assert_empty @monitor.ending
    assert_equal @found, terminal_now
    assert_nil @call.restore
    assert_not_open kept
    assert @call.conn.closed?
    # No signal: the script has ended.
    assert_nil script_saw(0.5)
    assert_empty @logged.messages
  end

  def test_a_signal_after_the_status_goes_nowhere
    kept, raw = status_sent
    send_data(Wire.encode_frame(Wire::FRAME_SIGNAL, Signal.list.fetch("WINCH")))
    hear_ending
    assert_equal [@call], @monitor.ending
    assert_equal kept, @call.restore[2]
    assert_open kept
    assert_equal raw, terminal_now
    assert_nil script_saw(0.5)
    # Still held: the client's end puts them back.
    @client.close
    hear_ending
    assert_empty @monitor.ending
    assert_equal @found, terminal_now
  end

  def test_an_r_after_the_status_replaces_the_first
    first, = status_sent
    make_raw(hear: false) # from raw: the second settings to put back are raw
    raw = terminal_now
    # Its settings and its terminal may come in two reads.
    hear_ending while @call.restore[2] == first
    assert_equal [@call], @monitor.ending
    assert_not_open first
    @client.close
    hear_ending
    assert_empty @monitor.ending
    assert_equal raw, terminal_now
  end

  def test_a_bad_r_after_the_status_is_the_client_gone
    status_sent
    send_data(Wire.encode_frame(Wire::FRAME_RESTORE, Wire::MAX_RESTORE_LEN + 1))
    hear_ending
    assert_empty @monitor.ending
    assert_equal @found, terminal_now
    assert_equal 1, @logged.messages.length
  end

  # In a new executor-to-be forked while the call is ending: whether the
  # call's socket and its caller's terminal are closed there.
  def assert_forked_holds_nothing(kept)
    conn = @call.conn.fileno
    said, says = IO.pipe
    pid = Process.fork do
      @monitor.close_in_child([])
      still = [kept, conn].reject do |fd|
        IO.for_fd(fd, autoclose: false)
        false
      rescue SystemCallError
        true
      end
      says.syswrite(still.empty? ? "closed" : "open: #{still}")
    ensure
      Process.exit!(0)
    end
    says.close
    Process.waitpid(pid)
    assert_equal "closed", said.read
  ensure
    said&.close
  end

  def test_a_new_executor_holds_nothing_of_an_ending_call
    # Its executor reaped: the call is the monitor's ending only.
    kept, = status_sent
    assert_forked_holds_nothing(kept)
  end

  def test_a_new_executor_holds_nothing_of_a_call_ending_before_its_reaping
    # Its keeper not yet reaped: the call is in calls too (closed once).
    kept, = status_sent
    @call.pidfd = Sys.pidfd_open(@script)
    pidfd = @call.pidfd
    @monitor.calls[@script] = @call
    assert_forked_holds_nothing(kept)
  ensure
    IO.for_fd(pidfd).close unless pidfd.nil?
  end

  def test_the_monitor_stays_while_a_call_is_ending
    # The server gone and the call's executor reaped, the monitor still
    # has the terminal to put back should the client go: it exits only
    # then. In a child, which is the monitor here.
    status_sent
    @monitor.control = nil
    pid = Process.fork do
      @client.close
      @monitor.run
    ensure
      Process.exit!(1)
    end
    sleep 0.5
    assert_nil Process.waitpid(pid, Process::WNOHANG), "the monitor left"
    @client.close
    assert_equal 0, Process.waitpid2(pid)[1].exitstatus
    assert_equal @found, terminal_now
  end

  def test_status_after_the_client_went_puts_them_back
    # The client SIGKILLed: its terminal's hang-up ends the script, and
    # the keeper's 'x' is handled before the client's EOF (and its 'R'
    # too) is read.
    make_raw(hear: false)
    @client.close
    @monitor.send_status(@call, 0)
    assert_equal @found, terminal_now
    assert_nil @call.restore
  end

  def test_status_with_an_r_unread_keeps_it
    make_raw(hear: false)
    raw = terminal_now
    # Signals unread when the script has ended go nowhere: its pid may be
    # another process's.
    send_data(Wire.encode_frame(Wire::FRAME_SIGNAL, Signal.list.fetch("WINCH")))
    @monitor.send_status(@call, 0)
    assert_equal Wire.encode_frame(Wire::FRAME_STATUS, 0), receive(@client, 5)
    assert_equal [@call], @monitor.ending
    refute_nil @call.restore
    assert_equal [], @call.fds
    assert_equal raw, terminal_now
    assert_nil script_saw(0.5)
  end

  def test_settings_that_cannot_go_back_are_no_error
    # tcgetattr fails on what came as the terminal (as on one revoked or
    # gone): nothing goes back, the signal still goes.
    not_a_terminal, other_end = IO.pipe
    make_raw(not_a_terminal)
    not_a_terminal.close
    kept = @call.restore[2]
    client_gone
    assert_equal "raw\n", script_saw
    assert_nil @call.restore
    assert_not_open kept
    assert_empty @logged.messages
  ensure
    other_end&.close
  end

  def test_a_new_executor_holds_no_terminal
    # The monitor forks executors-to-be while calls run: a script there
    # must not keep another caller's terminal open.
    make_raw
    kept = @call.restore[2]
    @call.pidfd = Sys.pidfd_open(@script)
    pidfd = @call.pidfd
    @monitor.calls[@script] = @call
    said, says = IO.pipe
    pid = Process.fork do
      @monitor.close_in_child([])
      begin
        IO.for_fd(kept, autoclose: false)
        says.syswrite("open")
      rescue SystemCallError
        says.syswrite("closed")
      end
    ensure
      Process.exit!(0)
    end
    says.close
    Process.waitpid(pid)
    assert_equal "closed", said.read
  ensure
    said&.close
    IO.for_fd(pidfd).close unless pidfd.nil?
  end

  # An 'R' of this length, with these bytes: the call ends as if the
  # client had gone (the script sees its terminal as the test left it),
  # and the monitor says why.
  def bad_message(length, message = "".b, saw = "canonical\n")
    send_data(Wire.encode_frame(Wire::FRAME_RESTORE, length) + message)
    hear
    assert_equal Monitor::ABANDONED, @call.phase
    assert_equal ["call of executor #{@script}: terminal restore message of #{length} bytes " \
                  "(a count C, then twice 24 + C, C at most 64)"], @logged.messages
    assert_equal saw, script_saw
  end

  def test_a_message_too_short_is_refused_before_its_bytes
    bad_message(1 + (2 * Wire::TERMINAL_SETTINGS_FIXED) - 1)
  end

  def test_a_message_too_long_is_refused_before_its_bytes
    bad_message(Wire::MAX_RESTORE_LEN + 1)
  end

  def test_4_gib_are_refused_before_their_bytes
    bad_message((2**32) - 1)
  end

  def test_a_message_whose_count_disagrees_is_refused
    message = restore_message
    bad_message(message.bytesize, [message.getbyte(0) + 1].pack("C") + message.byteslice(1..), "raw\n")
  end

  def test_settings_without_the_terminal_are_the_client_gone
    message = restore_message
    send_data([Wire.encode_frame(Wire::FRAME_RESTORE, message.bytesize), message, "\0"].join)
    hear
    assert_equal Monitor::ABANDONED, @call.phase
    assert_equal 1, @logged.messages.length
    assert_includes @logged.messages[0], "without the caller's terminal"
  end
end

# The spares: forked in advance (fork_executor), handed the calls the
# server sends (take_call), forked for a call when none is idle, let go
# at the server's EOF, reaped.
class TestMonitorSpares < Minitest::Test
  include MonitorTesting

  def setup
    @server, control = Socket.pair(:UNIX, :STREAM)
    make_monitor(control)
    @children = []
  end

  def teardown
    @children.each do |pid|
      Process.kill(:KILL, pid)
      Process.waitpid(pid)
    rescue Errno::ESRCH, Errno::ECHILD
      # Reaped by the monitor.
    end
    @server.close
    @monitor.control&.close
    unmake_monitor
  end

  # In a new executor-to-be (executor: what fork_executor or serve
  # returned there): takes its call as an executor does, tells its client
  # what it is and whether the monitor's control is closed there, exits
  # (status: exit_status).
  def be_executor(executor, exit_status = 0)
    said = [executor.class.name, @monitor.control.nil? || @monitor.control.closed?,
            @monitor.settings.titles.roles]
    _, _, _, *controls = executor.handover.recvmsg(1, 0, 64, scm_rights: true)
    controls.first.unix_rights.first.write("#{said.inspect}\n") unless controls.empty?
  ensure
    Process.exit!(exit_status)
  end

  # A spare, forked; its child (which takes a call) exits with
  # exit_status. It closes the server's end of control too (fork_executor's
  # close), as the server's process is not the monitor's.
  def fork_spare(exit_status = 0)
    spare, executor = @monitor.fork_executor(@server)
    be_executor(executor, exit_status) unless executor.nil?
    refute_nil spare
    @children << spare.pid
    spare
  end

  # A call sent by the server: its client's end.
  def send_call
    client, conn = Socket.pair(:UNIX, :STREAM)
    @server.sendmsg(Wire::FD_MESSAGE_BYTE, 0, nil, Socket::AncillaryData.unix_rights(conn))
    conn.close
    client
  end

  def serve_until(&done)
    until done.call
      executor = @monitor.serve(5)
      be_executor(executor) unless executor.nil?
    end
  end

  def control_said
    assert ready_within(@server), "the server was told nothing"
    @server.recv(16).to_s
  end

  def test_an_idle_spare_takes_the_call
    spare = fork_spare
    @monitor.idle << spare
    client = send_call
    @monitor.serve(5)
    assert_empty @monitor.idle
    assert_equal Monitor::WAITING, @monitor.calls.fetch(spare.pid).phase
    assert spare.handover.closed?
    assert ready_within(client)
    assert_equal '["PreforkInterp::Executor::Executor", true, ["handler"]]', client.gets.chomp
    # It exits without its 'r': 'h', and its client sees EOF.
    serve_until { @monitor.calls.empty? }
    assert_equal Wire::MONITOR_CALL_DROPPED, control_said
    assert_nil client.gets
    assert_empty @logged.messages
  ensure
    client&.close
  end

  def test_with_no_spare_idle_one_is_forked_for_the_call
    client = send_call
    serve_until { !@monitor.calls.empty? }
    @children.concat(@monitor.calls.keys)
    assert ready_within(client)
    assert_equal '["PreforkInterp::Executor::Executor", true, ["handler"]]', client.gets.chomp
  ensure
    client&.close
  end

  def test_run_forks_the_spares_first
    # run forks spare_handlers (1) spares, then serves: the server's EOF
    # lets them go, and the monitor exits once they are reaped. In a child,
    # which is the monitor here.
    said, says = IO.pipe
    pid = Process.fork do
      @server.close
      said.close
      executor = @monitor.run
      says.syswrite("spare #{executor.class.name}\n")
      says.close
      be_executor(executor)
    ensure
      Process.exit!(1)
    end
    @children << pid
    says.close
    assert ready_within(said)
    assert_equal "spare PreforkInterp::Executor::Executor\n", said.gets
    @server.close
    assert_equal 0, Process.waitpid2(pid)[1].exitstatus
  ensure
    said&.close
  end

  def test_a_call_without_its_socket_is_h
    @server.write(Wire::FD_MESSAGE_BYTE)
    @monitor.serve(5)
    assert_equal Wire::MONITOR_CALL_DROPPED, control_said
    assert_equal ["a call came without its socket"], @logged.messages
  end

  def test_the_servers_eof_lets_the_spares_go
    spare = fork_spare
    @monitor.idle << spare
    @server.close
    @monitor.serve(5)
    assert_nil @monitor.control
    assert_nil spare.handover
    # It leaves at its handover's EOF, quietly.
    serve_until { @monitor.idle.empty? }
    assert_empty @logged.messages
  end

  def test_an_idle_spare_that_dies_is_logged
    # While the server is there, even with status 0.
    spare = fork_spare
    @monitor.idle << spare
    # Its handover, closed, as a spare's that has died.
    spare.handover.close
    serve_until { @monitor.idle.empty? }
    assert_equal ["idle executor #{spare.pid} exited with status 0"], @logged.messages
  end
end

# The monitor's other messages on a call in flight, on real sockets and
# processes: the executor's 'r' (with the script's pid on a terminal of
# its own), the keeper's 't' and 'x', the client's 'S' and 'F', the
# server's 'd' and 'h' (control), the grace of an abandoned call, the
# order serve handles what select found in.
class TestMonitorFrames < Minitest::Test
  include MonitorTesting

  # The executor: a child in a group of its own that says it is ready,
  # waits for a line on its stdin (then exits 3), or is signalled (SIGINT:
  # exits 9).
  EXECUTOR = "trap('INT') { exit!(9) }; $stdout.syswrite(\"ready\\n\"); $stdin.gets; exit!(3)"
  # One that ignores SIGINT.
  DEAF_EXECUTOR = "trap('INT', 'IGNORE'); $stdout.syswrite(\"ready\\n\"); $stdin.gets; exit!(3)"

  def setup
    @server, control = Socket.pair(:UNIX, :STREAM)
    make_monitor(control, grace: 0.2)
    @client, @conn = Socket.pair(:UNIX, :STREAM)
    @from_executor, @executor = Socket.pair(:UNIX, :STREAM)
    start_executor(EXECUTOR)
  end

  # A call in flight whose executor runs code.
  def start_executor(code)
    @executor_in, @feed = IO.pipe
    said, out = IO.pipe
    @pid = Process.spawn(RbConfig.ruby, "-e", code, in: @executor_in, out: out, pgroup: true)
    out.close
    assert ready_within(said), "the executor never started"
    assert_equal "ready\n", said.gets
    said.close
    @call = Monitor::Call.new(Monitor::Spare.new(@pid, Sys.pidfd_open(@pid), nil, @from_executor),
                              @conn)
    @monitor.calls[@pid] = @call
  end

  # Kills the call's executor, which the monitor has not reaped.
  def stop_executor
    if @monitor.calls.key?(@pid)
      @monitor.calls.delete(@pid)
      IO.for_fd(@call.pidfd).close
      Process.kill(:KILL, @pid)
      Process.waitpid(@pid)
    end
    @executor_in.close
    @feed.close
  end

  def teardown
    stop_executor unless @pid.nil?
    [@server, @client, @conn, @from_executor, @executor, @monitor&.control].each { |io| io&.close }
    unmake_monitor
  end

  def control_said
    assert ready_within(@server), "the server was told nothing"
    @server.recv(16).to_s
  end

  # The executor's 'r' as serve finds it.
  def executor_ready(byte, script = nil)
    @executor.write(Wire.encode_executor_ready(byte, script))
    @monitor.serve(5)
  end

  def test_v1_call_runs_then_its_executor_exits
    executor_ready(Wire::REQUEST_BYTE)
    assert_equal Monitor::RUNNING, @call.phase
    refute @call.extended
    assert @from_executor.closed?
    @feed.puts("end")
    # Its pidfd says it has gone: 'd' to the server, then its v1 status.
    @monitor.serve(5) while @monitor.calls.key?(@pid)
    assert_equal Wire::MONITOR_CALL_ENDED, control_said
    assert_equal Wire.encode_status(3 << 8), receive(@client, 4)
    assert @conn.closed?
  end

  def test_executor_that_fails_before_its_call_is_h
    @executor.close
    @feed.puts("end")
    @monitor.serve(5) while @monitor.calls.key?(@pid)
    assert_equal Wire::MONITOR_CALL_DROPPED, control_said
    assert_equal ["executor #{@pid} failed before its call: it exited with status 3"],
                 @logged.messages
    # Its client sees EOF.
    assert_equal "", receive(@client, 4)
  end

  def test_a_signal_goes_to_the_calls_group
    executor_ready(Wire::REQUEST_BYTE_EXTENDED)
    assert @call.extended
    @client.write(Wire.encode_frame(Wire::FRAME_SIGNAL, Signal.list.fetch("INT")))
    @monitor.serve(5)
    @monitor.serve(5) while @monitor.calls.key?(@pid)
    assert_equal Wire::MONITOR_CALL_ENDED, control_said
    assert_equal Wire.encode_frame(Wire::FRAME_STATUS, 9 << 8), receive(@client, 5)
  end

  def test_select_leaves_the_pidfd_open
    # It looks at the pidfd through IO objects: the fd stays the call's.
    @monitor.serve(0.01)
    GC.start
    IO.for_fd(@call.pidfd, autoclose: false)
  end

  def test_a_signal_not_forwardable_goes_nowhere
    executor_ready(Wire::REQUEST_BYTE_EXTENDED)
    @client.write(Wire.encode_frame(Wire::FRAME_SIGNAL, Signal.list.fetch("KILL")))
    @monitor.serve(5)
    assert_nil Process.waitpid(@pid, Process::WNOHANG)
  end

  def test_client_gone_is_sigint_then_sigkill_after_the_grace
    stop_executor
    start_executor(DEAF_EXECUTOR)
    executor_ready(Wire::REQUEST_BYTE_EXTENDED)
    @client.close
    @monitor.serve(5)
    assert_equal Monitor::ABANDONED, @call.phase
    refute @call.killed
    @monitor.serve(@monitor.kill_overdue) while @monitor.calls.key?(@pid)
    assert @call.killed
    assert_equal Wire::MONITOR_CALL_ENDED, control_said
    assert_equal ["executor #{@pid} still ran 0.2 s after its client went away and its SIGINT: " \
                  "killed",
                  "client went away; script interrupted, it was killed by signal 9"], @logged.messages
  end

  def test_keeper_stopped_foreground_and_status
    executor_ready(Wire::REQUEST_BYTE_EXTENDED | 0x04, @pid)
    assert_equal @pid, @call.script
    assert_same @from_executor, @call.from_keeper
    # 't': the client is told 'T'.
    @executor.write(Wire.encode_frame(Wire::KEEPER_STOPPED, Signal.list.fetch("TSTP")))
    @monitor.serve(5)
    assert_equal Wire.encode_frame(Wire::FRAME_STOPPED, Signal.list.fetch("TSTP")), receive(@client, 5)
    # 'F' from the client: 'f' to the keeper.
    @client.write(Wire.encode_frame(Wire::FRAME_FOREGROUND, 1))
    @monitor.serve(5)
    assert_equal Wire.encode_frame(Wire::KEEPER_FOREGROUND, 1), receive(@executor, 5)
    # 'x': the call is over, 'd' and 'X' at once; the keeper reaped later.
    @executor.write(Wire.encode_frame(Wire::KEEPER_STATUS, 7 << 8))
    @monitor.serve(5)
    assert_equal Monitor::REPORTED, @call.phase
    assert_equal Wire::MONITOR_CALL_ENDED, control_said
    assert_equal Wire.encode_frame(Wire::FRAME_STATUS, 7 << 8), receive(@client, 5)
    @feed.puts("end")
    @monitor.serve(5) while @monitor.calls.key?(@pid)
    assert @conn.closed?
    assert_empty @logged.messages
  end

  def test_an_ending_call_outlives_its_keeper
    # Through serve: the client's 'R', the keeper's 'x' (the status sent,
    # the call ending), its reaping (the call socket stays), then the
    # client's end, which puts the terminal back.
    master, terminal = PTY.open
    found = TestTermios.get(terminal.fileno)
    executor_ready(Wire::REQUEST_BYTE_EXTENDED | 0x04, @pid)
    terminal.raw!
    raw = TestTermios.get(terminal.fileno)
    message = Wire.encode_restore(wire_settings(found), wire_settings(raw))
    @client.write(Wire.encode_frame(Wire::FRAME_RESTORE, message.bytesize) + message)
    @client.sendmsg(Wire::FD_MESSAGE_BYTE, 0, nil, Socket::AncillaryData.unix_rights(terminal))
    @monitor.serve(5) while @call.restore.nil?
    @executor.write(Wire.encode_frame(Wire::KEEPER_STATUS, 0))
    @monitor.serve(5)
    assert_equal Wire::MONITOR_CALL_ENDED, control_said
    assert_equal Wire.encode_frame(Wire::FRAME_STATUS, 0), receive(@client, 5)
    assert_equal [@call], @monitor.ending
    @feed.puts("end")
    @monitor.serve(5) while @monitor.calls.key?(@pid)
    refute @conn.closed?
    assert_equal raw, TestTermios.get(terminal.fileno)
    @client.close
    @monitor.serve(5) until @monitor.ending.empty?
    assert @conn.closed?
    assert_equal found, TestTermios.get(terminal.fileno)
    assert_empty @logged.messages
  ensure
    terminal&.close
    master&.close
  end

  def test_a_killed_keeper_takes_its_script_with_it
    script = Process.spawn(RbConfig.ruby, "-e", "sleep 30", pgroup: true)
    executor_ready(Wire::REQUEST_BYTE_EXTENDED | 0x04, script)
    # Its end of the socket goes with it.
    @executor.close
    Process.kill(:KILL, @pid)
    @monitor.serve(5) while @monitor.calls.key?(@pid)
    assert_equal Process.waitpid2(script)[1].termsig, 9
    assert_equal ["keeper #{@pid} of script #{script} was killed by signal 9: script killed"],
                 @logged.messages
    assert_equal Wire.encode_frame(Wire::FRAME_STATUS, 9), receive(@client, 5)
  end

  def test_owed_bytes_wait_for_the_server
    @monitor.call_ended
    @monitor.call_ended(Wire::MONITOR_CALL_DROPPED)
    assert_equal "dh", control_said
    assert_empty @monitor.owed
  end

  def test_server_gone_forgets_what_it_was_owed
    @server.close
    @monitor.serve(5)
    assert_nil @monitor.control
    @monitor.call_ended
    assert_empty @monitor.owed
  end
end
