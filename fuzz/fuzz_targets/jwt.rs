//! ID and access tokens: header and claims parsing, signature and claim checks.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::oidc::id_token::{self, Expectations};

fuzz_target!(|data: &[u8]| {
    let jwks = common::jwks();
    let Some(token) = common::token(data) else {
        return;
    };
    let _ = id_token::key_id(&token);
    let _ = id_token::unverified_audience(&token);
    let want = Expectations {
        issuer: common::ISSUER,
        client_id: "test",
        nonce: "n",
        now: common::NOW,
        leeway: 60,
    };
    let _ = id_token::verify(&token, jwks, &want);
    let _ = id_token::verify_access_token(&token, jwks, common::ISSUER, "test", common::NOW, 60);
});
