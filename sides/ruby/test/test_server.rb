# frozen_string_literal: true

# PreforkInterp::Server on real sockets, pipes, inotify and processes: the
# helpers (as the Python side's tests/test_watch.py), the greeting and the
# hand-over to the monitor, the monitor's counters, and whole servers in
# processes of their own quitting as they should (socket path removed or
# replaced, the watcher's EOF or words, the idle timeout, a changed file)
# with their quit line in the lock file. Linux only, as the side is.
#
#     cd sides/ruby && ruby -Ilib -Itest test/test_server.rb

require "English"
require "minitest/autorun"
require_relative "process_helpers"
require "socket"
require "tmpdir"
require_relative "../lib/prefork_interp/server"

module ServerTestHelpers
  include ProcessHelpers

  Server = PreforkInterp::Server
  Sys = PreforkInterp::Sys
  Wire = PreforkInterp::Wire

  # What Setup::Settings holds, for a server alone.
  Settings = Struct.new(:max_servers, :idle_timeout, :max_errors, :spare_handlers,
                        :interrupt_grace, :log, :titles, :offered, :world, :env_dependency,
                        :start_dependency, :terminals, :init_env_changes, :keeper_program,
                        :precopy, keyword_init: true)

  # A log that appends "PRIORITY MESSAGE" lines to a file (readable from
  # the test's process whichever process logged).
  class FileLog
    def initialize(path)
      @path = path
    end

    def call(priority, message)
      File.write(@path, "#{priority} #{message}\n", mode: "a")
    end

    def reopen; end

    def lines
      File.exist?(@path) ? File.readlines(@path, chomp: true) : []
    end
  end

  # Titles that remember the last role set.
  class NoTitles
    attr_reader :role

    def set(role)
      @role = role
    end
  end

  # A reload watch whose file "changed" once trigger exists.
  class FakeReload
    attr_reader :inotify, :events, :degraded

    def initialize(trigger, degraded = nil)
      @trigger = trigger
      @events = 0
      @degraded = degraded
    end

    def watch_with(inotify)
      @inotify = inotify
    end

    def note_events
      @events += 1
    end

    def changed
      File.exist?(@trigger) ? @trigger : nil
    end
  end

  def make_dir
    @dir = Dir.mktmpdir("pfi-server")
  end

  def remove_dir
    FileUtils.remove_entry(@dir) if @dir && File.directory?(@dir)
  end

  def mtime_ns(path)
    st = File.lstat(path)
    (st.mtime.to_i * 1_000_000_000) + st.mtime.nsec
  end

  # A listening socket at DIR/s<ident>, its lock file DIR/l<ident>.
  def listener(ident = "abc")
    @socket_path = File.join(@dir, "s#{ident}")
    @lock_path = File.join(@dir, "l#{ident}")
    File.write(@lock_path, "")
    sock = Socket.new(:UNIX, :STREAM)
    sock.bind(Addrinfo.unix(@socket_path))
    sock.listen(16)
    @socket_ns = mtime_ns(@socket_path)
    sock
  end

  # setup as Wire.decode_setup_env gives it, for listen; watch pipes made
  # (the test keeps their other ends: @watch_in_r, @watch_err_w).
  def setup_for(listen, caps, call: nil, idle_limit: nil)
    @watch_in_r, watch_in = IO.pipe
    watch_err, @watch_err_w = IO.pipe
    [watch_in, watch_err].each { |io| io.autoclose = false }
    ns = @socket_ns
    { started_secs: ns / 1_000_000_000, started_nsecs: ns % 1_000_000_000,
      listen: listen.fileno, call: call, watch_in: watch_in.fileno, watch_err: watch_err.fileno,
      client_caps: caps, idle_limit: idle_limit, keeper: nil }
  end

  def settings_for(offered, log, max_servers: 4, idle_timeout: nil, max_errors: 100)
    Settings.new(max_servers: max_servers, idle_timeout: idle_timeout, max_errors: max_errors,
                 spare_handlers: 1, interrupt_grace: 2, log: log, titles: NoTitles.new,
                 offered: offered, world: "ab" * 32, env_dependency: ["cd" * 32, ["HOME"]],
                 start_dependency: ["ef" * 32, %w[LANG RUBYOPT]], terminals: 5,
                 init_env_changes: [], keeper_program: nil, precopy: false)
  end

  # A client of the server at @socket_path: its greeting, as bytes.
  def read_greeting(sock)
    head = read_exactly(sock, 8)
    return head if head.bytesize < 8

    head + read_exactly(sock, head.byteslice(4, 4).unpack1("N"))
  end

  def read_exactly(sock, length)
    data = "".b
    while data.bytesize < length
      chunk = sock.recv(length - data.bytesize)
      break if chunk.nil? || chunk.empty?

      data << chunk
    end
    data
  end

  # xdata's lines as a Hash (keyword => rest of the line).
  def xdata_lines(greeting)
    greeting.byteslice(8..).split("\n").to_h { |line| line.split(" ", 2) }
  end

  def wait_for(seconds = 10)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
    until yield
      raise "timed out" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline

      sleep(0.02)
    end
  end
