//! The token endpoint's answer.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use super::numeric;

/// The token endpoint's successful answer (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3), as
/// [`parse`] returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    /// The access token, checked to be RFC 6749 VSCHAR only (it may become a header).
    pub access_token: String,
    /// The ID token, unverified (see [`crate::oidc::id_token::verify`]).
    #[serde(default)]
    pub id_token: Option<String>,
    /// The refresh token (RFC 6749 §6), when the provider issued one.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// Seconds the access token lives (RFC 6749 §5.1), read by [`parse`] in any shape
    /// [`numeric::lifetime`] accepts.
    #[serde(skip_deserializing)]
    pub expires_in: Option<u64>,
    /// Keycloak's lifetime of the refresh token (and so of the login).
    #[serde(skip_deserializing)]
    pub refresh_expires_in: Option<u64>,
}

/// The tokens are credentials: wiped when the answer is dropped.
impl Drop for TokenResponse {
    fn drop(&mut self) {
        self.access_token.zeroize();
        self.id_token.zeroize();
        self.refresh_token.zeroize();
    }
}

/// The lifetimes of a token response as sent: numbers, strings or absent.
#[derive(Deserialize)]
struct Lifetimes {
    #[serde(default)]
    expires_in: Option<Value>,
    #[serde(default)]
    refresh_expires_in: Option<Value>,
}

impl TokenResponse {
    /// Seconds the access token lives from `now` (the answer's arrival): the shorter of
    /// `expires_in` and the `exp` of an access token that is a JWT; either alone when the other
    /// is missing (RFC 6749 §5.1 lets a provider leave `expires_in` out); `None` when the
    /// provider says neither. `expires_in` counts from when the provider answered, up to a
    /// second before `now` in whole seconds, so a second less is taken; 0 is read as "not
    /// said" (no provider issues a token that is dead on arrival). The JWT is read without
    /// verifying it: it came straight from the token endpoint, exactly like `expires_in`, and
    /// only its lifetime is taken.
    pub fn access_token_lifetime(&self, now: u64) -> Option<u64> {
        let said = self.expires_in.filter(|&e| e > 0).map(|e| e - 1);
        let own = self.access_token_exp().map(|exp| exp.saturating_sub(now));
        match (said, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The `exp` of the access token when it is a JWT (unverified, see above).
    fn access_token_exp(&self) -> Option<u64> {
        let payload = self.access_token.split('.').nth(1)?;
        let json = Zeroizing::new(URL_SAFE_NO_PAD.decode(payload).ok()?);
        let claims: Map<String, Value> = serde_json::from_slice(&json).ok()?;
        numeric::numeric_date(&claims, "exp").ok()?
    }
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Why the token endpoint's answer gives no tokens; `Display` is the log text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the provider refused the request: {error}{}{}", if .description.is_empty() { "" } else { ": " }, .description)]
    Refused { error: String, description: String },
    #[error("the token endpoint answered HTTP {0} without an OAuth error body")]
    Status(u16),
    #[error("the token endpoint's answer is not a token response: {0}")]
    Malformed(String),
}

impl TokenError {
    /// A hint for the operator, for the errors a misconfigured client causes.
    pub fn hint(&self) -> &'static str {
        match self {
            TokenError::Refused { error, .. }
                if error == "invalid_client" || error == "unauthorized_client" =>
            {
                " (check client_id and client_secret against the provider's client credentials)"
            }
            TokenError::Refused { error, description }
                if error == "invalid_grant" && description.contains("redirect") =>
            {
                " (the redirect_uri must be registered exactly at the provider)"
            }
            _ => "",
        }
    }
}

/// Reads the token endpoint's answer (RFC 6749 §5.1, §5.2): the tokens for HTTP 200, else the
/// provider's error. A lifetime that is no number of seconds is [`TokenError::Malformed`]
/// naming the field.
pub fn parse(status: u16, body: &[u8]) -> Result<TokenResponse, TokenError> {
    if status != 200 {
        return Err(match serde_json::from_slice::<ErrorBody>(body) {
            Ok(e) => TokenError::Refused {
                error: sanitize(&e.error),
                description: sanitize(e.error_description.as_deref().unwrap_or("")),
            },
            Err(_) => TokenError::Status(status),
        });
    }
    let mut t: TokenResponse =
        serde_json::from_slice(body).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let l: Lifetimes =
        serde_json::from_slice(body).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let lifetime = |field, v: &Option<Value>| {
        numeric::lifetime(field, v.as_ref()).map_err(|e| TokenError::Malformed(e.to_string()))
    };
    t.expires_in = lifetime("expires_in", &l.expires_in)?;
    t.refresh_expires_in = lifetime("refresh_expires_in", &l.refresh_expires_in)?;
    // The access token may be sent upstream as a header, where a control character would
    // split it; a credential cannot be encoded, so such an answer is refused.
    if !crate::header_value::is_vschar_token(&t.access_token) {
        return Err(TokenError::Malformed(
            "access_token is empty or holds characters outside RFC 6749 VSCHAR".into(),
        ));
    }
    Ok(t)
}

/// Provider error texts end up in logs: keep them short and printable.
fn sanitize(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keycloak_token_response_parses() {
        let t = parse(
            200,
            br#"{"access_token":"a","expires_in":300,"refresh_expires_in":1800,
                "refresh_token":"r","token_type":"Bearer","id_token":"i","not-before-policy":0}"#,
        )
        .unwrap();
        assert_eq!(t.id_token.as_deref(), Some("i"));
        assert_eq!(t.refresh_expires_in, Some(1800));
    }

