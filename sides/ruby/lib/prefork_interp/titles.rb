# frozen_string_literal: true

# What ps shows of the server's processes: not the first caller's
# arguments, which the interpreter's argv area holds: `SCRIPT [server]`,
# `SCRIPT [monitor]`, `SCRIPT [handler]` (an executor-to-be), and an
# executor, once its request is read, `SCRIPT`. Ruby's own
# Process.setproctitle writes them there when it can; when it cannot, we
# write the area ourselves, as Python (which has none) does.
#
# It cannot in a server set up from a `-r` library (`ruby
# -rprefork_interp/run PROGRAM ARG...`, the runner): Ruby finds the argv
# area for setproctitle (ruby_init_setproctitle) only after the -r
# libraries are loaded, and the server, its monitor and spares live their
# whole life inside that load (only an executor returns from it, its
# title set), so Process.setproctitle does nothing in any of them. The
# first title set checks /proc/self/cmdline: what Ruby's setproctitle
# wrote there, or, if that is not the title, the area written by us, then
# and for every title after it (in this process and its forks, which
# share the reason). /proc/PID/comm (the executable's name) is left as
# exec made it, as Python's side and Ruby's setproctitle leave it.

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
      # environment's; titles: role => its title (binary); written: nil
      # before the first title set, then whether titles are written into
      # the area by us (Process.setproctitle did not take effect) or by
      # Process.setproctitle.
      attr_reader :area, :environ_area, :titles, :written

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
        # role => its title NUL-filled to the area's length: the area as
        # /proc/PID/cmdline shows it once the title is set.
        @images = {}
        @written = nil
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
      # "executor". A single Process.setproctitle, or a single write of
      # the area, once the first call has found which of them works.
      def set(role)
        role = role.to_s
        title = @titles[role]
        return if title.nil?

        begin
          if @written
            write_area(role)
          else
            Process.setproctitle(title)
            # The first title: did Ruby write it (the area reads as its
            # image)? If not, or /proc does not tell, we write it, now and
            # from now on (writing what Ruby wrote changes nothing).
            if @written.nil?
              @written = !took_effect?(role)
              write_area(role) if @written
            end
          end
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
      # setproctitle, though not yet in a server set up from a -r
      # library; each variable is set again, setenv, as Python's side
      # does), so that nothing points into the area. Best effort: never
      # fails.
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

      # Whether /proc/self/cmdline shows role's title as the area's image.
      def took_effect?(role)
        File.binread("/proc/self/cmdline") == @images[role]
      rescue SystemCallError, IOError
        false
      end

      # The argv area becomes role's image: the title, then NULs to its
      # end (so that neither what was there, the first caller's
      # arguments, nor the environment after the area shows).
      def write_area(role)
        address, length = @area
        Fiddle::Pointer.new(address)[0, length] = @images[role]
      end

      def make_titles(name, length)
        ROLES.each do |role, suffix|
          title = name + suffix
          if title.bytesize >= length
            # `ruby ./script` leaves no room for the role: the script's
            # file name without its directory, as the role says more than
            # the directory does.
            title = File.basename(name) + suffix
          end
          title = title.byteslice(0, length - 1)
          @titles[role] = title.freeze
          @images[role] = (title + ("\0".b * (length - title.bytesize))).freeze
        end
      end
    end
  end
end
