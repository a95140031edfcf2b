//! Verification of the provider's signed tokens against its JWKS: ID tokens (OpenID Connect
//! Core 3.1.3.7), access tokens presented as bearer tokens, and back-channel logout tokens.

use serde_json::{Map, Value};

use super::jws::{self, JwkSet, JwsError};
use super::numeric::{self, TimeError};

/// Why a token was refused; `Display` is the log text, naming the claim or key at fault.
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
    #[error("the token is not an access token: {0}")]
    NotAnAccessToken(&'static str),
    #[error("the token is not a back-channel logout token: {0}")]
    NotALogoutToken(&'static str),
}

impl From<JwsError> for JwtError {
    fn from(e: JwsError) -> JwtError {
        match e {
            JwsError::Malformed => JwtError::Malformed,
            JwsError::Algorithm(a) => JwtError::Algorithm(a),
            JwsError::BadKey => JwtError::BadKey,
            JwsError::Signature => JwtError::Signature,
        }
    }
}

/// Keycloak's role claims (`realm_access.roles`, `resource_access.<client>.roles`): its default
/// "roles" client scope puts them in the access token only.
pub const ROLE_CLAIMS: &[&str] = &["realm_access", "resource_access"];

/// What an ID token must say for this login (OpenID Connect Core §3.1.3.7).
pub struct Expectations<'a> {
    /// The provider's issuer identifier: `iss` must equal it.
    pub issuer: &'a str,
    /// This relying party's client id: `aud` must contain it, `azp` (when present) be it.
    pub client_id: &'a str,
    /// The nonce sent in the authorization request (OpenID Connect Core §3.1.2.1).
    pub nonce: &'a str,
    /// The current Unix time in seconds.
    pub now: u64,
    /// Allowed clock difference in seconds.
    pub leeway: u64,
}

/// The `kid` of a token's header, to decide whether the JWKS must be fetched again.
pub fn key_id(token: &str) -> Option<String> {
    jws::header(token)?.kid
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
        Some(want.client_id),
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
/// `kid`, the signature, `iss`, `aud` containing `audience` (when given), `exp`, `iat` and `nbf` (with
/// `leeway`, in any NumericDate shape), and the `required` claims.
fn verify_signed(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    audience: Option<&str>,
    now: u64,
    leeway: u64,
    required: &[&str],
) -> Result<Map<String, Value>, JwtError> {
    let jws = jws::parse(token)?;
    let jwk = match &jws.header.kid {
        Some(kid) => jwks
            .find(kid)
            .ok_or_else(|| JwtError::UnknownKey(kid.clone()))?,
        // Without a kid only an unambiguous JWKS can be used.
        None if jwks.keys.len() == 1 => &jwks.keys[0],
        None => return Err(JwtError::UnknownKey(String::new())),
    };
    jws::verify(&jws, jwk)?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&jws.payload).map_err(|_| JwtError::Malformed)?;
    if let Some(missing) = required.iter().find(|c| !claims.contains_key(**c)) {
        return Err(JwtError::MissingClaim(missing.to_string()));
    }
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(JwtError::Issuer(issuer.to_string()));
    }
    if let Some(audience) = audience {
        let for_audience = match claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(a)) => a.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !for_audience {
            return Err(JwtError::Audience(audience.to_string()));
        }
    }
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

/// An access token presented as `Authorization: Bearer`: signature, iss, exp, an audience of
/// this service, and that it is an access token at all ([`token_kind`]): with the client id
/// as audience, this client's ID tokens, logout tokens and (JWT) refresh tokens would verify
/// too. Keycloak's access tokens carry `aud: account` unless an Audience mapper adds the
/// client.
pub fn verify_access_token(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    audience: &str,
    now: u64,
    leeway: u64,
) -> Result<Map<String, Value>, JwtError> {
    let claims = verify_signed(
        token,
        jwks,
        issuer,
        Some(audience),
        now,
        leeway,
        &["exp", "iss", "aud", "sub"],
    )?;
    let typ = jws::header(token).and_then(|h| h.typ);
    match token_kind(typ.as_deref(), &claims) {
        TokenKind::Access => Ok(claims),
        TokenKind::Other(why) => Err(JwtError::NotAnAccessToken(why)),
    }
}

