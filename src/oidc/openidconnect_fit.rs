//! How `openidconnect` 4.x does on the module's real inputs: the record behind README's
//! "Dependencies". Where it does the job the module uses it (discovery metadata, PKCE, the
//! authorization request); these tests pin down the inputs where it does not, so that a new
//! version that fixes them shows up as a failing test here.

use chrono::{DateTime, Utc};
use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreTokenResponse,
};
use openidconnect::{
    ClaimsVerificationError, ClientId, IssuerUrl, Nonce, SignatureVerificationError,
};
use serde_json::{json, Value};

use super::id_token::{self, Expectations, JwtError};
use super::jws::JwkSet;
use super::token;

/// A real Keycloak 26.5 token response (password grant, realm tests/keycloak/realm-test.json)
/// and the realm's JWKS at the time: one RS256 signing key and one RSA-OAEP encryption key.
const KEYCLOAK_TOKENS: &str = include_str!("testdata/keycloak-26-token-response.json");
const KEYCLOAK_JWKS: &str = include_str!("testdata/keycloak-26-jwks.json");
const KEYCLOAK_ISSUER: &str = "http://127.0.0.1:38775/realms/test";
/// The Keycloak tokens' `iat`.
const KEYCLOAK_IAT: i64 = 1_796_025_355;
const NOW: i64 = 1_800_000_000;

const ALL_ALGS: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap()
}

/// `openidconnect`'s ID-token verifier set up like the module's: every asymmetric algorithm,
/// the clock at `now`.
fn verifier(issuer: &str, jwks: &str, now: i64) -> CoreIdTokenVerifier<'static> {
    let jwks: CoreJsonWebKeySet = serde_json::from_str(jwks).unwrap();
    CoreIdTokenVerifier::new_public_client(
        ClientId::new("test".into()),
        IssuerUrl::new(issuer.into()).unwrap(),
        jwks,
    )
    .set_allowed_algs(ALL_ALGS)
    .set_time_fn(move || at(now))
}

fn oidc_verify(v: &CoreIdTokenVerifier, token: &str) -> Result<String, ClaimsVerificationError> {
    let token: CoreIdToken = token
        .parse()
        .map_err(|e| ClaimsVerificationError::Other(format!("the ID token does not parse: {e}")))?;
    let nonce = Nonce::new("n1".into());
    token
        .claims(v, &nonce)
        .map(|c| c.subject().as_str().to_string())
}

/// A JWKS with one key per algorithm Keycloak 26 offers and an ID token signed with each
/// (see `test_vectors`); claims: iss http://kc/realms/test, aud and azp test, nonce n1, iat
/// 1800000000, exp 1800000300.
fn vectors() -> (String, Vec<(String, String)>) {
    let (jwks, tokens) = super::test_vectors::algorithm_vectors();
    (jwks.to_string(), tokens)
}

#[test]
fn openidconnect_verifies_id_tokens_of_nine_keycloak_algorithms_but_not_es512_or_ed448() {
    let (jwks, tokens) = vectors();
    let v = verifier("http://kc/realms/test", &jwks, NOW);
    let ours: JwkSet = serde_json::from_str(&jwks).unwrap();
    let want = Expectations {
        issuer: "http://kc/realms/test",
        client_id: "test",
        nonce: "n1",
        now: NOW as u64,
        leeway: 60,
    };
    for (name, token) in &tokens {
        assert!(
            id_token::verify(token, &ours, &want).is_ok(),
            "ours: {name}"
        );
        let theirs = oidc_verify(&v, token);
        match name.as_str() {
            "ES512" => assert_eq!(
                theirs,
                Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::UnsupportedAlg("ES512".into())
                ))
            ),
            // The Ed448 key's `crv` is not a curve `openidconnect` knows: it reads as absent.
            "Ed448" => assert_eq!(
                theirs,
                Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::InvalidKey("EdDSA key must specify `crv`".into())
                ))
            ),
            _ => assert_eq!(theirs.as_deref(), Ok("u1"), "{name}"),
        }
    }
}

#[test]
fn openidconnect_verifies_a_real_keycloak_id_token() {
    let tokens: Value = serde_json::from_str(KEYCLOAK_TOKENS).unwrap();
    let id = tokens["id_token"].as_str().unwrap();
    let v = verifier(KEYCLOAK_ISSUER, KEYCLOAK_JWKS, KEYCLOAK_IAT + 10);
    let token: CoreIdToken = id.parse().unwrap();
    // A password grant sends no nonce.
    let claims = token.claims(&v, |n: Option<&Nonce>| match n {
        None => Ok(()),
        Some(_) => Err("unexpected nonce".to_string()),
    });
    assert_eq!(
        claims.unwrap().subject().as_str(),
        "3d9d31bb-1109-412d-aba2-203d18789a78"
    );
}

/// Signs `claims` as an ID token with the RS256 key of testdata/jwks.json.
fn rs256(claims: &Value) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-key".into());
    let key = EncodingKey::from_rsa_der(include_bytes!("testdata/rsa.der"));
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn claims() -> Value {
    json!({"iss":"http://kc/realms/test","aud":"test","azp":"test","sub":"u1",
           "exp":NOW+300,"iat":NOW,"nonce":"n1"})
}

fn with(field: &str, v: Value) -> Value {
    let mut c = claims();
    c[field] = v;
    c
}

