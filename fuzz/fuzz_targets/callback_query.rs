//! The callback's query string (`code`, `state`, `error`, ...), any single parameter, and the
//! hiding of the one-time values in what nginx logs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::oidc::query;

fuzz_target!(|data: &[u8]| {
    // The request line nginx logs holds raw bytes, not necessarily UTF-8.
    if let Some(hidden) = query::hide_one_time_values(data, data) {
        let hidden = String::from_utf8_lossy(&hidden);
        for name in ["code", "state", "session_state"] {
            if let Ok(Some(v)) = query::param(&hidden, name) {
                assert!(v == "[hidden]" || v.is_empty(), "{name}={v} left in {hidden}");
            }
        }
    }
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let _ = query::parse_callback(q);
    for name in ["rd", "code", "state", "error", "error_description", "iss"] {
        let _ = query::param(q, name);
    }
});