/// The role claims (`realm_access`, `resource_access`) of the access token that the token
/// endpoint just gave this client at login or refresh; `Ok(None)` when the access token is
/// opaque (not a JWT). Checked: signature by `kid` from the JWKS (an allowed asymmetric
/// algorithm), `iss`, `exp`, that it is an access token ([`token_kind`]), `azp` (when
/// present) is this client and `sub` (when present) is the ID token's user. Not checked: the
/// audience. The token came straight from the token endpoint in answer to this client's own
/// grant, and Keycloak's access tokens say `aud: account` unless an Audience mapper is added;
/// the audience matters for a token *presented* to us ([`verify_access_token`]), not here.
pub fn access_token_roles(
    token: &str,
    jwks: &JwkSet,
    want: &Expectations,
    sub: &str,
) -> Result<Option<Map<String, Value>>, JwtError> {
    let Some(header) = jws::header(token) else {
        return Ok(None);
    };
    let mut claims = verify_signed(
        token,
        jwks,
        want.issuer,
        None,
        want.now,
        want.leeway,
        &["exp", "iss"],
    )?;
    if let TokenKind::Other(why) = token_kind(header.typ.as_deref(), &claims) {
        return Err(JwtError::NotAnAccessToken(why));
    }
    match claims.get("azp") {
        Some(Value::String(azp)) if azp != want.client_id => return Err(JwtError::AuthorizedParty),
        _ => {}
    }
    match claims.get("sub") {
        Some(Value::String(s)) if s != sub => return Err(JwtError::Subject),
        _ => {}
    }
    claims.retain(|k, _| ROLE_CLAIMS.contains(&k.as_str()));
    Ok(Some(claims))
}

/// What a verified token is for, as far as its marks tell.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenKind {
    Access,
    /// Not an access token, and why (for the log).
    Other(&'static str),
}

/// Tells an access token from the provider's other JWTs. An explicit type decides: the header
/// `typ` `at+jwt` (RFC 9068 §2.1) or Keycloak's payload `typ` `Bearer` make an access token;
/// `logout+jwt` (Back-Channel Logout 1.0 §2.4) or any other payload `typ` (Keycloak: `ID`,
/// `Refresh`, `Offline`, `Logout`) do not. Without one, the claims only ID tokens and logout
/// tokens carry decide: `nonce`, `at_hash`, `c_hash` (OpenID Connect Core §2, §3.1.3.6) and
/// `events` (Back-Channel Logout 1.0 §2.4).
pub fn token_kind(header_typ: Option<&str>, claims: &Map<String, Value>) -> TokenKind {
    match header_typ.map(media_type).as_deref() {
        Some("at+jwt") => return TokenKind::Access,
        Some("logout+jwt") => {
            return TokenKind::Other("its header typ is logout+jwt (a back-channel logout token)")
        }
        Some(t) if t.ends_with("+jwt") => {
            return TokenKind::Other("its header typ names another kind of JWT")
        }
        _ => {}
    }
    match claims.get("typ").map(|t| t.as_str().unwrap_or_default()) {
        Some(t) if t.eq_ignore_ascii_case("bearer") => return TokenKind::Access,
        Some(t) if t.eq_ignore_ascii_case("id") => {
            return TokenKind::Other("its typ is \"ID\" (an ID token)")
        }
        Some(t) if t.eq_ignore_ascii_case("refresh") || t.eq_ignore_ascii_case("offline") => {
            return TokenKind::Other("its typ is \"Refresh\" or \"Offline\" (a refresh token)")
        }
        Some(t) if t.eq_ignore_ascii_case("logout") => {
            return TokenKind::Other("its typ is \"Logout\" (a back-channel logout token)")
        }
        Some(_) => return TokenKind::Other("its typ is not \"Bearer\""),
        None => {}
    }
    if claims.contains_key("events") {
        TokenKind::Other("it has an events claim (a back-channel logout token)")
    } else if ["nonce", "at_hash", "c_hash"]
        .iter()
        .any(|c| claims.contains_key(*c))
    {
        TokenKind::Other("it has a nonce, at_hash or c_hash claim (an ID token)")
    } else {
        TokenKind::Access
    }
}

/// A header `typ` as the media type it names, lowercase and without `application/` (RFC 7515
/// §4.1.9 lets it be left out).
fn media_type(typ: &str) -> String {
    let t = typ.to_ascii_lowercase();
    match t.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => t,
    }
}

