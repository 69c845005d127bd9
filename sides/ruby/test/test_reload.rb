# frozen_string_literal: true

# PreforkInterp::Reload: the files a server reloads on (the script, every
# file required, the files named) and ReloadWatch's checks, on real files,
# with a stand-in inotify instance (to make a watch fail at will) and with
# Sys::Inotify.
#
#     cd sides/ruby && ruby -Ilib -Itest test/test_reload.rb

require "English"
require "minitest/autorun"
require "pathname"
require "rbconfig"
require "tmpdir"
require_relative "../lib/prefork_interp/reload"

class TestReload < Minitest::Test
  LIB = File.expand_path("../lib", __dir__)
  Reload = PreforkInterp::Reload
  Sys = PreforkInterp::Sys
  LOG_ERR = PreforkInterp::Log::LOG_ERR

  # An inotify instance that records the watches asked for: a missing
  # file is ENOENT, as the kernel says; a file in `refuse` the error
  # given.
  class FakeInotify
    attr_reader :watches

    def initialize(refuse = {})
      @refuse = refuse
      @watches = []
    end

    def add_watch(path, mask)
      raise @refuse.fetch(path) if @refuse.key?(path)
      raise Errno::ENOENT, path unless File.exist?(path)

      @watches << [path, mask]
      @watches.size
    end
  end

  def setup
    @dir = Dir.mktmpdir("pfi-reload")
    @logged = []
    @log = ->(priority, message) { @logged << [priority, message] }
    @started_ns = Process.clock_gettime(Process::CLOCK_REALTIME, :nanosecond)
    @old = file("old", mtime: Time.now - 60)
    @other = file("other", mtime: Time.now - 60)
  end

  def teardown
    FileUtils.remove_entry(@dir)
  end

  def file(name, mtime:)
    path = File.join(@dir, name)
    File.write(path, name)
    File.utime(mtime, mtime, path)
    path
  end

  def touch(path)
    File.utime(Time.now + 5, Time.now + 5, path)
  end

  # The script (made absolute), then every required file, then the files
  # named, once each: in a child, whose script requires a file of its own.
  def test_reload_files
    File.write(File.join(@dir, "helper.rb"), "HELPER = 1\n")
    File.write(File.join(@dir, "script.rb"), <<~'RUBY')
      require "pathname"
      require_relative "helper"
      require "prefork_interp/reload"
      files = PreforkInterp::Reload.reload_files(true, [Pathname("extra"), "extra", "/abs"], ["also", "/abs"])
      without = PreforkInterp::Reload.reload_files(false, ["extra"], ["also"])
      STDOUT.write(Marshal.dump([files, without, $LOADED_FEATURES]))
    RUBY
    out = IO.popen([RbConfig.ruby, "-I", LIB, "script.rb"], chdir: @dir, &:read)
    assert $CHILD_STATUS.success?
    files, without, features = Marshal.load(out) # rubocop:disable Security/MarshalLoad (our own child's)
    script = File.realpath(File.join(@dir, "script.rb"))
    assert_equal [File.join(File.realpath(@dir), "script.rb"), "extra", "also"], without
    assert_equal script, files.first
    assert_equal ["extra", "/abs", "also"], files.last(3)
    assert_includes files, File.realpath(File.join(@dir, "helper.rb"))
    assert_includes files, File.join(LIB, "prefork_interp/reload.rb")
    assert_equal files.uniq, files
    built_in = features.reject { |path| path.start_with?("/") }
    refute_empty built_in, "Ruby names built-in features (enumerator.so...) too"
    assert_empty files & built_in
    assert_equal features.select { |path| path.start_with?("/") }.uniq, files[1...-3]
  end

  def test_the_mask
    assert_equal Sys::IN_MODIFY | Sys::IN_ATTRIB | Sys::IN_CLOSE_WRITE | Sys::IN_DELETE_SELF |
                 Sys::IN_MOVE_SELF, Reload::ReloadWatch::MASK
  end

  # Watched: the first call checks every file; then nothing is looked at
  # until an event, after which the changed file is found.
  def test_a_change_found_after_an_event
    watch = Reload::ReloadWatch.new([@old, @other], @started_ns, @log)
    inotify = FakeInotify.new
    watch.watch_with(inotify)
    assert_equal [[@old, Reload::ReloadWatch::MASK], [@other, Reload::ReloadWatch::MASK]], inotify.watches
    assert_nil watch.changed
    refute watch.dirty
    touch(@other)
    assert_nil watch.changed, "no event, no look"
    watch.note_events
    assert_equal @other, watch.changed
    assert_empty @logged
  end

  # Watches re-armed after a check (an editor replaces a file by rename).
  def test_watches_rearmed_after_each_check
    watch = Reload::ReloadWatch.new([@old], @started_ns, @log)
    inotify = FakeInotify.new
    watch.watch_with(inotify)
    watch.changed
    watch.note_events
    watch.changed
    assert_equal 3, inotify.watches.size
  end

  def test_without_inotify_every_call_checks
    watch = Reload::ReloadWatch.new([@old, @other], @started_ns, @log)
    watch.watch_with(nil)
    assert_nil watch.changed
    touch(@old)
    assert_equal @old, watch.changed
  end

  # A missing file is no reason to reload; while one is missing (it has no
  # watch), every call checks.
  def test_a_missing_file
    missing = File.join(@dir, "missing")
    watch = Reload::ReloadWatch.new([missing, @old], @started_ns, @log)
    inotify = FakeInotify.new
    watch.watch_with(inotify)
    assert_equal [[@old, Reload::ReloadWatch::MASK]], inotify.watches, "the others watched"
    assert_nil watch.changed
    assert watch.dirty, "still dirty: every call checks"
    touch(@old)
    assert_equal @old, watch.changed
    assert_empty @logged
    assert_nil watch.degraded
  end

  # A file that cannot be watched (not for being missing): said once, and
  # every call checks from then on.
  def test_a_file_that_cannot_be_watched
    watch = Reload::ReloadWatch.new([@old, @other], @started_ns, @log)
    watch.watch_with(FakeInotify.new(@old => Errno::ENOSPC.new("inotify_add_watch")))
    text = "cannot watch #{@old} (No space left on device): files checked at every call"
    assert_equal text, watch.degraded
    assert_equal [[LOG_ERR, "degraded: #{text}"]], @logged
    assert_nil watch.inotify
    assert_nil watch.changed
    touch(@other)
    assert_equal @other, watch.changed, "no event needed"
    assert_equal 1, @logged.size
  end

  # Nanoseconds count: a change in the second the server started.
  def test_a_change_in_the_same_second
    seconds = Time.now.to_i - 10
    watch = Reload::ReloadWatch.new([@old], (seconds * 1_000_000_000) + 500_000_000, @log)
    watch.watch_with(nil)
    File.utime(Time.at(seconds, 500_000_000, :nsec), Time.at(seconds, 500_000_000, :nsec), @old)
    assert_nil watch.changed, "as old as the server"
    File.utime(Time.at(seconds, 500_000_001, :nsec), Time.at(seconds, 500_000_001, :nsec), @old)
    assert_equal @old, watch.changed
  end

  # A file that cannot be looked at (not for being missing) is a reason.
  def test_a_file_that_cannot_be_checked
    unreadable = File.join(@old, "below-a-file")
    watch = Reload::ReloadWatch.new([unreadable, @other], @started_ns, @log)
    watch.watch_with(nil)
    assert_equal unreadable, watch.changed
    assert_equal 1, @logged.size
    assert_equal LOG_ERR, @logged[0][0]
    assert_match(/\Acannot check #{Regexp.escape(unreadable)}: Not a directory/, @logged[0][1])
  end

  def test_with_the_servers_inotify_instance
    inotify = Sys::Inotify.new
    begin
      watch = Reload::ReloadWatch.new([@old, @other], @started_ns, @log)
      watch.watch_with(inotify)
      assert_nil watch.changed
      assert_empty inotify.read_events
      touch(@other)
      refute_empty inotify.read_events
      watch.note_events
      assert_equal @other, watch.changed
    ensure
      inotify.close
    end
  end
end
