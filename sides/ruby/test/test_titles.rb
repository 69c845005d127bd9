# frozen_string_literal: true

# PreforkInterp::Titles in Ruby processes started for it, with argv areas
# of known lengths: what /proc/PID/cmdline and ps show for each role's
# title, cut to the area; and the initial environment forgotten. Both
# where Ruby's Process.setproctitle works (the library required by the
# script) and where it does not (the library loaded by a -r option, as
# the runner's server is, before Ruby sets setproctitle up).
#
#     cd sides/ruby && ruby -Ilib -Itest test/test_titles.rb

require "json"
require "minitest/autorun"
require "rbconfig"
require "tmpdir"
require_relative "../lib/prefork_interp/titles"

# Each title as /proc and ps show it, in a process whose command line is
# the test's choice.
class TestTitles < Minitest::Test
  LIB = File.expand_path("../lib", __dir__)
  # Whether ps is here to ask (procps); /proc is asked always.
  PS = system("ps -o args= -p #{Process.pid}", out: File::NULL, err: File::NULL)

  # What the started script reports: each role's title as set, then as
  # /proc/self/cmdline and ps show it; comm; the environment before and
  # after forget_initial_environ.
  PROBE = <<~RUBY
    require "json"
    require "prefork_interp/titles"
    titles = PreforkInterp::Titles::Titles.new($0)
    report = { "area" => titles.area && titles.area[1], "written" => titles.written, "roles" => {} }
    %w[server monitor handler executor].each do |role|
      titles.set(role)
      ps = `ps -o args= -p \#{$$} 2>/dev/null`.chomp
      report["roles"][role] = [titles.titles[role], File.binread("/proc/self/cmdline"), ps]
    end
    titles.set("nosuch")
    report["after_unknown"] = File.binread("/proc/self/cmdline")
    report["comm"] = File.read("/proc/self/comm").chomp
    report["environ_before"] = File.binread("/proc/self/environ").include?("PROBE_SECRET=hunter2")
    titles.forget_initial_environ
    environ = File.binread("/proc/self/environ")
    report["environ_after"] = [environ.bytesize, environ.count("\\0")]
    report["env"] = ENV["PROBE_SECRET"]
    report["child_env"] = `sh -c 'echo $PROBE_SECRET'`.chomp
    report["written_after"] = titles.written
    puts JSON.generate(report)
  RUBY

  # The script that runs after the probe loaded as a -r library, once
  # Ruby has set setproctitle up: what it finds, and what its own title
  # does.
  MAIN = <<~RUBY
    require "json"
    report = { "cmdline" => File.binread("/proc/self/cmdline"), "env" => ENV["PROBE_SECRET"] }
    Process.setproctitle("main")
    report["own_title"] = File.binread("/proc/self/cmdline")
    puts JSON.generate(report)
  RUBY

  # The probe run as `ruby SCRIPT ARGS...` from dir (argv[0] "ruby",
  # SCRIPT as given), with the library on RUBYLIB (so the argv area is
  # just that): its report. required: the probe run as `ruby -rtitleprobe
  # SCRIPT ARGS...` (titleprobe.rb on RUBYLIB too) instead, SCRIPT being
  # MAIN: the probe's report and MAIN's.
  def probe(dir, script, *args, required: false)
    env = { "RUBYLIB" => LIB, "PROBE_SECRET" => "hunter2" }
    options = []
    if required
      File.write(File.join(dir, "titleprobe.rb"), PROBE)
      File.write(File.join(dir, File.basename(script)), MAIN)
      env["RUBYLIB"] = "#{LIB}:#{dir}"
      options = ["-rtitleprobe"]
    else
      File.write(File.join(dir, File.basename(script)), PROBE)
    end
    output = IO.popen(env, [[RbConfig.ruby, "ruby"], *options, script, *args], chdir: dir, &:read)
    assert $?.success?, output # rubocop:disable Style/SpecialGlobalVars
    reports = output.lines.map { |line| JSON.parse(line) }
    assert_equal required ? 2 : 1, reports.size, output
    required ? reports : reports.first
  end

  # The argv area's length for `ruby SCRIPT ARGS...` (or `ruby OPTION...
  # SCRIPT ARGS...`).
  def area_of(script, *args)
    (["ruby", script] + args).sum { |arg| arg.bytesize + 1 }
  end

  def assert_titles(report, expected, area)
    assert_equal area, report["area"]
    expected.each do |role, title|
      set, cmdline, ps = report["roles"].fetch(role)
      assert_equal title, set, role
      # The area, NUL-filled after the title: the caller's arguments gone.
      assert_equal title + ("\0" * (area - title.bytesize)), cmdline, role
      assert_equal title, ps, role if PS
    end
    assert_equal report["roles"]["executor"][1], report["after_unknown"], "an unknown role changes nothing"
    # comm is as exec left it.
    assert_equal File.basename(RbConfig.ruby)[0, 15], report["comm"]
  end

  def test_titles_with_room_hide_the_callers_arguments
    Dir.mktmpdir do |dir|
      script = File.join(dir, "served.rb")
      report = probe(dir, script, "--password=secret", "first caller's argument")
      assert_titles(report, { "server" => "#{script} [server]", "monitor" => "#{script} [monitor]",
                              "handler" => "#{script} [handler]", "executor" => script },
                    area_of(script, "--password=secret", "first caller's argument"))
      # Ruby's Process.setproctitle wrote them.
      assert_equal [nil, false], [report["written"], report["written_after"]]
    end
  end

  # `ruby -rLIB SCRIPT ARGS...`, the runner's command: while LIB loads,
  # Process.setproctitle does nothing (Ruby sets it up after the -r
  # libraries), and the title is written into the area by us.
  def test_titles_from_a_required_library_hide_the_callers_arguments
    Dir.mktmpdir do |dir|
      script = File.join(dir, "served.rb")
      args = ["--password=secret", "first caller's argument"]
      report, main = probe(dir, script, *args, required: true)
      area = area_of("-rtitleprobe", script, *args)
      assert_titles(report, { "server" => "#{script} [server]", "monitor" => "#{script} [monitor]",
                              "handler" => "#{script} [handler]", "executor" => script }, area)
      assert_equal [nil, true], [report["written"], report["written_after"]]
      args.each do |arg|
        report["roles"].each_value { |_, cmdline, ps| refute_includes cmdline + ps.to_s, arg }
      end
      # The environment forgotten there too, its variables kept.
      size, nuls = report["environ_after"]
      assert_operator size, :>, 0
      assert_equal size, nuls
      assert_equal %w[hunter2 hunter2], [report["env"], report["child_env"]]
      # The script then runs as Ruby goes on: the executor's title still
      # shown, the variables still set, and its own title set by Ruby.
      assert_equal script + ("\0" * (area - script.bytesize)), main["cmdline"]
      assert_equal "hunter2", main["env"]
      assert_equal "main#{"\0" * (area - 4)}", main["own_title"]
    end
  end

  def test_no_room_for_the_directory_keeps_the_role
    Dir.mktmpdir do |dir|
      # `ruby /TMP/served.rb x`: the path and " [server]" do not fit.
      script = File.join(dir, "served.rb")
      area = area_of(script, "x")
      assert_operator "#{script} [monitor]".bytesize, :>=, area
      report = probe(dir, script, "x")
      assert_titles(report, { "server" => "served.rb [server]", "monitor" => "served.rb [monitor]",
                              "handler" => "served.rb [handler]", "executor" => script }, area)
    end
  end

  def test_a_short_command_line_cuts_the_title
    Dir.mktmpdir do |dir|
      # `ruby s.rb`: 10 bytes.
      area = area_of("s.rb")
      room = area - 1
      report = probe(dir, "s.rb")
      assert_titles(report, { "server" => "s.rb [server]"[0, room], "monitor" => "s.rb [monitor]"[0, room],
                              "handler" => "s.rb [handler]"[0, room], "executor" => "s.rb" }, area)
    end
  end

  def test_forget_initial_environ
    Dir.mktmpdir do |dir|
      report = probe(dir, "s.rb")
      assert report["environ_before"]
      # All NULs, as long as it was; the variables still set, and passed on.
      size, nuls = report["environ_after"]
      assert_operator size, :>, 0
      assert_equal size, nuls
      assert_equal "hunter2", report["env"]
      assert_equal "hunter2", report["child_env"]
    end
  end

  # This process's area, as the kernel has it (minitest sets no title).
  def test_area_of_this_process
    titles = PreforkInterp::Titles::Titles.new("script")
    assert_equal File.binread("/proc/self/cmdline").bytesize, titles.area[1]
    assert_equal File.binread("/proc/self/environ").bytesize, titles.environ_area[1]
    assert_equal %w[server monitor handler executor], titles.titles.keys
  end
end
