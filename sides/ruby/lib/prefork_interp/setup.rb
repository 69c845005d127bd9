# frozen_string_literal: true

# The setup run's end: checks, what the server's processes share
# (Settings), then the daemon fork; in the daemon the server, in the
# monitor it forks the monitor, in an executor the call.
#
# Process roles (as in the Rust, Perl and Python script sides):
#
#     setup run --fork--> server (setsid; stdio /dev/null; syslog)
#       exit 0              | waits on LISTEN, CONTROL, the monitor's pidfd,
#                           | its one inotify instance (the modules; with
#                           | capability `watch` its socket's directory) and
#                           | without `watch` WATCHE; quits when its socket
#                           | path is removed or replaced (seen itself, or
#                           | the watcher's EOF), on the idle timeout (at
#                           | most pfi-idle), reload; never forks per call
#                           +--fork--> monitor: one, long-lived (forked again
#                                        |        if it dies); ignores the
#                                        |        forwardable signals
#                                        +--fork--> executor-to-be, in advance
#                                        |          (`spare_handlers` of them
#                                        |          idle), with the server's
#                                        |          signals back
#                                        +--------> the executors of the
#                                                   calls in flight, each its
#                                                   own process group (on a
#                                                   pseudo-terminal: a
#                                                   session, Keeper)
#
# (Ruby port of the Python side's _setup.py. Python's _precopy has no
# counterpart here: see Setup.run.)

require "English"
require "socket"

require_relative "executor"
require_relative "init_env"
require_relative "log"
require_relative "monitor"
require_relative "reload"
require_relative "server"
require_relative "sys"
require_relative "titles"
require_relative "wire"

