# frozen_string_literal: true

# syslog, for the server's processes: the setup run opens it (unless
# log_facility is nil or ""), each process forked after drops the
# server's socket and opens its own lazily, and an executor leaves it
# closed for the script, as in a direct run.

require "syslog"

module PreforkInterp
  # Log.facility, Log::Log (the roles' log: log.call(priority, message)),
  # and the priorities the roles log at.
  module Log
    # For the roles (as the Python side's `from syslog import ...`).
    LOG_ERR = Syslog::LOG_ERR
    LOG_INFO = Syslog::LOG_INFO

    module_function

    # A syslog facility ("user", "daemon", "local0"..., :user, or a
    # Syslog::LOG_* value), or nil for none; an ArgumentError (Python's
    # ValueError) for a name syslog does not have.
    def facility(name)
      return nil if name.nil? || name == ""
      return name if name.is_a?(Integer)

      value = syslog_constant(name)
      raise ArgumentError, "prefork-interp: unknown syslog facility #{name.inspect}" unless value.is_a?(Integer)

      value
    end

    # Syslog's LOG_NAME for a name ("local0", "LOG_LOCAL0"), or nil.
    def syslog_constant(name)
      key = name.to_s.upcase
      key = "LOG_#{key}" unless key.start_with?("LOG_")
      key.match?(/\A[A-Z][A-Z0-9_]*\z/) && Syslog.const_defined?(key) ? Syslog.const_get(key) : nil
    end
    private_class_method :syslog_constant

    # The server's syslog, or nothing (args nil).
    class Log
      attr_reader :args

      def initialize(program, facility_value)
        # openlog's arguments: a process that closes the server's syslog
        # socket opens it again, lazily, as the server had it.
        @args = nil
        return if facility_value.nil?

        @args = ["prefork-interp #{program}", Syslog::LOG_PID, facility_value].freeze
        open_syslog
      end

      def call(priority, message)
        return if @args.nil?

        begin
          # "%s": the message is no format (Syslog.log's is).
          Syslog.log(priority, "%s", message.to_s)
        rescue StandardError
          nil
        end
      end

      # Drops the syslog socket this process inherited (if the server
      # had logged); the next message opens its own, with the server's
      # ident and facility (openlog without LOG_NDELAY opens nothing
      # yet).
      def reopen
        open_syslog unless @args.nil?
      end

      # The script finds syslog unopened, as in a direct run.
      def close
        Syslog.close if !@args.nil? && Syslog.opened?
      end

      private

      # openlog, after closelog if it was open (Ruby's Syslog.open refuses
      # to open twice; Python's openlog, and C's, open again).
      def open_syslog
        Syslog.close if Syslog.opened?
        Syslog.open(*@args)
      end
    end
  end
end
