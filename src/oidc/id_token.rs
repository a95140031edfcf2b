//! ID-token verification (OpenID Connect Core 3.1.3.7) against the provider's JWKS.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Asymmetric algorithms only: `none` and HMAC (keyed with the client secret) are never accepted.
const ALLOWED: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("the ID token is not a signed JWT")]
    Malformed,
    #[error("the ID token uses algorithm {0}, which is not allowed (asymmetric signatures only)")]
    Algorithm(String),
    #[error("no key \"{0}\" in the provider's JWKS")]
    UnknownKey(String),
    #[error("the JWKS key for this ID token is unusable")]
    BadKey,
    #[error("the ID token's signature does not verify")]
    Signature,
    #[error("the ID token's issuer is not \"{0}\"")]
    Issuer(String),
    #[error("the ID token's audience does not contain client_id \"{0}\"")]
    Audience(String),
    #[error("the ID token's azp is not this client")]
    AuthorizedParty,
    #[error("the ID token has expired (check the clocks of nginx and the provider)")]
    Expired,
    #[error("the ID token was issued in the future: the clocks of nginx and the provider differ by more than {0}s")]
    IssuedInFuture(u64),
    #[error("the ID token lacks the claim \"{0}\"")]
    MissingClaim(String),
    #[error("the ID token's nonce does not match this login")]
    Nonce,
}

pub struct Expectations<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    pub now: u64,
    /// Allowed clock difference in seconds.
    pub leeway: u64,
}

/// The `kid` of a token's header, to decide whether the JWKS must be fetched again.
pub fn key_id(token: &str) -> Option<String> {
    jsonwebtoken::decode_header(token).ok()?.kid
}

