//! What is inside an intact session cookie: arbitrary plaintext is sealed with the key and then
//! opened, so that the fuzzer reaches the inflate and JSON steps behind the AEAD.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::session::Session;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    let Ok(sealed) = keys.seal(b"aad", data) else {
        return;
    };
    if let Some(s) = Session::open(&keys, b"aad", sealed.as_bytes()) {
        let _ = s.user("preferred_username");
        let _ = s.claim("groups");
        let _ = s.claim("email");
        let _ = s.is_valid_at(common::NOW);
        let _ = s.needs_refresh(common::NOW, 30);
        let _ = s.refresh_due(30);
        // A session that opened seals again.
        let again = s.seal(&keys, b"aad").expect("reseal");
        assert!(Session::open(&keys, b"aad", again.as_bytes()).is_some());
    }
});
