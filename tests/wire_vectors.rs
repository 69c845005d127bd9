//! The Rust codec over the wire vectors every side shares
//! (sides/wire-vectors.json; Perl's t/wire.t and Python's
//! tests/test_wire.py read the same file). Each group of vectors is
//! checked here, decoding and encoding, or named in [`NOT_RUST`]; a group
//! that is neither fails, so a new message is handled on purpose.

use std::collections::BTreeSet;

use prefork_interp::protocol::*;
use serde_json::Value;

/// Groups the Rust codec has no function for (none today: Rust is both
/// client and script side).
const NOT_RUST: &[&str] = &[];

fn vectors() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sides/wire-vectors.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hex(v: &Value) -> Vec<u8> {
    let text = v.as_str().unwrap_or_else(|| panic!("not hex: {v}"));
    assert!(text.len().is_multiple_of(2), "odd hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn hexes(v: &Value) -> Vec<Vec<u8>> {
    v.as_array().unwrap().iter().map(hex).collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// A u64 as the file writes it: a decimal string.
fn u64_of(v: &Value) -> u64 {
    v.as_str().unwrap().parse().unwrap()
}

/// A vector's terminal settings, field by field.
fn settings_of(v: &Value) -> TerminalSettings {
    let word = |name: &str| int(&v[name]) as u32;
    TerminalSettings {
        iflag: word("iflag"),
        oflag: word("oflag"),
        cflag: word("cflag"),
        lflag: word("lflag"),
        ispeed: word("ispeed"),
        ospeed: word("ospeed"),
        cc: v["cc"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| int(c) as u8)
            .collect(),
    }
}

/// The variant name of an error, as the vectors name it.
fn kind_of(e: &ProtocolError) -> String {
    format!("{e:?}")
        .split(['(', ' ', '{'])
        .next()
        .unwrap()
        .to_owned()
}

fn request_kind(v: &Value) -> RequestKind {
    let flags = |name: &str| -> [bool; 3] {
        let list: Vec<bool> = v[name]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_bool().unwrap())
            .collect();
        list.try_into().unwrap()
    };
    RequestKind {
        extended: v["extended"].as_bool().unwrap(),
        context: v["context"].as_bool().unwrap(),
        pty: flags("pty"),
        pty_background: v["pty_background"].as_bool().unwrap(),
        limits: v["limits"].as_bool().unwrap(),
        closed: flags("closed"),
        caller_signals: v["caller_signals"].as_bool().unwrap(),
    }
}

/// A request's opening bytes, decoded as an executor reads them.
fn read_request_bytes(bytes: &[u8]) -> Result<RequestKind, ProtocolError> {
    let mut kind = check_request_byte(bytes[0])?;
    if has_second_request_byte(bytes[0]) {
        check_second_request_byte(&mut kind, bytes[1])?;
    } else {
        assert_eq!(bytes.len(), 1, "a second byte without 0x80");
    }
    Ok(kind)
}

fn check_group(group: &str, v: &Value) {
    let bytes = || hex(&v["bytes"]);
    let error = v.get("error").map(|e| e.as_str().unwrap());
    let encodes = !v.get("decode_only").is_some_and(|d| d.as_bool().unwrap());
    match group {
        "greeting" => assert_eq!(encode_greeting(&hex(&v["xdata"])), bytes()),
        "greeting_header" => {
            let header: [u8; GREETING_HEADER_LEN] = bytes().try_into().unwrap();
            match (decode_greeting_header(&header), error) {
                (Ok(len), None) => assert_eq!(i64::from(len), int(&v["xdata_len"])),
                (Err(e), Some(kind)) => assert_eq!(kind_of(&e), kind),
                (got, _) => panic!("got {got:?}"),
            }
        }
        "greeting_xdata" => {
            let offered = strings(&v["offered"]);
            let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
            let dependency = |key: &str| {
                (!v[key].is_null()).then(|| EnvDependency {
                    digest: v[key]["digest"].as_str().unwrap().to_owned(),
                    names: hexes(&v[key]["names"]),
                })
            };
            let (env, start) = (dependency("env"), dependency("start"));
            let counters = ServerCounters {
                served: int(&v["served"]) as u64,
                running: int(&v["running"]) as u64,
                idle_ms: int(&v["idle_ms"]) as u64,
            };
            assert_eq!(
                encode_greeting_xdata(
                    &offered,
                    v["world"].as_str(),
                    env.as_ref(),
                    start.as_ref(),
                    v["terminals"].as_u64().map(|t| t as u8),
                    v["degraded"].as_str(),
                    counters
                ),
                bytes()
            );
        }
        "greeting_xdata_decode" => {
            let xdata = bytes();
            assert_eq!(decode_caps(&xdata), strings(&v["caps"]));
            assert_eq!(decode_world(&xdata).as_deref(), v["world"].as_str());
            for (key, got) in [
                ("env", decode_env_dependency(&xdata)),
                ("start", decode_start_dependency(&xdata)),
            ] {
                match &v[key] {
                    Value::Null => assert_eq!(got, None, "{key}"),
                    want => {
                        let got = got.unwrap_or_else(|| panic!("no {key} line"));
                        assert_eq!(got.digest, want["digest"].as_str().unwrap());
                        assert_eq!(got.names, hexes(&want["names"]));
                    }
                }
            }
            assert_eq!(
                decode_terminals(&xdata).map(u64::from),
                v["terminals"].as_u64()
            );
            assert_eq!(decode_degraded(&xdata).as_deref(), v["degraded"].as_str());
            for name in ["served", "running", "idle"] {
                let key = if name == "idle" { "idle_ms" } else { name };
                assert_eq!(decode_xdata_number(&xdata, name), v[key].as_u64(), "{name}");
            }
        }
        "env_dependency" => {
            let names = hexes(&v["names"]);
            let values: Vec<(Vec<u8>, Option<Vec<u8>>)> = v["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|pair| (hex(&pair[0]), (!pair[1].is_null()).then(|| hex(&pair[1]))))
                .collect();
            let value_of = |name: &[u8]| {
                values
                    .iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, value)| value.clone())
            };
            let got = env_dependency(names.iter().map(Vec::as_slice), value_of);
            match &v["dependency"] {
                Value::Null => assert_eq!(got, None),
                want => {
                    let got = got.expect("a dependency");
                    assert_eq!(got.digest, want["digest"].as_str().unwrap());
                    assert_eq!(got.names, hexes(&want["names"]));
                }
            }
        }
        "world_digest" => {
            let namespaces: Vec<Option<u64>> = v["namespaces"]
                .as_array()
                .unwrap()
                .iter()
                .map(Value::as_u64)
                .collect();
            assert_eq!(
                world_digest(&namespaces, &hex(&v["cgroups"])),
                v["digest"].as_str().unwrap()
            );
        }
        "setup_env" => {
            let value = v["value"].as_str().unwrap();
            match (decode_setup_env(value.as_bytes()), error) {
                (Ok(setup), None) => {
                    assert_eq!(setup.started_secs, int(&v["started_secs"]));
                    assert_eq!(i64::from(setup.started_nsecs), int(&v["started_nsecs"]));
                    let fds: Vec<i64> = v["fds"].as_array().unwrap().iter().map(int).collect();
                    assert_eq!(
                        [setup.listen, setup.call, setup.watch_in, setup.watch_err]
                            .map(i64::from)
                            .to_vec(),
                        fds
                    );
                    assert_eq!(setup.client_caps, strings(&v["client_caps"]));
                    assert_eq!(setup.idle_limit, v["idle_limit"].as_u64());
                    assert_eq!(
                        setup.keeper.as_deref(),
                        v["keeper"].as_str().map(str::as_bytes)
                    );
                }
                (Err(e), Some(kind)) => assert_eq!(kind_of(&e), kind),
                (got, _) => panic!("got {got:?}"),
            }
        }
        "request" => match (read_request_bytes(&bytes()), error) {
            (Ok(kind), None) => {
                assert_eq!(kind, request_kind(&v["kind"]));
                if encodes {
                    assert_eq!(encode_request_bytes(kind), bytes());
                }
            }
            (Err(e), Some(kind)) => assert_eq!(kind_of(&e), kind),
            (got, _) => panic!("got {got:?}"),
        },
        "payload" => match (decode_payload(&bytes()), error) {
            (Ok(payload), None) => {
                let env = hexes(&v["env"]);
                let args = hexes(&v["args"]);
                assert_eq!(
                    payload.env,
                    env.iter().map(Vec::as_slice).collect::<Vec<_>>()
                );
                assert_eq!(
                    payload.args,
                    args.iter().map(Vec::as_slice).collect::<Vec<_>>()
                );
                let encoded = encode_request_payload(
                    env.iter().map(Vec::as_slice),
                    args.iter().map(Vec::as_slice),
                );
                assert_eq!(encoded[4..], bytes());
                assert_eq!(encoded[..4], (bytes().len() as u32).to_be_bytes());
            }
            (Err(e), Some(kind)) => assert_eq!(kind_of(&e), kind),
            (got, _) => panic!("got {got:?}"),
        },
        "payload_len" => {
            let prefix: [u8; 4] = bytes().try_into().unwrap();
            match (decode_payload_len(prefix), error) {
                (Ok(len), None) => assert_eq!(i64::from(len), int(&v["len"])),
                (Err(e), Some(kind)) => assert_eq!(kind_of(&e), kind),
                (got, _) => panic!("got {got:?}"),
            }
        }
        "context_umask" => {
            let umask = int(&v["umask"]) as u32;
            assert_eq!(decode_context_umask(bytes().try_into().unwrap()), umask);
            assert_eq!(encode_context_umask(umask).to_vec(), bytes());
        }
        "limits" => {
            let all = bytes();
            match (decode_limits(all[0], &all[1..]), error) {
                (Ok(limits), None) => {
                    let want = CallerLimits {
                        rlimits: v["rlimits"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|r| (int(&r[0]) as u8, u64_of(&r[1]), u64_of(&r[2])))
                            .collect(),
                        nice: int(&v["nice"]) as i32,
                        oom_score_adj: int(&v["oom_score_adj"]) as i32,
                    };
                    assert_eq!(limits, want);
                    assert_eq!(encode_limits(&want), all);
                }
                (Err(e), Some(kind)) => assert_eq!(kind_of(&e), kind),
                (got, _) => panic!("got {got:?}"),
            }
        }
        "terminal_settings" => match (decode_terminal_settings(&bytes()), error) {
            (Ok(settings), None) => {
                let want = settings_of(v);
                assert_eq!(settings, want);
                assert_eq!(encode_terminal_settings(&want), bytes());
            }
            (Err(e), Some(kind)) => assert_eq!(kind_of(&e), kind),
            (got, _) => panic!("got {got:?}"),
        },
        "restore" => match (decode_restore(&bytes()), error) {
            (Ok((put_back, left)), None) => {
                let want = (settings_of(&v["put_back"]), settings_of(&v["left"]));
                assert_eq!((put_back, left), want);
                assert_eq!(encode_restore(&want.0, &want.1), bytes());
            }
            (Err(e), Some(kind)) => assert_eq!(kind_of(&e), kind),
            (got, _) => panic!("got {got:?}"),
        },
        "caller_signals" => {
            let bits = |name: &str| {
                v[name]
                    .as_array()
                    .unwrap()
                    .iter()
                    .fold(0u64, |bits, sig| bits | CallerSignals::bit(int(sig) as i32))
            };
            let want = CallerSignals {
                ignored: bits("ignored"),
                blocked: bits("blocked"),
            };
            let all: [u8; CALLER_SIGNALS_LEN] = bytes().try_into().unwrap();
            assert_eq!(decode_caller_signals(all), want);
            assert_eq!(encode_caller_signals(&want), all);
            let numbers: Vec<i64> = CallerSignals::numbers(want.ignored)
                .map(i64::from)
                .collect();
            assert_eq!(
                numbers,
                v["ignored"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(int)
                    .collect::<Vec<_>>()
            );
        }
        "status" => {
            let status = WaitStatus::from_raw(int(&v["wait_status"]) as i32);
            assert_eq!(decode_status(bytes().try_into().unwrap()), status);
            assert_eq!(encode_status(status).to_vec(), bytes());
        }
        "frame" => {
            let all: [u8; FRAME_LEN] = bytes().try_into().unwrap();
            let kind = v["kind"].as_str().unwrap().as_bytes()[0];
            let value = int(&v["value"]) as u32;
            let want = match kind {
                FRAME_SIGNAL => Frame::Signal(value as i32),
                FRAME_EXECUTOR_PID => Frame::ExecutorPid(value),
                FRAME_STATUS => Frame::Status(WaitStatus::from_raw(value as i32)),
                FRAME_FOREGROUND => Frame::Foreground(value == 1),
                FRAME_STOPPED => Frame::Stopped(value as i32),
                KEEPER_STOPPED => Frame::KeeperStopped(value as i32),
                KEEPER_STATUS => Frame::KeeperStatus(WaitStatus::from_raw(value as i32)),
                KEEPER_FOREGROUND => Frame::KeeperForeground(value == 1),
                FRAME_RESTORE => Frame::Restore(value),
                other => panic!("a vector of an unknown kind {other}"),
            };
            assert_eq!(Frame::decode(all), want);
            assert_eq!(want.encode(), all);
        }
        "executor_ready" => {
            let all = bytes();
            match (decode_executor_ready([all[0], all[1]]), error) {
                (Ok(kind), None) => {
                    let want = request_kind(&v["kind"]);
                    let mut decoded = kind;
                    // Not in the message: the second request byte's flags.
                    decoded.closed = want.closed;
                    decoded.caller_signals = want.caller_signals;
                    assert_eq!(decoded, want);
                    let pid = v["script_pid"].as_u64().map(|p| p as u32);
                    let tail = pid.map(u32::to_be_bytes);
                    assert_eq!(&all[2..], tail.as_ref().map_or(&[][..], |t| &t[..]));
                    if encodes || want.closed.contains(&true) {
                        assert_eq!(encode_executor_ready(want, pid.unwrap_or(0)), all);
                    }
                }
                (Err(e), Some(kind)) => assert_eq!(kind_of(&e), kind),
                (got, _) => panic!("got {got:?}"),
            }
        }
        "monitor_to_server" => {
            let byte = match v["message"].as_str().unwrap() {
                "call_ended" => MONITOR_CALL_ENDED,
                "call_dropped" => MONITOR_CALL_DROPPED,
                other => panic!("unknown message {other}"),
            };
            assert_eq!(vec![byte], bytes());
        }
        "hand_over" => assert_eq!(vec![FD_MESSAGE_BYTE], bytes()),
        "quit_line" => {
            let reason = String::from_utf8(hex(&v["reason"])).unwrap();
            assert_eq!(encode_quit_line(u64_of(&v["secs"]), &reason), bytes());
        }
        "last_quit" => {
            let text = hex(&v["text"]);
            let got = decode_last_quit(&text);
            match &v["secs"] {
                Value::Null => assert_eq!(got, None),
                secs => assert_eq!(got, Some((u64_of(secs), &hex(&v["reason"])[..]))),
            }
        }
        "env_entry" => {
            let entry = hex(&v["entry"]);
            let want = (!v["split"].is_null()).then(|| (hex(&v["split"][0]), hex(&v["split"][1])));
            assert_eq!(
                split_env_entry(&entry).map(|(n, v)| (n.to_vec(), v.to_vec())),
                want
            );
        }
        other => panic!(
            "group {other:?} of sides/wire-vectors.json: check it here, or name it in NOT_RUST"
        ),
    }
}

#[test]
fn every_vector_holds_for_the_rust_codec() {
    let all = vectors();
    let mut checked = 0;
    let mut groups = BTreeSet::new();
    for (group, body) in all.as_object().unwrap() {
        if group == "about" || NOT_RUST.contains(&group.as_str()) {
            continue;
        }
        groups.insert(group.clone());
        for v in body["vectors"].as_array().unwrap() {
            let name = v["name"].as_str().unwrap();
            let result = std::panic::catch_unwind(|| check_group(group, v));
            if let Err(e) = result {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{group}: {name:?}: {why}");
            }
            checked += 1;
        }
    }
    // A file read wrong (no groups, no vectors) must not pass.
    assert!(groups.len() >= 20, "groups: {groups:?}");
    assert!(checked >= 100, "only {checked} vectors");
}

#[test]
fn every_error_kind_has_an_invalid_vector() {
    // Each way a message can be malformed is pinned for every side.
    let all = vectors().to_string();
    for kind in [
        "BadGreetingMagic",
        "XdataTooLong",
        "PayloadTooLong",
        "PayloadUnterminated",
        "PayloadNoEnvEnd",
        "BadRequestByte",
        "BadSecondRequestByte",
        "BadExecutorMessage",
        "BadSetupEnv",
        "BadLimits",
        "BadTerminalSettings",
        "BadRestore",
    ] {
        assert!(
            all.contains(&format!("\"error\":\"{kind}\"")),
            "no vector with error {kind}"
        );
    }
}
