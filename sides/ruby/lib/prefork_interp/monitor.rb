# frozen_string_literal: true

# The monitor: one per server (forked again if it dies). Forks the
# executors-to-be in advance, hands each call the server sends to an idle
# one, and watches every call in flight in one select loop (pidfds, the
# executors' 'r', the keepers' 't' and 'x', the clients' signal frames)
# until its end, which it tells the server ('d') and then the client (the
# status). Holds the caller's terminal and its settings while a client has
# it raw ('R'), to put them back should the client go away (unless its
# shell has set that terminal since), even once it has sent the status:
# until the client says it has put them back itself ('R' 0). Never runs
# the script's code; leaves with Process.exit! (os._exit).
#
# A port of the Python side's prefork_interp/_monitor.py, name for name
# (its _Spare and _Call are Spare and Call here, its phases WAITING...).
# Where Python polls, Ruby's core has IO.select (as the Perl side's
# select): the pidfds, Integers as in Python, are looked at through IO
# objects that never close them. What Ruby's core lacks of termios
# (tcgetattr and tcsetattr, field by field) comes from the C library
# through fiddle (Terminal, below).

require "fiddle"
require "io/nonblock"
require "socket"

require_relative "executor"
require_relative "log"
require_relative "sys"
require_relative "wire"

module PreforkInterp
  # The monitor's role: Monitor::Monitor, and the Spare and Call it keeps.
  module Monitor
    # A call's phases in the monitor.
    WAITING = :waiting # handed to its executor, no 'r' yet
    RUNNING = :running # got 'r': the script runs
    REPORTED = :reported # its keeper said how the script ended ('x'): over
    ABANDONED = :abandoned # the client went away: SIGINTed, to be reaped

    # Signal numbers (Python's signal.SIG*).
    SIGINT = Signal.list.fetch("INT")
    SIGHUP = Signal.list.fetch("HUP")
    SIGCONT = Signal.list.fetch("CONT")
    SIGKILL = Signal.list.fetch("KILL")

    # Python's socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL: here the
    # *_nonblock calls add MSG_DONTWAIT (on Linux they leave the fd's own
    # mode alone), and this is their flags.
    QUIET = Socket::MSG_NOSIGNAL

    # Room for one fd: the kernel hands over at most one message's fds in
    # a read, and the client sends one (with an 'R'). CMSG_SPACE(sizeof
    # (int)) on x86_64 Linux (a 16-byte cmsghdr, the int padded to 8):
    # Ruby's socket library has no CMSG_SPACE.
    FD_SPACE = 24
    # Room for exactly one fd, as Python's socket.recv_fds(sock, 1, 1)
    # gives the server's call (CMSG_LEN(sizeof(int))): a second one would
    # be cut off (and closed by the kernel).
    ONE_FD_LEN = 20
    # linux/socket.h; Ruby's Socket has no MSG_CMSG_CLOEXEC. (Ruby's
    # recvmsg adds it itself where it works, and sets close-on-exec on
    # every fd it receives: this says what Python says.)
    MSG_CMSG_CLOEXEC = 0x40000000

    # poll's bits, as Python's wait reports what it found (IO.select's
    # readable and writable sets, as masks).
    POLLIN = 0x1
    POLLOUT = 0x4

    # The caller's terminal's settings through the C library: Ruby's core
    # has no termios module (io/console sets whole modes, and reads and
    # writes no struct termios field by field). tcsetattr here is as
    # Python's termios.tcsetattr: the settings read first (what the wire
    # does not carry keeps its value: c_line), the flags and control
    # characters set, the speeds through cfsetispeed and cfsetospeed,
    # then tcsetattr.
    module Terminal
      # glibc's struct termios on x86_64 Linux (bits/termios-struct.h):
      # c_iflag, c_oflag, c_cflag, c_lflag (u32 each), c_line, c_cc[NCCS],
      # 3 bytes of padding, c_ispeed, c_ospeed: 60 bytes.
      NCCS = 32
      SIZE = 60
      CC_OFFSET = 17
      FLAGS_FORMAT = "L4"
      # tcsetattr's optional_actions: at once.
      TCSANOW = 0

      LIBC = Fiddle::Handle::DEFAULT
      TCGETATTR = Fiddle::Function.new(LIBC["tcgetattr"], [Fiddle::TYPE_INT, Fiddle::TYPE_VOIDP],
                                       Fiddle::TYPE_INT)
      TCSETATTR = Fiddle::Function.new(LIBC["tcsetattr"],
                                       [Fiddle::TYPE_INT, Fiddle::TYPE_INT, Fiddle::TYPE_VOIDP],
                                       Fiddle::TYPE_INT)
      # speed_t is an unsigned int: fiddle's int passes its bits.
      CFSETISPEED = Fiddle::Function.new(LIBC["cfsetispeed"], [Fiddle::TYPE_VOIDP, Fiddle::TYPE_INT],
                                         Fiddle::TYPE_INT)
      CFSETOSPEED = Fiddle::Function.new(LIBC["cfsetospeed"], [Fiddle::TYPE_VOIDP, Fiddle::TYPE_INT],
                                         Fiddle::TYPE_INT)

      module_function

      # The struct termios of terminal (an fd), a binary String, or a
      # SystemCallError (Errno::ENOTTY: not a terminal; Errno::EIO: hung
      # up).
      def get(terminal)
        termios = "\0".b * SIZE
        check("tcgetattr", TCGETATTR.call(terminal, termios))
        termios
      end

      # Its four flag words: iflag, oflag, cflag, lflag.
      def flags(termios)
        termios.unpack(FLAGS_FORMAT)
      end

      # Its NCCS control characters, Integers.
      def cc(termios)
        termios.byteslice(CC_OFFSET, NCCS).bytes
      end

      # settings (Wire::TerminalSettings) on terminal (an fd) at once, over
      # termios as get read it: as many control characters as our NCCS.
      def set(terminal, termios, settings)
        termios = termios.dup
        termios[0, 16] = [settings.iflag, settings.oflag, settings.cflag,
                          settings.lflag].pack(FLAGS_FORMAT)
        chars = settings.cc.first(NCCS)
        termios[CC_OFFSET, chars.length] = chars.pack("C*")
        check("cfsetispeed", CFSETISPEED.call(termios, settings.ispeed))
        check("cfsetospeed", CFSETOSPEED.call(termios, settings.ospeed))
        check("tcsetattr", TCSETATTR.call(terminal, TCSANOW, termios))
      end

      def check(name, result)
        raise SystemCallError.new(name, Fiddle.last_error) if result == -1

        result
      end
    end
    private_constant :Terminal

    # fds kept as Integers, as Python keeps them (its os.close, and the
    # fds of recvmsg's ancillary data).
    module Fd
      module_function

      # Closes an fd: a SystemCallError (Errno::EBADF) if it is not open.
      def close(number)
        IO.for_fd(number, autoclose: true).close
      end

      # The fds of recvmsg's ancillary data (SCM_RIGHTS), as Integers: the
      # IO objects Ruby made of them let go of them, never to close them.
      def received(controls)
        controls.flat_map do |control|
          next [] unless control.cmsg_is?(:SOCKET, :RIGHTS)

          control.unix_rights.map do |io|
            io.autoclose = false
            io.fileno
          end
        end
      end
    end
    private_constant :Fd

    # An executor-to-be, idle: waits for a call on handover (nil once the
    # monitor has closed it, or found it dead).
    class Spare
      attr_accessor :pid, :pidfd, :handover, :from_executor

      def initialize(pid, pidfd, handover, from_executor)
        @pid = pid
        @pidfd = pidfd
        @handover = handover
        @from_executor = from_executor
      end
    end

    # A call in flight: its executor (pid, pidfd; from_executor until its
    # 'r', nil after it or when it failed), its call socket. On a
    # pseudo-terminal of its own the executor is the session's keeper and
    # the script its child (script: its pid, which leads the group the
    # call's signals go to), and from_executor, after the 'r', is
    # from_keeper (nil at its EOF, or once it has said 'x': the call is
    # then over, REPORTED, and the keeper to be reaped). restore: the
    # client's last 'R', [the settings to put back, those the client left,
    # the caller's terminal's fd], or nil. A call whose status has gone
    # while it held a restore is the monitor's ending (its call socket
    # open, past its executor's reaping) until its client's 'R' 0 or end.
    class Call
      attr_accessor :pid, :pidfd, :conn, :from_executor, :phase, :extended, :script,
                    :from_keeper, :status, :frames, :fds, :restore, :abandoned_at, :killed

      def initialize(spare, conn)
        @pid = spare.pid
        @pidfd = spare.pidfd
        @from_executor = spare.from_executor
        @conn = conn
        @phase = WAITING
        @extended = false
        @script = nil
        @from_keeper = nil
        @status = nil # the script's wait status, from the keeper's 'x'
        @frames = "".b # the client's, read so far
        # The fds that came with them, oldest first, each for the byte
        # that ends an 'R' (the kernel hands an fd over with the first
        # byte read of its message, so never after that byte).
        @fds = []
        @restore = nil
        @abandoned_at = nil # CLOCK_MONOTONIC seconds of its SIGINT (SIGHUP)
        @killed = false # SIGKILLed after the grace
      end

      # Nothing to put back: closes the caller's terminal kept.
      def drop_restore
        return if @restore.nil?

        Fd.close(@restore[2])
        @restore = nil
      end

      # The call's end for 'R': closes the caller's terminal, kept or
      # still to be paired with its 'R'; nothing is put back.
      def forget_terminal
        drop_restore
        @fds.each { |fd| Fd.close(fd) }
        @fds = []
      end

      # The client has gone while it had the caller's terminal raw: that
      # terminal as the client found it (as a direct run killed outright
      # leaves it), if it still has what the client left; then closed.
      def put_back_terminal
        unless @restore.nil?
          put_back, left, fd = @restore
          begin
            termios = Terminal.get(fd)
            now = Terminal.cc(termios)
            # The shell that ran the client may have taken its terminal
            # back already (bash's readline sets its own mode): that
            # stays. Speeds are not compared: raw mode leaves them. Control
            # characters: as many as both have (Python's zip).
            common = [now.length, left.cc.length].min
            if Terminal.flags(termios) == [left.iflag, left.oflag, left.cflag, left.lflag] &&
               now.first(common) == left.cc.first(common)
              Terminal.set(fd, termios, put_back)
            end
          rescue SystemCallError
            # The terminal has gone too (hung up): nothing to put back.
          end
        end
        forget_terminal
      end

      # The process group the call's signals go to: the executor's, or on
      # a pseudo-terminal of its own the script's (its pgid is its pid once
      # it has read its request; while it is unreaped, no other group can
      # have that id; the keeper reaps the script only after its own last
      # signal to the group, and only then tells us its status).
      def group
        @script || @pid
      end
    end

    # Keeps `spare_handlers` executors-to-be idle; the calls in flight by
    # executor pid.
    class Monitor
      attr_accessor :control, :settings, :log, :spare, :grace, :idle, :calls, :ending, :owed, :pid,
                    :saved, :own_limits

      def initialize(control, settings)
        @control = control # nil once the server has gone
        @settings = settings
        @log = settings.log
        @spare = settings.spare_handlers
        @grace = settings.interrupt_grace # nil: never SIGKILL
        @idle = [] # Spare, oldest first
        @calls = {} # executor pid -> Call
        # Calls whose status has gone while their clients still have the
        # caller's terminal raw: each until its client says it put the
        # terminal back ('R' 0) or goes (Call, oldest first).
        @ending = []
        @owed = "".b # 'd' and 'h' bytes the server has not yet been sent
        @pid = Process.pid
        # Executors are groups of their own and signals go to those, but
        # nothing sent to us by mistake may hurt us; the executors get the
        # server's dispositions back (trap's previous handlers, by signal
        # number). "IGNORE" is SIG_IGN.
        @saved = Sys::FORWARDED_SIGNALS.to_h { |sig| [sig, trap(sig, "IGNORE")] }
        # The server's limits, read once here: every executor forked from
        # now on compares a caller's with them at no cost.
        @own_limits = Executor.read_own_limits
      end

      # Serves until the server has gone and every call has ended (its
      # client's terminal put back, or the client's to put back); returns
      # only in a new executor-to-be, its Executor.
      def run
        loop do
          # Missing spares are forked at once, while the call that took one
          # runs. (The Rust and Perl monitors wait until the calls in
          # flight have ended, or 5 ms; in the Python side the fork, about
          # 1 ms of copying page tables and of our own copy-on-write, took
          # longer than the next client's exec, so waiting made back-to-back
          # calls slower: 3.31-3.36 to 3.44-3.50 ms a call ending with
          # os._exit, and 1.45 to 2.48 ms to the script's code on Python
          # 3.13, in ./bench; the Ruby side does as the Python side.)
          if !@control.nil?
            child = fork_spares
            return child unless child.nil?
          elsif @calls.empty? && @idle.empty? && @ending.empty?
            Process.exit!(0)
          end
          child = serve(kill_overdue)
          return child unless child.nil?
        end
      end

      # run's forks of the missing spares: nil, or in a new executor-to-be
      # its Executor.
      def fork_spares
        while @idle.count { |s| !s.handover.nil? } < @spare
          spare, child = fork_executor
          return child unless child.nil?
          break if spare.nil? # logged; another round tries again

          @idle << spare
        end
        nil
      end

      # SIGKILLs the groups of abandoned calls whose scripts still run after
      # the grace; returns the seconds until the next one's grace is over
      # (nil: no deadline).
      def kill_overdue
        return nil if @grace.nil?

        now = Process.clock_gettime(Process::CLOCK_MONOTONIC)
        next_left = nil
        @calls.each_value do |call|
          next if call.phase != ABANDONED || call.killed

          left = call.abandoned_at + @grace - now
          if left <= 0
            Sys.kill_group(call.group, SIGKILL)
            call.killed = true
            @log.call(Log::LOG_ERR, format("executor %d still ran %g s after its client went away " \
                                           "and its SIGINT: killed", call.pid, @grace))
          else
            next_left = [next_left, left].compact.min
          end
        end
        next_left
      end

      # One select, level-triggered: what it found, as [order, thing, mask]
      # (mask: POLLIN, POLLOUT) in the order serve handles them.
      def wait(timeout)
        watched = watching
        readers = watched.select { |_, _, _, mask| mask.anybits?(POLLIN) }.map(&:first)
        writers = watched.select { |_, _, _, mask| mask.anybits?(POLLOUT) }.map(&:first)
        readable, writable = IO.select(readers, writers, nil, select_timeout(timeout))
        in_order(watched, readable.to_a, writable.to_a)
      end

      # What wait watches: [io, order, thing, mask] each (a pidfd, kept as
      # an Integer, through an IO that never closes it).
      def watching
        watched = []
        watched << [@control, 4, nil, POLLIN | (@owed.empty? ? 0 : POLLOUT)] unless @control.nil?
        @idle.each { |spare| watched << [IO.for_fd(spare.pidfd, autoclose: false), 2, spare, POLLIN] }
        @calls.each_value { |call| watch_call(watched, call) }
        # As a running call's socket (an ending call is never RUNNING in
        # calls: watch_call does not watch it twice).
        @ending.each { |call| watched << [call.conn, 3, call, POLLIN] }
        watched
      end

      # watching's part for a call in flight.
      def watch_call(watched, call)
        watched << [IO.for_fd(call.pidfd, autoclose: false), 2, call, POLLIN]
        if call.phase == WAITING && !call.from_executor.nil?
          watched << [call.from_executor, 0, call, POLLIN]
        elsif call.phase == RUNNING
          watched << [call.conn, 3, call, POLLIN]
        end
        watched << [call.from_keeper, 1, call, POLLIN] unless call.from_keeper.nil?
      end

      # IO.select's timeout, in ms rounded up as Python's poll's: it must
      # not wake just before the time.
      def select_timeout(timeout)
        return nil if timeout.nil?

        [0, (timeout * 1000).ceil].max / 1000.0
      end

      # What select found (readable, writable: its IOs), as wait returns it:
      # by order, ties in the order watched (Python's sorted is stable).
      def in_order(watched, readable, writable)
        found = watched.each_with_index.filter_map do |(io, order, thing, _), at|
          mask = (readable.include?(io) ? POLLIN : 0) | (writable.include?(io) ? POLLOUT : 0)
          [order, at, thing, mask] unless mask.zero?
        end
        found.sort_by { |order, at, _, _| [order, at] }.map { |order, _, thing, mask| [order, thing, mask] }
      end

      # One round: executors' 'r', keepers' 't' and 'x', executors gone,
      # clients' frames or EOF, the server's calls, in this order.
      def serve(timeout = nil)
        wait(timeout).each do |order, thing, mask|
          case order
          when 0 then ready_said(thing)
          when 1 then keeper_said(thing)
          when 2 then gone(thing)
          when 3 then client_said(thing)
          else
            child = server_said(mask)
            return child unless child.nil?
          end
        end
        nil
      end

      # serve's 'r' (order 0), unless the call has ended since select
      # looked (as each of serve's parts checks).
      def ready_said(call)
        take_ready(call) if !call.from_executor.nil? && @calls.key?(call.pid)
      end

      # serve's keeper message (order 1).
      def keeper_said(call)
        hear_keeper(call) if !call.from_keeper.nil? && @calls.key?(call.pid)
      end

      # serve's pidfd (order 2): an idle spare or a call's executor gone.
      def gone(thing)
        if thing.is_a?(Spare)
          spare_gone(thing)
        else
          reap(thing)
        end
      end

      # serve's client frames or EOF (order 3), or an ending call's last
      # words.
      def client_said(call)
        if call.phase == RUNNING && @calls.key?(call.pid)
          hear_client(call)
        elsif @ending.include?(call)
          hear_ending(call)
        end
      end

      # serve's control (order 4): writable, what is owed goes; readable, a
      # call (returns a new executor in the child forked for it, if any).
      def server_said(mask)
        flush if mask.anybits?(POLLOUT)
        take_call if mask.anybits?(~POLLOUT) && !@control.nil?
      end

      # In a new executor-to-be, before anything else: nothing of the
      # monitor's stays open (a call socket kept by a spare would hide its
      # client's EOF).
      def close_in_child(close)
        @control&.close
        @idle.each do |spare|
          spare.handover&.close
          spare.from_executor.close
          Fd.close(spare.pidfd)
        end
        @calls.each_value { |call| close_call_in_child(call) }
        # Those reaped already too (again for the others: both close
        # nothing twice).
        @ending.each do |call|
          call.conn.close
          call.forget_terminal
        end
        close.each(&:close)
      end

      # close_in_child's part for a call in flight.
      def close_call_in_child(call)
        call.conn.close
        # Else a script would hold its caller's terminal open.
        call.forget_terminal
        call.from_executor&.close
        call.from_keeper&.close
        Fd.close(call.pidfd)
      end

      # Forks an executor-to-be. In the monitor: [its Spare, nil], or [nil,
      # nil] if that failed (logged). In the child, which has closed every
      # fd of ours (and those in close): [nil, its Executor].
      def fork_executor(*close)
        made = []
        begin
          handover, handover_theirs = Socket.pair(:UNIX, :STREAM)
          made += [handover, handover_theirs]
          from_executor, from_executor_theirs = Socket.pair(:UNIX, :STREAM)
          made += [from_executor, from_executor_theirs]
          # Blocking, whatever Ruby made them (Ruby 3 makes sockets
          # O_NONBLOCK; a keeper program execed with its end reads it
          # blocking).
          made.each { |sock| sock.nonblock = false }
          pid = Process.fork
        rescue SystemCallError => e
          made.each(&:close)
          @log.call(Log::LOG_ERR, "cannot fork an executor: #{e.message}")
          return [nil, nil]
        end
        if pid.nil?
          # Anything raised here ends the child (Python's BaseException).
          ready = false
          begin
            close_in_child(close + [handover, from_executor])
            @log.reopen
            @settings.titles.set("handler")
            ready = true
          ensure
            Process.exit!(127) unless ready
          end
          return [nil, Executor::Executor.new(@settings, handover_theirs, from_executor_theirs,
                                              @saved, @pid, @own_limits)]
        end
        handover_theirs.close
        from_executor_theirs.close
        begin
          pidfd = Sys.pidfd_open(pid)
        rescue SystemCallError => e
          # Unwatchable: it must not serve.
          @log.call(Log::LOG_ERR, "cannot open a pidfd for executor #{pid}: #{e.message}")
          handover.close
          from_executor.close
          Process.kill(SIGKILL, pid)
          Process.waitpid(pid)
          return [nil, nil]
        end
        [Spare.new(pid, pidfd, handover, from_executor), nil]
      end

      # control is readable: a call (0x00 with its socket), or the server's
      # EOF. Returns a new executor in the child forked if no spare was
      # idle, else nil.
      def take_call
        conn = receive_call
        conn.nil? ? nil : give_call(conn)
      end

      # take_call's read: the call socket (blocking, as the executor reads
      # it), or nil (the server's EOF, or a call without its socket: done
      # with).
      def receive_call
        begin
          # Without waiting (select said readable; if nothing is there after
          # all, as Python's BlockingIOError, nothing happens).
          received = @control.recvmsg_nonblock(1, MSG_CMSG_CLOEXEC, ONE_FD_LEN,
                                               scm_rights: true, exception: false)
          return nil if received == :wait_readable

          # EOF: "", or from Ruby 3.3 on nil.
          data, _, _, *controls = received || ["".b]
          fds = Fd.received(controls)
        rescue SystemCallError, IOError
          data = "".b
          fds = []
        end
        return refuse_call(data, fds) if data.empty? || fds.length != 1

        conn = Socket.for_fd(fds[0])
        conn.nonblock = false
        conn
      end

      # receive_call's EOF (data empty: the server has gone), or a call
      # that came without its one socket: nil.
      def refuse_call(data, fds)
        fds.each { |fd| Fd.close(fd) }
        if data.empty?
          server_gone
        else
          @log.call(Log::LOG_ERR, "a call came without its socket")
          call_ended(Wire::MONITOR_CALL_DROPPED)
        end
        nil
      end

      # take_call's hand-over: to the oldest idle spare, else to one forked
      # now (once); nil, or the new executor in that child.
      def give_call(conn)
        forked = false
        loop do
          spare = @idle.find { |s| !s.handover.nil? }
          if !spare.nil?
            @idle.delete(spare)
          elsif !forked
            forked = true
            spare, child = fork_executor(conn)
            return child unless child.nil?
          end
          return drop_call(conn) if spare.nil?
          return nil if hand_over(spare, conn)
        end
      end

      # No executor to take conn's call: the client sees EOF, the server
      # 'h'. nil.
      def drop_call(conn)
        @log.call(Log::LOG_ERR, "no executor to take a call")
        conn.close
        call_ended(Wire::MONITOR_CALL_DROPPED)
        nil
      end

      # take_call's hand-over of conn to spare: whether it took it (else
      # it died idle, and is back in idle, its handover closed).
      def hand_over(spare, conn)
        begin
          spare.handover.sendmsg(Wire::FD_MESSAGE_BYTE, Socket::MSG_NOSIGNAL, nil,
                                 Socket::AncillaryData.unix_rights(conn))
        rescue SystemCallError, IOError
          # It died idle: its pidfd says so, and it is reaped then.
          spare.handover.close
          spare.handover = nil
          @idle << spare
          return false
        end
        spare.handover.close
        @calls[spare.pid] = Call.new(spare, conn)
        true
      end

      # control's EOF: serve the calls in flight to their end; the spares
      # leave on their handover's EOF (and are reaped).
      def server_gone
        @control.close
        @control = nil
        @owed = "".b
        @idle.each do |spare|
          next if spare.handover.nil?

          spare.handover.close
          spare.handover = nil
        end
      end

      # A call handed to us has ended: tell the server ('d', or 'h' if its
      # script never ran).
      def call_ended(how = Wire::MONITOR_CALL_ENDED)
        @owed += how
        flush
      end

      def flush
        if @control.nil?
          @owed = "".b
          return
        end
        begin
          sent = @control.sendmsg_nonblock(@owed, QUIET, exception: false)
          # :wait_writable: later, when control is writable.
          @owed = @owed.byteslice(sent..) unless sent == :wait_writable
        rescue SystemCallError, IOError
          @owed = "".b # the server has gone; its EOF follows
        end
      end

      # from_executor has something: 'r' and the request byte (the call
      # runs; on a pseudo-terminal of its own, the script's pid follows,
      # and from then on the keeper's 't' and 'x'), or EOF (the executor
      # could not take the call; it logged why). Safe to block: the
      # executor wrote it at once, or is dead.
      def take_ready(call)
        sock = call.from_executor
        call.from_executor = nil
        begin
          byte = Wire.decode_executor_ready(Sys.recv_exact(sock, 2))
        rescue Wire::ProtocolError, ArgumentError
          # (ArgumentError: wire.rb's word for a message that is not 2
          # bytes, EOF among them.)
          sock.close
          return
        end
        if byte.anybits?(Wire::REQUEST_ANY_PTY)
          script = Sys.recv_exact(sock, 4)
          if script.bytesize == 4
            call.phase = RUNNING
            call.extended = byte.anybits?(Wire::REQUEST_BYTE_EXTENDED)
            call.script = Wire.decode_script_pid(script)
            call.from_keeper = sock
            return
          end
        else
          call.phase = RUNNING
          call.extended = byte.anybits?(Wire::REQUEST_BYTE_EXTENDED)
        end
        sock.close
      end

      # The keeper's socket is readable: one message ('t' and a signal: the
      # script has stopped, which the client is told ('T') so that it stops
      # too; 'x' and the script's wait status: the call is over at once, 'd'
      # and the client's 'X' without waiting for the keeper's exit, which
      # is reaped quietly), or EOF, or garbage: it has nothing more to say.
      # Safe to block: the keeper writes each at once, or is dead.
      def hear_keeper(call)
        message = Sys.recv_exact(call.from_keeper, Wire::FRAME_LEN)
        if message.bytesize == Wire::FRAME_LEN
          kind, value = Wire.decode_frame(message)
          if kind == Wire::KEEPER_STATUS
            call.status = value
            if call.phase == RUNNING
              # It has nothing more to say: it exits.
              call.from_keeper.close
              call.from_keeper = nil
              call.phase = REPORTED
              call_ended
              send_status(call, value)
            end
            return
          end
          if kind == Wire::KEEPER_STOPPED
            tell_stopped(call, value) if call.phase == RUNNING
            return
          end
        end
        call.from_keeper.close
        call.from_keeper = nil
      end

      # hear_keeper's 't': the client is told ('T' and the signal).
      def tell_stopped(call, sig)
        call.conn.sendmsg_nonblock(Wire.encode_frame(Wire::FRAME_STOPPED, sig), QUIET,
                                   exception: false)
      rescue SystemCallError, IOError
        # The client has gone: its EOF says so.
      end

      def spare_gone(spare)
        @idle.delete(spare)
        spare.handover&.close
        spare.from_executor.close
        Fd.close(spare.pidfd)
        _, waited = Process.waitpid2(spare.pid)
        # Once the server has gone we closed its handover: it leaves
        # quietly (or on SIGINT).
        return if @control.nil? && (waited.to_i.zero? || (waited.signaled? && waited.termsig == SIGINT))

        @log.call(Log::LOG_ERR, "idle executor #{spare.pid} #{Sys.describe_status(waited.to_i)}")
      end

      # A call's executor has gone: its end.
      def reap(call)
        take_ready(call) if call.phase == WAITING && !call.from_executor.nil? # it may have said 'r' after select looked
        @calls.delete(call.pid)
        Fd.close(call.pidfd)
        if call.phase != ABANDONED
          # What it left behind in its group first: a zombie's status
          # cannot change, and its group id cannot be reused before we
          # reap it. (A keeper has done so for the script's group.)
          Sys.kill_group(call.pid, SIGINT)
        end
        status = Process.waitpid2(call.pid)[1].to_i
        # Unless REPORTED: its client has had 'd' and its status.
        report_end(call, script_status(call, status)) if call.phase != REPORTED
        # Its client has the caller's terminal raw still: its socket stays.
        return if @ending.include?(call)

        call.forget_terminal # put back already, or the client's to restore
        call.conn.close
      end

      # reap's status of a call whose executor exited with status. A keeper
      # has exited: all it said is there to read. The status is the
      # script's, which it reaped.
      def script_status(call, status)
        hear_keeper(call) until call.from_keeper.nil?
        return call.status unless call.status.nil?

        unless call.script.nil?
          # The keeper was killed before the script ended: nothing watches
          # the script now. It goes too.
          @log.call(Log::LOG_ERR, "keeper #{call.pid} of script #{call.script} " \
                                  "#{Sys.describe_status(status)}: script killed")
          Sys.kill_group(call.script, SIGKILL)
        end
        status
      end

      # reap's word of the end, to the server and the client.
      def report_end(call, status)
        case call.phase
        when ABANDONED
          @log.call(Log::LOG_INFO, "client went away; script interrupted, it " \
                                   "#{Sys.describe_status(status)}")
          call_ended
        when RUNNING
          call_ended
          send_status(call, status)
        else
          unless status.zero?
            @log.call(Log::LOG_ERR, "executor #{call.pid} failed before its call: it " \
                                    "#{Sys.describe_status(status)}")
          end
          # Its client sees EOF. 'h': no request came (a listing; a caller
          # that went elsewhere).
          call_ended(Wire::MONITOR_CALL_DROPPED)
        end
      end

      # A call's end to its client, once the server has its 'd' (a greeting
      # after the client has its status counts this call out). Not
      # delivered, the client has gone, and the monitor puts back what its
      # last 'R' gave. Delivered, the client restores its terminal itself
      # and says so ('R' 0); until then the call is ending, and its
      # terminal still ours to put back: sent is not received, and a client
      # killed as the script ends may have closed its pseudo-terminal
      # (which ended the script) and not yet its call socket.
      def send_status(call, status)
        if !deliver_status(call, status)
          call.put_back_terminal
        elsif call.restore.nil?
          call.forget_terminal
        else
          @ending << call
        end
      end

      # send_status's send: whether the client has its status (false: it
      # has gone). First what the client said that is still unread: its
      # going away may be what ended the script (its terminal's hang-up),
      # and select hands us the keeper's 'x' before the client's EOF.
      def deliver_status(call, status)
        return false if call.extended && hear_last_of_client(call)

        message = if call.extended
                    Wire.encode_frame(Wire::FRAME_STATUS, status)
                  else
                    Wire.encode_status(status)
                  end
        # :wait_writable is Python's BlockingIOError: not delivered.
        call.conn.sendmsg_nonblock(message, QUIET, exception: false) != :wait_writable
      rescue SystemCallError, IOError
        false # the client has gone
      end

      # An ending call's socket is readable: what its client says last. 'R'
      # 0: it put its terminal back, nothing is held; another 'R': held
      # instead; other frames: ignored (a script that has ended gets no
      # signals); its end (EOF, an error, an 'R' that breaks the wire
      # format: it may have died before it put its terminal back): the
      # terminal put back, if it still has what the client left there.
      def hear_ending(call)
        heard = read_client(call, act: false)
        return if heard.nil? || (heard && !call.restore.nil?)

        if heard
          call.forget_terminal
        else
          call.put_back_terminal
        end
        @ending.delete(call)
        call.conn.close
      end

      # A running call's socket is readable. v1: the client has gone (it
      # has nothing more to say). Extended: signal frames ('S' and a
      # forwardable signal: to the call's group), on a pseudo-terminal of
      # its own 'F' (the script to its terminal's foreground, 1, or
      # background, 0), passed to the keeper as 'f', never a signal, 'R'
      # (the caller's terminal and the settings to put back on it; other
      # kinds are ignored), or EOF, an error, or an 'R' that breaks the wire
      # format: the client has gone. Then its caller's terminal is put back
      # first, for the shell that ran the client.
      def hear_client(call)
        return if call.extended && read_client(call) != false

        call.put_back_terminal
        group = call.group
        if call.script.nil?
          Sys.kill_group(group, SIGINT)
        else
          # Its terminal has gone: as a direct run whose terminal goes
          # away, SIGHUP (and SIGCONT, should it be stopped).
          Sys.kill_group(group, SIGHUP)
          Sys.kill_group(group, SIGCONT)
        end
        call.phase = ABANDONED
        call.abandoned_at = Process.clock_gettime(Process::CLOCK_MONOTONIC)
      end

      # One read of an extended call's socket, without waiting, its whole
      # frames taken (forward). nil: nothing to read; true: read; false:
      # the client has gone (EOF, an error, an 'R' that breaks the wire
      # format).
      def read_client(call, act: true)
        begin
          received = recv_frames(call.conn)
        rescue SystemCallError, IOError
          return false
        end
        return nil if received.nil?

        data, fds = received
        call.fds += fds
        !data.empty? && forward(call, call.frames + data, act: act)
      end

      # What the client sent that is still unread, once the script has
      # ended: its 'R' frames are kept, its signals go nowhere (the
      # script's pid may be another process's by now). Whether the client
      # has gone.
      def hear_last_of_client(call)
        loop do
          heard = read_client(call, act: false)
          return heard == false unless heard == true
        end
      end

      # The client's whole frames: signals to the call's group, 'F' to the
      # keeper (both only if act), 'R' kept on the call; keeps what is left
      # of a frame (an 'R' waits for its settings and its fd, which the
      # client sends at once). false (logged): an 'R' broke the wire format.
      def forward(call, frames, act: true)
        while frames.bytesize >= Wire::FRAME_LEN
          kind, value = Wire.decode_frame(frames.byteslice(0, Wire::FRAME_LEN))
          if kind == Wire::FRAME_RESTORE
            rest = take_restore(call, frames, value)
            return false if rest == false
            break if rest.nil?

            frames = rest
            next
          end
          frames = frames.byteslice(Wire::FRAME_LEN..)
          act_on(call, kind, value) if act
        end
        call.frames = frames
        true
      end

      # forward's 'R' at the start of frames (value: its length, 0: nothing
      # to put back): the frames after it; nil if its rest is on its way
      # (the client sends it at once); false (logged) if it broke the wire
      # format.
      def take_restore(call, frames, value)
        if value.zero?
          call.drop_restore
          return frames.byteslice(Wire::FRAME_LEN..)
        end
        begin
          # Refused before its bytes come: nothing waits for them.
          last = Wire::FRAME_LEN + Wire.check_restore_len(value)
          return nil if frames.bytesize < last

          put_back, left = Wire.decode_restore(frames.byteslice(Wire::FRAME_LEN...last))
        rescue Wire::ProtocolError => e
          @log.call(Log::LOG_ERR, "call of executor #{call.pid}: #{e.message}")
          return false
        end
        return nil if frames.bytesize == last # so is the byte that brings the terminal

        if call.fds.empty?
          @log.call(Log::LOG_ERR, "call of executor #{call.pid}: 'R' came without the " \
                                  "caller's terminal")
          return false
        end
        call.drop_restore
        call.restore = [put_back, left, call.fds.shift]
        frames.byteslice((last + 1)..)
      end

      # forward's other frames, if it acts: a forwardable signal to the
      # call's group, 'F' to the keeper as 'f'; other kinds are ignored.
      def act_on(call, kind, value)
        if kind == Wire::FRAME_SIGNAL && Sys::FORWARDED_SIGNALS.include?(value)
          Sys.kill_group(call.group, value)
        elsif kind == Wire::FRAME_FOREGROUND && !call.from_keeper.nil?
          # For the keeper, which moves the script's group (it reads each
          # at once: this never fills its socket).
          begin
            call.from_keeper.sendmsg_nonblock(Wire.encode_frame(Wire::KEEPER_FOREGROUND, value),
                                              QUIET, exception: false)
          rescue SystemCallError, IOError
            # It has gone: its EOF says so.
          end
        end
      end

      private

      # What a client has sent, without waiting: [data, the fds that came
      # with it] (Integers, close-on-exec), or nil if nothing is there yet.
      # recvmsg_nonblock, not Sys.recv_fds, as Python's is not
      # socket.recv_fds (which ignores its flags, CPython gh-107898: it
      # would block, and leave the fd inheritable). With room for an fd,
      # as a read without would close the one an 'R' brings.
      def recv_frames(sock)
        received = sock.recvmsg_nonblock(4096, MSG_CMSG_CLOEXEC, FD_SPACE,
                                         scm_rights: true, exception: false)
        return nil if received == :wait_readable
        # EOF: "", or from Ruby 3.3 on nil.
        return ["".b, []] if received.nil?

        [received[0], Fd.received(received.drop(3))]
      end
    end
  end
end
