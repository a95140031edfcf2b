//! The token endpoint's answer (any status, any body).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::oidc::token;

fuzz_target!(|data: &[u8]| {
    let (status, body) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => (200, data),
    };
    if let Err(e) = token::parse(status, body) {
        let _ = e.hint();
        let _ = e.to_string();
    }
    if let Ok(t) = token::parse(200, data) {
        let _ = t.access_token_lifetime(1_800_000_000);
    }
});
