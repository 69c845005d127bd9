# frozen_string_literal: true

# fast_exit: true: a call ends as Ruby would end it, without the
# interpreter's finalisation.
#
# Ruby ends a run of a script in this order (rb_ec_cleanup): the main
# script's code returns, or an exception leaves it (SystemExit, from
# exit or abort: its status is the exit status); then the EXIT trap,
# the at_exit handlers (and END blocks), last registered first, each
# seeing in $! how the run is ending (a handler's exit or exception
# becomes the run's end for those after it, and its status the run's);
# other threads are killed (their ensure clauses run); an exception
# that left the main script is reported; and then the finalisation
# proper: the finalizers of ObjectSpace.define_finalizer, then every
# object's own (each IO's buffer flushed and its fd closed, each C
# extension's data freed), before exit(3). In an executor that last part
# goes over the whole heap the server made, writing to pages that
# copy-on-write then copies: most of what a warm call's end costs. This
# skips it and nothing else:
#
# - The EXIT trap (Signal.trap("EXIT"), which Ruby runs first of its
#   end, with $! as the main script left it) records how the main script
#   ended: normally (status 0) or by a SystemExit (its status); any
#   other exception: unknown.
# - The last at_exit handler of all (InitEnv.at_last_exit: registered as
#   the interpreter started, so Ruby runs it after all the others) takes
#   the end from there: with a known end and $! then nil or a SystemExit
#   (a handler's exit: the status Ruby would take), it flushes the
#   standard streams and C stdio, and leaves with _exit(status). So
#   everything before the finalisation is Ruby's own doing, in its own
#   order and context (the at_exit handlers, an abort's message).
#
# Whenever the end is anything else (an exception Ruby reports, a signal
# Ruby dies of, a SystemExit subclass, other threads still running,
# which Ruby kills first, a flush that fails, an EXIT trap of the
# script's own), ours returns and Ruby ends the call as always. What it
# skips, as Python's skips its finalisation: the finalizers of objects
# still alive (a Tempfile's unlinking included), the buffer of an IO
# other than $stdout, $stderr, STDOUT and STDERR left open with unwritten
# data (a File written and never closed: close it, or set sync), and
# C's atexit(3) handlers.

require "English"
require "fiddle"

require_relative "init_env"

module PreforkInterp
  # FastExit::FastExit (arm, in the setup run), FastExit.system_exit_status,
  # FastExit.flush_std_streams and FastExit.fflush_all.
  module FastExit
    # C's fflush: fflush(NULL) flushes every C stdio stream (a C
    # extension's), as exit(3) would. Not Sys.fflush_all, which flushes
    # every IO object Ruby has, found by a walk over the whole heap (as
    # costly as the finalisation this skips: 30 ms of a 35 ms end, with a
    # heap of a million objects), and calls flush on a $stdout that is no
    # IO (Ruby's end never does); Python's _sys.fflush_all is this one.
    FFLUSH = begin
      Fiddle::Function.new(Fiddle::Handle::DEFAULT["fflush"], [Fiddle::TYPE_VOIDP], Fiddle::TYPE_INT)
    rescue Fiddle::DLError
      nil # a C library without it: nothing to flush
    end
    private_constant :FFLUSH

    module_function

    # The exit status Ruby makes of an exception ending the run
    # (rb_ec_cleanup's sysexit_status: SystemExit's status, as exit(3)
    # takes it, its low 8 bits), or nil where we leave it to Ruby (a
    # report and status 1, a signal to die of...). Keeps no reference to
    # anything of it.
    def system_exit_status(exc)
      return nil unless exc.instance_of?(SystemExit) # a subclass is Ruby's to end

      # SystemExit's own status (the one Ruby reads), whatever the object
      # defines.
      status = SystemExit.instance_method(:status).bind(exc).call
      return nil unless status.is_a?(Integer) && status.between?(-(2**31), (2**31) - 1)

      status & 0xFF
    end

    # $stdout, $stderr, and STDOUT and STDERR where they are others,
    # flushed where open; a flush's failure raised. (Ruby's end flushes
    # every IO object's buffer; a $stdout that is no IO it never calls on.)
    def flush_std_streams
      # The constants too: Ruby's end flushes them whatever $stdout is.
      [$stdout, $stderr, STDOUT, STDERR].uniq(&:__id__).each do |stream| # rubocop:disable Style/GlobalStdStream
        stream.flush if stream.is_a?(IO) && !stream.closed?
      end
    end

    # C stdio's buffers, as exit(3) would flush them.
    def fflush_all
      FFLUSH&.call(nil)
    end

    # Armed in the setup run (the server, monitor and executors inherit
    # it; only an executor, or a process a call forks, ever ends the
    # script's code): status, how the main script ended in this process
    # (an exit status, or nil: not ended, or in a way Ruby must finish),
    # then, in the last at_exit handler, the status Ruby would exit with.
    class FastExit
      attr_reader :status

      def initialize
        @status = nil
        # The process whose end the EXIT trap saw (a process forked in an
        # at_exit handler runs no EXIT trap of its own: its parent's status
        # is not its).
        @status_pid = nil
        @armed = false
      end

      # The EXIT trap: the main script has ended, $! saying how.
      def on_exit_trap
        @status = $ERROR_INFO.nil? ? 0 : PreforkInterp::FastExit.system_exit_status($ERROR_INFO)
        @status_pid = Process.pid
      end

      # Returns nil, or why fast_exit does nothing.
      def arm
        why = ::PreforkInterp::InitEnv.at_last_exit { last_handler }
        return why unless why.nil?

        fast_exit = self
        previous = Signal.trap("EXIT") { fast_exit.on_exit_trap }
        unless [nil, "DEFAULT", "SYSTEM_DEFAULT"].include?(previous)
          Signal.trap("EXIT", previous)
          return "the script has an EXIT trap of its own"
        end
        @armed = true
        nil
      end

      # What the last at_exit handler does once armed: if the main
      # script's end is known, and $! (the end so far, which Ruby takes the
      # status from: the main script's, or that of a handler's exit)
      # too, the exit.
      def last_handler
        return unless @armed && @status_pid == Process.pid && !@status.nil?

        unless $ERROR_INFO.nil?
          @status = PreforkInterp::FastExit.system_exit_status($ERROR_INFO)
          return if @status.nil?
        end
        exit
      end

      # After the at_exit handlers: flush what Ruby's end would flush of
      # the standard streams, and leave. Returns (Ruby goes on and ends the
      # call as always) whenever unsure; never raises.
      def exit
        status = @status
        # Ruby kills other threads (running their ensure clauses) before
        # its finalisation: leave those ends to it.
        return if Thread.list.any? { |thread| !thread.equal?(Thread.current) }

        PreforkInterp::FastExit.flush_std_streams
        PreforkInterp::FastExit.fflush_all
      rescue Exception # rubocop:disable Lint/RescueException
        # Ruby goes on: its at_exit list is empty now, and a flush that
        # failed fails again, as quietly as Ruby's own end has it.
        nil
      else
        Process.exit!(status)
      end
    end
  end
end
