# frozen_string_literal: true

# PreforkInterp::Wire against sides/wire-vectors.json, every group the
# Ruby side's codec has, both ways where it encodes and decodes ('decode_only'
# vectors decoded only); the groups only a client decodes are named in
# LEFT_TO_OTHERS, and a group neither tested nor named fails. As the Python
# side's tests/test_wire.py, group for group.
#
#     cd sides/ruby && ruby -Ilib -Itest test/test_wire.rb

require "json"
require "minitest/autorun"
require_relative "../lib/prefork_interp/wire"

# One test per group of the vectors (each assertion's message names the
# vector), and the checks _wire.py's tests add beside them.
class TestWire < Minitest::Test
  Wire = PreforkInterp::Wire
  TerminalSettings = Wire::TerminalSettings

  VECTORS_PATH = File.expand_path("../../wire-vectors.json", __dir__)
  VECTORS = JSON.parse(File.read(VECTORS_PATH, encoding: Encoding::UTF_8))

  # Groups the Ruby side never decodes nor encodes: the client's.
  LEFT_TO_OTHERS = {
    "greeting_header" => "the client reads greetings",
    "greeting_xdata_decode" => "the client reads greetings"
  }.freeze

  # ------------------------------------------------------------- helpers

  def h(text)
    [text].pack("H*")
  end

  def groups
    VECTORS.keys - ["about"]
  end

  # The group's vectors, each with a label naming it for the assertions
  # (and for an exception none expected).
  def each_vector(group)
    assert VECTORS.key?(group), "no group #{group} in the vectors"
    vectors = VECTORS[group]["vectors"]
    refute_empty vectors, "group #{group} has no vectors"
    vectors.each do |vector|
      label = "#{group}: #{vector['name']}"
      begin
        yield vector, label
      rescue StandardError => e
        # An exception no assertion expected, with the vector named too.
        flunk "#{label}: #{e.class}: #{e.message} (#{e.backtrace.first})"
      end
    end
  end

  def assert_protocol_error(kind, label, &block)
    error = assert_raises(Wire::ProtocolError, label, &block)
    assert_equal kind, error.kind, label
    refute_empty error.message, label
    refute_includes error.message, "\n", label
    error
  end

  # want, or nil when want is nil (assert_equal refuses nil).
  def assert_value(want, got, label)
    if want.nil?
      assert_nil got, label
    else
      assert_equal want, got, label
    end
  end

  # Binary Strings with the bytes wanted.
  def assert_bytes(want, got, label)
    assert_equal want, got, label
    assert_equal Encoding::BINARY, got.encoding, "#{label}: encoding"
  end

  def assert_bytes_list(want, got, label)
    assert_equal want, got, label
    got.each { |string| assert_equal Encoding::BINARY, string.encoding, "#{label}: encoding" }
  end

  def settings_of(vector)
    TerminalSettings.new(*%w[iflag oflag cflag lflag ispeed ospeed cc].map { |key| vector[key] })
  end

  def replaced(settings, **changes)
    settings.dup.tap { |copy| changes.each { |key, value| copy[key] = value } }
  end

  # A checked request byte (and second byte) as the vectors' kind.
  def request_kind(byte, second = 0)
    {
      "extended" => byte.anybits?(Wire::REQUEST_BYTE_EXTENDED),
      "context" => byte.anybits?(Wire::REQUEST_FLAG_CONTEXT),
      "pty" => Wire::REQUEST_FLAG_PTY.map { |flag| byte.anybits?(flag) },
      "pty_background" => byte.anybits?(Wire::REQUEST_FLAG_PTY_BACKGROUND),
      "limits" => byte.anybits?(Wire::REQUEST_FLAG_LIMITS),
      "closed" => Wire::REQUEST_SECOND_CLOSED.map { |flag| second.anybits?(flag) },
      "caller_signals" => second.anybits?(Wire::REQUEST_SECOND_CALLER_SIGNALS)
    }
  end

  def decode_request(data, label)
    byte = Wire.check_request_byte(data.getbyte(0))
    second = 0
    if Wire.has_second_request_byte(byte)
      second = Wire.check_second_request_byte(data.getbyte(1))
      assert_equal 2, data.bytesize, label
    else
      assert_equal 1, data.bytesize, label
    end
    request_kind(byte, second)
  end

  # --------------------------------------------------------------- groups

  def test_every_group_is_tested_or_left_to_others
    tested = self.class.public_instance_methods.map(&:to_s).grep(/\Atest_/)
                 .map { |name| name.delete_prefix("test_") }
    groups.each do |group|
      assert tested.include?(group) || LEFT_TO_OTHERS.key?(group),
             "group #{group} is neither tested nor left to others"
      refute tested.include?(group) && LEFT_TO_OTHERS.key?(group),
             "group #{group} is tested and left to others"
      assert VECTORS[group].key?("from"), "group #{group} has no 'from'"
      assert VECTORS[group].key?("to"), "group #{group} has no 'to'"
    end
    LEFT_TO_OTHERS.each_key do |group|
      assert VECTORS.key?(group), "LEFT_TO_OTHERS names no group: #{group}"
    end
  end

  def test_greeting
    each_vector("greeting") do |v, label|
      assert_bytes h(v["bytes"]), Wire.encode_greeting(h(v["xdata"])), label
    end
  end

  def test_greeting_xdata
    each_vector("greeting_xdata") do |v, label|
      env, start = %w[env start].map do |key|
        v[key] && [v[key]["digest"], v[key]["names"].map { |name| h(name) }]
      end
      xdata = Wire.encode_greeting_xdata(v["offered"], v["world"], env, start, v["terminals"],
                                         v["degraded"], v["served"], v["running"], v["idle_ms"])
      assert_bytes h(v["bytes"]), xdata, label
    end
  end

  def test_our_caps_are_the_fullest_offer
    # Offered in OUR_CAPS' order (filtered by the client's): the vectors'
    # fullest offer is every capability, in that order.
    fullest = VECTORS["greeting_xdata"]["vectors"].map { |v| v["offered"] }.max_by(&:length)
    assert_equal fullest, Wire::OUR_CAPS, "greeting_xdata: the fullest offer"
  end

  def test_env_dependency
    each_vector("env_dependency") do |v, label|
      values = {}
      v["values"].each do |name, value|
        values[h(name)] = value.nil? ? nil : h(value) unless values.key?(h(name))
      end
      got = Wire.env_dependency(v["names"].map { |name| h(name) }, values)
      want = v["dependency"]
      if want.nil?
        assert_nil got, label
      else
        assert_equal [want["digest"], want["names"].map { |name| h(name) }], got, label
        # value_of as a Proc this time.
        assert_equal want["digest"], Wire.env_digest(got[1], ->(name) { values[name] }), label
      end
    end
  end

  def test_world_digest
    each_vector("world_digest") do |v, label|
      assert_equal Wire::WORLD_NAMESPACES.length, v["namespaces"].length, label
      assert_equal v["digest"], Wire.world_digest(v["namespaces"], h(v["cgroups"])), label
    end
  end

  def test_setup_env
    each_vector("setup_env") do |v, label|
      # As ENV has it: text.
      value = v["value"]
      if v.key?("error")
        assert_protocol_error(v["error"], label) { Wire.decode_setup_env(value) }
        next
      end
      setup = Wire.decode_setup_env(value)
      assert_equal v["started_secs"], setup[:started_secs], label
      assert_equal v["started_nsecs"], setup[:started_nsecs], label
      assert_equal v["fds"], setup.values_at(:listen, :call, :watch_in, :watch_err), label
      assert_equal v["client_caps"], setup[:client_caps], label
      assert_value v["idle_limit"], setup[:idle_limit], label
      if v["keeper"].nil?
        assert_nil setup[:keeper], label
      else
        assert_bytes v["keeper"].b, setup[:keeper], label
      end
    end
  end

  def test_request
    # Decoding only: a client encodes requests.
    each_vector("request") do |v, label|
      data = h(v["bytes"])
      if v.key?("error")
        assert_protocol_error(v["error"], label) { decode_request(data, label) }
      else
        assert_equal v["kind"], decode_request(data, label), label
      end
    end
  end

  def test_payload
    # Decoding only: a client encodes payloads.
    each_vector("payload") do |v, label|
      data = h(v["bytes"])
      if v.key?("error")
        assert_protocol_error(v["error"], label) { Wire.decode_payload(data) }
        next
      end
      env, args = Wire.decode_payload(data)
      assert_bytes_list v["env"].map { |entry| h(entry) }, env, label
      assert_bytes_list v["args"].map { |arg| h(arg) }, args, label
    end
  end

  def test_payload_len
    each_vector("payload_len") do |v, label|
      data = h(v["bytes"])
      if v.key?("error")
        assert_protocol_error(v["error"], label) { Wire.decode_payload_len(data) }
      else
        assert_equal v["len"], Wire.decode_payload_len(data), label
      end
    end
  end

  def test_context_umask
    each_vector("context_umask") do |v, label|
      assert_equal v["umask"], Wire.decode_context_umask(h(v["bytes"])), label
      assert_bytes h(v["bytes"]), Wire.encode_context_umask(v["umask"]), label unless v["decode_only"]
    end
  end

  def test_limits
    # Decoding only: a client encodes limits.
    each_vector("limits") do |v, label|
      data = h(v["bytes"])
      count = data.getbyte(0)
      body = data.byteslice(1..)
      if v.key?("error")
        assert_protocol_error(v["error"], label) { Wire.decode_limits(count, body) }
        next
      end
      entries, nice, oom = Wire.decode_limits(count, body)
      want = v["rlimits"].map { |resource, soft, hard| [resource, Integer(soft), Integer(hard)] }
      assert_equal want, entries, label
      assert_equal [v["nice"], v["oom_score_adj"]], [nice, oom], label
    end
  end

  def test_caller_signals
    each_vector("caller_signals") do |v, label|
      data = h(v["bytes"])
      assert_equal [v["ignored"], v["blocked"]], Wire.decode_caller_signals(data), label
      assert_bytes data, Wire.encode_caller_signals(v["ignored"], v["blocked"]), label
    end
  end

  def test_status
    each_vector("status") do |v, label|
      assert_equal v["wait_status"], Wire.decode_status(h(v["bytes"])), label
      assert_bytes h(v["bytes"]), Wire.encode_status(v["wait_status"]), label unless v["decode_only"]
    end
  end

  def test_frame
    each_vector("frame") do |v, label|
      kind = v["kind"].b
      assert_equal [kind, v["value"]], Wire.decode_frame(h(v["bytes"])), label
      assert_bytes h(v["bytes"]), Wire.encode_frame(kind, v["value"]), label unless v["decode_only"]
    end
    kinds = [Wire::FRAME_SIGNAL, Wire::FRAME_EXECUTOR_PID, Wire::FRAME_STATUS,
             Wire::FRAME_FOREGROUND, Wire::FRAME_STOPPED, Wire::FRAME_RESTORE,
             Wire::KEEPER_STOPPED, Wire::KEEPER_STATUS, Wire::KEEPER_FOREGROUND]
    assert_equal kinds.sort, VECTORS["frame"]["vectors"].map { |v| v["kind"].b }.uniq.sort,
                 "frame: every kind the codec names, and no other"
  end

  def test_terminal_settings
    each_vector("terminal_settings") do |v, label|
      data = h(v["bytes"])
      if v.key?("error")
        error = assert_protocol_error(v["error"], label) { Wire.decode_terminal_settings(data) }
        # The one line says how many bytes came, and the bounds.
        assert_equal "terminal settings of #{data.bytesize} bytes (24 to 88)", error.message, label
        next
      end
      want = settings_of(v)
      assert_equal want, Wire.decode_terminal_settings(data), label
      assert_bytes data, Wire.encode_terminal_settings(want), label
      # The encoder takes a Hash as well.
      assert_bytes data, Wire.encode_terminal_settings(want.to_h), label
    end
  end

  def test_terminal_settings_bounds
    # The vectors give one byte either side; the bounds themselves decode,
    # every word in its place (the vectors' speeds are equal, their flags
    # far apart).
    [Wire::TERMINAL_SETTINGS_FIXED, Wire::MAX_TERMINAL_SETTINGS].each do |size|
      data = (0...size).to_a.pack("C*")
      settings = Wire.decode_terminal_settings(data)
      want = TerminalSettings.new(0x00010203, 0x04050607, 0x08090a0b, 0x0c0d0e0f, 0x10111213,
                                  0x14151617, (Wire::TERMINAL_SETTINGS_FIXED...size).to_a)
      assert_equal want, settings, "size #{size}"
      assert_bytes data, Wire.encode_terminal_settings(settings), "size #{size}"
    end
  end

  def test_restore
    each_vector("restore") do |v, label|
      data = h(v["bytes"])
      if v.key?("error")
        error = assert_protocol_error(v["error"], label) { Wire.decode_restore(data) }
        assert_equal "terminal restore message of #{data.bytesize} bytes (a count C, then twice " \
                     "24 + C, C at most 64)", error.message, label
        next
      end
      want = [settings_of(v["put_back"]), settings_of(v["left"])]
      assert_equal want, Wire.decode_restore(data), label
      assert_bytes data, Wire.encode_restore(*want), label
      # What a monitor checks before it waits for the bytes lets every
      # good message through.
      assert_equal data.bytesize, Wire.check_restore_len(data.bytesize), label
    end
  end

  def test_restore_lengths
    # The shortest and longest messages decode; a monitor refuses a length
    # outside them before it waits for the bytes.
    [0, 64].each do |count|
      settings = TerminalSettings.new(1, 2, 3, 4, 5, 6, (0...count).to_a)
      left = replaced(settings, iflag: 7)
      data = Wire.encode_restore(settings, left)
      assert_equal data.bytesize, Wire.check_restore_len(data.bytesize), "count #{count}"
      assert_equal [settings, left], Wire.decode_restore(data), "count #{count}"
    end
    [0, 48, Wire::MAX_RESTORE_LEN + 1, (2**32) - 1].each do |length|
      assert_protocol_error("BadRestore", "length #{length}") { Wire.check_restore_len(length) }
    end
  end

  def test_restore_encodes_as_many_control_characters_as_put_back_has
    put_back = TerminalSettings.new(1, 2, 3, 4, 5, 6, (1..8).to_a)
    [[[9] * 10, [9] * 8], [[9] * 3, [9, 9, 9, 0, 0, 0, 0, 0]]].each do |left_cc, want|
      left = replaced(put_back, cc: left_cc)
      assert_equal [put_back, replaced(left, cc: want)],
                   Wire.decode_restore(Wire.encode_restore(put_back, left)), "left #{left_cc.length}"
    end
    many = replaced(put_back, cc: [1] * 70)
    assert_equal [replaced(many, cc: [1] * 64)] * 2, Wire.decode_restore(Wire.encode_restore(many, many)),
                 "left 70"
  end

  def test_executor_ready
    each_vector("executor_ready") do |v, label|
      data = h(v["bytes"])
      if v.key?("error")
        assert_protocol_error(v["error"], label) { Wire.decode_executor_ready(data.byteslice(0, 2)) }
        next
      end
      byte = Wire.decode_executor_ready(data.byteslice(0, 2))
      assert_equal v["kind"], request_kind(byte), label
      on_pty = byte.anybits?(Wire::REQUEST_ANY_PTY)
      assert_value v["script_pid"], on_pty ? Wire.decode_script_pid(data.byteslice(2..)) : nil, label
      assert_equal on_pty ? 6 : 2, data.bytesize, label
      assert_bytes data, Wire.encode_executor_ready(byte, v["script_pid"]), label unless v["decode_only"]
    end
  end

  def test_monitor_to_server
    names = { "call_ended" => Wire::MONITOR_CALL_ENDED, "call_dropped" => Wire::MONITOR_CALL_DROPPED }
    each_vector("monitor_to_server") do |v, label|
      assert_bytes h(v["bytes"]), names.fetch(v["message"]), label
    end
  end

  def test_hand_over
    each_vector("hand_over") do |v, label|
      assert_bytes h(v["bytes"]), Wire::FD_MESSAGE_BYTE, label
      assert_equal 1, v["fds"], label
    end
  end

  def test_quit_line
    each_vector("quit_line") do |v, label|
      reason = h(v["reason"])
      assert_bytes h(v["bytes"]), Wire.encode_quit_line(Integer(v["secs"]), reason), label
      # As the server calls it, with its reason as text.
      text = reason.dup.force_encoding(Encoding::UTF_8)
      assert_bytes h(v["bytes"]), Wire.encode_quit_line(Integer(v["secs"]), text), label
    end
  end

  def test_last_quit
    # Read by a server whose socket went, as by the client's --list.
    each_vector("last_quit") do |v, label|
      want = v["secs"].nil? ? nil : [Integer(v["secs"]), h(v["reason"])]
      assert_value want, Wire.decode_last_quit(h(v["text"])), label
    end
  end

  def test_env_entry
    each_vector("env_entry") do |v, label|
      want = v["split"]
      assert_value want&.map { |part| h(part) }, Wire.split_env_entry(h(v["entry"])), label
    end
  end
end