/// The `aud` values of a token whose audience was refused, for an explanatory log line; the
/// payload is read without verification and only ever logged.
pub fn unverified_audience(token: &str) -> Vec<String> {
    let claims = jws::parse(token)
        .ok()
        .and_then(|jws| serde_json::from_slice::<Map<String, Value>>(&jws.payload).ok());
    match claims.and_then(|mut c| c.remove("aud")) {
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
    /// The provider session that ended (`sid`, Back-Channel Logout 1.0 §2.4).
    pub sid: Option<String>,
    /// The user whose sessions ended (`sub`).
    pub sub: Option<String>,
}

/// Verifies a `logout_token`: signature, iss, aud ∋ client_id, iat, the back-channel logout
/// event, `sid` or `sub`, and no `nonce` (so an ID token cannot be passed off as one). An
/// explicit type must be a logout token's (Back-Channel Logout 1.0 §2.4, §4.1 cross-JWT
/// confusion): the header `typ` absent, `JWT` (Keycloak's) or `logout+jwt`; Keycloak's payload
/// `typ`, when present, `Logout`.
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
        Some(client_id),
        now,
        leeway,
        &["iat", "iss", "aud"],
    )?;
    let media = jws::header(token).and_then(|h| h.typ.as_deref().map(media_type));
    if !matches!(media.as_deref(), None | Some("jwt") | Some("logout+jwt")) {
        return Err(JwtError::NotALogoutToken(
            "its header typ names another kind of JWT",
        ));
    }
    if matches!(claims.get("typ"), Some(t) if !t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("logout")))
    {
        return Err(JwtError::NotALogoutToken(
            "its typ claim names another kind of token",
        ));
    }
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

