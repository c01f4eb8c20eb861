//! Fuzzes the frame codec, `domi_core::frame::decode`, the way a connection
//! reader drives it.
//!
//! The first 4 bytes (if present) are a little-endian u32 `max_payload`, the
//! rest is a receive buffer. Frames are decoded in a loop: each `Frame` must
//! lie within the buffer (`consumed <= buf.len()`) and respect the maximum;
//! `Incomplete` must ask for at least one byte; an error ends the stream. Every
//! decoded frame is re-encoded with `frame::encode` and must decode back to the
//! same meta and payload. Seeds include frames with the deadline and route
//! extensions (`ext-*`), so the flags and extension parser are reached.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run frame_decode -- -max_total_time=60`
//! from `fuzz/` (or `fuzz/run.sh` for all targets).
#![no_main]

use domi_core::frame::{decode, encode, Decoded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (max, mut buf) = match data.split_first_chunk::<4>() {
        Some((head, rest)) => (u32::from_le_bytes(*head), rest),
        None => (u32::MAX, data),
    };
    loop {
        match decode(buf, max) {
            Ok(Decoded::Frame { frame, consumed }) => {
                assert!(consumed <= buf.len(), "consumed {consumed} > {}", buf.len());
                assert!(frame.payload.len() as u64 <= max as u64);
                assert!(consumed > 0, "a frame must consume bytes");

                let mut out = Vec::new();
                encode(&mut out, &frame.meta, frame.payload);
                match decode(&out, max) {
                    Ok(Decoded::Frame {
                        frame: again,
                        consumed: c2,
                    }) => {
                        assert_eq!(again.meta, frame.meta);
                        assert_eq!(again.payload, frame.payload);
                        assert_eq!(c2, out.len());
                    }
                    other => panic!("re-encoded frame did not decode: {other:?}"),
                }

                buf = &buf[consumed..];
            }
            Ok(Decoded::Incomplete { need }) => {
                assert!(need > 0, "Incomplete must ask for at least one byte");
                break;
            }
            Err(_) => break,
        }
    }
});
