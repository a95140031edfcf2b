//! The OpenID Connect protocol, without nginx: discovery, the authorization request, the token
//! response and ID-token verification.

pub mod authorize;
pub mod cache;
pub mod discovery;
pub mod id_token;
pub mod jws;
pub mod numeric;
#[cfg(test)]
mod openidconnect_fit;
pub mod query;
#[cfg(test)]
mod test_vectors;
pub mod token;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub use cache::ProviderCache;

/// `n` random bytes as base64url, for state, nonce and PKCE verifiers.
pub fn random_token(n: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}
