# frozen_string_literal: true

# PreforkInterp::Sys on real processes and fds: fds passed over a
# socketpair and back, pidfds, signalfds, the signal mask, waitid on a
# stopped child, close_range_from in a child, a controlling terminal and
# its foreground group, inotify; and PreforkInterp::Log's facilities and
# its syslog opened and closed.
#
#     cd sides/ruby && ruby -Ilib -Itest test/test_sys.rb

require "fcntl"
require "io/wait"
require "minitest/autorun"
require "minitest/mock"
require "pty"
require "socket"
require "pathname"
require "timeout"
require "tmpdir"
require_relative "../lib/prefork_interp/sys"
require_relative "../lib/prefork_interp/wire"
require_relative "../lib/prefork_interp/log"

# Each of Sys's functions on the real thing it stands for.
class TestSys < Minitest::Test
  Sys = PreforkInterp::Sys

  CHLD = Signal.list.fetch("CHLD")
  USR1 = Signal.list.fetch("USR1")
  USR2 = Signal.list.fetch("USR2")
  TERM = Signal.list.fetch("TERM")
  STOP = Signal.list.fetch("STOP")

  # ------------------------------------------------------------- helpers

  # The block's run in a child, which reports on a pipe: [its pid, the
  # reader]. The child exits (exit!, no at_exit of minitest's) with 0, or
  # 1 after writing what it raised.
  def in_child
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      begin
        yield writer
        writer.flush
        exit!(0)
      rescue Exception => e # rubocop:disable Lint/RescueException
        writer.write("raised #{e.class}: #{e.message}")
        writer.flush
        exit!(1)
      end
    end
    writer.close
    [pid, reader]
  end

  # The child's report, all of it, and its exit status checked.
  def child_report(pid, reader)
    report = reader.read
    reader.close
    _, status = Process.wait2(pid)
    assert status.success?, "child: #{status.inspect}: #{report}"
    report
  end

  # An IO on fd that does not own it.
  def view(fileno)
    IO.for_fd(fileno, autoclose: false)
  end

  def readable?(fileno, timeout = 0)
    !view(fileno).wait_readable(timeout).nil?
  end

  def close_on_exec?(fileno)
    view(fileno).fcntl(Fcntl::F_GETFD).anybits?(Fcntl::FD_CLOEXEC)
  end

  def nonblocking?(fileno)
    view(fileno).fcntl(Fcntl::F_GETFL).anybits?(File::NONBLOCK)
  end

  # This thread's blocked signals, as /proc says them.
  def proc_blocked
    tid = File.readlink("/proc/thread-self").split("/").last
    bits = File.read("/proc/self/task/#{tid}/status")[/^SigBlk:\s*(\h+)/, 1].to_i(16)
    (1..64).select { |sig| bits[sig - 1] == 1 }
  end

  # Waits (up to 5 s) for the block to be true.
  def eventually(what)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + 5
    until yield
      flunk "timed out waiting: #{what}" if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
      sleep 0.005
    end
  end

  # ------------------------------------------------------ fds over sockets

  def test_fds_over_a_socketpair_and_back
    left, right = Socket.pair(:UNIX, :STREAM)
    reader, writer = IO.pipe
    # Blocking, as a caller's pipe is: the handover must leave it so.
    view(writer.fileno).fcntl(Fcntl::F_SETFL, 0)
    sent = Sys.send_fds(left, [PreforkInterp::Wire::FD_MESSAGE_BYTE], [writer.fileno], Socket::MSG_NOSIGNAL)
    assert_equal 1, sent
    data, fds, = Sys.recv_fds(right, 1, 1)
    assert_equal "\0".b, data
    assert_equal 1, fds.length
    got = fds[0]
    refute_equal writer.fileno, got
    assert close_on_exec?(got), "received fd is close-on-exec"
    refute nonblocking?(got), "received fd's file stays blocking"
    # The same pipe: what goes in the received fd comes out of reader.
    view(got).syswrite("through")
    assert_equal "through", reader.readpartial(100)

    # And back, with a second fd (and data in two buffers, as one).
    Sys.send_fds(right, %w[ab c], [got, reader.fileno])
    data, fds, = Sys.recv_fds(left, 10, 2)
    assert_equal "abc".b, data
    assert_equal 2, fds.length
    view(fds[0]).syswrite("back")
    assert_equal "back", view(fds[1]).readpartial(100)
    GC.start # the received fds are ours to close, not the GC's
    assert(([got] + fds).all? { |fd| Sys.fd_is_open(fd) })
    ([got] + fds).each { |fd| Sys.close(fd) }
    refute Sys.fd_is_open(got)
  ensure
    [left, right, reader, writer].each { |io| io&.close unless io&.closed? }
  end

  # A caller's socket (blocking, its file shared with the caller) comes
  # as a number, and stays blocking: Ruby makes its own sockets
  # non-blocking, never this one.
  def test_a_received_socket_stays_blocking
    left, right = Socket.pair(:UNIX, :STREAM)
    caller_end, other_end = Socket.pair(:UNIX, :STREAM)
    view(caller_end.fileno).fcntl(Fcntl::F_SETFL, 0)
    Sys.send_fds(left, "\0", [caller_end.fileno])
    _, fds, = Sys.recv_fds(right, 1, 1)
    refute nonblocking?(fds[0])
    refute nonblocking?(caller_end.fileno)
    Sys.send_all(Socket.for_fd(fds[0]).tap { |sock| sock.autoclose = false }, "hello")
    assert_equal "hello", other_end.readpartial(5)
    refute nonblocking?(caller_end.fileno), "nor does a Socket on it make it so"
    Sys.close(fds[0])
  ensure
    [left, right, caller_end, other_end].each { |io| io&.close unless io&.closed? }
  end

  def test_recv_fds_without_room_and_at_eof
    left, right = Socket.pair(:UNIX, :STREAM)
    reader, writer = IO.pipe
    Sys.send_fds(left, "x", [reader.fileno, writer.fileno])
    # Room for one: the kernel closes the other.
    data, fds, = Sys.recv_fds(right, 1, 1)
    assert_equal ["x".b, 1], [data, fds.length]
    Sys.close(fds[0])
    left.close
    data, fds, = Sys.recv_fds(right, 1, 1)
    assert_equal ["".b, []], [data, fds]
  ensure
    [left, right, reader, writer].each { |io| io&.close unless io&.closed? }
  end

  def test_send_all_and_recv_exact
    left, right = Socket.pair(:UNIX, :STREAM)
    payload = Random.new(7).bytes(3 * 1024 * 1024)
    sender = Thread.new { Sys.send_all(left, payload) }
    got = Sys.recv_exact(right, payload.bytesize)
    sender.join
    assert_equal payload, got
    # Fewer at EOF (not a wait, nor a loop, for more).
    Sys.send_all(left, "abc")
    left.close
    Timeout.timeout(5) do
      assert_equal "abc".b, Sys.recv_exact(right, 10)
      assert_equal "".b, Sys.recv_exact(right, 10)
    end
  ensure
    [left, right].each { |io| io&.close unless io&.closed? }
  end

  def test_send_all_to_a_peer_gone_raises_without_sigpipe
    left, right = Socket.pair(:UNIX, :STREAM)
    right.close
    # SIGPIPE's default would end this process: MSG_NOSIGNAL instead.
    old = trap("PIPE", "SYSTEM_DEFAULT")
    assert_raises(Errno::EPIPE) { Sys.send_all(left, "x" * 100) }
  ensure
    trap("PIPE", old) if old
    left&.close
  end

  # ---------------------------------------------------------------- pidfd

  def test_pidfd_becomes_readable_when_the_child_exits
    go_reader, go_writer = IO.pipe
    pid = fork do
      go_writer.close
      go_reader.read(1)
      exit!(3)
    end
    go_reader.close
    pidfd = Sys.pidfd_open(pid)
    assert close_on_exec?(pidfd)
    refute readable?(pidfd, 0.05), "pidfd readable while the child runs"
    go_writer.write("x")
    go_writer.close
    assert readable?(pidfd, 5), "pidfd readable once the child exited"
    _, status = Process.wait2(pid)
    assert_equal 3, status.exitstatus
    Sys.close(pidfd)
    assert_raises(Errno::ESRCH) { Sys.pidfd_open(pid) }
  end

  # ------------------------------------------------------ signals, masks

  def test_sigmask_round_trip
    before = Sys.sigmask(Sys::SIG_BLOCK, [])
    assert_equal proc_blocked, before
    old = Sys.sigmask(Sys::SIG_BLOCK, [USR1, "USR2"])
    assert_equal before, old
    assert_equal (before | [USR1, USR2]).sort, proc_blocked
    assert_equal (before | [USR1, USR2]).sort, Sys.sigmask(Sys::SIG_UNBLOCK, [:SIGUSR2])
    assert_equal (before | [USR1]).sort, proc_blocked
    assert_equal (before | [USR1]).sort, Sys.sigmask(Sys::SIG_SETMASK, old)
    assert_equal before, proc_blocked
    assert_raises(ArgumentError) { Sys.sigmask(Sys::SIG_BLOCK, [65]) }
    assert_raises(ArgumentError) { Sys.sigmask(Sys::SIG_BLOCK, ["NOSUCH"]) }
    assert_raises(Errno::EINVAL) { Sys.sigmask(7, []) }
  ensure
    Sys.sigmask(Sys::SIG_SETMASK, before) if before
  end

  def test_sigmask_is_inherited_by_fork
    old = Sys.sigmask(Sys::SIG_BLOCK, [USR1])
    pid, reader = in_child { |out| out.write(Sys.sigmask(Sys::SIG_BLOCK, []).include?(USR1) ? "held" : "not") }
    assert_equal "held", child_report(pid, reader)
  ensure
    Sys.sigmask(Sys::SIG_SETMASK, old) if old
  end

  # In a child, of one thread (as the keeper is): with more, a thread
  # that does not block SIGCHLD (Ruby's own) may take it.
  def test_signalfd_reads_a_sigchld
    pid, reader = in_child do |out|
      Sys.sigmask(Sys::SIG_BLOCK, [CHLD])
      fd = Sys.signalfd(CHLD)
      flags = [close_on_exec?(fd), nonblocking?(fd), readable?(fd)]
      child = fork { exit!(5) }
      flags << readable?(fd, 5)
      info = view(fd).read_nonblock(128)
      # struct signalfd_siginfo: u32 signo, i32 errno, i32 code, u32 pid,
      # u32 uid, i32 fd, u32 tid, u32 band, u32 overrun, u32 trapno, i32
      # status.
      signo, code, from, status = info.unpack("Lx4lLx24l")
      again = view(fd).read_nonblock(128, exception: false)
      Process.wait(child)
      out.write([flags, signo == CHLD, code == Sys::CLD_EXITED, from == child, status, again].inspect)
    end
    assert_equal "[[true, true, false, true], true, true, true, 5, :wait_readable]", child_report(pid, reader)
  end

  def test_waitid_reports_a_stopped_child_without_reaping
    pid = fork do
      sleep 30
      exit!(0)
    end
    running = Sys.waitid(Sys::P_PID, pid, Sys::WSTOPPED | Sys::WEXITED | Sys::WNOWAIT | Sys::WNOHANG)
    assert_nil running
    Process.kill(STOP, pid)
    peek = Sys::WSTOPPED | Sys::WEXITED | Sys::WNOWAIT | Sys::WNOHANG
    info = nil
    eventually("the stop") { info = Sys.waitid(Sys::P_PID, pid, peek) }
    assert_equal({ pid: pid, uid: Process.uid, signo: CHLD, code: Sys::CLD_STOPPED, status: STOP }, info)
    # WNOWAIT: still there.
    assert_equal info, Sys.waitid(Sys::P_PID, pid, peek)
    # Consumed (without WEXITED, which would reap), then gone.
    assert_equal info, Sys.waitid(Sys::P_PID, pid, Sys::WSTOPPED | Sys::WNOHANG)
    assert_nil Sys.waitid(Sys::P_PID, pid, peek)
    Process.kill(TERM, pid)
    Process.kill("CONT", pid)
    eventually("the end") { (info = Sys.waitid(Sys::P_PID, pid, Sys::WEXITED | Sys::WNOWAIT | Sys::WNOHANG)) }
    assert_equal [Sys::CLD_KILLED, TERM], [info[:code], info[:status]]
    # Not reaped: waitpid still has it.
    _, status = Process.wait2(pid)
    assert_equal TERM, status.termsig
    assert_raises(Errno::ECHILD) { Sys.waitid(Sys::P_PID, pid, Sys::WEXITED | Sys::WNOHANG) }
  end

  def test_waitid_blocking_reaps_an_exit
    pid = fork { exit!(9) }
    info = Sys.waitid(Sys::P_PID, pid, Sys::WEXITED)
    assert_equal [pid, Sys::CLD_EXITED, 9], info.values_at(:pid, :code, :status)
    assert_raises(Errno::ECHILD) { Process.wait(pid) }
  end

  def test_set_parent_death_signal
    reader, writer = IO.pipe
    ready_reader, ready_writer = IO.pipe
    middle = fork do
      reader.close
      fork do
        trap("TERM", "SYSTEM_DEFAULT")
        Sys.set_parent_death_signal(TERM)
        ready_writer.write("r")
        ready_writer.close
        # Holds writer until it dies: the test's EOF.
        sleep 30
        exit!(0)
      end
      ready_writer.close
      writer.close
      # Its parent gone before prctl would be no test.
      exit!(ready_reader.read(1) == "r" ? 0 : 1)
    end
    writer.close
    ready_writer.close
    ready_reader.close
    _, status = Process.wait2(middle)
    assert status.success?
    # The grandchild got SIGTERM as its parent went: its end closes.
    assert reader.wait_readable(5), "the orphan died"
    assert_nil reader.read(1)
  ensure
    [reader, writer, ready_reader, ready_writer].each { |io| io&.close unless io&.closed? }
  end

  def test_kill_group
    reader, writer = IO.pipe
    pid = fork do
      reader.close
      Process.setpgid(0, 0)
      trap("INT", "SYSTEM_DEFAULT")
      # A member of the group, not its leader: holds writer till it dies.
      fork do
        trap("INT", "SYSTEM_DEFAULT")
        sleep 30
        exit!(0)
      end
      writer.close
      sleep 30
      exit!(0)
    end
    writer.close
    eventually("its group") { Process.getpgid(pid) == pid }
    Sys.kill_group(pid)
    _, status = Process.wait2(pid)
    assert_equal Signal.list.fetch("INT"), status.termsig
    assert reader.wait_readable(5), "the group's other member got it too"
    assert_nil reader.read(1)
    # Best effort: no such group is nothing.
    assert_raises(Errno::ESRCH) { Process.kill(0, -0x7FFFFFF0) }
    assert_nil Sys.kill_group(0x7FFFFFF0, "TERM")
  ensure
    [reader, writer].each { |io| io.close unless io.closed? }
  end

  # ------------------------------------------------------------ fds, misc

  def test_close_range_from_in_a_child
    pid, reader = in_child do |out|
      first = out.fileno + 1
      kept = File.open(File::NULL)
      # (Below first, moved: kept's number is over first, or about to be.)
      low = Sys.dup2(kept.fileno, first)
      opened = Array.new(3) { File.open(File::NULL) }
      late = IO.sysopen(File::NULL)
      numbers = opened.map(&:fileno) + [low, late]
      Sys.close_range_from(first)
      states = numbers.map { |fd| Sys.fd_is_open(fd) }
      disowned = opened.map(&:autoclose?)
      out.write([Sys.fd_is_open(out.fileno), Sys.fd_is_open(0), states, disowned].inspect)
    end
    assert_equal "[true, true, [false, false, false, false, false], [false, false, false]]",
                 child_report(pid, reader)
  end

  def test_fd_is_open_thread_count_dup2
    reader, writer = IO.pipe
    assert Sys.fd_is_open(reader.fileno)
    refute Sys.fd_is_open(-1)
    copy = Sys.dup2(writer.fileno, 200)
    assert_equal 200, copy
    refute close_on_exec?(copy), "dup2's copy is inheritable"
    view(copy).syswrite("d")
    assert_equal "d", reader.readpartial(1)
    Sys.close(copy)
    refute Sys.fd_is_open(copy)
    assert_raises(Errno::EBADF) { Sys.close(copy) }
    assert_equal Dir.children("/proc/self/task").length, Sys.thread_count
    # fork keeps one thread (here a Ruby that had threads keeps their
    # native threads a few seconds, for reuse: they count).
    pid, report = in_child do |out|
      counts = [Sys.thread_count]
      Thread.new { sleep 5 }
      counts << Sys.thread_count
      out.write(counts.inspect)
    end
    assert_equal "[1, 2]", child_report(pid, report)
  ensure
    [reader, writer].each { |io| io&.close unless io&.closed? }
  end

  def test_describe_status_and_wait_macros
    pid = fork { exit!(3) }
    _, status = Process.wait2(pid)
    assert_equal "exited with status 3", Sys.describe_status(status.to_i)
    pid = fork { sleep 30 }
    Process.kill("KILL", pid)
    _, status = Process.wait2(pid)
    assert_equal "was killed by signal 9", Sys.describe_status(status)
    assert_equal "was killed by signal 11 (core dumped)", Sys.describe_status(0x8B)
    assert_equal "has wait status 0x137f", Sys.describe_status(0x137F)
    assert Sys.wifstopped(0x137F)
    assert_equal STOP, Sys.wstopsig(0x137F)
    refute Sys.wifsignaled(0x137F)
    assert Sys.wifexited(0x300)
    assert_equal 3, Sys.wexitstatus(0x300)
  end

  def test_populate_write
    memory = Fiddle::Pointer.malloc(3 * 4096, Fiddle::RUBY_FREE)
    page = (memory.to_i + 4095) & ~4095
    # 0 where the kernel has it (5.14 or later), EINVAL before.
    assert_includes [0, Errno::EINVAL::Errno], Sys.populate_write(page, 4096)
    # Not page-aligned: EINVAL; nothing mapped: ENOMEM (or EINVAL before).
    assert_equal Errno::EINVAL::Errno, Sys.populate_write(page + 1, 4096)
    assert_includes [Errno::ENOMEM::Errno, Errno::EINVAL::Errno], Sys.populate_write(4096, 4096)
  end

  def test_fflush_all_flushes_what_exit_bang_would_drop
    pid, reader = in_child do |out|
      # Neither $stdout nor $stderr: found among every IO.
      out.sync = false
      out.write("buffered")
      Sys.fflush_all
      exit!(0) # no flush of its own
    end
    assert_equal "buffered", child_report(pid, reader)
  end

  def test_forwarded_and_terminal_signals
    names = Sys::FORWARDED_SIGNALS.map { |sig| Signal.signame(sig) }
    assert_equal %w[INT TERM HUP QUIT USR1 USR2 WINCH ALRM TSTP CONT], names
    assert_equal %w[HUP INT QUIT TSTP TTIN TTOU WINCH].sort,
                 Sys::TERMINAL_SIGNALS.map { |sig| Signal.signame(sig) }.sort
    assert_equal Sys::TERMINAL_SIGNALS.sort, Sys::TERMINAL_SIGNALS
  end

  # ----------------------------------------------------------- terminals

  def test_controlling_terminal_and_its_foreground_group
    master, slave = PTY.open
    pid, reader = in_child do |out|
      master.close
      Process.setsid
      Sys.take_controlling_terminal(slave.fileno)
      report = [Sys.tcgetpgrp(slave.fileno) == Process.pid]
      # A group of its own, made the terminal's foreground group.
      go_reader, go_writer = IO.pipe
      member = fork do
        go_writer.close
        go_reader.read(1)
        exit!(0)
      end
      Process.setpgid(member, member)
      Sys.tcsetpgrp(slave.fileno, member)
      report << (Sys.tcgetpgrp(slave.fileno) == member)
      # Back: from the background, with SIGTTOU held (as the keeper has it).
      old = Sys.sigmask(Sys::SIG_BLOCK, ["TTOU"])
      Sys.tcsetpgrp(slave.fileno, Process.getpgrp)
      Sys.sigmask(Sys::SIG_SETMASK, old)
      report << (Sys.tcgetpgrp(slave.fileno) == Process.pid)
      go_writer.close
      Process.wait(member)
      out.write(report.inspect)
    end
    slave.close
    assert_equal "[true, true, true]", child_report(pid, reader)
  ensure
    master&.close unless master&.closed?
    slave&.close unless slave&.closed?
  end

  def test_take_controlling_terminal_refused_outside_a_new_session
    master, slave = PTY.open
    pid, reader = in_child do |out|
      # Not a session leader: EPERM.
      Process.setpgid(0, 0)
      begin
        Sys.take_controlling_terminal(slave.fileno)
        out.write("taken")
      rescue SystemCallError => e
        out.write(e.class.name)
      end
    end
    assert_includes %w[Errno::EPERM], child_report(pid, reader)
    assert_raises(Errno::ENOTTY) { Sys.tcgetpgrp(IO.pipe[0].fileno) }
  ensure
    master&.close
    slave&.close
  end

  # -------------------------------------------------------------- inotify

  def test_inotify_sees_a_file_change
    Dir.mktmpdir do |dir|
      path = File.join(dir, "watched")
      File.write(path, "one")
      inotify = Sys::Inotify.new
      assert close_on_exec?(inotify.fd)
      assert nonblocking?(inotify.fd)
      wd = inotify.add_watch(path, Sys::IN_MODIFY | Sys::IN_CLOSE_WRITE)
      assert_equal wd, inotify.add_watch(path, Sys::IN_MODIFY | Sys::IN_CLOSE_WRITE), "same inode, same wd"
      assert_equal [], inotify.read_events
      File.write(path, "two")
      assert inotify.io.wait_readable(5)
      events = inotify.read_events
      assert(events.all? { |event| event[0] == wd && event[2] == "".b }, events.inspect)
      bits = events.map { |event| event[1] }.reduce(0, :|)
      assert_equal Sys::IN_MODIFY | Sys::IN_CLOSE_WRITE, bits, events.inspect
      assert_equal [], inotify.read_events
      inotify.close
    end
  end

  def test_inotify_in_a_directory_and_its_errors
    Dir.mktmpdir do |dir|
      inotify = Sys::Inotify.new
      dir_wd = inotify.add_watch(Pathname(dir), Sys::IN_CREATE | Sys::IN_DELETE)
      File.write(File.join(dir, "new"), "")
      File.unlink(File.join(dir, "new"))
      assert inotify.io.wait_readable(5)
      assert_equal [[dir_wd, Sys::IN_CREATE, "new".b], [dir_wd, Sys::IN_DELETE, "new".b]], inotify.read_events
      assert_raises(Errno::ENOENT) { inotify.add_watch(File.join(dir, "absent"), Sys::IN_MODIFY) }
      fd = inotify.fd
      inotify.close
      assert_nil inotify.fd
      refute Sys.fd_is_open(fd)
      inotify.close
    end
  end

  def test_inotify_events_parse_whole_events_only
    data = [1, 2, 0, 8].pack("lLLL") + "name\0\0\0\0".b + [3, 4, 0, 0].pack("lLLL") + "part".b
    assert_equal [[1, 2, "name".b], [3, 4, "".b]], Sys::Inotify.events(data)
  end
