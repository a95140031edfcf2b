//! Verification of the provider's signed tokens against its JWKS: ID tokens (OpenID Connect
//! Core 3.1.3.7), access tokens presented as bearer tokens, and back-channel logout tokens.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::numeric::{self, TimeError};

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
pub enum JwtError {
    #[error("the token is not a signed JWT")]
    Malformed,
    #[error("the token uses algorithm {0}, which is not allowed (asymmetric signatures only)")]
    Algorithm(String),
    #[error("no key \"{0}\" in the provider's JWKS")]
    UnknownKey(String),
    #[error("the JWKS key for this token is unusable")]
    BadKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token's issuer is not \"{0}\"")]
    Issuer(String),
    #[error("the token's audience does not contain \"{0}\"")]
    Audience(String),
    #[error("the token's azp is not this client")]
    AuthorizedParty,
    #[error("the token has expired (check the clocks of nginx and the provider)")]
    Expired,
    #[error("the token was issued in the future: the clocks of nginx and the provider differ by more than {0}s")]
    IssuedInFuture(u64),
    #[error("the token lacks the claim \"{0}\"")]
    MissingClaim(String),
    #[error("the token's claim {0}")]
    Time(TimeError),
    #[error("the token is not valid yet (nbf): the clocks of nginx and the provider differ by more than {0}s")]
    NotYetValid(u64),
    #[error("the token's nonce does not match this login")]
    Nonce,
    #[error("the token is about another user than the session")]
    Subject,
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
) -> Result<Map<String, Value>, JwtError> {
    let claims = verify_for_client(token, jwks, want)?;
    match claims.get("nonce") {
        Some(Value::String(n)) if constant_time_eq(n.as_bytes(), want.nonce.as_bytes()) => {}
        _ => return Err(JwtError::Nonce),
    }
    Ok(claims)
}

/// An ID token from a refresh (OpenID Connect Core 12.2): the login's checks except the nonce
/// (`want.nonce` is ignored: the token comes from the token endpoint, not through the
/// browser), and it must be about the same user.
pub fn verify_refreshed(
    token: &str,
    jwks: &JwkSet,
    want: &Expectations,
    sub: &str,
) -> Result<Map<String, Value>, JwtError> {
    let claims = verify_for_client(token, jwks, want)?;
    match claims.get("sub") {
        Some(Value::String(s)) if s == sub => Ok(claims),
        _ => Err(JwtError::Subject),
    }
}

/// Signature, algorithm, iss, aud, azp, exp and iat of an ID token for this client.
fn verify_for_client(
    token: &str,
    jwks: &JwkSet,
    want: &Expectations,
) -> Result<Map<String, Value>, JwtError> {
    let claims = verify_signed(
        token,
        jwks,
        want.issuer,
        want.client_id,
        want.now,
        want.leeway,
        &["exp", "iat", "iss", "aud", "sub"],
    )?;
    let multiple_audiences = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp != want.client_id => Err(JwtError::AuthorizedParty),
        None if multiple_audiences => Err(JwtError::AuthorizedParty),
        _ => Ok(claims),
    }
}

/// The NumericDate claims (RFC 7519 §4.1.4-6, OpenID Connect Core §2 `auth_time`), checked
/// for their shape wherever they appear.
const TIMES: [&str; 4] = ["iat", "exp", "nbf", "auth_time"];

