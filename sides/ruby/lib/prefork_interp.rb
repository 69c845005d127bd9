# frozen_string_literal: true

# prefork-interp for Ruby scripts: pay the start-up once, fork per call.
#
#     #!/usr/bin/prefork-interp -U,ruby
#     require "prefork_interp"                   # first: see "environment"
#     require "heavy_things"                     # paid once, by the server
#     PreforkInterp.initialisation_complete      # returns once per call
#     main                                       # ARGV, ENV and
#                                                # $stdin/$stdout/$stderr
#                                                # are the caller's
#
# Process roles (as in the Rust, Perl and Python script sides): the setup
# run, the server, its one monitor, the executors (setup.rb has the
# picture), each in a file of its own: setup.rb, server.rb, monitor.rb,
# executor.rb, keeper.rb; the wire in wire.rb.
#
# Each one's title (what ps and /proc/PID/cmdline show; best effort, cut
# to the setup run's command line's length) hides the first caller's
# arguments: `SCRIPT [server]`, `SCRIPT [monitor]`, `SCRIPT [handler]`
# (an executor-to-be), and `SCRIPT` for an executor once it has read its
# request (SCRIPT: $0 of the setup run).
#
# Per call: the server accepts, greets, and sends the call socket to the
# monitor on CONTROL; the monitor hands it to an idle executor-to-be,
# which reads the request, becomes a process group of its own, sends 'P'
# (extended), tells the monitor 'r' and returns from
# initialisation_complete. The monitor watches every call in flight in
# one select loop (pidfds, the executors' 'r', the clients' signal
# frames); when an executor's pidfd says it is gone, it SIGINTs what is
# left of its group, reaps it, sends 'd' to the server (which counts the
# calls running, for the greeting and max_servers), then the status to
# the client; and it forks the next spare meanwhile. One fork and one
# exit per call.
#
# A call whose fds 0, 1, 2 include the slave of a pseudo-terminal the
# client opened for it (capability "tty": request flags 0x04, 0x08, 0x10)
# gets a session instead. The executor, holding the terminal's signals
# (SIGINT, SIGQUIT, SIGTSTP, SIGTTIN, SIGTTOU, SIGWINCH, SIGHUP) and
# SIGCHLD, calls setsid, makes the terminal its controlling terminal
# (TIOCSCTTY) and forks the script's process, which leads a group of its
# own, the terminal's foreground group (a session leader's own group would
# be orphaned, and the kernel drops ^Z sent to one), or with flag 0x20
# (the client is in a pipeline or in the background) its background:
# /dev/tty opens, and ^C, ^\, ^Z and window size changes reach the
# script's group from the terminal. That process sends 'P' with its pid,
# 'r' with the request byte and its pid, and returns into the script,
# where those signals (and SIGCHLD) come in. The executor stays as the
# session's keeper, one process per such call, watching the script
# (SIGCHLD, from a signalfd) and the monitor in one select: it tells the
# monitor when the script stops ('t' and the signal; the monitor tells
# the client, 'T', which stops too) and how it ended ('x' and its wait
# status, said once it has closed every fd but the monitor's socket, its
# copy of the terminal with them; the monitor ends the call then, 'd' and
# the client's 'X', and reaps the keeper once it has exited), then exits;
# and when the client moves to its own terminal's foreground or
# background ('F' and 1 or 0, which the monitor passes on as 'f'), it
# moves the script's group there too (tcsetpgrp to it, or to its own
# group) and continues it. (Where the client named its own program,
# pfi-keeper, the executor execs that as the keeper instead.) The
# client's signals go to the script's group; its going away is SIGHUP and
# SIGCONT there. While the client has the caller's terminal raw, the
# monitor holds that terminal, the settings the client found on it and
# those it left (capability "restore": the 'R' frame); a client that goes
# away before the call's status (killed outright) has the first put back
# by the monitor, before that SIGHUP, as a direct run would leave them,
# if the terminal still has the second (a shell that has taken its
# terminal back keeps its own mode).
#
# A call with request flag 0x40 (capability "limits") brings the caller's
# resource limits, nice value and oom_score_adj: the script's process
# takes on each that differs from its own once fds 0, 1, 2 are the
# caller's, and if the kernel refuses one (a server started under lower
# limits cannot raise them) says so in one line on the caller's stderr and
# ends with 127.
#
# A caller's closed fd 0, 1 or 2 (`script <&-`; capability "closed":
# request flag 0x80 and a second flags byte, 0x01, 0x02, 0x04) comes as
# /dev/null, in whose place the executor (the script's process) puts what
# Ruby's start-up puts in a direct run: fd 0, a pipe with no writer (EOF);
# fds 1 and 2, a pipe with no reader (EPIPE), so that the number is never
# a file the script opens. STDIN, STDOUT and STDERR stay the objects the
# setup run's start-up made, on fds 0, 1, 2, with its flags (the setup
# run had terminals where each caller has them), and $stdin, $stdout and
# $stderr are they again.
#
# The environment initialisation reads picks the server: from the
# tracking's start until initialisation_complete, each variable read
# through ENV by name ([], fetch, key?, values_at, slice, assoc, delete;
# to_hash, `**ENV`, reads them all) is recorded; iteration and to_h (a
# copy: ENV.to_h["NAME"] reads without being recorded) are not
# (init_env.rb). Then nothing more is. The server's greeting lists those
# names with a digest of their exec-time values (an `env` line); a caller
# whose values differ gets a server of its own, initialised with its
# values. The tracking starts with `require "prefork_interp"`, or before
# the script's first line where the client loads prefork_interp/init_env
# first of all (`ruby -rprefork_interp/init_env SCRIPT`, as it starts a
# server). Not seen: reads before the require without that, and C code's
# getenv.
#
# Server and monitor leave with exit!: at_exit handlers and finalizers
# run in executors only. Standard library only; Linux 5.3 or later
# (pidfd_open); Ruby 2.7 or later.

