// Shared by the fuzz targets (each includes it with `#[path]`).
#![allow(dead_code)]

use std::sync::OnceLock;

use ngx_http_oidc_module::oidc::jws::JwkSet;
use ngx_http_oidc_module::session::codec::KeyRing;

/// A fixed cookie key (the fuzzer needs no secret, only a stable one).
pub fn keys() -> KeyRing {
    KeyRing::parse("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").expect("test key")
}

/// The unit tests' JWKS (one RSA key), parsed once per fuzzing process.
pub fn jwks() -> &'static JwkSet {
    static JWKS: OnceLock<JwkSet> = OnceLock::new();
    JWKS.get_or_init(|| {
        serde_json::from_str(include_str!("../../src/oidc/testdata/jwks.json")).expect("test JWKS")
    })
}

pub const ISSUER: &str = "http://127.0.0.1:8081/realms/test";
pub const NOW: u64 = 1_800_000_000;

/// A token from fuzz input: either the bytes as they are, or (first byte odd) three parts
/// separated by 0xff that are base64url-encoded, so that the fuzzer reaches the JSON of the
/// header and the claims instead of stopping at base64.
pub fn token(data: &[u8]) -> Option<String> {
    use base64::Engine;
    let (&mode, rest) = data.split_first()?;
    if mode & 1 == 0 {
        return std::str::from_utf8(rest).ok().map(str::to_string);
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<String> = rest
        .splitn(3, |&b| b == 0xff)
        .map(|p| b64.encode(p))
        .collect();
    Some(parts.join("."))
}
