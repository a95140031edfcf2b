//! Back-channel logout tokens.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::oidc::id_token;

fuzz_target!(|data: &[u8]| {
    let jwks = common::jwks();
    let Some(token) = common::token(data) else {
        return;
    };
    let _ = id_token::verify_logout_token(&token, jwks, common::ISSUER, "test", common::NOW, 60);
});
