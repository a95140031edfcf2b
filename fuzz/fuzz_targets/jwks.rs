//! A JWKS document from the provider, then a token checked against it.
#![no_main]

#[path = "common.rs"]
mod common;

use ngx_http_oidc_module::oidc::jws::JwkSet;
use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::oidc::id_token;

/// Header `{"alg":"RS256","kid":"k"}`, some claims, a short signature.
const TOKEN: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.eyJpc3MiOiJodHRwOi8vMTI3LjAuMC4xOjgwODEvcmVhbG1zL3Rlc3QiLCJhdWQiOiJ0ZXN0IiwiZXhwIjoxODAwMDAwMDYwfQ.AAAA";

fuzz_target!(|data: &[u8]| {
    let Ok(jwks) = serde_json::from_slice::<JwkSet>(data) else {
        return;
    };
    let _ = id_token::verify_access_token(TOKEN, &jwks, common::ISSUER, "test", common::NOW, 60);
    let _ = id_token::verify_logout_token(TOKEN, &jwks, common::ISSUER, "test", common::NOW, 60);
});
