//! Property tests over every decoder of the wire format: any input gives
//! a value or a clear error, never a panic; what we encode decodes to
//! itself; bounds hold. (fuzz/ has the same decoders as a fuzz target, to
//! run by hand.)

use prefork_interp::protocol::*;
use proptest::prelude::*;

/// A string that may appear in a payload: any bytes but NUL.
fn nul_free(min: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(1u8..=255, min..40)
}

proptest! {
    #[test]
    fn greeting_header_any_bytes(header in any::<[u8; GREETING_HEADER_LEN]>()) {
        match decode_greeting_header(&header) {
            Ok(len) => {
                prop_assert_eq!(&header[..4], GREETING_MAGIC);
                prop_assert!(len <= MAX_XDATA_LEN);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn greeting_round_trip(xdata in proptest::collection::vec(any::<u8>(), 0..300)) {
        let greeting = encode_greeting(&xdata);
        let header: [u8; GREETING_HEADER_LEN] = greeting[..GREETING_HEADER_LEN].try_into().unwrap();
        prop_assert_eq!(decode_greeting_header(&header).unwrap() as usize, xdata.len());
        prop_assert_eq!(&greeting[GREETING_HEADER_LEN..], &xdata[..]);
    }

    #[test]
    fn xdata_any_bytes(xdata in proptest::collection::vec(any::<u8>(), 0..300), name in "[a-z]{1,8}") {
        let _ = decode_caps(&xdata);
        let _ = decode_xdata_number(&xdata, &name);
    }

    #[test]
    fn caps_and_stats_round_trip(
        caps in proptest::collection::vec("[a-z]{1,10}", 1..5),
        served in any::<u64>(),
        running in any::<u64>(),
        idle_ms in any::<u64>(),
        terminals in proptest::option::of(0u8..8),
    ) {
        let counters = ServerCounters { served, running, idle_ms };
        let names: Vec<&str> = caps.iter().map(String::as_str).collect();
        let xdata = encode_greeting_xdata(&names, None, None, None, terminals, None, counters);
        prop_assert_eq!(decode_terminals(&xdata), terminals);
        prop_assert_eq!(decode_caps(&xdata), caps);
        prop_assert_eq!(decode_xdata_number(&xdata, "served"), Some(served));
        prop_assert_eq!(decode_xdata_number(&xdata, "running"), Some(running));
        prop_assert_eq!(decode_xdata_number(&xdata, "idle"), Some(idle_ms));
        prop_assert!(encode_greeting_xdata(&[], None, None, None, terminals, None, counters).is_empty());
    }

    #[test]
    fn request_bytes_any(byte in any::<u8>(), second in any::<u8>()) {
        match check_request_byte(byte) {
            Ok(mut kind) if has_second_request_byte(byte) => {
                match check_second_request_byte(&mut kind, second) {
                    // A second byte of 0 is allowed, and never sent.
                    Ok(()) if second == 0 => {
                        prop_assert_eq!(encode_request_bytes(kind), vec![byte & 0x7f]);
                    }
                    Ok(()) => prop_assert_eq!(encode_request_bytes(kind), vec![byte, second]),
                    Err(e) => {
                        prop_assert!(second & !7 != 0);
                        prop_assert!(!e.to_string().is_empty());
                    }
                }
            }
            Ok(kind) => prop_assert_eq!(encode_request_bytes(kind), vec![byte]),
            Err(e) => {
                prop_assert!(
                    byte != 0 && (byte & 1 == 0 || (byte & 0x20 != 0 && byte & 0x1c == 0))
                );
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn executor_ready_any(message in any::<[u8; 2]>()) {
        // The request byte as read, whose 0x80 (a second byte followed)
        // tells the monitor nothing: it is sent only with a fd closed.
        if let Ok(kind) = decode_executor_ready(message) {
            let sent = encode_executor_ready(kind, 7);
            prop_assert_eq!(sent[0], message[0]);
            prop_assert_eq!(sent[1] & !REQUEST_FLAG_SECOND_BYTE, message[1] & !REQUEST_FLAG_SECOND_BYTE);
        }
    }

    #[test]
    fn frames_round_trip(bytes in any::<[u8; FRAME_LEN]>()) {
        let frame = Frame::decode(bytes);
        prop_assert_eq!(Frame::decode(frame.encode()), frame);
        // Every byte survives, but a move's value other than 0 and 1
        // (which means the background, as 0 does).
        let value = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        if !matches!(bytes[0], FRAME_FOREGROUND | KEEPER_FOREGROUND) || value <= 1 {
            prop_assert_eq!(frame.encode(), bytes);
        }
    }

    #[test]
    fn payload_len_bounded(prefix in any::<[u8; 4]>()) {
        match decode_payload_len(prefix) {
            Ok(len) => prop_assert!(len <= MAX_PAYLOAD_LEN),
            Err(_) => prop_assert!(u32::from_be_bytes(prefix) > MAX_PAYLOAD_LEN),
        }
    }

    #[test]
    fn payload_any_bytes(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(decoded) = decode_payload(&payload) {
            prop_assert!(decoded.env.iter().all(|e| !e.is_empty() && !e.contains(&0)));
            prop_assert!(decoded.args.iter().all(|a| !a.contains(&0)));
        }
    }

    #[test]
    fn payload_round_trip(
        env in proptest::collection::vec(nul_free(1), 0..10),
        args in proptest::collection::vec(nul_free(0), 0..10),
    ) {
        let encoded = encode_request_payload(
            env.iter().map(Vec::as_slice),
            args.iter().map(Vec::as_slice),
        );
        let len = decode_payload_len(encoded[..4].try_into().unwrap()).unwrap();
        prop_assert_eq!(len as usize, encoded.len() - 4);
        let decoded = decode_payload(&encoded[4..]).unwrap();
        prop_assert_eq!(decoded.env, env.iter().map(Vec::as_slice).collect::<Vec<_>>());
        prop_assert_eq!(decoded.args, args.iter().map(Vec::as_slice).collect::<Vec<_>>());
    }

    #[test]
    fn status_round_trip(status in any::<i32>().prop_map(WaitStatus::from_raw)) {
        prop_assert_eq!(decode_status(encode_status(status)), status);
    }

    #[test]
    fn env_entry_split(entry in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Some((name, value)) = split_env_entry(&entry) {
            prop_assert!(!name.is_empty());
            prop_assert_eq!(name.len() + 1 + value.len(), entry.len());
        }
    }

    #[test]
    fn setup_env_any_bytes(value in proptest::collection::vec(any::<u8>(), 0..120)) {
        if let Err(e) = decode_setup_env(&value) {
            prop_assert!(e.to_string().contains(ENV_VAR));
        }
    }

    #[test]
    fn setup_env_round_trip(
        started_secs in 0i64..=i64::MAX,
        started_nsecs in 0u32..1_000_000_000,
        fds in any::<[u16; 4]>(),
        client_caps in proptest::collection::vec("[a-z]{1,10}", 0..4),
        idle_limit in proptest::option::of(any::<u64>()),
        keeper in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..64)),
    ) {
        let setup = SetupEnv {
            started_secs,
            started_nsecs,
            listen: fds[0].into(),
            call: fds[1].into(),
            watch_in: fds[2].into(),
            watch_err: fds[3].into(),
            client_caps,
            idle_limit,
            keeper,
        };
        let decoded = decode_setup_env(encode_setup_env(&setup).as_bytes()).unwrap();
        prop_assert_eq!(decoded, setup);
    }
}