/// The checks every token shares: an allowed asymmetric algorithm, a key from the JWKS by
/// `kid`, the signature, `iss`, `aud` containing `audience`, `exp`, `iat` and `nbf` (with
/// `leeway`, in any NumericDate shape), and the `required` claims.
fn verify_signed(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    audience: &str,
    now: u64,
    leeway: u64,
    required: &[&str],
) -> Result<Map<String, Value>, JwtError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
    if !ALLOWED.contains(&header.alg) {
        return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
    }
    let jwk = match &header.kid {
        Some(kid) => jwks
            .find(kid)
            .ok_or_else(|| JwtError::UnknownKey(kid.clone()))?,
        // Without a kid only an unambiguous JWKS can be used.
        None if jwks.keys.len() == 1 => &jwks.keys[0],
        None => return Err(JwtError::UnknownKey(String::new())),
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| JwtError::BadKey)?;

    let mut validation = Validation::new(header.alg);
    validation.leeway = leeway;
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    // The times are checked below, in every shape RFC 7519 allows and with the real cause
    // of a refusal (the library calls a time of the wrong type a missing claim).
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let untimed: Vec<&str> = required
        .iter()
        .copied()
        .filter(|c| !TIMES.contains(c))
        .collect();
    validation.set_required_spec_claims(&untimed);
    let data =
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.into_kind() {
                K::InvalidSignature => JwtError::Signature,
                K::InvalidIssuer => JwtError::Issuer(issuer.to_string()),
                K::InvalidAudience => JwtError::Audience(audience.to_string()),
                K::ExpiredSignature => JwtError::Expired,
                K::MissingRequiredClaim(c) => JwtError::MissingClaim(c),
                K::InvalidAlgorithm => JwtError::Algorithm(format!("{:?}", header.alg)),
                K::InvalidRsaKey(_)
                | K::InvalidEcdsaKey
                | K::InvalidEddsaKey
                | K::InvalidKeyFormat => JwtError::BadKey,
                _ => JwtError::Malformed,
            }
        })?;
    let claims = data.claims;
    let time = |name: &str| match numeric::numeric_date(&claims, name) {
        Ok(None) if required.contains(&name) => Err(JwtError::MissingClaim(name.into())),
        Ok(t) => Ok(t),
        Err(e) => Err(JwtError::Time(e)),
    };
    let [iat, exp, nbf, auth_time] = TIMES.map(time);
    let (iat, exp, nbf) = (iat?, exp?, nbf?);
    auth_time?;
    if iat.is_some_and(|iat| iat > now + leeway) {
        return Err(JwtError::IssuedInFuture(leeway));
    }
    if exp.is_some_and(|exp| exp + leeway <= now) {
        return Err(JwtError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(JwtError::NotYetValid(leeway));
    }
    Ok(claims)
}

/// An access token presented as `Authorization: Bearer`: signature, iss, exp and an audience
/// of this service. Keycloak's access tokens carry `aud: account` unless an Audience mapper
/// adds the client.
pub fn verify_access_token(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    audience: &str,
    now: u64,
    leeway: u64,
) -> Result<Map<String, Value>, JwtError> {
    verify_signed(
        token,
        jwks,
        issuer,
        audience,
        now,
        leeway,
        &["exp", "iss", "aud", "sub"],
    )
}

