# frozen_string_literal: true

# The keeper: on a call with a pseudo-terminal of its own, the executor
# stays, as a shell would, its session's leader, the script its child
# (why two processes: sides/ruby/lib/prefork_interp/executor.rb). It
# tells the monitor when the script stops and how it ended, and moves the
# script's group to its terminal's foreground or background when the
# monitor says so. Runs none of the script's code.
#
# When the client that started the server named its own program
# (PREFORK_INTERP's pfi-keeper), the executor becomes that program, which
# keeps the session as keep does (exec_program): a keeper that is a copy
# of this interpreter shares every page of it with the script, and the
# script's writes (its objects' headers as the GC marks and ages them,
# its exit's finalisation) would copy each page it touches; with the
# keeper gone from them, they are the script's own.
#
# (Ruby port of the Python side's _keeper.py.)

require "English"

require_relative "log"
require_relative "sys"
require_relative "wire"

module PreforkInterp
  # Keeper.keep (the session's keeper, in this interpreter),
  # Keeper.exec_program (the client's program as the keeper instead),
  # Keeper.say_end.
  module Keeper
    SIGCHLD = Signal.list.fetch("CHLD")
    SIGCONT = Signal.list.fetch("CONT")
    SIGHUP = Signal.list.fetch("HUP")
    SIGINT = Signal.list.fetch("INT")
    private_constant :SIGCHLD, :SIGCONT, :SIGHUP, :SIGINT

    # How long a keeper with other threads beside it waits at most before
    # it looks at the script again (keep): a stop it missed is told this
    # late at most.
    RECHECK_SECONDS = 0.05

    module_function

    # The session's keeper: tells the monitor when the script stops ('t'
    # and the signal) and how it ended ('x' and its wait status, with no
    # other fd left open: say_end), then exits; when the monitor says so
    # ('f', from the client's 'F': 1, the client is in its terminal's
    # foreground; 0, its background), makes the script's group the
    # terminal's foreground group or its own, and continues the script.
    # What the script left in its group gets SIGINT while the script is a
    # zombie (its group id cannot be reused), as the monitor does for an
    # executor. A hang-up of the terminal, which the kernel signals to the
    # session's leader, is the monitor's to pass on (it sees the client
    # go). Its signal handlers are off. Never returns: anything that ends
    # its loop but say_end's exit is logged, and it exits with 127.
    def keep(script, monitor, terminal, log)
      Sys::FORWARDED_SIGNALS.each { |sig| Signal.trap(sig, "SYSTEM_DEFAULT") }
      Signal.trap(SIGHUP, "IGNORE")
      # The monitor's death (PR_SET_PDEATHSIG) must still end us, and
      # with us the script (its own PR_SET_PDEATHSIG).
      Sys.sigmask(Sys::SIG_UNBLOCK, [SIGINT])
      # The script's stops and exit, and the monitor's 'f', in one
      # select. SIGCHLD has been blocked since before the fork (the
      # executor), so each change of the script leaves it pending, and a
      # signalfd readable, whenever it comes; each round looks at the
      # script (waitid, WNOHANG) after reading the signalfd empty, so
      # nothing is missed. A signalfd (through fiddle: Ruby's core has
      # none) rather than a trap, whose handler Ruby runs later, in the
      # main thread, and whose wakeup would need a pipe of our own; as the
      # Rust and Python keepers do. (Never Ruby's blocking Process.wait
      # here: before Ruby 3.3 it waits for a SIGCHLD it handles itself,
      # which stays blocked.)
      children = IO.for_fd(Sys.signalfd(SIGCHLD), autoclose: false)
      # Unlike Python's, this process may have threads of Ruby's own (from
      # Ruby 3.3 a timer thread in every process; a Ruby thread ended,
      # kept for reuse), made before SIGCHLD was blocked and not blocking
      # it: the kernel delivers a SIGCHLD there rather than leave it
      # pending, and the signalfd never hears of it. With such a thread,
      # each select ends after RECHECK_SECONDS at most, and waitid looks
      # anyway.
      recheck = Sys.thread_count > 1 ? RECHECK_SECONDS : nil
      watched = [children, monitor]
      loop do
        watch_script(script, monitor)
        ready, = IO.select(watched, nil, nil, recheck)
        ready ||= [] # (the recheck's timeout)
        # Read empty (each read takes whole signalfd_siginfo records).
        loop { break unless children.read_nonblock(4096, exception: false).is_a?(String) }
        next unless ready.include?(monitor)

        message = Sys.recv_exact(monitor, Wire::FRAME_LEN)
        if message.bytesize < Wire::FRAME_LEN
          watched.delete(monitor) # the monitor has gone
        else
          hear_monitor(script, terminal, *Wire.decode_frame(message))
        end
      end
    ensure
      # Only an exception (or a throw) gets here: say_end leaves with
      # exit!, which runs no ensure clause (as Python's `except
      # BaseException`: nothing of the script's may run here).
      log.call(Log::LOG_ERR, "keeper of #{script}: #{$ERROR_INFO.inspect}")
      Process.exit!(127)
    end

    # Becomes the keeper program: PROGRAM --session-keeper SCRIPT with
    # the monitor's socket as fd 0 and the terminal as fd 1 (it closes our
    # other fds itself, and Ruby opens every fd of its own close-on-exec;
    # SIGCHLD stays blocked, as keep needs it, and PR_SET_PDEATHSIG stays
    # set: Ruby's exec changes neither). Returns only if the exec failed,
    # with fds 0 and 1 on /dev/null (a copy of the terminal left there
    # would outlive say_end's closing): keep then does the work here.
    def exec_program(program, script, monitor, terminal)
      begin
        Sys.dup2(monitor.fileno, 0)
        Sys.dup2(terminal, 1)
        # [path, argv[0]]: no shell, whatever the path holds.
        exec([program, program], Wire::KEEPER_ARGUMENT, script.to_s)
      rescue SystemCallError
        nil
      end
      File.open(File::NULL, File::RDWR) do |null|
        [0, 1].each { |fd| Sys.dup2(null.fileno, fd) }
      end
    end

    # What the script did since the last look: each stop to the monitor;
    # its end, to the monitor too, and the keeper's.
    def watch_script(script, monitor)
      loop do
        # Without reaping (WNOWAIT): the script's group id stays its own
        # until we have signalled what is left in it.
        info = Sys.waitid(Sys::P_PID, script, Sys::WSTOPPED | Sys::WEXITED | Sys::WNOWAIT | Sys::WNOHANG)
        return if info.nil?

        if info[:code] != Sys::CLD_STOPPED
          Sys.kill_group(script)
          # A zombie by now: WNOHANG reaps it at once (and never waits
          # for a SIGCHLD, which is blocked).
          _, status = Process.waitpid2(script, Process::WNOHANG)
          say_end(monitor, status.to_i)
        end
        # Consume this stop's report, so the next wait sees what comes
        # after it (without WEXITED, which would reap).
        Sys.waitid(Sys::P_PID, script, Sys::WSTOPPED | Sys::WNOHANG)
        begin
          Sys.send_all(monitor, Wire.encode_frame(Wire::KEEPER_STOPPED, info[:status]))
        rescue SystemCallError, IOError
          nil
        end
      end
    end

    def hear_monitor(script, terminal, kind, value)
      return unless kind == Wire::KEEPER_FOREGROUND

      # SIGTTOU is blocked: allowed from the background.
      begin
        Sys.tcsetpgrp(terminal, value == 1 ? script : Process.getpgrp)
      rescue SystemCallError
        nil
      end
      Sys.kill_group(script, SIGCONT)
    end

    # The keeper's last words: 'x' and the script's wait status, on the
    # monitor's socket, once every other fd it has is closed (the
    # terminal's copy first of all: the client ends at its master's EIO,
    # when the last copy of the slave is closed, and it need not wait for
    # our exit too); then it exits. The monitor's socket stays, as fd 0.
    def say_end(monitor, status)
      message = Wire.encode_frame(Wire::KEEPER_STATUS, status)
      begin
        begin
          Sys.dup2(monitor.fileno, 0)
        rescue SystemCallError
          Sys.send_all(monitor, message) # with our copy of the terminal
        else
          # An IO on fd 0 that does not own it, made before the others go.
          out = IO.for_fd(0, "w", autoclose: false)
          Sys.close_range_from(3)
          # Five bytes: one write. (Only a monitor gone could make it
          # fail, and Ruby takes no SIGPIPE: nobody is listening then.)
          out.syswrite(message)
        end
      rescue SystemCallError, IOError
        nil
      end
      Process.exit!(0)
    end

    private_class_method :watch_script, :hear_monitor
  end
end