    #[test]
    fn provider_errors_are_reported_with_a_hint() {
        let e = parse(
            401,
            br#"{"error":"unauthorized_client","error_description":"Invalid client secret"}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the provider refused the request: unauthorized_client: Invalid client secret"
        );
        assert!(e.hint().contains("client_secret"));
        assert!(matches!(
            parse(502, b"<html>"),
            Err(TokenError::Status(502))
        ));
        assert!(matches!(parse(200, b"{}"), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn lifetimes_come_as_numbers_strings_or_not_at_all() {
        let body = |extra: &str| format!(r#"{{"access_token":"a","token_type":"Bearer"{extra}}}"#);
        let t = parse(
            200,
            body(r#","expires_in":"300","refresh_expires_in":"1800""#).as_bytes(),
        )
        .unwrap();
        assert_eq!(
            (t.expires_in, t.refresh_expires_in),
            (Some(300), Some(1800))
        );
        let t = parse(200, body(r#","expires_in":299.75"#).as_bytes()).unwrap();
        assert_eq!((t.expires_in, t.refresh_expires_in), (Some(299), None));
        let t = parse(200, body(r#","expires_in":null"#).as_bytes()).unwrap();
        assert_eq!(t.expires_in, None);
        let t = parse(200, body("").as_bytes()).unwrap();
        assert_eq!((t.expires_in, t.refresh_expires_in), (None, None));
        assert_eq!(
            parse(200, body(r#","expires_in":"soon""#).as_bytes()).unwrap_err(),
            TokenError::Malformed(
                "\"expires_in\" is the text \"soon\", not a number of seconds".into()
            )
        );
        let err = parse(200, body(r#","refresh_expires_in":-1"#).as_bytes()).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"refresh_expires_in\" is -1, out of range"),
            "{err}"
        );
    }

    #[test]
    fn without_expires_in_a_jwt_access_token_tells_its_lifetime() {
        let jwt = |payload: &str| {
            format!(
                "eyJhbGciOiJSUzI1NiJ9.{}.sig",
                URL_SAFE_NO_PAD.encode(payload.as_bytes())
            )
        };
        let answer = |at: &str, extra: &str| {
            parse(
                200,
                format!(r#"{{"access_token":"{at}"{extra}}}"#).as_bytes(),
            )
            .unwrap()
        };
        let t = answer(&jwt(r#"{"exp":1040.5,"sub":"u"}"#), "");
        assert_eq!(t.access_token_lifetime(1000), Some(40));
        assert_eq!(t.access_token_lifetime(2000), Some(0), "already expired");
        let t = answer(&jwt(r#"{"exp":1040}"#), r#","expires_in":30"#);
        assert_eq!(
            t.access_token_lifetime(1000),
            Some(29),
            "the shorter one, a second less"
        );
        let t = answer(&jwt(r#"{"exp":1040}"#), r#","expires_in":300"#);
        assert_eq!(t.access_token_lifetime(1000), Some(40), "the shorter one");
        let t = answer(&jwt(r#"{"exp":1040}"#), r#","expires_in":0"#);
        assert_eq!(t.access_token_lifetime(1000), Some(40), "0 says nothing");
        assert_eq!(answer("opaque-token", "").access_token_lifetime(1000), None);
        let t = answer("opaque-token", r#","expires_in":"300""#);
        assert_eq!(t.access_token_lifetime(1000), Some(299));
        assert_eq!(
            answer(&jwt(r#"{"exp":"1040"}"#), "").access_token_lifetime(1000),
            None
        );
    }

    #[test]
    fn an_access_token_that_would_split_a_header_is_refused() {
        for at in [r"a\r\nX-Injected: 1", r"a\nb", r"a\u0000", r"a\u007f", ""] {
            let body = format!(r#"{{"access_token":"{at}","id_token":"i"}}"#);
            assert!(
                matches!(parse(200, body.as_bytes()), Err(TokenError::Malformed(_))),
                "{at}"
            );
        }
    }
}
