//! The token endpoint's answer.

use serde::Deserialize;
use zeroize::Zeroize;

#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub id_token: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// Keycloak's lifetime of the refresh token (and so of the login).
    #[serde(default)]
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

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

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
    let t: TokenResponse =
        serde_json::from_slice(body).map_err(|e| TokenError::Malformed(e.to_string()))?;
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
