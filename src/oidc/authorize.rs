//! The authorization request: PKCE and the URL the browser is sent to.

use base64::Engine;
use openidconnect::{PkceCodeChallenge, PkceCodeVerifier};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroizing;

/// RFC 3986 unreserved characters stay as they are; everything else is escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` percent-encoded for a query or form value: RFC 3986 unreserved characters as they
/// are, every other byte of its UTF-8 as `%XX`.
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// The PKCE `code_challenge` of a `code_verifier` with method `S256` (RFC 7636 §4.2:
/// BASE64URL(SHA256(verifier)), 43 characters), computed by `openidconnect` (`oauth2`).
pub fn pkce_challenge(verifier: &str) -> String {
    PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.to_string()))
        .as_str()
        .to_string()
}

pub struct AuthorizationRequest<'a> {
    pub endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    pub verifier: &'a str,
}

impl AuthorizationRequest<'_> {
    pub fn url(&self) -> String {
        let sep = if self.endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}\
             &code_challenge={}&code_challenge_method=S256",
            self.endpoint,
            encode(self.client_id),
            encode(self.redirect_uri),
            encode(self.scope),
            encode(self.state),
            encode(self.nonce),
            pkce_challenge(self.verifier),
        )
    }
}

/// The form body of the authorization-code exchange; the client authenticates with HTTP Basic.
pub fn code_exchange_body(code: &str, redirect_uri: &str, verifier: &str) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
        encode(code),
        encode(redirect_uri),
        encode(verifier)
    ))
}

/// The form body of a refresh-token grant.
pub fn refresh_body(refresh_token: &str) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "grant_type=refresh_token&refresh_token={}",
        encode(refresh_token)
    ))
}

/// RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0).
pub fn end_session_url(
    endpoint: &str,
    client_id: &str,
    id_token_hint: Option<&str>,
    post_logout_redirect_uri: &str,
) -> String {
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    let hint = id_token_hint
        .map(|t| format!("&id_token_hint={}", encode(t)))
        .unwrap_or_default();
    format!(
        "{endpoint}{sep}client_id={}&post_logout_redirect_uri={}{hint}",
        encode(client_id),
        encode(post_logout_redirect_uri)
    )
}

/// `Authorization: Basic` for client_secret_basic (RFC 6749 2.3.1: form-encode, then base64).
pub fn client_basic_auth(client_id: &str, secret: &str) -> Zeroizing<String> {
    let raw = Zeroizing::new(format!("{}:{}", encode(client_id), encode(secret)));
    let mut header = Zeroizing::new(String::with_capacity(6 + raw.len().div_ceil(3) * 4));
    header.push_str("Basic ");
    base64::engine::general_purpose::STANDARD.encode_string(raw.as_bytes(), &mut header);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkce_challenge_is_the_base64url_sha256_of_the_verifier() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc"
        );
    }

    #[test]
    fn the_authorization_url_carries_every_parameter_escaped() {
        let url = AuthorizationRequest {
            endpoint: "http://idp/auth",
            client_id: "test",
            redirect_uri: "http://app/oauth2/callback",
            scope: "openid email",
            state: "st",
            nonce: "no",
            verifier: "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk",
        }
        .url();
        assert_eq!(
            url,
            "http://idp/auth?response_type=code&client_id=test\
             &redirect_uri=http%3A%2F%2Fapp%2Foauth2%2Fcallback&scope=openid%20email&state=st\
             &nonce=no&code_challenge=ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc\
             &code_challenge_method=S256"
        );
    }

    #[test]
    fn the_end_session_url_carries_the_hint_when_there_is_one() {
        assert_eq!(
            end_session_url("http://kc/logout", "test", Some("a.b.c"), "http://app/"),
            "http://kc/logout?client_id=test&post_logout_redirect_uri=http%3A%2F%2Fapp%2F\
             &id_token_hint=a.b.c"
        );
        assert_eq!(
            end_session_url("http://kc/logout?x=1", "test", None, "/"),
            "http://kc/logout?x=1&client_id=test&post_logout_redirect_uri=%2F"
        );
        assert_eq!(
            refresh_body("r+1").as_str(),
            "grant_type=refresh_token&refresh_token=r%2B1"
        );
    }

    #[test]
    fn client_credentials_are_form_encoded_before_base64() {
        assert_eq!(
            client_basic_auth("a b", "p:w").as_str(),
            "Basic YSUyMGI6cCUzQXc="
        );
    }
}
