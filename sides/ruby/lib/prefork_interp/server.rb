# frozen_string_literal: true

# The server: accepts and greets calls, and sends each to its one
# monitor; never forks per call. Quits when its socket path is removed or
# replaced (it watches it itself for a client with capability `watch`,
# else the client's watcher's EOF says so), on the idle timeout, a changed
# file (auto-reload), too many errors.
#
# (Ruby port of the Python side's _server.py, function for function.)

require "io/nonblock"
require "socket"

require_relative "log"
require_relative "sys"
require_relative "wire"

module PreforkInterp
  # The server role: Server::Server, its SocketWatch, and the helpers
  # Server.other_user, Server.bounded_idle_timeout, Server.no_inotify,
  # Server.sort_events.
  module Server
    module_function

    # Why a call on conn must be refused (its caller is not our user), or
    # nil.
    def other_user(conn)
      begin
        # struct ucred: pid_t pid, uid_t uid, gid_t gid.
        pid, uid, = conn.getsockopt(Socket::SOL_SOCKET, Socket::SO_PEERCRED).data.unpack("iII")
      rescue SystemCallError, IOError, SocketError => e
        return "refused a call whose caller is unknown: #{e.message}"
      end
      return nil if uid == Process.uid

      "refused a call from uid #{uid} (pid #{pid}): this server is uid #{Process.uid}'s"
    end

    # The idle timeout: the server's own (nil: none), at most the client's
    # pfi-idle bound (nil: none), which a folded identity's server gets.
    def bounded_idle_timeout(own, limit)
      return own.nil? ? limit : own if own.nil? || limit.nil?

      [own, limit].min
    end

    # The `degraded` text of a server without inotify (e: why, a
    # SystemCallError).
    def no_inotify(error, socket_too)
      if socket_too
        return "no inotify (#{strerror(error.errno)}): socket path checked every " \
               "#{SocketWatch::CHECK_INTERVAL} s, files at every call"
      end

      "no inotify (#{strerror(error.errno)}): files checked at every call"
    end

    # [files, socket]: whether inotify events ([wd, mask, name]) may mean
    # a watched file changed, and whether the socket went (socket_watch:
    # the server's own, or nil). Every watch but the socket directory's is
    # a file's; lost events (the queue overflowed) may mean either.
    def sort_events(events, socket_watch)
      socket_dir = socket_watch&.wd
      files = socket = false
      events.each do |wd, mask, name|
        if mask.anybits?(Sys::IN_Q_OVERFLOW)
          files = socket = true
        elsif !socket_dir.nil? && wd == socket_dir
          socket ||= socket_watch.concerns(mask, name)
        else
          files = true
        end
      end
      [files, socket]
    end

    # os.strerror: the C library's text for an errno (Ruby's Errno
    # classes carry it).
    def strerror(errno)
      SystemCallError.new(nil, errno).message
    end

    # time.monotonic().
    def monotonic
      Process.clock_gettime(Process::CLOCK_MONOTONIC)
    end

    private_class_method :strerror

    # The server's own watch on its socket path (capability `watch`; no
    # watcher process then): the socket's directory in the server's one
    # inotify instance, or without one a look every CHECK_INTERVAL seconds.
    # The socket is gone when its path is missing or another file's (an
    # eviction, --kill, a stale-socket recovery made it so).
    class SocketWatch
      CHECK_INTERVAL = 5
      DIR_MASK = Sys::IN_CREATE | Sys::IN_DELETE | Sys::IN_MOVED_FROM | Sys::IN_MOVED_TO |
                 Sys::IN_DELETE_SELF | Sys::IN_MOVE_SELF
      # On the directory's watch: the directory itself went, or its watch.
      DIR_GONE = Sys::IN_DELETE_SELF | Sys::IN_MOVE_SELF | Sys::IN_IGNORED

      attr_accessor :path, :name, :folder, :inode, :wd, :next_check

      def initialize(path, started_ns)
        @path = path.b
        folder, _, @name = @path.rpartition("/")
        @folder = if folder.empty?
                    @path.start_with?("/") ? "/".b : ".".b
                  else
                    folder
                  end
        # The socket our client made: the file at the path with the
        # setup's mtime. nil if it is already gone: the first call is
        # served, then the server quits.
        @inode = nil
        begin
          st = File.lstat(@path)
          @inode = [st.dev, st.ino] if (st.mtime.to_i * 1_000_000_000) + st.mtime.nsec == started_ns
        rescue SystemCallError
          nil
        end
        @wd = nil
        @next_check = nil # without inotify, when to look next
      end

      # Watches the directory in inotify, or raises SystemCallError.
      def watch_with(inotify)
        @wd = inotify.add_watch(@folder, DIR_MASK)
      end

      def check_periodically
        @next_check = PreforkInterp::Server.monotonic + CHECK_INTERVAL
      end

      # Whether an event on the directory's watch may mean the socket
      # went: its name, or the directory's own end.
      def concerns(mask, name)
        name == @name || mask.anybits?(DIR_GONE)
      end

      def still_there
        st = File.lstat(@path)
        @inode == [st.dev, st.ino]
      rescue SystemCallError
        false
      end

      # Seconds until the next periodic look (0: now), or nil for no
      # periodic looks.
      def due_in
        return nil if @next_check.nil?

        [0.0, @next_check - PreforkInterp::Server.monotonic].max
      end
    end

    # What the server waits on (Python's selectors.DefaultSelector, over
    # IO.select): each registered IO, or fd (a number), with its name.
    class Selector
      def initialize
        @ios = {} # name => IO
      end

      def register(io_or_fd, name)
        @ios[name] = io_or_fd.is_a?(Integer) ? IO.for_fd(io_or_fd, autoclose: false) : io_or_fd
      end

      def unregister(name)
        @ios.delete(name)
      end

      # The names of those ready to read, within timeout seconds (nil: no
      # limit).
      def select(timeout)
        ready = IO.select(@ios.values, nil, nil, timeout)
        return [] if ready.nil?

        @ios.select { |_, io| ready[0].include?(io) }.keys
      end

      # Forgets them all (nothing of ours to close: the fds are their
      # owners').
      def close
        @ios.clear
      end
    end

    # Accepts and greets calls, and sends each to the one monitor on
    # control; counts the calls the monitor has not yet said (one byte 'd'
    # each) have ended: `busy`, the greeting's `running`, which
    # max_servers limits.
    class Server
      # The selector's names of the monitor's news: its control socket,
      # its pidfd.
      MONITOR_NEWS = %w[control monitor].freeze

      attr_accessor :listen, :settings, :log, :errors, :reload, :started_secs, :idle_timeout,
                    :control, :monitor, :monitor_pidfd, :served, :busy, :idle_since, :selector,
                    :listening, :socket_watch, :watch_err, :watch_in, :inotify, :degraded

      def initialize(setup, settings, reload)
        @listen = Socket.for_fd(setup[:listen])
        @listen.nonblock = true
        @listen.close_on_exec = true
        @settings = settings
        @log = settings.log
        @errors = 0
        @reload = reload
        @started_secs = setup[:started_secs]
        @idle_timeout = PreforkInterp::Server.bounded_idle_timeout(settings.idle_timeout,
                                                                   setup[:idle_limit])
        @control = nil # our end of the socketpair with the monitor
        @monitor = nil # its pid
        @monitor_pidfd = nil
        @served = 0
        @busy = 0 # calls handed to the monitor and not yet ended
        @idle_since = PreforkInterp::Server.monotonic
        @selector = Selector.new
        @listening = false
        # Who says the socket went: the server itself, or the watcher.
        @socket_watch = nil
        @watch_err = @watch_in = nil
        @watch_err_io = nil
        if setup[:client_caps].include?("watch")
          @socket_watch = SocketWatch.new(
            @listen.local_address.unix_path.b,
            (setup[:started_secs] * 1_000_000_000) + setup[:started_nsecs]
          )
          # The client starts no watcher: the pipes mean nothing.
          Sys.close(setup[:watch_err])
          Sys.close(setup[:watch_in])
        else
          listen_to_watcher(setup[:watch_err], setup[:watch_in])
        end
        @inotify = nil
        @degraded = watch_with_inotify
        @log.call(Log::LOG_ERR, "degraded: #{@degraded}") unless @degraded.nil?
        reload.watch_with(@inotify)
      end

      # The client's watcher (chiark-utils', or ours without `watch`)
      # says on WATCHE when the socket went.
      def listen_to_watcher(watch_err, watch_in)
        @watch_err = watch_err
        @watch_in = watch_in
        @watch_err_io = IO.for_fd(watch_err, autoclose: false)
        @watch_err_io.nonblock = true
        [@watch_err_io, IO.for_fd(watch_in, autoclose: false)].each { |io| io.close_on_exec = true }
        @selector.register(@watch_err_io, "watcher")
      end

      # Makes the server's one inotify instance (@inotify), for the
      # reload's files and, watching its own socket, the socket's
      # directory. Without one (none to be had, or no directory watch in
      # it: then it goes), the socket path is looked at periodically and
      # the files at every call; returns what the greeting says of that,
      # or nil.
      def watch_with_inotify
        begin
          inotify = Sys::Inotify.new
          unless @socket_watch.nil?
            begin
              @socket_watch.watch_with(inotify)
            rescue SystemCallError
              inotify.close
              raise
            end
          end
        rescue SystemCallError => e
          @socket_watch&.check_periodically
          return PreforkInterp::Server.no_inotify(e, !@socket_watch.nil?)
        end
        @inotify = inotify
        @selector.register(inotify.fd, "inotify")
        nil
      end

      # Serves until it quits (exit!). The monitor first (the first call,
      # pending, pays its fork and its first executor's, as it always
      # did), then each call to it; a monitor that dies is forked again at
      # once, so that a spare is ready. Returns only in the monitor: its
      # end of control.
      def run(pending)
        again = false # pending was greeted; a dead monitor lost it
        loop do
          if @control.nil?
            control = spawn_monitor(pending)
            return control unless control.nil? # the monitor

            if @control.nil? && !pending.nil?
              pending.close # nobody to serve it: its client sees EOF
              pending = nil
              again = false
            end
          end
          unless pending.nil?
            again = hand_over(pending, again)
            next if again

            pending.close
            pending = nil
          end
          pending = next_call
        end
      end

      # In the monitor: drop everything of the server's.
      def close
        @selector.close
        @listen.close
        unless @watch_err.nil?
          Sys.close(@watch_err)
          Sys.close(@watch_in)
        end
        @control&.close
        Sys.close(@monitor_pidfd) unless @monitor_pidfd.nil?
        @inotify&.close
      end

      # Forks the monitor. In the child, which has closed every fd of the
      # server's (and pending), returns its end of control; in the server
      # nil (with @control still nil if that failed).
      def spawn_monitor(pending)
        begin
          control, theirs = Socket.pair(:UNIX, :STREAM)
        rescue SystemCallError => e
          error("cannot make the monitor's control socket: #{e.message}")
          return nil
        end
        begin
          pid = Process.fork
        rescue SystemCallError => e
          control.close
          theirs.close
          error("cannot fork the monitor: #{e.message}")
          return nil
        end
        if pid.nil?
          PreforkInterp::Server.or_exit(1) do
            close
            control.close
            pending&.close
            @log.reopen
            theirs.nonblock = false # blocking, whatever the script set
            @settings.titles.set("monitor")
          end
          return theirs
        end
        theirs.close
        begin
          pidfd = Sys.pidfd_open(pid)
        rescue SystemCallError => e
          # Unwatchable: it must not serve. On its control's EOF it
          # leaves (its spares too).
          control.close
          Process.waitpid(pid)
          error("cannot open a pidfd for the monitor #{pid}: #{e.message}")
          return nil
        end
        control.nonblock = false
        @control = control
        @monitor = pid
        @monitor_pidfd = pidfd
        @selector.register(control, "control")
        @selector.register(pidfd, "monitor")
        nil
      end

      # The monitor died (control's EOF, or its pidfd): reap it. Its calls
      # are lost (their clients saw EOF).
      def monitor_died
        pid = @monitor
        @selector.unregister("control")
        @selector.unregister("monitor")
        @control.close
        Sys.close(@monitor_pidfd)
        @control = @monitor = @monitor_pidfd = nil
        _, status = Process.waitpid2(pid)
        @busy = 0
        @idle_since = PreforkInterp::Server.monotonic
        error("monitor #{pid} #{Sys.describe_status(status.to_i)}")
      end

      # Counts the calls the monitor says have ended, 'd' or 'h' each (all
      # it has said so far). False if it has died.
      def hear_monitor
        loop do
          begin
            data = @control.recv_nonblock(4096, exception: false)
          rescue SystemCallError, IOError
            data = ""
          end
          return true if data == :wait_readable

          if data.nil? || data.empty?
            monitor_died
            return false
          end
          ended = data.count(Wire::MONITOR_CALL_ENDED)
          @busy = [0, @busy - ended - data.count(Wire::MONITOR_CALL_DROPPED)].max
          # 'h': a call that ended before a request (a listing, or a
          # caller that went elsewhere) keeps no server alive.
          @idle_since = PreforkInterp::Server.monotonic if ended.positive? && @busy.zero?
        end
      end

      # Greets the caller (unless it was, again) and sends the call to the
      # monitor. True if the monitor had died: a new one should get the
      # call (once).
      def hand_over(call, again)
        unless again
          settings = @settings
          xdata = "".b
          unless settings.offered.empty?
            idle_ms = @busy.zero? ? ((PreforkInterp::Server.monotonic - @idle_since) * 1000).to_i : 0
            xdata = Wire.encode_greeting_xdata(settings.offered, settings.world,
                                               settings.env_dependency, settings.start_dependency,
                                               settings.terminals, degraded_text, @served, @busy,
                                               idle_ms)
          end
          begin
            Sys.send_all(call, Wire.encode_greeting(xdata))
          rescue SystemCallError, IOError => e
            @log.call(Log::LOG_INFO, "caller went away before its greeting: #{e.inspect}")
            return false
          end
        end
        begin
          @control.sendmsg(Wire::FD_MESSAGE_BYTE, Socket::MSG_NOSIGNAL, nil,
                           Socket::AncillaryData.unix_rights(call))
        rescue SystemCallError, IOError
          monitor_died
          return !again
        end
        @served += 1
        @busy += 1
        false
      end

      # What the server does without (the greeting's `degraded`), or nil:
      # no inotify first, else a file the reload cannot watch.
      def degraded_text
        @degraded.nil? ? @reload.degraded : @degraded
      end

      # Quits, with a quit line in the lock file; for a socket that went,
      # unless whoever removed it said why already (an eviction does).
      def quit(why, socket_went: false)
        @log.call(Log::LOG_INFO, "server quitting: #{why}")
        record_quit(why, socket_went)
        exit!(0)
      end

      # Appends "quit SECONDS REASON" to the identity's lock file (beside
      # the socket: BASE/s<ident>, BASE/l<ident>), for --list to show as
      # the reason of the next server's start; with unless_said, not if
      # its last quit line is dated at or after our start. Best effort: a
      # lock file removed (--kill) is skipped.
      def record_quit(why, unless_said)
        begin
          lock = Wire.lock_path_for_socket(@listen.local_address.unix_path.b)
          return if lock.nil?

          # (Non-blocking: a FIFO planted there fails the read, never
          # hangs the quitting server. Close-on-exec, as every fd Ruby
          # opens.)
          fd = IO.sysopen(lock, File::RDWR | File::APPEND | File::NOFOLLOW | File::NONBLOCK)
        rescue SystemCallError, IOError, SocketError, ArgumentError, TypeError
          return
        end
        begin
          unless unless_said && quit_said_since_start(fd)
            IO.for_fd(fd, autoclose: false).syswrite(Wire.encode_quit_line(Time.now.to_i, why))
          end
        rescue SystemCallError, IOError
          nil
        ensure
          Sys.close(fd)
        end
      end

      # Whether the lock file's last quit line is dated at or after the
      # second the server started.
      def quit_said_since_start(lock_fd)
        file = IO.for_fd(lock_fd, autoclose: false)
        text = "".b
        loop do
          # (A FIFO with nothing in it: IO::EAGAINWaitReadable, an
          # Errno::EAGAIN, as Python's os.read raises.)
          text << file.read_nonblock(65_536)
        rescue EOFError
          break
        end
        last = Wire.decode_last_quit(text)
        !last.nil? && last[0] >= @started_secs
      end

      def error(message)
        @log.call(Log::LOG_ERR, message)
        @errors += 1
        quit("more than #{@settings.max_errors} errors") if @errors > @settings.max_errors
      end

      def set_listening(on)
        return if on == @listening

        if on
          @selector.register(@listen, "listen")
        else
          @selector.unregister("listen")
        end
        @listening = on
      end

      # Waits for the next call to serve; handles everything else. nil if
      # the monitor has died (the caller forks another).
      def next_call
        max_servers = @settings.max_servers
        # (Its socket gone before it started: the first call was served.)
        check_socket
        loop do
          set_listening(max_servers.nil? || @busy < max_servers)
          # The monitor's news before any accept: once a client has its
          # status (sent after the 'd'), the next greeting counts it out.
          @selector.select(poll_timeout).sort_by { |what| MONITOR_NEWS.include?(what) ? 0 : 1 }.each do |what|
            answer = take_ready(what)
            return answer unless answer == :go_on
          end
        end
      end

      # What a ready source (the selector's name for it) brings: :go_on,
      # or next_call's answer (a call; nil: the monitor has died).
      def take_ready(what)
        case what
        when "listen"
          conn = @listening ? accept : nil # (not busy since the poll)
          return conn.nil? ? :go_on : conn
        when "watcher" then check_watcher
        when "inotify" then note_inotify
        else return still_monitored(what) ? :go_on : nil
        end
        :go_on
      end

      # The monitor's news (what: "control" or "monitor"): false if it
      # has died.
      def still_monitored(what)
        return true if @control.nil? # both said it
        return hear_monitor if what == "control"

        monitor_died
        false
      end

      # How long to wait: until the idle timeout, while no call runs, or
      # the next periodic look at the socket path (taken now if it is due:
      # it quits if the socket went); nil for ever. Quits if the idle
      # timeout has come.
      def poll_timeout
        timeout = idle_left
        due = @socket_watch&.due_in
        unless due.nil?
          if due <= 0
            @socket_watch.check_periodically
            check_socket
            due = @socket_watch.due_in
          end
          timeout = timeout.nil? ? due : [timeout, due].min
        end
        timeout
      end

      # Seconds until the idle timeout, while no call runs (nil: none
      # now); quits if it has come.
      def idle_left
        return nil if @idle_timeout.nil? || !@busy.zero?

        left = @idle_timeout - (PreforkInterp::Server.monotonic - @idle_since)
        quit("idle timeout") if left <= 0
        left
      end

      # Quits if the server watches its own socket and it went.
      def check_socket
        return if @socket_watch.nil? || @socket_watch.still_there

        quit("socket replaced or removed", socket_went: true)
      end

      # Events in the server's inotify instance: the files are checked at
      # the next call, the socket at once.
      def note_inotify
        files, socket_too = PreforkInterp::Server.sort_events(@inotify.read_events, @socket_watch)
        @reload.note_events if files
        check_socket if socket_too
      end

      # A call from our user, or nil; quits first if a file changed
      # (dropping the call makes its client start afresh).
      def accept
        begin
          accepted = @listen.accept_nonblock(exception: false)
        rescue SystemCallError, IOError => e
          error("accept failed: #{e.message}")
          return nil
        end
        return nil if accepted == :wait_readable

        conn, = accepted
        refusal = PreforkInterp::Server.other_user(conn)
        unless refusal.nil?
          # Another user reached our socket (a run directory opened up by
          # hand): they get nothing, and a log line.
          @log.call(Log::LOG_ERR, refusal)
          conn.close
          return nil
        end
        changed = @reload.changed
        quit("#{changed} changed") unless changed.nil?
        conn.nonblock = false
        conn
      end

      # The watcher says nothing unless something is wrong; EOF means the
      # socket path changed or the watcher died. Either way: quit.
      def check_watcher
        begin
          text = @watch_err_io.read_nonblock(1024, exception: false)
        rescue SystemCallError, IOError => e
          quit("cannot read from the watcher: #{e.message}")
        end
        return if text == :wait_readable

        quit("socket replaced or removed (watcher exited)", socket_went: true) if text.nil?
        quit("watcher reported: #{text.dup.force_encoding(Encoding::UTF_8).scrub.strip}",
             socket_went: true)
      end
    end

    # Runs the block; any exception (or throw) out of it ends the process
    # with status, at once (Python's `except BaseException: os._exit`):
    # nothing of the script's (rescue clauses, at_exit handlers) runs in
    # a process of the server's. Returns the block's value.
    def self.or_exit(status)
      done = false
      value = yield
      done = true
      value
    ensure
      exit!(status) unless done
    end
  end
end
