# frozen_string_literal: true

# The API (lib/prefork_interp.rb): a direct run, the options' checks and
# errors, the setup environment's checks, the tracking's end, and
# autoreload_also_check; each in a Ruby of its own, as a script runs.

require "minitest/autorun"
require "open3"
require "rbconfig"
require "syslog"

class TestPreforkInterp < Minitest::Test
  LIB = File.expand_path("../lib", __dir__)

  # Runs code in a fresh Ruby (with env, and fds: spawn's redirections);
  # [stdout, stderr, status].
  def ruby(code, env: {}, **fds)
    Open3.capture3({ "PREFORK_INTERP" => nil }.merge(env), RbConfig.ruby, "-I#{LIB}", "-e", code, *ARGV_EXTRA,
                   **fds)
  end
  ARGV_EXTRA = %w[one two].freeze

  # Code that calls initialisation_complete with options, and says what
  # it raised (class, message) and whether PREFORK_INTERP is still set.
  def calling(options)
    <<~RUBY
      require "prefork_interp"
      begin
        PreforkInterp.initialisation_complete(#{options})
        puts "returned"
      rescue StandardError => e
        puts e.class, e.message
      end
      puts ENV.key?("PREFORK_INTERP")
    RUBY
  end

  # Runs code under a setup environment naming fds 3 to 6, open.
  def under_setup(code, value: "v1,1700000000.000000000 3,4,5,6")
    File.open(File::NULL) do |null|
      ruby(code, env: { "PREFORK_INTERP" => value }, 3 => null, 4 => null, 5 => null, 6 => null)
    end
  end

  def test_direct_run_returns
    out, err, status = ruby(<<~RUBY)
      require "prefork_interp"
      x = PreforkInterp.initialisation_complete(max_servers: 0)
      p x, ARGV, $stdout.fileno
    RUBY
    assert status.success?, err
    # No PREFORK_INTERP: nothing checked but fast_exit, and nil returned.
    assert_equal "nil\n[\"one\", \"two\"]\n1\n", out
  end

  def test_fast_exit_must_be_true_or_false
    out, err, status = ruby(calling("fast_exit: 1"))
    assert status.success?, err
    assert_equal "ArgumentError\nprefork-interp: fast_exit must be true or false, not 1\nfalse\n", out
  end

  def test_option_checks_under_prefork_interp
    {
      "max_servers: 0" => "prefork-interp: max_servers must not be 0 (negative for no limit)",
      "spare_handlers: 0" => "prefork-interp: spare_handlers must be at least 1",
      "log_facility: \"nope\"" => "prefork-interp: unknown syslog facility \"nope\""
    }.each do |options, message|
      out, err, status = under_setup(calling(options))
      assert status.success?, err
      # PREFORK_INTERP is taken out of ENV first: the script never sees it.
      assert_equal "ArgumentError\n#{message}\nfalse\n", out, options
    end
  end

  def test_setup_environment_checks
    out, err, status = under_setup(calling(""), value: "v2,1700000000.000000000 3,4,5,6")
    assert status.success?, err
    assert_equal "PreforkInterp::Wire::ProtocolError", out.lines.first.chomp
    out, err, status = under_setup(calling(""), value: "v1,1700000000.000000000 3,4,5,9")
    assert status.success?, err
    assert_equal "ArgumentError\nprefork-interp: PREFORK_INTERP names fd 9, which is not open\nfalse\n", out
  end

  def test_options_as_setup_takes_them
    out, err, status = ruby(<<~RUBY)
      require "prefork_interp"
      require "prefork_interp/log"
      p PreforkInterp.send(:options, -1, -5, false, ["x"], 7, "daemon", 2, true, nil)
      p PreforkInterp.send(:options, 3, 10, true, [], 100, nil, 1, false, 2)
      p PreforkInterp.respond_to?(:options)
    RUBY
    assert status.success?, err
    first = { max_servers: nil, idle_timeout: nil, autoreload_modules: false, autoreload_extra: ["x"],
              max_errors: 7, facility: Syslog::LOG_DAEMON, spare_handlers: 2, fast_exit: true,
              interrupt_grace: nil }
    second = { max_servers: 3, idle_timeout: 10, autoreload_modules: true, autoreload_extra: [], max_errors: 100,
               facility: nil, spare_handlers: 1, fast_exit: false, interrupt_grace: 2 }
    # (The same Ruby shows them the same way.)
    assert_equal "#{first.inspect}\n#{second.inspect}\nfalse\n", out
  end

  def test_tracking_ends_with_initialisation
    out, err, status = ruby(<<~RUBY)
      require "prefork_interp"
      ENV["READ_BEFORE"]
      PreforkInterp.initialisation_complete
      ENV["READ_AFTER"]
      p PreforkInterp::InitEnv.started.stop_tracking.sort
    RUBY
    assert status.success?, err
    assert_equal "[\"READ_BEFORE\"]\n", out
  end

  def test_autoreload_also_check
    out, err, status = ruby(<<~RUBY)
      require "pathname"
      require "prefork_interp"
      p PreforkInterp.autoreload_also_check("a.rb", Pathname("lib/b.rb"))
      PreforkInterp.autoreload_also_check
      p PreforkInterp::InitEnv.started.also_check
      begin
        PreforkInterp.autoreload_also_check(1)
      rescue TypeError
        puts "TypeError"
      end
    RUBY
    assert status.success?, err
    assert_equal "nil\n[\"a.rb\", \"lib/b.rb\"]\nTypeError\n", out
  end
end
