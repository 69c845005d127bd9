# frozen_string_literal: true

# Auto-reload: files whose change since the server's start means "quit;
# the next call starts a fresh server".

require_relative "log"
require_relative "sys"

module PreforkInterp
  # Reload.reload_files and Reload::ReloadWatch.
  module Reload
    module_function

    # The script ($PROGRAM_NAME, made absolute), every file required
    # (autoreload_modules), and the files named: once each, in that order.
    def reload_files(autoreload_modules, autoreload_extra, also_check)
      files = $PROGRAM_NAME.empty? ? [] : [File.expand_path($PROGRAM_NAME)]
      files.concat(required_files) if autoreload_modules
      files.concat(autoreload_extra.map { |path| File.path(path) })
      files.concat(also_check)
      files.uniq
    end

    # $LOADED_FEATURES' absolute paths: the others name features built
    # into the interpreter (such as "enumerator.so"), which no file holds.
    def required_files
      $LOADED_FEATURES.select { |path| path.is_a?(String) && File.absolute_path?(path) }
    end
    private_class_method :required_files

    # The files are watched with the server's inotify instance (shared
    # with its socket's watch), so a call costs nothing unless one was
    # touched; then every file is checked again (and the watches re-armed:
    # editors replace files by rename). While a file is missing (it has no
    # watch to say when it is made again), without inotify, and once a file
    # could not be watched, every call checks every file, as the original
    # does.
    class ReloadWatch
      MASK = Sys::IN_MODIFY | Sys::IN_ATTRIB | Sys::IN_CLOSE_WRITE | Sys::IN_DELETE_SELF |
             Sys::IN_MOVE_SELF

      attr_reader :files, :started_ns, :log, :dirty, :inotify, :degraded

      def initialize(files, started_ns, log)
        @files = files
        @started_ns = started_ns
        @log = log
        # Watches first, then the first call checks every file: nothing
        # changed between the two is missed.
        @dirty = true
        # The server's instance, once it lends it (watch_with); nil:
        # every call checks.
        @inotify = nil
        # Why a file could not be watched (the greeting's `degraded`).
        @degraded = nil
      end

      # Watches the files in the server's inotify instance (nil: it has
      # none).
      def watch_with(inotify)
        @inotify = inotify
        arm unless inotify.nil?
      end

      # An event on a file's watch: something may have changed.
      def note_events
        @dirty = true
      end

      # The first changed file, or nil. Cheap unless dirty.
      def changed
        return nil if !@inotify.nil? && !@dirty

        missing = false
        @files.each do |path|
          mtime = File.stat(path).mtime
          return path if (mtime.to_i * 1_000_000_000) + mtime.nsec > @started_ns
        rescue Errno::ENOENT
          missing = true # no reason to reload
        rescue SystemCallError => e
          @log.call(Log::LOG_ERR, "cannot check #{path}: #{e.message}")
          return path
        end
        unless @inotify.nil?
          @dirty = missing
          arm
        end
        nil
      end

      private

      def arm
        @files.each do |path|
          @inotify.add_watch(path, MASK)
        rescue Errno::ENOENT
          next # a missing file is no reason to reload
        rescue SystemCallError => e
          give_up(path, e)
          break
        end
      end

      # A file that cannot be watched (not for being missing): every call
      # checks instead, said once. The instance stays, for the socket's
      # watch; the files' watches in it only wake the server.
      def give_up(path, error)
        @inotify = nil
        @degraded = "cannot watch #{path} (#{SystemCallError.new(nil, error.errno).message}): " \
                    "files checked at every call"
        @log.call(Log::LOG_ERR, "degraded: #{@degraded}")
      end
    end
  end
end
