//! The login-state cookie: the AEAD layer on arbitrary values, and the JSON behind it.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::session::LoginState;

fuzz_target!(|data: &[u8]| {
    let keys = common::keys();
    if let Some(plain) = keys.open(b"state", data) {
        let _ = serde_json::from_slice::<LoginState>(&plain);
    }
    if let Ok(state) = serde_json::from_slice::<LoginState>(data) {
        let name = LoginState::cookie_name("_oidc", &state.state);
        assert!(name.starts_with(&LoginState::cookie_prefix("_oidc")));
    }
});
