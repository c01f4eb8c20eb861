//! Fuzzes the admin server's request-head reading and body decision,
//! `domi_admin::http::{parse_head, body_plan}`.
//!
//! Neither may panic on any input. A complete head must lie within the input
//! and within `MAX_HEAD`; an input of `MAX_HEAD` bytes or more is never
//! "incomplete" (the server must decide once that many bytes are in); a
//! planned discard never exceeds `MAX_BODY`.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run admin_head -- -max_total_time=60`
//! from `fuzz/` (or `fuzz/run.sh` for all targets).
#![no_main]

use domi_admin::http::{body_plan, parse_head, BodyPlan, MAX_BODY, MAX_HEAD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_head(data) {
        Ok(Some((len, head))) => {
            assert!(len <= data.len() && len <= MAX_HEAD, "head length {len}");
            if let Ok(BodyPlan::Discard { len, .. }) = body_plan(&head) {
                assert!(len <= MAX_BODY, "discard of {len} bytes planned");
            }
        }
        Ok(None) => assert!(data.len() < MAX_HEAD, "undecided after {} bytes", data.len()),
        Err(_) => {}
    }
});