/// What the module's verifier and `openidconnect`'s say about the same token, at `NOW`.
fn both(
    c: &Value,
) -> (
    Result<(), JwtError>,
    Result<String, ClaimsVerificationError>,
) {
    const JWKS: &str = include_str!("testdata/jwks.json");
    let token = rs256(c);
    let ours: JwkSet = serde_json::from_str(JWKS).unwrap();
    let want = Expectations {
        issuer: "http://kc/realms/test",
        client_id: "test",
        nonce: "n1",
        now: NOW as u64,
        leeway: 60,
    };
    let mine = id_token::verify(&token, &ours, &want).map(|_| ());
    (
        mine,
        oidc_verify(&verifier("http://kc/realms/test", JWKS, NOW), &token),
    )
}

#[test]
fn openidconnect_leaves_azp_and_nbf_unchecked_and_has_no_leeway() {
    // OpenID Connect Core §3.1.3.7 step 5: azp, when present, must be this client.
    let (mine, theirs) = both(&with("azp", json!("another-client")));
    assert_eq!(mine, Err(JwtError::AuthorizedParty));
    assert!(theirs.is_ok(), "{theirs:?}");
    // RFC 7519 §4.1.5: not before a minute from now.
    let (mine, theirs) = both(&with("nbf", json!(NOW + 600)));
    assert_eq!(mine, Err(JwtError::NotYetValid(60)));
    assert!(theirs.is_ok(), "{theirs:?}");
    // Expired 30 s ago, within the module's 60 s leeway for clock differences.
    let (mine, theirs) = both(&with("exp", json!(NOW - 30)));
    assert_eq!(mine, Ok(()));
    assert!(
        matches!(theirs, Err(ClaimsVerificationError::Expired(_))),
        "{theirs:?}"
    );
}

#[test]
fn openidconnect_refuses_a_keycloak_id_token_with_a_second_audience_unless_told_to_trust_it() {
    // Keycloak adds audiences with an Audience mapper; azp then names the client (§3.1.3.7).
    let (mine, theirs) = both(&with("aud", json!(["test", "account"])));
    assert_eq!(mine, Ok(()));
    assert!(
        matches!(theirs, Err(ClaimsVerificationError::InvalidAudience(_))),
        "{theirs:?}"
    );
}

#[test]
fn openidconnect_reads_fractional_token_times_and_names_a_string_one_less_clearly() {
    // The field report: iat 1800000000.25 (RFC 7519 NumericDate may be non-integer).
    let (mine, theirs) = both(&with("iat", json!(1_800_000_000.25)));
    assert_eq!(mine, Ok(()));
    assert!(theirs.is_ok(), "{theirs:?}");
    let (mine, theirs) = both(&with("iat", json!("1800000000")));
    assert_eq!(
        mine.unwrap_err().to_string(),
        "the token's claim \"iat\" is a string, not a number of seconds"
    );
    let theirs = theirs.unwrap_err().to_string();
    assert!(theirs.contains("does not parse"), "{theirs}");
    // A negative exp is a date in 1969 to it, an out-of-range value to the module.
    let (mine, theirs) = both(&with("exp", json!(-1)));
    assert!(mine.unwrap_err().to_string().contains("out of range"));
    assert!(
        matches!(theirs, Err(ClaimsVerificationError::Expired(_))),
        "{theirs:?}"
    );
}

#[test]
fn openidconnect_reads_keycloaks_token_response_but_not_string_or_fractional_lifetimes() {
    let kc: CoreTokenResponse = serde_json::from_str(KEYCLOAK_TOKENS).unwrap();
    use openidconnect::OAuth2TokenResponse;
    assert_eq!(kc.expires_in().map(|d| d.as_secs()), Some(300));
    let ours = token::parse(200, KEYCLOAK_TOKENS.as_bytes()).unwrap();
    assert_eq!(
        (ours.expires_in, ours.refresh_expires_in),
        (Some(300), Some(1800))
    );

    // The stand-in provider with IDP_NUMBERS=fractional, like the field report's provider.
    let body = |expires_in: &str| {
        format!(r#"{{"access_token":"a","token_type":"Bearer","expires_in":{expires_in}}}"#)
    };
    for lifetime in [r#""300""#, "299.75"] {
        let theirs = serde_json::from_str::<CoreTokenResponse>(&body(lifetime));
        assert!(theirs.is_err(), "{lifetime}");
        assert!(
            token::parse(200, body(lifetime).as_bytes()).is_ok(),
            "{lifetime}"
        );
    }
    // RFC 6749 §5.1 makes token_type required; a refresh answer without it is still usable.
    let untyped = r#"{"access_token":"a","expires_in":300}"#;
    assert!(serde_json::from_str::<CoreTokenResponse>(untyped).is_err());
    assert!(token::parse(200, untyped.as_bytes()).is_ok());
}

#[test]
fn openidconnect_cannot_hint_a_logout_with_an_id_token_whose_claims_it_does_not_read() {
    // RP-Initiated Logout 1.0 §2: id_token_hint is the ID token as received. openidconnect's
    // LogoutRequest::set_id_token_hint takes a parsed IdToken, and parsing reads the claims:
    // Auth0 sends updated_at as a date string (OIDC Core §5.1 says seconds), some providers
    // email_verified as "true". The module accepts both tokens (neither claim is checked) and
    // must hint the logout with them, so end_session_url stays the module's.
    for (claim, value) in [
        ("updated_at", json!("2023-01-01T00:00:00.000Z")),
        ("email_verified", json!("true")),
    ] {
        let (mine, _) = both(&with(claim, value.clone()));
        assert_eq!(mine, Ok(()), "{claim}");
        let token = rs256(&with(claim, value));
        let parsed: Result<CoreIdToken, _> = token.parse();
        assert!(parsed.is_err(), "{claim}");
        let url = super::authorize::end_session_url(
            "http://kc/logout",
            "test",
            Some(&token),
            "http://app/",
        );
        assert!(url.contains(&format!("id_token_hint={token}")), "{url}");
    }
}
