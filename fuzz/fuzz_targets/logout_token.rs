//! Back-channel logout tokens.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use jsonwebtoken::jwk::JwkSet;
use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::oidc::id_token;

fuzz_target!(|data: &[u8]| {
    static JWKS: OnceLock<JwkSet> = OnceLock::new();
    let jwks = JWKS.get_or_init(common::jwks);
    let Some(token) = common::token(data) else {
        return;
    };
    let _ = id_token::verify_logout_token(&token, jwks, common::ISSUER, "test", common::NOW, 60);
});
