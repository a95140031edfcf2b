//! The callback's query string (`code`, `state`, `error`, ...) and any single parameter.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::oidc::query;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let _ = query::parse_callback(q);
    for name in ["rd", "code", "state", "error", "error_description", "iss"] {
        let _ = query::param(q, name);
    }
});