require_relative "prefork_interp/init_env"

# The API: PreforkInterp.initialisation_complete,
# PreforkInterp.autoreload_also_check.
module PreforkInterp
  VERSION = "0.1.0"

  # The exec-time environment, read now (or already, by the client's
  # -rprefork_interp/init_env); ENV is tracked from then (before the
  # script's own code) until initialisation_complete.
  @init_env_state = InitEnv.start

  # (Python's side also registers here, before any exit handler of the
  # script's, the release of what a call left in __main__'s globals, and
  # keeps whether calls end with the interpreter's finalisation, for its
  # heap's pre-copy: _call_globals and _precopy, which have no Ruby
  # counterpart. Ruby's top-level locals die with the main script's
  # frame, and its finalizers run at exit whatever the GC's generations:
  # nothing is left unfinalised to let go of; and no pre-copy.)

  class << self
    # Also restart the server when any of these files changes (Strings,
    # or Pathnames and anything else with to_path).
    #
    # Call it before initialisation_complete.
    def autoreload_also_check(*paths)
      @init_env_state.also_check.concat(paths.map { |path| File.path(path) })
      nil
    end

    # Ends the script's initialisation.
    #
    # Standalone (not started by prefork-interp, no PREFORK_INTERP in the
    # environment): returns at once, and the script runs normally.
    #
    # Under prefork-interp: turns the script into a server and returns
    # once per call, each time in a new process whose ARGV, ENV and
    # $stdin/$stdout/$stderr are the call's. Raises (in the setup run,
    # whose stderr the caller sees) if other threads are running or
    # PREFORK_INTERP is malformed.
    #
    # max_servers: calls served at once, more callers queue (negative or
    # nil: no limit). idle_timeout: seconds with nothing to do before the
    # server quits (negative or nil: never; the client may set a shorter
    # one, as it does for a folded identity's server). autoreload_modules:
    # restart the server when the script or any required file changes;
    # autoreload_extra: more files. max_errors: server errors tolerated.
    # log_facility: syslog facility for the server's messages ("user",
    # "daemon", "local0"..., or a Syslog::LOG_* value); nil or "": none.
    # spare_handlers: executors-to-be (forked in advance by the server's
    # one monitor, so that no fork is on a call's critical path) kept
    # waiting for calls; at least 1. fast_exit (true or false): each call
    # ends as Ruby would end it (exit status, at_exit handlers, output
    # flushed) but without the interpreter's finalisation (finalizers of
    # objects still alive, every object freed), which is most of what a
    # call's end costs (fast_exit.rb); a run without prefork-interp ends
    # normally. interrupt_grace: when a call's client goes away (killed,
    # ^C), the script's process group gets SIGINT, as in a direct run (on
    # a pseudo-terminal of its own: SIGHUP and SIGCONT, as when a terminal
    # goes away); a script still running this many seconds later (it
    # ignores SIGINT, or takes long over it) is killed with SIGKILL, and
    # that is logged, so that no script outlives its caller holding the
    # caller's pipes (negative or nil: never; default 2).
    def initialisation_complete(max_servers: 4, idle_timeout: 1_000_000, autoreload_modules: true,
                                autoreload_extra: [], max_errors: 100, log_facility: "user",
                                spare_handlers: 1, fast_exit: false, interrupt_grace: 2)
      # What it read so far is what initialisation read.
      reads = @init_env_state.stop_tracking
      unless [true, false].include?(fast_exit)
        raise ArgumentError, "prefork-interp: fast_exit must be true or false, not #{fast_exit.inspect}"
      end

      value = ENV.delete(InitEnv::ENV_VAR)
      return nil if value.nil?

      require_relative "prefork_interp/setup"

      setup = Setup.check_setup(value)
      options = options(max_servers, idle_timeout, autoreload_modules, autoreload_extra, max_errors,
                        log_facility, spare_handlers, fast_exit, interrupt_grace)
      mask = Setup.run(@init_env_state, reads, setup, options)
      unless mask.nil?
        # The terminal's signals held since the call took its terminal,
        # now that $stdin and the rest are the call's: a ^C typed at once
        # is an Interrupt raised here, in the script, as at its first line
        # in a direct run; a ^Z stops it.
        Sys.sigmask(Sys::SIG_SETMASK, mask)
      end
      nil
    end

    private

    # initialisation_complete's options, checked (nil: no limit).
    def options(max_servers, idle_timeout, autoreload_modules, autoreload_extra, max_errors,
                log_facility, spare_handlers, fast_exit, interrupt_grace)
      if !max_servers.nil? && max_servers.zero?
        raise ArgumentError, "prefork-interp: max_servers must not be 0 (negative for no limit)"
      end

      raise ArgumentError, "prefork-interp: spare_handlers must be at least 1" if spare_handlers < 1

      {
        max_servers: no_limit(max_servers),
        idle_timeout: no_limit(idle_timeout),
        autoreload_modules: autoreload_modules,
        autoreload_extra: autoreload_extra,
        max_errors: max_errors,
        facility: Log.facility(log_facility),
        spare_handlers: spare_handlers,
        fast_exit: fast_exit,
        interrupt_grace: no_limit(interrupt_grace)
      }
    end

    # A bound, or nil (no limit) for nil or a negative one.
    def no_limit(value)
      value.nil? || value.negative? ? nil : value
    end
  end
end
