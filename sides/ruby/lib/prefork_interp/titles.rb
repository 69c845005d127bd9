# frozen_string_literal: true

# What ps shows of the server's processes: not the first caller's
# arguments, which the interpreter's argv area holds: `SCRIPT [server]`,
# `SCRIPT [monitor]`, `SCRIPT [handler]` (an executor-to-be), and an
# executor, once its request is read, `SCRIPT`. Ruby's own
# Process.setproctitle writes them there (Python, which has none, writes
# the area itself).

require "fiddle"

module PreforkInterp
  # Titles::Titles: each role's title, and the initial environment
  # forgotten.
  module Titles
    # Each role's title, made once in the setup run so that setting one
    # is a single Process.setproctitle (an executor does it on each call's
    # path).
    class Titles
      ROLES = [["server", " [server]"], ["monitor", " [monitor]"], ["handler", " [handler]"],
               ["executor", ""]].freeze

      # area: [address, length] of the argv strings; environ_area: the
      # environment's; titles: role => its title (binary).
      attr_reader :area, :environ_area, :titles

      # Where the argv strings are (arg_start, arg_end: fields 48 and 49 of
      # /proc/self/stat, counted after the last ')' of the command name). A
      # title longer than the area is cut, keeping a NUL at its end: the
      # kernel shows the area up to arg_end, and reads on past it into the
      # environment if its last byte is not a NUL (and Ruby's setproctitle
      # would write on into it: only a title as long as the argv strings
      # stays in their area, NUL-filled to its end). Nothing found
      # (unreadable): no titles.
      def initialize(script)
        @area = nil
        @environ_area = nil
        @titles = {}
        begin
          stat = File.binread("/proc/self/stat")
          fields = stat.byteslice((stat.rindex(")") + 2)..).split
          # (A field missing is nil: a TypeError.)
          start, finish, env_start, env_end = fields.values_at(45, 46, 47, 48).map { |f| Integer(f) }
        rescue SystemCallError, IOError, ArgumentError, TypeError, NoMethodError
          return
        end
        @environ_area = [env_start, env_end - env_start].freeze if env_start.positive? && env_start < env_end
        return unless start.positive? && start < finish # zeros: the kernel would not tell

        length = finish - start
        @area = [start, length].freeze
        make_titles(script.to_s.b, length)
      end

      # Best effort: never fails. role: "server", "monitor", "handler",
      # "executor".
      def set(role)
        title = @titles[role.to_s]
        return if title.nil?

        begin
          Process.setproctitle(title)
        rescue StandardError
          nil
        end
        nil
      end

      # The environment exec gave this process, where /proc/PID/environ
      # shows it (to any process of the same user), becomes NULs: a
      # server forked from the first call's setup run must not keep that
      # caller's variables (a token, a password) for its whole life. The
      # C environment is in copies (Ruby's start-up copies it, for
      # setproctitle; each variable is set again, setenv, as Python's
      # side does), so that nothing points into the area. Best effort:
      # never fails.
      def forget_initial_environ
        return if @environ_area.nil?

        begin
          ENV.to_h.each { |name, value| ENV[name] = value }
          address, length = @environ_area
          Fiddle::Pointer.new(address)[0, length] = "\0".b * length
        rescue StandardError
          nil
        end
        nil
      end

      private

      def make_titles(name, length)
        ROLES.each do |role, suffix|
          title = name + suffix
          if title.bytesize >= length
            # `ruby ./script` leaves no room for the role: the script's
            # file name without its directory, as the role says more than
            # the directory does.
            title = File.basename(name) + suffix
          end
          @titles[role] = title.byteslice(0, length - 1).freeze
        end
      end
    end
  end
end
