//! The signature test vectors shared by the unit tests of `jws` and `openidconnect_fit`.

use serde_json::Value;

/// A JWKS with one key per algorithm and a token signed by each, made with Node's crypto
/// (OpenSSL) by `testdata/algorithms.mjs`: an implementation independent of ours.
const VECTORS: &str = include_str!("testdata/algorithms.json");

/// The vectors' JWKS (as JSON) and their tokens as (algorithm, compact JWS).
pub fn algorithm_vectors() -> (Value, Vec<(String, String)>) {
    let v: Value = serde_json::from_str(VECTORS).unwrap();
    let tokens = v["tokens"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string()))
        .collect();
    (v["jwks"].clone(), tokens)
}