end

# Server.bounded_idle_timeout, Server.no_inotify, Server.other_user.
class TestServerHelpers < Minitest::Test
  include ServerTestHelpers

  def test_idle_bound
    bound = ->(own, limit) { Server.bounded_idle_timeout(own, limit) }
    assert_equal([nil, 5, 9, 5, 3], [bound[nil, nil], bound[nil, 5], bound[9, nil], bound[9, 5], bound[3, 5]])
  end

  def test_no_inotify_texts
    e = Errno::EMFILE.new
    assert_equal("no inotify (Too many open files): socket path checked every 5 s, files at every call",
                 Server.no_inotify(e, true))
    assert_equal("no inotify (Too many open files): files checked at every call",
                 Server.no_inotify(e, false))
  end

  def test_a_caller_of_our_own_uid_is_served
    a, b = Socket.pair(:UNIX, :STREAM)
    assert_nil(Server.other_user(a))
  ensure
    a&.close
    b&.close
  end

  def test_a_caller_of_another_uid_is_refused
    skip "needs root, to connect as another user" unless Process.uid.zero?
    make_dir
    File.chmod(0o777, @dir)
    listen = listener
    File.chmod(0o777, @socket_path)
    pid = child do
      Process::Sys.setgid(65_534)
      Process::Sys.setuid(65_534)
      sock = Socket.new(:UNIX, :STREAM)
      sock.connect(Addrinfo.unix(@socket_path))
      sock.recv(1)
      exit!(0)
    end
    conn, = listen.accept
    assert_equal("refused a call from uid 65534 (pid #{pid}): this server is uid 0's", Server.other_user(conn))
    conn.close
    Process.waitpid(pid)
  ensure
    listen&.close
    remove_dir
  end

  def test_a_closed_call_is_of_an_unknown_caller
    a, b = Socket.pair(:UNIX, :STREAM)
    a.close
    assert_match(/\Arefused a call whose caller is unknown: /, Server.other_user(a))
  ensure
    b&.close
  end
end

# The server's one inotify instance shared by the reload's files and its
# own socket watch: which events are whose, when the socket counts as
# gone (test_watch.py's SharedInstance and SocketWatchAlone).
class TestSocketWatch < Minitest::Test
  include ServerTestHelpers

  def setup
    make_dir
    @file = File.join(@dir, "f")
    File.write(@file, "")
    @listen = listener
    @inotify = Sys::Inotify.new
    @inotify.add_watch(@file, Sys::IN_MODIFY | Sys::IN_ATTRIB | Sys::IN_CLOSE_WRITE)
    @watch = Server::SocketWatch.new(@socket_path.b, mtime_ns(@socket_path))
    @watch.watch_with(@inotify)
  end

  def teardown
    @inotify.close
    @listen.close
    remove_dir
  end

  def sorted_events
    Server.sort_events(@inotify.read_events, @watch)
  end

  def test_another_name_in_the_directory_is_nobodys
    File.write(File.join(@dir, "other"), "")
    assert_equal([false, false], sorted_events)
  end

  def test_a_watched_file_is_the_files
    File.utime(Time.now, Time.now, @file)
    assert_equal([true, false], sorted_events)
  end

  def test_the_socket_removed
    assert(@watch.still_there)
    File.unlink(@socket_path)
    assert_equal([false, true], sorted_events)
    refute(@watch.still_there)
  end

  def test_the_socket_replaced_by_rename
    other = File.join(@dir, "t")
    File.write(other, "")
    @inotify.read_events
    File.rename(other, @socket_path)
    assert_equal([false, true], sorted_events)
    refute(@watch.still_there, "another inode at the path")
  end

  def test_the_directory_itself_going_is_the_sockets
    assert(@watch.concerns(Sys::IN_DELETE_SELF, "".b))
    assert(@watch.concerns(Sys::IN_IGNORED, "".b))
    refute(@watch.concerns(Sys::IN_CREATE, "sother".b))
  end

  def test_lost_events_may_mean_either
    assert_equal([true, true], Server.sort_events([[-1, Sys::IN_Q_OVERFLOW, "".b]], @watch))
  end

  def test_without_a_socket_watch_every_event_is_the_files
    File.unlink(@socket_path)
    assert_equal([true, false], Server.sort_events(@inotify.read_events, nil))
  end

  def test_a_socket_not_the_clients_is_gone_from_the_start
    mtime = mtime_ns(@socket_path)
    assert(Server::SocketWatch.new(@socket_path.b, mtime).still_there)
    refute(Server::SocketWatch.new(@socket_path.b, mtime + 1).still_there)
    refute(Server::SocketWatch.new("#{@socket_path}x".b, mtime).still_there)
  end

  def test_folder_of_a_bare_name_and_of_the_root
    assert_equal([".", "s1"], Server::SocketWatch.new("s1".b, 0).then { |w| [w.folder, w.name] })
    assert_equal(["/", "s1"], Server::SocketWatch.new("/s1".b, 0).then { |w| [w.folder, w.name] })
  end

  def test_periodic_looks
    watch = Server::SocketWatch.new(@socket_path.b, 0)
    assert_nil(watch.due_in)
    watch.check_periodically
    assert_in_delta(Server::SocketWatch::CHECK_INTERVAL, watch.due_in, 0.5)
    watch.next_check = Process.clock_gettime(Process::CLOCK_MONOTONIC) - 1
    assert_equal(0.0, watch.due_in)
  end
