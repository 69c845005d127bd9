//! Every decoder of the wire format on arbitrary bytes: none may panic.
//! The first byte picks the decoder; the rest is its input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prefork_interp::protocol::*;

fuzz_target!(|data: &[u8]| {
    let Some((&which, input)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(header) = <[u8; GREETING_HEADER_LEN]>::try_from(input) {
                let _ = decode_greeting_header(&header);
            }
        }
        1 => {
            let _ = decode_caps(input);
            let _ = decode_xdata_number(input, "served");
            let _ = decode_env_dependency(input);
            let _ = decode_start_dependency(input);
            let _ = decode_world(input);
            let _ = decode_last_quit(input);
        }
        2 => {
            for pair in input.chunks(2) {
                if let Ok(mut kind) = check_request_byte(pair[0])
                    && let Some(&second) = pair.get(1)
                {
                    let _ = check_second_request_byte(&mut kind, second);
                }
            }
        }
        3 => {
            if let Ok(prefix) = <[u8; 4]>::try_from(input) {
                let _ = decode_payload_len(prefix);
            }
        }
        4 => {
            if let Ok(payload) = decode_payload(input) {
                for entry in payload.env {
                    let _ = split_env_entry(entry);
                }
            }
        }
        5 => {
            let _ = decode_setup_env(input);
        }
        6 => {
            if let Ok(frame) = <[u8; FRAME_LEN]>::try_from(input) {
                let _ = Frame::decode(frame).encode();
            }
        }
        _ => {
            if let Ok(message) = <[u8; 2]>::try_from(input) {
                let _ = decode_executor_ready(message);
            }
        }
    }
});