end

# Log's facilities, and its syslog opened, reopened and closed.
class TestLog < Minitest::Test
  Log = PreforkInterp::Log

  def test_facility
    assert_equal Syslog::LOG_USER, Log.facility("user")
    assert_equal Syslog::LOG_LOCAL0, Log.facility(:local0)
    assert_equal Syslog::LOG_DAEMON, Log.facility("LOG_DAEMON")
    assert_equal 17, Log.facility(17)
    assert_nil Log.facility(nil)
    assert_nil Log.facility("")
    assert_raises(ArgumentError) { Log.facility("nosuch") }
    assert_raises(ArgumentError) { Log.facility("a-b") }
  end

  def test_no_facility_logs_nothing
    log = Log::Log.new("script", nil)
    assert_nil log.args
    refute Syslog.opened?
    log.call(Log::LOG_ERR, "nothing")
    log.reopen
    log.close
    refute Syslog.opened?
  end

  def test_syslog_opened_reopened_closed
    log = Log::Log.new("script", Syslog::LOG_USER)
    assert Syslog.opened?
    assert_equal "prefork-interp script", Syslog.ident
    assert_equal Syslog::LOG_USER, Syslog.facility
    assert_equal Syslog::LOG_PID, Syslog.options
    said = []
    Syslog.stub(:log, ->(*args) { said << args }) do
      log.call(Log::LOG_INFO, "a test message with a %s in it")
    end
    # The message is no format.
    assert_equal [[Log::LOG_INFO, "%s", "a test message with a %s in it"]], said
    log.reopen
    assert Syslog.opened?
    # Opened again over one already open (the script's own, say).
    Log::Log.new("again", Syslog::LOG_LOCAL1)
    assert_equal "prefork-interp again", Syslog.ident
    log.close
    refute Syslog.opened?
    # Closed: a message is dropped, never raised.
    log.call(Log::LOG_ERR, "dropped")
  ensure
    Syslog.close if Syslog.opened?
  end
end