end

# A Server in this process: the greeting it sends, the call it hands to
# the monitor (the test holds the monitor's end of control), its counters.
class TestServerHandOver < Minitest::Test
  include ServerTestHelpers

  def setup
    make_dir
    @listen = listener
    @log = FileLog.new(File.join(@dir, "log"))
    @monitor_pid = nil
  end

  def teardown
    @server ? @server.close : @listen.close
    @theirs&.close
    if @monitor_pid
      Process.kill(:KILL, @monitor_pid)
      Process.waitpid(@monitor_pid)
    end
    [@watch_in_r, @watch_err_w].each { |io| io&.close unless io&.closed? }
    remove_dir
  end

  # A server as Setup makes it, with a stand-in monitor: a child of ours
  # (its pidfd watched), whose end of control the test holds.
  def start(caps, offered, reload: FakeReload.new(File.join(@dir, "changed")), **settings)
    @server = Server::Server.new(setup_for(@listen, caps), settings_for(offered, @log, **settings), reload)
    @listen.autoclose = false # the server's now
    control, @theirs = Socket.pair(:UNIX, :STREAM)
    @monitor_pid = child { sleep }
    @server.control = control
    @server.monitor = @monitor_pid
    @server.monitor_pidfd = Sys.pidfd_open(@monitor_pid)
    @server.selector.register(control, "control")
    @server.selector.register(@server.monitor_pidfd, "monitor")
    @server
  end

  # A client connected and accepted: [the client's end, the server's].
  def call
    client = Socket.new(:UNIX, :STREAM)
    client.connect(Addrinfo.unix(@socket_path))
    @server.set_listening(true)
    conn = nil
    wait_for { (conn = @server.accept) }
    [client, conn]
  end

  # What the monitor receives on control: [byte, the fd as an IO].
  def received_by_monitor
    data, _, _, *controls = @theirs.recvmsg(16, 0, 64, scm_rights: true)
    [data, controls.flat_map { |c| c.unix_rights.to_a }]
  end

  def test_a_v1_client_gets_a_bare_greeting
    start([], [])
    client, conn = call
    refute(@server.hand_over(conn, false))
    assert_equal("PFI\n\0\0\0\0".b, read_greeting(client))
  end

  def test_greeting_bytes_and_the_call_to_the_monitor
    start(%w[signals watch], %w[signals watch])
    client, conn = call
    refute(@server.hand_over(conn, false))
    greeting = read_greeting(client)
    lines = xdata_lines(greeting)
    idle = Integer(lines["idle"])
    expected = Wire.encode_greeting(Wire.encode_greeting_xdata(
                                      %w[signals watch], "ab" * 32, ["cd" * 32, ["HOME"]],
                                      ["ef" * 32, %w[LANG RUBYOPT]], 5, nil, 0, 0, idle
                                    ))
    assert_equal(expected, greeting)
    assert_equal("signals,watch", lines["caps"])
    assert_operator(idle, :>=, 0)
    assert_operator(idle, :<, 60_000)
    # The monitor gets the call itself: one byte, the socket.
    data, ios = received_by_monitor
    assert_equal(Wire::FD_MESSAGE_BYTE, data)
    assert_equal(1, ios.length)
    ios[0].write("through the monitor's copy")
    assert_equal("through the monitor's copy", client.recv(100))
    assert_equal([1, 1], [@server.served, @server.busy])
  end

  def test_counters_in_the_next_greeting
    start(["signals"], ["signals"])
    2.times do
      _, conn = call
      @server.hand_over(conn, false)
      conn.close
    end
    client, conn = call
    @server.hand_over(conn, false)
    lines = xdata_lines(read_greeting(client))
    # Two handed over, both running: no idle time while one runs.
    assert_equal(%w[2 2 0], [lines["served"], lines["running"], lines["idle"]])
    # One ended ('d'), one ended before its script ran ('h').
    @theirs.write("dh")
    wait_for { @server.control.wait_readable(0) }
    assert(@server.hear_monitor)
    assert_equal(1, @server.busy)
    @theirs.write("d")
    wait_for { @server.control.wait_readable(0) }
    before = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    assert(@server.hear_monitor)
    assert_equal(0, @server.busy)
    assert_operator(@server.idle_since, :>=, before, "idle from the last call's end")
    # More ends than calls never count below zero.
    @theirs.write("dd")
    wait_for { @server.control.wait_readable(0) }
    @server.hear_monitor
    assert_equal(0, @server.busy)
  end

  def test_degraded_text_in_the_greeting
    text = "cannot watch /x (Permission denied): files checked at every call"
    start(["signals"], ["signals"], reload: FakeReload.new(File.join(@dir, "changed"), text))
    client, conn = call
    @server.hand_over(conn, false)
    assert_equal(text, xdata_lines(read_greeting(client))["degraded"])
  end

  def test_a_caller_gone_before_its_greeting_is_not_handed_over
    start(["signals"], ["signals"])
    client, conn = call
    client.close
    refute(@server.hand_over(conn, false))
    assert_equal(0, @server.served)
    assert(@log.lines.any? { |l| l.include?("caller went away before its greeting") }, @log.lines.inspect)
  end

  def test_a_dead_monitor_gets_the_call_once_more
    start(["signals"], ["signals"])
    client, conn = call
    @theirs.close
    @theirs = nil
    Process.kill(:KILL, @monitor_pid)
    IO.for_fd(@server.monitor_pidfd, autoclose: false).wait_readable # (dead, its fds closed)
    # Greeted, then the hand-over fails: the caller wants another monitor.
    assert(@server.hand_over(conn, false))
    @monitor_pid = nil # reaped by monitor_died
    assert_nil(@server.control)
    assert_equal(0, @server.busy)
    assert(@log.lines.any? { |l| l =~ /\A3 monitor \d+ was killed by signal 9\z/ }, @log.lines.inspect)
    assert_equal("PFI\n", read_greeting(client).byteslice(0, 4))
  end

  def test_max_servers_stops_listening_while_busy
    start(["signals"], ["signals"], max_servers: 1)
    _, conn = call
    @server.hand_over(conn, false)
    @server.set_listening(@server.busy < 1)
    refute(@server.listening)
    @server.set_listening(true)
    assert(@server.listening)
  end

  def test_the_lock_file_gets_a_quit_line_unless_said
    start([], [])
    @server.record_quit("idle timeout", false)
    assert_match(/\Aquit \d+ idle timeout\n\z/, File.read(@lock_path))
    # Whoever removed the socket said why already, since our start.
    said = "quit #{Time.now.to_i} evicted\n"
    File.write(@lock_path, said)
    @server.record_quit("socket replaced or removed", true)
    assert_equal(said, File.read(@lock_path))
    # A quit line older than our start is another server's.
    File.write(@lock_path, "quit 1 evicted\n")
    @server.record_quit("socket replaced or removed", true)
    assert_match(/\Aquit 1 evicted\nquit \d+ socket replaced or removed\n\z/, File.read(@lock_path))
  end

  def test_a_fifo_planted_as_the_lock_file_hangs_nothing
    start([], [])
    File.unlink(@lock_path)
    File.mkfifo(@lock_path)
    # (Its read fails at once: nothing to read, nobody writing.)
    @server.record_quit("socket replaced or removed", true)
    assert(File.pipe?(@lock_path))
  end

  def test_a_removed_lock_file_is_skipped
    start([], [])
    File.unlink(@lock_path)
    @server.record_quit("idle timeout", false)
    refute(File.exist?(@lock_path))
  end