/// Whether `a` and `b` are equal, in time that depends on their lengths only: for nonces,
/// states and cookie values an attacker may probe.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
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

    /// A valid back-channel logout token's claims for session `s1`.
    fn logout_claims() -> Value {
        let event = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
        json!({"iss":"http://kc/realms/test","aud":"test","iat":NOW,"jti":"j",
               "sid":"s1","events":event})
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

    /// A Keycloak access token's claims (with the Audience mapper: `aud` has the client).
    fn access() -> Value {
        json!({"iss":"http://kc/realms/test","aud":["test","account"],"azp":"test","sub":"u1",
               "exp":NOW+300,"iat":NOW,"typ":"Bearer","sid":"s1","scope":"openid",
               "realm_access":{"roles":["user"]}})
    }

    fn sign_with_typ(claims: Value, typ: &str) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("test-key".into());
        header.typ = Some(typ.into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_der(DER)).unwrap()
    }

    fn as_bearer(token: &str) -> Result<Map<String, Value>, JwtError> {
        let jwks: JwkSet = serde_json::from_str(JWKS).unwrap();
        verify_access_token(token, &jwks, "http://kc/realms/test", "test", NOW, 60)
    }

    #[test]
    fn an_access_token_of_this_client_passes_as_a_bearer_token() {
        assert!(as_bearer(&sign_with_typ(access(), "JWT")).is_ok());
        let mut generic = access();
        generic.as_object_mut().unwrap().remove("typ");
        assert!(as_bearer(&sign_with_typ(generic.clone(), "at+jwt")).is_ok());
        assert!(as_bearer(&sign_with_typ(generic.clone(), "application/at+jwt")).is_ok());
        assert!(as_bearer(&sign_with_typ(generic, "JWT")).is_ok());
        // Keycloak's "Nonce backwards compatible" mapper puts the nonce into access tokens:
        // their typ still says Bearer.
        let mut with_nonce = access();
        with_nonce["nonce"] = json!("n1");
        assert!(as_bearer(&sign_with_typ(with_nonce, "JWT")).is_ok());
    }

    #[test]
    fn id_logout_and_refresh_tokens_of_this_client_never_pass_as_bearer_tokens() {
        let kind = |r: Result<Map<String, Value>, JwtError>| match r {
            Err(JwtError::NotAnAccessToken(why)) => why,
            other => panic!("not refused as another kind of token: {other:?}"),
        };
        // A Keycloak ID token (typ ID) and a generic one (nonce, at_hash).
        let mut kc_id = good();
        kc_id["typ"] = json!("ID");
        assert!(kind(as_bearer(&sign_with_typ(kc_id, "JWT"))).contains("an ID token"));
        assert!(kind(as_bearer(&sign_with_typ(good(), "JWT"))).contains("an ID token"));
        let mut hashed = good();
        hashed.as_object_mut().unwrap().remove("nonce");
        hashed["at_hash"] = json!("x");
        assert!(kind(as_bearer(&sign_with_typ(hashed, "JWT"))).contains("an ID token"));
        // Keycloak 24+ logout token: header logout+jwt, typ Logout, events, exp.
        let event = json!({"http://schemas.openid.net/event/backchannel-logout": {}});
        let mut logout = access();
        logout["typ"] = json!("Logout");
        logout["events"] = event.clone();
        assert!(kind(as_bearer(&sign_with_typ(logout.clone(), "logout+jwt"))).contains("logout"));
        assert!(kind(as_bearer(&sign_with_typ(logout, "JWT"))).contains("logout"));
        let mut generic_logout = access();
        generic_logout.as_object_mut().unwrap().remove("typ");
        generic_logout["events"] = event;
        assert!(kind(as_bearer(&sign_with_typ(generic_logout, "JWT"))).contains("logout"));
        // Keycloak refresh and offline tokens (typ Refresh / Offline), should one be a JWT
        // this client's audience and an asymmetric signature.
        for typ in ["Refresh", "Offline"] {
            let mut refresh = access();
            refresh["typ"] = json!(typ);
            assert!(kind(as_bearer(&sign_with_typ(refresh, "JWT"))).contains("a refresh token"));
        }
        let mut unknown = access();
        unknown["typ"] = json!("Serialized-ID");
        assert!(kind(as_bearer(&sign_with_typ(unknown, "JWT"))).contains("not \"Bearer\""));
        assert!(kind(as_bearer(&sign_with_typ(access(), "secevent+jwt"))).contains("header typ"));
    }

    #[test]
    fn roles_are_read_from_keycloaks_access_token_whatever_its_audience() {
        let jwks: JwkSet = serde_json::from_str(JWKS).unwrap();
        let roles = |c: Value| access_token_roles(&sign_with_typ(c, "JWT"), &jwks, &WANT, "u1");
        // Keycloak's default: aud account, roles only here.
        let mut kc = access();
        kc["aud"] = json!("account");
        kc["resource_access"] = json!({"test":{"roles":["editor"]}});
        let got = roles(kc.clone()).unwrap().unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"realm_access":{"roles":["user"]},"resource_access":{"test":{"roles":["editor"]}}})
        );
        assert_eq!(
            access_token_roles("opaque-token", &jwks, &WANT, "u1"),
            Ok(None)
        );
        let mut other_user = kc.clone();
        other_user["sub"] = json!("u2");
        assert_eq!(roles(other_user), Err(JwtError::Subject));
        let mut other_client = kc.clone();
        other_client["azp"] = json!("other");
        assert_eq!(roles(other_client), Err(JwtError::AuthorizedParty));
        let mut expired = kc.clone();
        expired["exp"] = json!(NOW - 61);
        assert_eq!(roles(expired), Err(JwtError::Expired));
        let mut foreign = kc.clone();
        foreign["iss"] = json!("http://evil");
        assert!(matches!(roles(foreign), Err(JwtError::Issuer(_))));
        assert!(matches!(roles(good()), Err(JwtError::NotAnAccessToken(_))));
        let signed = sign_with_typ(kc, "JWT");
        let (head, _) = signed.rsplit_once('.').unwrap();
        assert_eq!(
            access_token_roles(&format!("{head}.AAAA"), &jwks, &WANT, "u1"),
            Err(JwtError::Signature)
        );
    }

    #[test]
    fn bearer_tokens_need_this_service_as_audience() {
        let jwks: JwkSet = serde_json::from_str(JWKS).unwrap();
        let mut account = access();
        account["aud"] = json!("account");
        let at = sign(account, Some("test-key"), Algorithm::RS256);
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
        let base = logout_claims();
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
    fn a_logout_token_typed_as_another_kind_of_jwt_is_refused() {
        let jwks: JwkSet = serde_json::from_str(JWKS).unwrap();
        let claims = logout_claims();
        let check = |typ: Option<&str>, claims: &Value| {
            let t = match typ {
                Some(typ) => sign_with_typ(claims.clone(), typ),
                None => sign(claims.clone(), Some("test-key"), Algorithm::RS256),
            };
            verify_logout_token(&t, &jwks, "http://kc/realms/test", "test", NOW, 60)
        };
        for typ in [
            None,
            Some("JWT"),
            Some("logout+jwt"),
            Some("application/logout+jwt"),
        ] {
            assert!(check(typ, &claims).is_ok(), "{typ:?}");
        }
        // Keycloak's own logout tokens carry the payload typ "Logout".
        let mut keycloak = claims.clone();
        keycloak["typ"] = json!("Logout");
        assert!(check(Some("JWT"), &keycloak).is_ok());
        assert!(matches!(
            check(Some("at+jwt"), &claims),
            Err(JwtError::NotALogoutToken(_))
        ));
        let mut bearer = claims;
        bearer["typ"] = json!("Bearer");
        assert!(matches!(
            check(Some("JWT"), &bearer),
            Err(JwtError::NotALogoutToken(_))
        ));
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
        let mut at = with("exp", json!((NOW + 60) as f64 + 0.5));
        // A nonce marks an ID token, which never passes as an access token.
        at.as_object_mut().unwrap().remove("nonce");
        let at = rs(at);
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