module PreforkInterp
  # The setup run's end: Setup.check_setup, Setup.run, Setup::Settings.
  module Setup
    # How long Ruby keeps the native thread of a Ruby thread that has
    # ended, for a next Thread.new to reuse (THREAD_CACHE_TIME, 3 s in
    # thread_pthread.c), with a margin: what check_setup waits at most for
    # such threads to go.
    NATIVE_THREAD_CACHE_SECONDS = 3.5

    # What the server's processes share, fixed in the setup run: the
    # checked options, the log, the titles, what the greeting says
    # (offered, world, env_dependency), what initialisation did to the
    # environment (init_env_changes), the client's program to exec as a
    # session's keeper (keeper_program).
    class Settings
      attr_accessor :max_servers, :idle_timeout, :max_errors, :spare_handlers, :interrupt_grace,
                    :log, :titles, :offered, :world, :env_dependency, :start_dependency,
                    :terminals, :init_env_changes, :keeper_program, :precopy

      def initialize(options, log, titles)
        @max_servers = options[:max_servers]
        @idle_timeout = options[:idle_timeout]
        @max_errors = options[:max_errors]
        @spare_handlers = options[:spare_handlers]
        @interrupt_grace = options[:interrupt_grace]
        @log = log
        @titles = titles
        @offered = []
        @world = nil
        @env_dependency = nil
        @start_dependency = nil
        @terminals = nil
        @init_env_changes = []
        @keeper_program = nil
        # Whether idle spares copy the heap in advance (Python's
        # _precopy): never here (Setup.run says why).
        @precopy = false
      end
    end

    module_function

    # PREFORK_INTERP's value, checked (raises in the setup run, whose
    # stderr the caller sees): one thread, the fds it names open.
    def check_setup(value)
      threads = thread_count
      if threads != 1
        raise "prefork-interp: #{threads} threads are running; initialisation_complete must be " \
              "called before any other thread starts (a fork would lose them)"
      end

      setup = Wire.decode_setup_env(value)
      [setup[:listen], setup[:call], setup[:watch_in], setup[:watch_err]].each do |fd|
        if fd < 3 || !Sys.fd_is_open(fd)
          raise ArgumentError, "prefork-interp: #{Wire::ENV_VAR} names fd #{fd}, which is not open"
        end
      end
      setup
    end

    # The setup run's end: the daemon is forked, and the setup run exits
    # (the client is waiting for it). Returns only in an executor, as the
    # call: the signal mask to restore then, or nil.
    def run(init_env, reads, setup, options)
      reload_files = Reload.reload_files(options[:autoreload_modules],
                                         options[:autoreload_extra], init_env.also_check)
      settings = settings_for(init_env, reads, options)
      if setup[:client_caps].include?("limits")
        # The server, monitor and spares are ours, not the caller's: under
        # a caller's low soft limit of processes (or open files), their
        # forks must not fail where a direct run would not. Each call's
        # executor takes its caller's limits back (capability "limits").
        Executor.raise_soft_limits_for_server
      end
      exit!(0) if Process.fork # the setup run ends; the client is waiting for it
      daemon(setup, settings, reload_files)
    end

    # What the setup run fixes for the server's processes (run's first
    # part, in the setup run still).
    def settings_for(init_env, reads, options)
      titles = Titles::Titles.new(program_name || "ruby")
      init_env_changes = init_env.delta
      # The greeting's lines between caps and the counters: the server's
      # world, and what its initialisation read of the environment.
      world = InitEnv.world
      env_dependency = init_env.dependency(reads)
      start_dependency = init_env.start_dependency
      # Which of fds 0, 1, 2 initialisation had as terminals: a caller
      # whose differ goes to a server of its own.
      terminals = stdio_terminals
      # Before freeze_heap: what arming makes is made old with the rest.
      fast_exit_off = options[:fast_exit] ? arm_fast_exit : nil

      # What the script printed goes to the caller's stderr now, once, not
      # into every executor's buffers.
      [$stdout, $stderr].each { |stream| stream.flush unless stream.closed? }
      freeze_heap
      log = Log::Log.new($PROGRAM_NAME, options[:facility])
      log.call(Log::LOG_INFO, "fast_exit: #{fast_exit_off}; calls end normally") unless fast_exit_off.nil?
      settings = Settings.new(options, log, titles)
      settings.world = world
      settings.env_dependency = env_dependency
      settings.start_dependency = start_dependency
      settings.terminals = terminals
      settings.init_env_changes = init_env_changes
      # Python's idle spares copy the heap in advance (_precopy) where a
      # call's end would write most of it anyway: CPython's finalisation
      # does, tearing every object down. Ruby's exit does not (it runs
      # the finalizers and closes the files still open, and leaves the
      # rest), so there is nothing to copy in advance: never.
      settings.precopy = false
      settings
    end

    # The script's name as the setup run has it ($PROGRAM_NAME, Python's
    # sys.argv[0]), or nil for none.
    def program_name
      $PROGRAM_NAME.nil? || $PROGRAM_NAME.empty? ? nil : $PROGRAM_NAME
    end

    # fast_exit=true: arms it (FastExit, loaded only then); nil, or why it
    # does nothing.
    def arm_fast_exit
      require_relative "fast_exit"

      FastExit::FastExit.new.arm
    end

    # The daemon. The script's own code must never run here except in
    # executors: any failure is logged and ends the process.
    def daemon(setup, settings, reload_files)
      log = settings.log
      control = or_exit(log, "server failed", 1) do
        settings.titles.set("server")
        settings.titles.forget_initial_environ
        Process.setsid
        trap("CHLD", "SYSTEM_DEFAULT") # a caller ignoring it breaks waitpid
        started_ns = (setup[:started_secs] * 1_000_000_000) + setup[:started_nsecs]
        server = Server::Server.new(setup, settings,
                                    Reload::ReloadWatch.new(reload_files, started_ns, log))
        null_stdio
        # Only a client that said it reads greeting xdata is offered our
        # extensions, those it speaks (chiark-utils' misreads any).
        offered = Wire::OUR_CAPS.select { |cap| setup[:client_caps].include?(cap) }
        if !offered.include?("signals") && offered.include?("closed")
          offered.delete("closed") # a flag of extended requests only
        end
        settings.offered = offered
        settings.keeper_program = setup[:keeper]
        server.run(Socket.for_fd(setup[:call]))
      end
      executor = or_exit(log, "monitor failed", 1) do
        PreforkInterp::Monitor::Monitor.new(control, settings).run
      end
      # An executor-to-be: it waits for its call, and returns as the call.
      or_exit(nil, nil, 127) { executor.run }
    end

    # Runs the block; any exception (or throw) out of it is logged (with
    # what, unless log is nil) and ends the process with status at once,
    # as Python's `except BaseException: os._exit`: nothing of the
    # script's (its rescue clauses, at_exit handlers) runs in a process of
    # the server's. Returns the block's value.
    def or_exit(log, what, status)
      done = false
      value = yield
      done = true
      value
    ensure
      unless done
        log&.call(Log::LOG_ERR, "#{what}: #{$ERROR_INFO.inspect}")
        exit!(status)
      end
    end

    # fds 0, 1, 2 become /dev/null (the caller's are not the server's to
    # keep, and a closed one would be the number of the server's next
    # socket).
    def null_stdio
      null = IO.sysopen(File::NULL, File::RDWR)
      3.times { |fd| Sys.dup2(null, fd) }
      Sys.close(null) if null > 2 # started with fd 0, 1 or 2 closed: it is one of them
    end

    # Which of fds 0, 1, 2 are terminals: bit N for fd N (a closed one is
    # none).
    def stdio_terminals
      3.times.sum do |fd|
        IO.for_fd(fd, autoclose: false).tty? ? 1 << fd : 0
      rescue SystemCallError
        0
      end
    end

    # Everything initialisation made is made old now (Python's
    # gc.freeze(); Ruby has no permanent generation, and its old one is
    # what minor collections leave alone): collections in executors
    # (minor ones mostly) then leave it alone instead of writing to each
    # young object's header as it ages, which would copy much of the
    # server's memory into each call. Process.warmup (Ruby 3.3 or later)
    # is Ruby's own step for this (a full collection, compaction, every
    # survivor promoted); before it, four minor collections age every
    # survivor past the three an object needs to become old (as Puma's
    # nakayoshi_fork does).
    def freeze_heap
      if Process.respond_to?(:warmup)
        Process.warmup
      else
        4.times { GC.start(full_mark: false) }
      end
    end

    # How many threads run: Ruby's (a fork would lose all but the caller),
    # and with one of those, the process's native threads (a C
    # extension's too), less those Ruby keeps for itself, which a fork's
    # child has again (from Ruby 3.3 a timer thread): a forked child's
    # count is that baseline. Ruby also keeps the native thread of a Ruby
    # thread that has ended a few seconds, for reuse (a fork loses nothing
    # with it): waited for.
    def thread_count
      ruby = Thread.list.size
      return ruby if ruby != 1

      native = Sys.thread_count
      return native if native <= 1

      own = forked_thread_count
      deadline = Server.monotonic + NATIVE_THREAD_CACHE_SECONDS
      while native > own && Server.monotonic < deadline
        sleep(0.05)
        native = Sys.thread_count
      end
      [native - own, 0].max + 1
    end

    # The threads a child forked now has (1 if it cannot be told).
    def forked_thread_count
      pid = Process.fork do
        count = 255
        count = Sys.thread_count.clamp(0, 254)
      ensure
        exit!(count)
      end
      status = Process.waitpid2(pid)[1]
      status.exited? && status.exitstatus < 255 ? status.exitstatus : 1
    rescue SystemCallError
      1
    end

    private_class_method :settings_for, :program_name, :arm_fast_exit, :daemon, :or_exit,
                         :null_stdio, :stdio_terminals, :freeze_heap, :thread_count,
                         :forked_thread_count
  end
end