end

# Whole servers, each in a process of its own (run, as Setup's daemon
# calls it) with a stand-in monitor where run returns: each call gets
# "served N" and is said ended ('d').
class TestServerProcess < Minitest::Test
  include ServerTestHelpers

  def setup
    make_dir
    @listen = listener
    @log = FileLog.new(File.join(@dir, "log"))
    @trigger = File.join(@dir, "changed")
    @pids = []
  end

  def teardown
    @pids.each { |pid| end_server(pid) }
    @listen.close unless @listen.closed?
    [@watch_in_r, @watch_err_w].each { |io| io&.close unless io&.closed? }
    remove_dir
  end

  # A server still running at the test's end, and its monitor: killed.
  def end_server(pid)
    Process.kill(:KILL, -pid)
    Process.waitpid(pid)
  rescue SystemCallError
    nil
  end

  # Forks the server (a process group of its own, as the daemon's session
  # is); pending: the first call's socket, or nil. Returns its pid.
  # (A block runs first in the server's process.)
  def start_server(caps, pending: nil, idle_limit: nil, **settings)
    setup = setup_for(@listen, caps, call: pending&.fileno, idle_limit: idle_limit)
    pid = child do
      Process.setpgid(0, 0)
      yield if block_given?
      # The test's ends of the watcher's pipes are the test's only.
      [@watch_in_r, @watch_err_w].each(&:close)
      offered = caps.include?("signals") ? caps : []
      server = Server::Server.new(setup, settings_for(offered, @log, **settings), FakeReload.new(@trigger))
      stand_in_monitor(server.run(pending))
    end
    @pids << pid
    # Theirs now.
    pending&.close
    @listen.close
    [setup[:watch_in], setup[:watch_err]].each { |fd| Sys.close(fd) }
    pid
  end

  # The monitor's part: each call handed over gets a line, then ends.
  def stand_in_monitor(control)
    served = 0
    loop do
      data, _, _, *controls = control.recvmsg(1, 0, 64, scm_rights: true)
      exit!(0) if data.nil? || data.empty?
      controls.flat_map { |c| c.unix_rights.to_a }.each do |conn|
        served += 1
        conn.write("served #{served}\n")
        conn.close
        control.write(Wire::MONITOR_CALL_ENDED)
      end
    end
  ensure
    exit!(0)
  end

  def connect
    client = Socket.new(:UNIX, :STREAM)
    client.connect(Addrinfo.unix(@socket_path))
    client
  end

  # A whole call: [greeting, what the monitor said].
  def whole_call
    client = connect
    greeting = read_greeting(client)
    said = client.read
    client.close
    [greeting, said]
  end

  def exit_status(pid, seconds = 15)
    status = nil
    wait_for(seconds) { (status = Process.waitpid2(pid, Process::WNOHANG)&.last) }
    @pids.delete(pid)
    status
  end

  def children_of(pid)
    File.read("/proc/#{pid}/task/#{pid}/children").split.map(&:to_i)
  end

  def quit_lines
    File.read(@lock_path).lines.map { |line| line.chomp.split(" ", 3)[2] }
  end

  def test_serves_calls_and_quits_when_its_socket_is_removed
    pid = start_server(%w[signals watch])
    greeting, said = whole_call
    assert_equal("PFI\n", greeting.byteslice(0, 4))
    assert_equal("served 1\n", said)
    _, said = whole_call
    assert_equal("served 2\n", said)
    File.unlink(@socket_path)
    status = exit_status(pid)
    assert_equal(0, status.exitstatus)
    assert_equal(["socket replaced or removed"], quit_lines)
    assert_includes(@log.lines, "6 server quitting: socket replaced or removed")
  end

  def test_an_eviction_that_said_why_is_not_said_again
    pid = start_server(%w[signals watch])
    whole_call
    File.write(@lock_path, "quit #{Time.now.to_i} evicted by another server\n", mode: "a")
    File.unlink(@socket_path)
    assert_equal(0, exit_status(pid).exitstatus)
    assert_equal(["evicted by another server"], quit_lines)
  end

  def test_quits_when_its_socket_is_replaced
    pid = start_server(%w[signals watch])
    whole_call
    other = File.join(@dir, "new")
    File.write(other, "")
    File.rename(other, @socket_path)
    assert_equal(0, exit_status(pid).exitstatus)
    assert_equal(["socket replaced or removed"], quit_lines)
  end

  def test_the_first_call_is_served_when_the_socket_went_before_the_start
    first, pending = Socket.pair(:UNIX, :STREAM)
    File.unlink(@socket_path)
    pid = start_server(%w[signals watch], pending: pending)
    assert_equal("PFI\n", read_greeting(first).byteslice(0, 4))
    assert_equal("served 1\n", first.read)
    assert_equal(0, exit_status(pid).exitstatus)
    assert_equal(["socket replaced or removed"], quit_lines)
  end

  def test_without_inotify_the_socket_path_is_looked_at_periodically
    pid = start_server(%w[signals watch]) do
      Sys::Inotify.define_singleton_method(:new) { raise Errno::EMFILE, "inotify_init1" }
    end
    greeting, said = whole_call
    text = "no inotify (Too many open files): socket path checked every 5 s, files at every call"
    assert_equal(text, xdata_lines(greeting)["degraded"])
    assert_equal("served 1\n", said)
    assert_includes(@log.lines, "3 degraded: #{text}")
    File.unlink(@socket_path)
    removed = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    assert_equal(0, exit_status(pid).exitstatus)
    assert_operator(Process.clock_gettime(Process::CLOCK_MONOTONIC) - removed, :<, 6.5)
    assert_equal(["socket replaced or removed"], quit_lines)
  end

  def test_quits_on_the_watchers_eof_without_watch
    pid = start_server(["signals"])
    _, said = whole_call
    assert_equal("served 1\n", said)
    @watch_err_w.close
    assert_equal(0, exit_status(pid).exitstatus)
    assert_equal(["socket replaced or removed (watcher exited)"], quit_lines)
  end

  def test_quits_on_what_the_watcher_reports
    pid = start_server([])
    @watch_err_w.write("stat failed: \xFF gone\n")
    assert_equal(0, exit_status(pid).exitstatus)
    assert_equal(["watcher reported: stat failed: \uFFFD gone"], quit_lines.map { |l| l.force_encoding("UTF-8") })
  end

  def test_quits_on_the_idle_timeout
    pid = start_server(%w[signals watch], idle_timeout: 0.3)
    _, said = whole_call
    assert_equal("served 1\n", said)
    assert_equal(0, exit_status(pid).exitstatus)
    assert_equal(["idle timeout"], quit_lines)
  end

  def test_the_clients_idle_bound_is_kept
    # pfi-idle, 1 s, under the server's own 1000 s.
    first, pending = Socket.pair(:UNIX, :STREAM)
    pid = start_server(%w[signals watch], pending: pending, idle_limit: 1, idle_timeout: 1000)
    read_greeting(first)
    started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    assert_equal(0, exit_status(pid).exitstatus)
    assert_operator(Process.clock_gettime(Process::CLOCK_MONOTONIC) - started, :<, 5)
    assert_equal(["idle timeout"], quit_lines)
  end

  def test_a_changed_file_drops_the_call_and_quits
    pid = start_server(%w[signals watch])
    whole_call
    File.write(@trigger, "")
    client = connect
    assert_equal("".b, read_greeting(client), "dropped: its client starts afresh")
    assert_equal(0, exit_status(pid).exitstatus)
    assert_equal(["#{@trigger} changed"], quit_lines)
  end

  def test_a_monitor_that_dies_is_forked_again
    pid = start_server(%w[signals watch])
    whole_call
    monitors = children_of(pid)
    assert_equal(1, monitors.length)
    Process.kill(:KILL, monitors[0])
    wait_for { @log.lines.any? { |l| l.include?("monitor #{monitors[0]} was killed by signal 9") } }
    _, said = whole_call
    assert_equal("served 1\n", said, "a new monitor")
    File.unlink(@socket_path)
    assert_equal(0, exit_status(pid).exitstatus)
  end

  def test_too_many_errors_end_the_server
    pid = start_server(%w[signals watch], max_errors: 0)
    whole_call
    monitors = children_of(pid)
    Process.kill(:KILL, monitors[0])
    assert_equal(0, exit_status(pid).exitstatus)
    assert_equal(["more than 0 errors"], quit_lines)
  end
end