/// Verifies signature, algorithm, iss, aud, azp, exp, iat and nonce; returns the claims.
pub fn verify(
    token: &str,
    jwks: &JwkSet,
    want: &Expectations,
) -> Result<Map<String, Value>, IdTokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if !ALLOWED.contains(&header.alg) {
        return Err(IdTokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let jwk = match &header.kid {
        Some(kid) => jwks
            .find(kid)
            .ok_or_else(|| IdTokenError::UnknownKey(kid.clone()))?,
        // Without a kid only an unambiguous JWKS can be used.
        None if jwks.keys.len() == 1 => &jwks.keys[0],
        None => return Err(IdTokenError::UnknownKey(String::new())),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::BadKey)?;

    let mut validation = Validation::new(header.alg);
    validation.leeway = want.leeway;
    validation.set_issuer(&[want.issuer]);
    validation.set_audience(&[want.client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.into_kind() {
                K::InvalidSignature => IdTokenError::Signature,
                K::InvalidIssuer => IdTokenError::Issuer(want.issuer.to_string()),
                K::InvalidAudience => IdTokenError::Audience(want.client_id.to_string()),
                K::ExpiredSignature => IdTokenError::Expired,
                K::MissingRequiredClaim(c) => IdTokenError::MissingClaim(c),
                K::InvalidAlgorithm => IdTokenError::Algorithm(format!("{:?}", header.alg)),
                K::InvalidRsaKey(_)
                | K::InvalidEcdsaKey
                | K::InvalidEddsaKey
                | K::InvalidKeyFormat => IdTokenError::BadKey,
                _ => IdTokenError::Malformed,
            }
        })?;
    let claims = data.claims;

    let iat = claims
        .get("iat")
        .and_then(Value::as_u64)
        .ok_or_else(|| IdTokenError::MissingClaim("iat".into()))?;
    if iat > want.now + want.leeway {
        return Err(IdTokenError::IssuedInFuture(want.leeway));
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or_else(|| IdTokenError::MissingClaim("exp".into()))?;
    if exp + want.leeway <= want.now {
        return Err(IdTokenError::Expired);
    }
    let multiple_audiences = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp != want.client_id => {
            return Err(IdTokenError::AuthorizedParty)
        }
        None if multiple_audiences => return Err(IdTokenError::AuthorizedParty),
        _ => {}
    }
    match claims.get("nonce") {
        Some(Value::String(n)) if constant_time_eq(n.as_bytes(), want.nonce.as_bytes()) => {}
        _ => return Err(IdTokenError::Nonce),
    }
    Ok(claims)
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const DER: &[u8] = include_bytes!("testdata/rsa.der");
    const JWKS: &str = include_str!("testdata/jwks.json");
    const NOW: u64 = 1_800_000_000;

    fn sign(claims: Value, kid: Option<&str>, alg: Algorithm) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        let key = match alg {
            Algorithm::HS256 => EncodingKey::from_secret(b"secret").unwrap(),
            _ => EncodingKey::from_rsa_der(DER),
        };
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    fn good() -> Value {
        json!({"iss":"http://kc/realms/test","aud":"test","azp":"test","sub":"u1",
               "exp":NOW+300,"iat":NOW,"nonce":"n1","preferred_username":"demo"})
    }

    fn check(token: &str) -> Result<Map<String, Value>, IdTokenError> {
        let jwks: JwkSet = serde_json::from_str(JWKS).unwrap();
        verify(
            token,
            &jwks,
            &Expectations {
                issuer: "http://kc/realms/test",
                client_id: "test",
                nonce: "n1",
                now: NOW,
                leeway: 60,
            },
        )
    }

    fn with(field: &str, v: Value) -> Value {
        let mut c = good();
        c[field] = v;
        c
    }

    #[test]
    fn a_good_token_verifies() {
        let claims = check(&sign(good(), Some("test-key"), Algorithm::RS256)).unwrap();
        assert_eq!(claims["preferred_username"], "demo");
        assert_eq!(
            key_id(&sign(good(), Some("test-key"), Algorithm::RS256)).as_deref(),
            Some("test-key")
        );
    }

    #[test]
    fn audience_is_checked_on_the_id_token_with_several_audiences_needing_azp() {
        let t = sign(
            with("aud", json!(["account", "test"])),
            Some("test-key"),
            Algorithm::RS256,
        );
        assert!(check(&t).is_ok());
        let t = sign(
            with("aud", json!("account")),
            Some("test-key"),
            Algorithm::RS256,
        );
        assert_eq!(check(&t), Err(IdTokenError::Audience("test".into())));
        let mut c = with("aud", json!(["account", "test"]));
        c.as_object_mut().unwrap().remove("azp");
        assert_eq!(
            check(&sign(c, Some("test-key"), Algorithm::RS256)),
            Err(IdTokenError::AuthorizedParty)
        );
        let t = sign(
            with("azp", json!("other")),
            Some("test-key"),
            Algorithm::RS256,
        );
        assert_eq!(check(&t), Err(IdTokenError::AuthorizedParty));
    }

    #[test]
    fn each_broken_claim_is_named() {
        let rs = |c| sign(c, Some("test-key"), Algorithm::RS256);
        assert_eq!(
            check(&rs(with("iss", json!("http://evil")))),
            Err(IdTokenError::Issuer("http://kc/realms/test".into()))
        );
        assert_eq!(
            check(&rs(with("exp", json!(NOW - 61)))),
            Err(IdTokenError::Expired)
        );
        assert_eq!(
            check(&rs(with("iat", json!(NOW + 120)))),
            Err(IdTokenError::IssuedInFuture(60))
        );
        assert_eq!(
            check(&rs(with("nonce", json!("other")))),
            Err(IdTokenError::Nonce)
        );
        let mut c = good();
        c.as_object_mut().unwrap().remove("nonce");
        assert_eq!(check(&rs(c)), Err(IdTokenError::Nonce));
    }

    #[test]
    fn forged_tokens_are_refused() {
        assert_eq!(
            check(&sign(good(), Some("test-key"), Algorithm::HS256)),
            Err(IdTokenError::Algorithm("HS256".into()))
        );
        assert_eq!(
            check(&sign(good(), Some("other"), Algorithm::RS256)),
            Err(IdTokenError::UnknownKey("other".into()))
        );
        let t = sign(good(), Some("test-key"), Algorithm::RS256);
        let (head, _) = t.rsplit_once('.').unwrap();
        let forged_payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&with("sub", json!("admin"))).unwrap(),
        );
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[1] = &forged_payload;
        assert_eq!(check(&parts.join(".")), Err(IdTokenError::Signature));
        assert!(check(&format!("{head}.")).is_err());
        assert_eq!(check("not.a.jwt"), Err(IdTokenError::Malformed));
        let none = format!(
            "{}.{}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                br#"{"alg":"none"}"#
            ),
            parts[1]
        );
        assert!(check(&none).is_err());
    }
}
