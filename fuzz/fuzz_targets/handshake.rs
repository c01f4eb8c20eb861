//! Fuzzes the handshake/announcement payload decoder,
//! `domi_core::handshake::NodeInfo::decode`.
//!
//! Any input must decode or give a typed error, never panic. A decoded value
//! `x` must survive a round trip: `decode(x.to_bytes()) == x` (the decoder
//! sorts and de-duplicates channels, so the comparison is against the decoded
//! value, not the raw input). `handshake::validate` must not panic on it.
//!
//! The same bytes also go through `NodeInfo::decode_prefix` and the
//! authentication-block parsers (`auth::hello_nonce`, `auth::ack_auth`) with
//! and without a secret: they must return a value or a typed error.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run handshake -- -max_total_time=60`
//! from `fuzz/` (or `fuzz/run.sh` for all targets).
#![no_main]

use domi_core::auth;
use domi_core::handshake::{validate, NodeInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((info, extra)) = NodeInfo::decode_prefix(data) {
        assert!(extra.len() < data.len() || data.is_empty());
        let _ = info.check();
        for secret in [None, Some(&b"0123456789abcdef"[..])] {
            if let Ok(Some((_, proof))) = auth::ack_auth(secret, extra) {
                assert_eq!(proof.len(), auth::PROOF_LEN);
            }
            if let Ok(Some(nonce)) = auth::hello_nonce(secret, extra) {
                let _ = auth::check_client(
                    secret.unwrap_or_default(),
                    &info.cluster,
                    &nonce,
                    &nonce,
                    extra,
                );
            }
        }
    }
    let Ok(info) = NodeInfo::decode(data) else {
        return;
    };
    let bytes = info.to_bytes();
    assert_eq!(
        NodeInfo::decode(&bytes).as_ref(),
        Ok(&info),
        "decode(encode(x)) != x"
    );
    let _ = info.check();
    let _ = validate(&info, &info);
});
