# frozen_string_literal: true

# The executor: forked by the monitor before its call (a spare, idle
# until then), with nothing of the monitor's open. It reads the request
# itself and returns from initialisation_complete as the call: the
# caller's fds, arguments, environment, directory, umask and limits.
#
# On a call with a pseudo-terminal of its own it leads a session instead,
# with that terminal as its controlling terminal, and forks the script's
# process, which leads the terminal's foreground group (with 0x20, a group
# in its background); the executor stays as the session's keeper
# (Keeper). Why two processes: a process group none of whose members has
# a parent in its session but outside the group is orphaned, and the
# kernel discards the stop signals a terminal sends such a group: a script
# leading its session itself (its parent, the monitor, is elsewhere) would
# ignore ^Z.
#
# (Ruby port of the Python side's _executor.py.)

require "fiddle"
require "io/nonblock"
require "socket"

require_relative "init_env"
require_relative "keeper"
require_relative "log"
require_relative "sys"
require_relative "wire"

module PreforkInterp
  # Executor::Executor (an executor-to-be, and the call it becomes), and
  # what the server and monitor use of it: Executor.read_own_limits,
  # Executor.raise_soft_limits_for_server; Executor.read_request,
  # Executor.take_caller_signals, Executor.take_limits.
  module Executor
    # Linux's resource numbers, RLIMIT_CPU (0) to RLIMIT_RTTIME (15), by name.
    RESOURCES = %w[CPU FSIZE DATA STACK CORE RSS NPROC NOFILE MEMLOCK AS LOCKS SIGPENDING MSGQUEUE
                   NICE RTPRIO RTTIME].freeze

    SIGINT = Signal.list.fetch("INT")
    SIGCHLD = Signal.list.fetch("CHLD")
    # What an executor on a pseudo-terminal of its own blocks: the terminal's
    # signals, held until its monitor knows the call runs, and SIGCHLD, which
    # the keeper reads from a signalfd; the script's process gets the old
    # mask back.
    PTY_CALL_BLOCKED = (Sys::TERMINAL_SIGNALS | [SIGCHLD]).sort.freeze

    # The signals a caller's may be laid over (Python's
    # signal.valid_signals() less KILL and STOP): 1 to 64 but KILL and
    # STOP, which nothing can catch or block, and 32 and 33, the C
    # library's own (glibc's thread cancellation and set*id calls), which
    # it refuses to let anyone change.
    VALID_SIGNALS = ((1..Wire::MAX_SIGNAL).to_a - [Signal.list.fetch("KILL"), Signal.list.fetch("STOP"), 32, 33])
                    .freeze

    # How Ruby's start-up leaves a signal, as trap reports it (Python's
    # start-up makes SIGINT its default_int_handler, and leaves the rest
    # at SIG_DFL): Ruby's own handler ("DEFAULT": INT raises Interrupt,
    # HUP, QUIT, TERM, ALRM, USR1 and USR2 SignalException), a handler
    # that does nothing (nil: PIPE and SYS, so that a write to a pipe with
    # no reader raises EPIPE), and SIG_DFL ("SYSTEM_DEFAULT") for the
    # rest. SIGCHLD is either: Ruby before 3.3 handles it (for its
    # waitpid), and the server sets it to SIG_DFL (Setup: a caller
    # ignoring it breaks waitpid).
    RUBY_HANDLED = %w[HUP INT QUIT TERM ALRM USR1 USR2].map { |name| Signal.list.fetch(name) }.freeze
    RUBY_NOTHING = %w[PIPE SYS].map { |name| Signal.list.fetch(name) }.freeze

    # The limits the server raises, soft to hard, for its own processes
    # (Rust's CLIENT_RAISED): the monitor and the spares it forks are its
    # work, not a caller's.
    SERVER_RAISED = [Process::RLIMIT_NPROC, Process::RLIMIT_NOFILE].freeze

    # fchdir(2), which Ruby's core has only from 3.3 (Dir.fchdir): the
    # caller's directory comes as an fd.
    FCHDIR = Fiddle::Function.new(Fiddle::Handle::DEFAULT["fchdir"], [Fiddle::TYPE_INT], Fiddle::TYPE_INT)
    # A handler trap puts in place only to hear what was there (take_caller_signals).
    PROBE = proc {}
    private_constant :SIGINT, :SIGCHLD, :RUBY_HANDLED, :RUBY_NOTHING, :FCHDIR, :PROBE

    # The client went away.
    class Hangup < StandardError
    end
    private_constant :Hangup

    module_function

    def read_exact(sock, length)
      data = "".b
      while data.bytesize < length
        begin
          chunk = sock.recv(length - data.bytesize)
        rescue Errno::ECONNRESET, Errno::EPIPE
          raise Hangup
        end
        # Ruby 3.3 says EOF with nil, older ones with "".
        raise Hangup if chunk.nil? || chunk.empty?

        data << chunk.b
      end
      data
    end

    # One fd, with its one byte.
    def recv_fd(conn)
      begin
        data, received, = Sys.recv_fds(conn, 1, 1)
      rescue Errno::ECONNRESET, Errno::EPIPE
        raise Hangup
      end
      raise Hangup if data.empty?
      raise ArgumentError, "expected one file descriptor, got #{received.length}" if received.length != 1

      received[0]
    end

    # Reads a request: its byte (0, or 0x01 with any of the flags: 0x02
    # context, 0x04, 0x08, 0x10 fd 0, 1, 2 a pseudo-terminal, 0x20 with one
    # of those: the script starts in its terminal's background), with 0x80
    # the second flags byte (the fds the caller has closed: 0x01, 0x02,
    # 0x04; 0 if none), fd 0, 1, 2, the payload, with context the caller's
    # directory and umask, with 0x40 the caller's limits
    # (Wire.decode_limits), and with the second byte's 0x08 the signals the
    # caller ignores and blocks (Wire.decode_caller_signals). As [byte,
    # closed, fds, env, args, context, limits, caller_signals].
    def read_request(conn)
      byte = Wire.check_request_byte(read_exact(conn, 1).getbyte(0))
      closed = 0
      closed = Wire.check_second_request_byte(read_exact(conn, 1).getbyte(0)) if Wire.has_second_request_byte(byte)
      fds = Array.new(3) { recv_fd(conn) }
      length = Wire.decode_payload_len(read_exact(conn, 4))
      env, args = Wire.decode_payload(read_exact(conn, length))
      context = nil
      if byte.anybits?(Wire::REQUEST_FLAG_CONTEXT)
        _, received, = Sys.recv_fds(conn, 1, 1)
        raise ArgumentError, "no directory in the context message" if received.length != 1

        context = [received[0], Wire.decode_context_umask(read_exact(conn, 4))]
      end
      limits = nil
      if byte.anybits?(Wire::REQUEST_FLAG_LIMITS)
        count = read_exact(conn, 1).getbyte(0)
        limits = Wire.decode_limits(
          count, read_exact(conn, (count * Wire::LIMITS_ENTRY_LEN) + Wire::LIMITS_TAIL_LEN)
        )
      end
      caller_signals = nil
      if closed.anybits?(Wire::REQUEST_SECOND_CALLER_SIGNALS)
        caller_signals = Wire.decode_caller_signals(read_exact(conn, Wire::CALLER_SIGNALS_LEN))
      end
      [byte, closed, fds, env, args, context, limits, caller_signals]
    end

    # Takes on the caller's signals (capability "dispositions"), as a
    # direct run would have inherited them with initialisation's own
    # changes laid over: a signal initialisation left as Ruby's start-up
    # makes it (RUBY_HANDLED, RUBY_NOTHING; others SIG_DFL) is ignored
    # where the caller ignores it, as Ruby's start-up leaves an inherited
    # ignored signal ignored; one it handles or ignores keeps that. The
    # caller's blocked signals do not join the mask: Ruby's start-up
    # unblocks every signal (a direct run's SigBlk is empty whatever its
    # caller blocked), so mask (the one the script gets once back in it,
    # or nil: the one it has) is returned as it is. What cannot be set
    # (KILL, STOP, the C library's own, those Ruby keeps for itself:
    # SEGV, BUS, ILL, FPE, VTALRM) is left.
    def take_caller_signals(ignored, _blocked, mask)
      ignoring, catching = dispositions
      (ignored & VALID_SIGNALS).each { |sig| ignore_if_as_started(sig, ignoring, catching) }
      mask
    end

    # SIG_IGN for sig if initialisation left it as Ruby's start-up made
    # it (take_caller_signals), told from ignoring and catching (the
    # dispositions' bits, or nil if unknown) where they tell, else by trap.
    def ignore_if_as_started(sig, ignoring, catching)
      case disposition(sig, ignoring, catching)
      when :default
        # SIG_DFL, which trap would call "SYSTEM_DEFAULT": as Ruby starts
        # but for its own handled ones (where initialisation chose it).
        ignore(sig) unless RUBY_HANDLED.include?(sig)
      when :caught
        # Ruby's own handler or one of initialisation's: trap tells. (Any
        # other signal's handler is initialisation's: it stays.)
        ignore_if_untouched(sig) if start_handled?(sig)
      when :unknown
        ignore_if_untouched(sig)
      end
      # (:ignored: ignored already, nothing to do.)
    end

    # :ignored, :caught, :default (SIG_DFL), or :unknown (/proc unreadable).
    def disposition(sig, ignoring, catching)
      return :unknown if ignoring.nil? || catching.nil?
      return :ignored if ignoring[sig - 1] == 1

      catching[sig - 1] == 1 ? :caught : :default
    end

    # Whether Ruby's start-up gives sig a handler.
    def start_handled?(sig)
      RUBY_HANDLED.include?(sig) || RUBY_NOTHING.include?(sig) || sig == SIGCHLD
    end

    # The signals ignored and caught, as bits (signal N at bit N-1), from
    # /proc/self/status (which reads them without changing them, where
    # trap can only tell the one it replaces); [nil, nil] if unreadable.
    def dispositions
      status = File.binread("/proc/self/status")
      [status[/^SigIgn:\s*(\h+)$/, 1], status[/^SigCgt:\s*(\h+)$/, 1]].map { |hex| hex&.to_i(16) }
    rescue SystemCallError, IOError
      [nil, nil]
    end

    # SIG_IGN for sig, if Ruby lets it be set.
    def ignore(sig)
      Signal.trap(sig, "IGNORE")
    rescue ArgumentError, SystemCallError
      nil # one Ruby keeps for itself, or one the C library refuses
    end

    # SIG_IGN for sig if trap says initialisation left it as Ruby's
    # start-up made it; else it keeps its handler. Asking trap replaces
    # the handler (with PROBE, as Ruby's C handler stays in place, so
    # that nothing pending is lost); the signal is blocked meanwhile, so
    # that one coming in between is delivered to what is there after.
    # (trap cannot put back a handler Ruby did not install, a C
    # extension's, reported as nil: that signal is then ignored.)
    def ignore_if_untouched(sig)
      before = Sys.sigmask(Sys::SIG_BLOCK, [sig])
      begin
        old = Signal.trap(sig, PROBE)
        Signal.trap(sig, untouched?(sig, old) ? "IGNORE" : old)
      ensure
        Sys.sigmask(Sys::SIG_SETMASK, before)
      end
    rescue ArgumentError, SystemCallError
      nil # one Ruby keeps for itself, or one the C library refuses
    end

    # Whether old, what trap said sig had, is what Ruby's start-up gives it.
    def untouched?(sig, old)
      case old
      when "SYSTEM_DEFAULT" then !RUBY_HANDLED.include?(sig)
      when "DEFAULT" then RUBY_HANDLED.include?(sig) || sig == SIGCHLD
      when nil then RUBY_NOTHING.include?(sig)
      else false
      end
    end

    # This process's resource limits by number ([soft, hard]), nice value
    # and oom_score_adj (nil where unreadable), as [rlimits, nice, oom].
    def read_own_limits
      rlimits = {}
      RESOURCES.each_index do |number|
        rlimits[number] = Process.getrlimit(number)
      rescue SystemCallError, ArgumentError
        next
      end
      nice = begin
        Process.getpriority(Process::PRIO_PROCESS, 0)
      rescue SystemCallError
        nil
      end
      oom = begin
        Integer(File.binread("/proc/self/oom_score_adj"), 10)
      rescue SystemCallError, IOError, ArgumentError
        nil
      end
      [rlimits, nice, oom]
    end

    # Raises the SERVER_RAISED soft limits (each lower than its hard one)
    # to their hard ones, in the setup run just before the daemon fork:
    # under a caller's low soft limit of processes or open files, the
    # server's forks and fds must not fail where a direct run would not.
    # The monitor reads its own limits (read_own_limits) after this, so each
    # executor sees the raised ones as the server's and takes its caller's
    # back.
    def raise_soft_limits_for_server
      SERVER_RAISED.each do |number|
        soft, hard = Process.getrlimit(number)
        Process.setrlimit(number, hard, hard) if soft != hard # lower: the kernel keeps soft <= hard
      rescue SystemCallError, ArgumentError
        next
      end
      nil
    end

    # A limit on the wire (u64, 2**64-1 for none) as Process.setrlimit
    # takes it (Ruby's RLIM_INFINITY is rlim_t's, unsigned: the same
    # number on Linux; Python's is -1).
    def rlim(value)
      value == Wire::RLIM_INFINITY ? Process::RLIM_INFINITY : value
    end

    # An error's words without what Ruby adds ("Operation not permitted",
    # as Python's strerror).
    def strerror(error)
      return SystemCallError.new(nil, error.errno).message if error.is_a?(SystemCallError)

      error.message
    end

    # Takes on the caller's limits, nice value and oom_score_adj (each only
    # if it differs from ours, own); why one the kernel refused, or nil.
    def refused_limit(limits, own)
      entries, nice, oom = limits
      own_rlimits, own_nice, own_oom = own
      refused_rlimit(entries, own_rlimits) || refused_nice(nice, own_nice) || refused_oom(oom, own_oom)
    end

    def refused_rlimit(entries, own_rlimits)
      entries.each do |number, soft, hard|
        next if number >= RESOURCES.length # a resource we have no name for

        wanted = [rlim(soft), rlim(hard)]
        begin
          Process.setrlimit(number, *wanted) if own_rlimits[number] != wanted
        rescue SystemCallError, ArgumentError, RangeError => e
          shown = [soft, hard].map { |v| v == Wire::RLIM_INFINITY ? "unlimited" : v.to_s }
          return "cannot give the script the caller's RLIMIT_#{RESOURCES[number]} (soft #{shown[0]}, " \
                 "hard #{shown[1]}): #{strerror(e)} (a server started under lower limits cannot raise " \
                 "them: -f starts a fresh one)"
        end
      end
      nil
    end

    def refused_nice(nice, own_nice)
      Process.setpriority(Process::PRIO_PROCESS, 0, nice) if own_nice != nice
      nil
    rescue SystemCallError => e
      "cannot give the script the caller's nice value #{nice}: #{strerror(e)}"
    end

    def refused_oom(oom, own_oom)
      return nil if oom == Wire::OOM_SCORE_UNKNOWN || own_oom == oom

      File.open("/proc/self/oom_score_adj", File::WRONLY) { |f| f.syswrite(oom.to_s) }
      nil
    rescue SystemCallError, IOError => e
      "cannot give the script the caller's oom_score_adj #{oom}: #{strerror(e)}"
    end

    # Takes on the caller's limits; one the kernel refuses is said in one
    # line on fd 2 (the caller's stderr by now) and the call ends, 127.
    def take_limits(limits, own)
      why = refused_limit(limits, own || read_own_limits)
      return if why.nil?

      begin
        IO.for_fd(2, "w", autoclose: false).syswrite("prefork-interp: #{why}\n")
      rescue SystemCallError, IOError
        nil
      end
      Process.exit!(127)
    end

    # fchdir(2), as Python's os.fchdir.
    def fchdir(fileno)
      return unless FCHDIR.call(Integer(fileno)).negative?

      raise SystemCallError.new("fchdir", Fiddle.last_error || Errno::EBADF::Errno)
    end

    # The caller's closed fds (capability "closed"; the client sent
    # /dev/null in their place) as Ruby started with them closed has them:
    # its start-up (ruby.c's fill_standard_fds) makes fd 0 the read end of
    # a pipe whose write end it closes (reads see EOF), and fds 1 and 2
    # the write end of one pipe whose read end it closes (writes fail with
    # EPIPE, which on STDOUT ends the run as SIGPIPE would, as with a
    # reader gone), so that no file the script opens gets those numbers.
    # Blocking, as its pipe(2)'s are (Ruby 3's IO.pipe is not).
    def fill_closed(closed)
      if closed.anybits?(Wire::REQUEST_SECOND_CLOSED[0])
        read, write = IO.pipe
        write.close
        read.nonblock = false
        Sys.dup2(read.fileno, 0)
        read.close
      end
      outputs = [1, 2].select { |fd| closed.anybits?(Wire::REQUEST_SECOND_CLOSED[fd]) }
      return if outputs.empty?

      read, write = IO.pipe
      read.close
      write.nonblock = false
      outputs.each { |fd| Sys.dup2(write.fileno, fd) }
      write.close
    end

    private_class_method :read_exact, :recv_fd, :ignore_if_as_started, :disposition, :start_handled?,
                         :dispositions, :ignore, :ignore_if_untouched, :untouched?, :rlim, :refused_limit,
                         :refused_rlimit, :refused_nice, :refused_oom

    # An executor-to-be: handover (the monitor's socket the call comes
    # on), monitor (its socket to the monitor: 'r', and as a keeper 't',
    # 'x'), the server's signal dispositions (saved: signal => what trap
    # returned as the monitor set it aside), the monitor's pid, the
    # server's limits (own_limits).
    class Executor
      attr_reader :settings, :log, :handover, :monitor, :saved, :monitor_pid, :own_limits

      def initialize(settings, handover, monitor, saved, monitor_pid, own_limits)
        @settings = settings
        @log = settings.log
        @handover = handover
        @monitor = monitor
        @saved = saved
        @monitor_pid = monitor_pid
        @own_limits = own_limits
      end

      # Gets back the server's signal dispositions (SIGINT: Ruby's own
      # handler, Interrupt, even if a server started by another client
      # inherited it ignored), waits for the call, leads a process group of
      # its own (or a session: keep_session), sends an extended call's 'P'
      # with its own pid (before any per-call code), tells the monitor 'r',
      # becomes the call, and lays the caller's signals over
      # (take_caller_signals). Returns the signal mask to restore once back
      # in the script (on a pseudo-terminal: the terminal's signals and
      # SIGCHLD are held until then, and the caller's blocked ones join
      # them), an Array of signal numbers, or nil.
      def run
        # A monitor killed mid-call leaves the call with nobody to report
        # its end: it ends as when its client goes, with SIGINT.
        Sys.set_parent_death_signal(SIGINT)
        Process.exit!(0) if Process.ppid != @monitor_pid # it died before we asked
        # (trap's nil: a handler Ruby did not install; SIG_DFL, as Python's
        # None.)
        @saved.each { |sig, handler| Signal.trap(sig, handler.nil? ? "SYSTEM_DEFAULT" : handler) }
        Signal.trap(SIGINT, "DEFAULT")
        Sys.sigmask(Sys::SIG_UNBLOCK, [SIGINT])
        # (Python's idle spares copy the heap in advance here, _precopy,
        # which has no Ruby counterpart: settings.precopy is false, Setup
        # says why.)
        conn, request = take_call
        @settings.titles.set("executor")
        byte = request[0]
        fds = request[2]
        context = request[5]
        # The monitor signals our group (its id is our pid): us, and
        # whatever the script starts. (Not made while idle: setsid
        # refuses a group leader.)
        mask = nil
        script_pid = nil
        if byte.nobits?(Wire::REQUEST_ANY_PTY)
          begin
            Process.setpgid(0, 0)
          rescue SystemCallError
            nil
          end
        else
          # The terminal's signals (^C, ^Z, a resize) may come as soon as
          # the script's group is its foreground: they wait until the
          # monitor knows the call runs, so that it reports a stop and
          # sees a death as the call's.
          mask = Sys.sigmask(Sys::SIG_BLOCK, PTY_CALL_BLOCKED)
          keep_session(Wire::REQUEST_FLAG_PTY.index { |flag| byte.anybits?(flag) },
                       byte.anybits?(Wire::REQUEST_FLAG_PTY_BACKGROUND), conn, fds, context)
          script_pid = Process.pid
        end
        announce(conn, byte, script_pid)
        become_the_call(conn, request)
        mask = PreforkInterp::Executor.take_caller_signals(*request[7], mask) unless request[7].nil?
        mask
      end

      # Waits for the call socket on handover and reads the request; [the
      # call socket, read_request's Array].
      def take_call
        begin
          data, received, = Sys.recv_fds(@handover, 1, 1)
        rescue SystemCallError, IOError
          Process.exit!(0)
        end
        Process.exit!(0) if data.empty? || received.length != 1 # the monitor is gone, or never got a call
        conn = Socket.for_fd(received[0])
        begin
          [conn, PreforkInterp::Executor.read_request(conn)]
        rescue Hangup
          @log.call(Log::LOG_INFO, "client went away before sending its call")
          Process.exit!(0)
        rescue StandardError => e
          @log.call(Log::LOG_ERR, "call failed: #{e.inspect}")
          Process.exit!(1)
        end
      end

      # On a call with a pseudo-terminal of its own (fds[which]): starts a
      # session with that terminal as its controlling terminal and forks
      # the script's process, which leads a group of its own, the
      # terminal's foreground group (unless background); returns only in
      # that process. The executor stays, as a shell would, the session's
      # leader: its keeper, with none of the call's fds but that terminal.
      def keep_session(which, background, conn, fds, context)
        terminal = fds[which]
        begin
          Process.setsid
          Sys.take_controlling_terminal(terminal)
        rescue SystemCallError => e
          fail_call("cannot take its terminal", e)
        end
        keeper = Process.pid
        begin
          script = Process.fork
        rescue SystemCallError => e
          fail_call("cannot fork the script's process", e)
        end
        become_keeper(script, which, conn, fds, context) unless script.nil?
        # Our keeper gone (the monitor killed): the call ends.
        Sys.set_parent_death_signal(SIGINT)
        Process.exit!(0) if Process.ppid != keeper # it died before we asked
        begin
          Process.setpgid(0, 0)
          # From the background: SIGTTOU is blocked, so it is allowed.
          Sys.tcsetpgrp(terminal, Process.pid) unless background
        rescue SystemCallError => e
          fail_call("cannot take its terminal", e)
        end
      end

      # The executor, once it has forked the script's process: with none
      # of the call's fds but its terminal, fds[which], it becomes the
      # session's keeper (the client's program, or Keeper.keep). Never
      # returns.
      def become_keeper(script, which, conn, fds, context)
        terminal = fds[which]
        [conn, @handover].each(&:close)
        others = fds.reject.with_index { |_, i| i == which }
        others << context[0] unless context.nil?
        others.each { |fd| Sys.close(fd) }
        Keeper.exec_program(@settings.keeper_program, script, @monitor, terminal) unless @settings.keeper_program.nil?
        Keeper.keep(script, @monitor, terminal, @log)
      end

      # A call that cannot start: why, logged, and its end, 127.
      def fail_call(what, error)
        @log.call(Log::LOG_ERR, "call failed: #{what}: #{PreforkInterp::Executor.strerror(error)}")
        Process.exit!(127)
      end

      # An extended call's 'P' with our pid to the client, then 'r' to the
      # monitor (with the script's pid on a pseudo-terminal of its own).
      def announce(conn, byte, script_pid)
        if byte.anybits?(Wire::REQUEST_BYTE_EXTENDED)
          begin
            Sys.send_all(conn, Wire.encode_frame(Wire::FRAME_EXECUTOR_PID, Process.pid))
          rescue SystemCallError, IOError
            @log.call(Log::LOG_INFO, "client went away before its call started")
            Process.exit!(0)
          end
        end
        begin
          Sys.send_all(@monitor, Wire.encode_executor_ready(byte, script_pid))
        rescue SystemCallError, IOError
          Process.exit!(127) # nobody could report our status without the monitor
        end
      end

      # Takes on the caller's directory and umask, fds, limits, environment
      # (with what initialisation did to its own laid over it), arguments
      # and std streams.
      def become_the_call(conn, request)
        _, closed, fds, env, args, context, limits, = request
        unless context.nil?
          # The caller's directory and umask (capability "context").
          cwd, umask = context
          PreforkInterp::Executor.fchdir(cwd)
          Sys.close(cwd)
          File.umask(umask)
        end
        # Onto fds 0, 1, 2 under STDIN, STDOUT and STDERR, which stay the
        # objects they are, with the flags Ruby's start-up gave them (not
        # IO#reopen, which would take the new IO's: STDOUT would lose its
        # death by SIGPIPE on EPIPE, STDERR its sync): write-through on a
        # terminal, as a direct run's (the setup run had terminals exactly
        # where this caller has: the greeting's `terminals` line), and
        # sync as initialisation left it.
        fds.each_with_index do |fd, target|
          # The server's 0, 1, 2 are /dev/null, so received fds are above
          # them; still, never close what was just put in place.
          next if fd == target

          Sys.dup2(fd, target)
          Sys.close(fd)
        end
        # Closed in the caller (capability "closed"): the client sent
        # /dev/null in its place. What Ruby's start-up puts there instead.
        PreforkInterp::Executor.fill_closed(closed)
        # What a direct run would inherit beyond fds (capability "limits").
        PreforkInterp::Executor.take_limits(limits, @own_limits) unless limits.nil?
        conn.close
        @handover.close
        @monitor.close
        @log.close # the script finds syslog unopened, as in a direct run
        take_environment(env)
        # As Ruby's start-up makes ARGV: frozen Strings in the default
        # external encoding. ($0 stays the setup run's, as Python's
        # sys.argv[0].)
        ARGV.replace(args.map { |arg| arg.dup.force_encoding(Encoding.default_external).freeze })
        # The std streams as a direct run starts with them, whatever
        # initialisation made them.
        $stdin = STDIN
        $stdout = STDOUT
        $stderr = STDERR
      end

      # ENV becomes the caller's; then what initialisation did to its own,
      # as in a direct run. Returns the caller's, name => value. (Ruby's
      # std streams follow none of its variables: RUBYOPT and the locale
      # are read at start-up, and the greeting's start line gives each
      # caller a server with its own.)
      def take_environment(env)
        ENV.clear
        environ = {}
        env.each do |entry|
          split = Wire.split_env_entry(entry)
          # A name holding '=' (or an entry with none) cannot be set; only
          # a hand-made environment has one.
          next if split.nil? || split[0].include?("=")

          ENV[split[0]] = split[1]
          environ[split[0]] = split[1]
        end
        InitEnv.apply(@settings.init_env_changes, ENV)
        environ
      end
    end
  end
end
