# frozen_string_literal: true

require "English"

# What the tests that play a role's peers share: reading a socket or pipe
# with a deadline, and waiting for a child with one (a broken build fails
# instead of hanging). For Minitest::Test classes (assert, flunk).
module ProcessHelpers
  # fork, and whatever happens in the child, exit! (minitest's at_exit
  # must not run the tests there again).
  def child
    fork do
      yield
    ensure
      warn("child: #{$ERROR_INFO.inspect}") if $ERROR_INFO
      exit!(1)
    end
  end

  # The titles a process takes (an executor-to-be's: "handler"), kept.
  class RecordedTitles
    attr_reader :roles

    def initialize
      @roles = []
    end

    def set(role)
      @roles << role
    end
  end

  def wait_readable(io, timeout = 10)
    assert io.wait_readable(timeout), "nothing to read in #{timeout} s"
  end

  # length bytes from io (a socket or a pipe), fewer at its end.
  def read_exactly(io, length, timeout = 10)
    data = "".b
    while data.bytesize < length
      wait_readable(io, timeout)
      chunk = io.is_a?(BasicSocket) ? io.recv(length - data.bytesize) : io.readpartial(length - data.bytesize)
      break if chunk.nil? || chunk.empty?

      data << chunk.b
    end
    data
  end

  def read_to_eof(io, timeout = 10)
    data = "".b
    loop do
      wait_readable(io, timeout)
      data << io.readpartial(65_536)
    rescue EOFError
      return data
    end
  end

  # The child's status; one still running after timeout is killed.
  def wait_child(pid, timeout = 10)
    deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + timeout
    loop do
      got, status = Process.waitpid2(pid, Process::WNOHANG)
      return status unless got.nil?

      if Process.clock_gettime(Process::CLOCK_MONOTONIC) > deadline
        Process.kill(:KILL, pid)
        Process.waitpid(pid)
        flunk "child #{pid} still ran after #{timeout} s"
      end
      sleep 0.01
    end
  end
end
