//! Fuzzes the admin route decision, `domi_admin::route`.
//!
//! The input is read as UTF-8 (lossily) and split on the first two `\n` into
//! method, url and `Authorization` header. `route` is called with and without
//! credentials and token and must never panic. With the token `"token"`
//! configured, an `Ok` for a mutating (POST) endpoint means the header was
//! `Bearer token`: the scheme name in any case (RFC 9110 §11.1), one space,
//! then the credentials, compared after whitespace trimming. Empty
//! credentials never match, not even an (empty) token `""`.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run admin_route -- -max_total_time=60`
//! from `fuzz/` (or `fuzz/run.sh` for all targets).
#![no_main]

use domi_admin::{route, Endpoint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let method = parts.next().unwrap_or("");
    let url = parts.next().unwrap_or("");
    let auth = parts.next().unwrap_or("");

    let _ = route(method, url, None, None);
    let _ = route(method, url, Some(auth), None);
    let _ = route(method, url, None, Some("token"));

    if let Ok(endpoint) = route(method, url, Some(auth), Some("token")) {
        if matches!(
            endpoint,
            Endpoint::Stop | Endpoint::Pause | Endpoint::Resume
        ) {
            let scheme_ok = auth
                .get(..7)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("bearer "));
            assert!(
                scheme_ok && auth[7..].trim() == "token",
                "POST {url:?} accepted with Authorization {auth:?}"
            );
        }
    }
    if let Ok(endpoint) = route(method, url, Some(auth), Some("")) {
        assert!(
            !matches!(
                endpoint,
                Endpoint::Stop | Endpoint::Pause | Endpoint::Resume
            ),
            "POST {url:?} accepted with Authorization {auth:?} and an empty token"
        );
    }
    if let Ok(endpoint) = route(method, url, None, Some("token")) {
        assert!(
            !matches!(
                endpoint,
                Endpoint::Stop | Endpoint::Pause | Endpoint::Resume
            ),
            "POST {url:?} accepted without Authorization"
        );
    }
});