/// The `aud` values of a token whose audience was refused, for an explanatory log line; the
/// payload is read without verification and only ever logged.
pub fn unverified_audience(token: &str) -> Vec<String> {
    let claims = jsonwebtoken::dangerous::insecure_decode::<Map<String, Value>>(token);
    match claims.ok().and_then(|d| d.claims.get("aud").cloned()) {
        Some(Value::String(a)) => vec![a],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// What a verified back-channel logout token names (OpenID Connect Back-Channel Logout 1.0).
#[derive(Debug, PartialEq, Eq)]
pub struct LogoutToken {
    pub sid: Option<String>,
    pub sub: Option<String>,
}

/// Verifies a `logout_token`: signature, iss, aud ∋ client_id, iat, the back-channel logout
/// event, `sid` or `sub`, and no `nonce` (so an ID token cannot be passed off as one).
pub fn verify_logout_token(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    client_id: &str,
    now: u64,
    leeway: u64,
) -> Result<LogoutToken, JwtError> {
    let claims = verify_signed(
        token,
        jwks,
        issuer,
        client_id,
        now,
        leeway,
        &["iat", "iss", "aud"],
    )?;
    let is_logout = matches!(claims.get("events"), Some(Value::Object(e)) if e.contains_key(BACKCHANNEL_LOGOUT_EVENT));
    if !is_logout {
        return Err(JwtError::MissingClaim("events".into()));
    }
    if claims.contains_key("nonce") {
        return Err(JwtError::Nonce);
    }
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
    let (sid, sub) = (text("sid"), text("sub"));
    if sid.is_none() && sub.is_none() {
        return Err(JwtError::MissingClaim("sid".into()));
    }
    Ok(LogoutToken { sid, sub })
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

    const WANT: Expectations<'static> = Expectations {
        issuer: "http://kc/realms/test",
        client_id: "test",
        nonce: "n1",
        now: NOW,
        leeway: 60,
    };

    fn check(token: &str) -> Result<Map<String, Value>, JwtError> {
        verify(token, &serde_json::from_str(JWKS).unwrap(), &WANT)
    }

    #[test]
    fn a_refreshed_id_token_needs_no_nonce_but_the_same_user() {
        let jwks: JwkSet = serde_json::from_str(JWKS).unwrap();
        let mut c = with("groups", json!(["/new"]));
        c.as_object_mut().unwrap().remove("nonce");
        let t = sign(c, Some("test-key"), Algorithm::RS256);
        assert_eq!(check(&t), Err(JwtError::Nonce));
        let claims = verify_refreshed(&t, &jwks, &WANT, "u1").unwrap();
        assert_eq!(claims["groups"], json!(["/new"]));
        assert_eq!(
            verify_refreshed(&t, &jwks, &WANT, "u2"),
            Err(JwtError::Subject)
        );
        let other_client = sign(
            with("aud", json!("other")),
            Some("test-key"),
            Algorithm::RS256,
        );
        assert_eq!(
            verify_refreshed(&other_client, &jwks, &WANT, "u1"),
            Err(JwtError::Audience("test".into()))
        );
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
        assert_eq!(check(&t), Err(JwtError::Audience("test".into())));
        let mut c = with("aud", json!(["account", "test"]));
        c.as_object_mut().unwrap().remove("azp");
        assert_eq!(
            check(&sign(c, Some("test-key"), Algorithm::RS256)),
            Err(JwtError::AuthorizedParty)
        );
        let t = sign(
            with("azp", json!("other")),
            Some("test-key"),
            Algorithm::RS256,
        );
        assert_eq!(check(&t), Err(JwtError::AuthorizedParty));
    }

    #[test]
    fn each_broken_claim_is_named() {
        let rs = |c| sign(c, Some("test-key"), Algorithm::RS256);
        assert_eq!(
            check(&rs(with("iss", json!("http://evil")))),
            Err(JwtError::Issuer("http://kc/realms/test".into()))
        );
        assert_eq!(
            check(&rs(with("exp", json!(NOW - 61)))),
            Err(JwtError::Expired)
        );
        assert_eq!(
            check(&rs(with("iat", json!(NOW + 120)))),
            Err(JwtError::IssuedInFuture(60))
        );
        assert_eq!(
            check(&rs(with("nonce", json!("other")))),
            Err(JwtError::Nonce)
        );
        let mut c = good();
        c.as_object_mut().unwrap().remove("nonce");
        assert_eq!(check(&rs(c)), Err(JwtError::Nonce));
    }

    #[test]
    fn bearer_tokens_need_this_service_as_audience() {
        let jwks: JwkSet = serde_json::from_str(JWKS).unwrap();
        let at = sign(
            with("aud", json!("account")),
            Some("test-key"),
            Algorithm::RS256,
        );
        let check = |aud| verify_access_token(&at, &jwks, "http://kc/realms/test", aud, NOW, 60);
        assert_eq!(check("test"), Err(JwtError::Audience("test".into())));
        assert!(check("account").is_ok());
        assert_eq!(unverified_audience(&at), ["account"]);
        let wrong_iss = sign(
            with("iss", json!("http://evil")),
            Some("test-key"),
            Algorithm::RS256,
        );
        assert!(matches!(
            verify_access_token(&wrong_iss, &jwks, "http://kc/realms/test", "test", NOW, 60),
            Err(JwtError::Issuer(_))
        ));
        let expired = sign(
            with("exp", json!(NOW - 61)),
            Some("test-key"),
            Algorithm::RS256,
        );
        assert_eq!(
            verify_access_token(&expired, &jwks, "http://kc/realms/test", "test", NOW, 60),
            Err(JwtError::Expired)
        );
        let payload = expired.split('.').nth(1).unwrap();
        let none = format!(
            "{}.{payload}.",
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                br#"{"alg":"none","kid":"test-key"}"#
            )
        );
        assert!(
            verify_access_token(&none, &jwks, "http://kc/realms/test", "test", NOW, 60).is_err()
        );
    }

    #[test]
    fn logout_tokens_are_checked_like_the_spec_says() {
        let jwks: JwkSet = serde_json::from_str(JWKS).unwrap();
        let event = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
        let base = json!({"iss":"http://kc/realms/test","aud":"test","iat":NOW,"jti":"j",
                          "sid":"s1","events":event});
        let check = |c: Value| {
            let t = sign(c, Some("test-key"), Algorithm::RS256);
            verify_logout_token(&t, &jwks, "http://kc/realms/test", "test", NOW, 60)
        };
        assert_eq!(
            check(base.clone()),
            Ok(LogoutToken {
                sid: Some("s1".into()),
                sub: None
            })
        );
        let mut no_event = base.clone();
        no_event.as_object_mut().unwrap().remove("events");
        assert!(check(no_event).is_err());
        let mut with_nonce = base.clone();
        with_nonce["nonce"] = json!("n");
        assert_eq!(check(with_nonce), Err(JwtError::Nonce));
        let mut nobody = base.clone();
        nobody.as_object_mut().unwrap().remove("sid");
        assert!(check(nobody).is_err());
        let mut other_aud = base;
        other_aud["aud"] = json!("other");
        assert!(check(other_aud).is_err());
        // An ID token (it carries a nonce and no event) is not a logout token.
        assert!(check(good()).is_err());
    }

    #[test]
    fn forged_tokens_are_refused() {
        assert_eq!(
            check(&sign(good(), Some("test-key"), Algorithm::HS256)),
            Err(JwtError::Algorithm("HS256".into()))
        );
        assert_eq!(
            check(&sign(good(), Some("other"), Algorithm::RS256)),
            Err(JwtError::UnknownKey("other".into()))
        );
        let t = sign(good(), Some("test-key"), Algorithm::RS256);
        let (head, _) = t.rsplit_once('.').unwrap();
        let forged_payload = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&with("sub", json!("admin"))).unwrap(),
        );
        let mut parts: Vec<&str> = t.split('.').collect();
        parts[1] = &forged_payload;
        assert_eq!(check(&parts.join(".")), Err(JwtError::Signature));
        assert!(check(&format!("{head}.")).is_err());
        assert_eq!(check("not.a.jwt"), Err(JwtError::Malformed));
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

    #[test]
    fn token_times_accept_every_numeric_date_shape_and_name_the_real_cause() {
        let rs = |c| sign(c, Some("test-key"), Algorithm::RS256);
        // The field report: a non-integer iat (RFC 7519 NumericDate may be one).
        let t = rs(with("iat", json!(1_800_000_000.25)));
        assert!(check(&t).is_ok(), "{:?}", check(&t));
        let mut c = with("exp", json!((NOW + 300) as f64 + 0.75));
        c["iat"] = json!(1.8e9);
        c["nbf"] = json!(NOW as f64 - 0.5);
        c["auth_time"] = json!(NOW as f64 - 10.125);
        assert!(check(&rs(c)).is_ok());
        // A fractional exp is not stretched: it ends within its second.
        assert_eq!(
            check(&rs(with("exp", json!((NOW - 60) as f64 + 0.99)))),
            Err(JwtError::Expired)
        );

        let mut c = good();
        c.as_object_mut().unwrap().remove("iat");
        assert_eq!(check(&rs(c)), Err(JwtError::MissingClaim("iat".into())));
        let err = check(&rs(with("iat", json!("1800000000")))).unwrap_err();
        assert!(matches!(err, JwtError::Time(TimeError::WrongType { .. })));
        assert_eq!(
            err.to_string(),
            "the token's claim \"iat\" is a string, not a number of seconds"
        );
        let err = check(&rs(with("exp", json!(-1)))).unwrap_err();
        assert!(
            err.to_string().contains("\"exp\" is -1, out of range"),
            "{err}"
        );
        assert!(matches!(
            check(&rs(with("auth_time", json!(true)))),
            Err(JwtError::Time(_))
        ));
        assert_eq!(
            check(&rs(with("nbf", json!(NOW + 61)))),
            Err(JwtError::NotYetValid(60))
        );

        // Access and logout tokens read their times the same way.
        let jwks: JwkSet = serde_json::from_str(JWKS).unwrap();
        let at = rs(with("exp", json!((NOW + 60) as f64 + 0.5)));
        assert!(verify_access_token(&at, &jwks, "http://kc/realms/test", "test", NOW, 60).is_ok());
        let event = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
        let logout = rs(
            json!({"iss":"http://kc/realms/test","aud":"test","iat":NOW as f64 + 0.5,
                               "jti":"j","sid":"s1","events":event}),
        );
        assert!(
            verify_logout_token(&logout, &jwks, "http://kc/realms/test", "test", NOW, 60).is_ok()
        );
    }
}
