//! The provider's discovery document (`<issuer>/.well-known/openid-configuration`).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Discovery {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub jwks_uri: String,
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// The provider puts `iss` into every authorization response (RFC 9207 §3); the callback
    /// then refuses one without it.
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoveryError {
    #[error("the discovery document is not valid JSON with issuer, authorization_endpoint, token_endpoint and jwks_uri: {0}")]
    Malformed(String),
    #[error(
        "issuer mismatch: discovery says \"{found}\", the config says \"{configured}\"; \
         set `issuer` to exactly the value the provider reports{}",
        mismatch_hint(.found, .configured)
    )]
    IssuerMismatch { found: String, configured: String },
}

fn mismatch_hint(found: &str, configured: &str) -> &'static str {
    if found.trim_end_matches('/') == configured.trim_end_matches('/') {
        " (they differ only in the trailing \"/\": issuers are compared character for character)"
    } else {
        " (Keycloak 17+ dropped the /auth prefix; behind a proxy check Keycloak's hostname / \
         frontend URL setting)"
    }
}

/// The URL of the discovery document for `issuer`: OpenID Connect Discovery §4 removes the
/// issuer's terminating `/` before appending `/.well-known/openid-configuration`. Only the URL
/// is built from the trimmed value; the issuer itself is compared untouched.
pub fn url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.strip_suffix('/').unwrap_or(issuer)
    )
}

/// Why a discovery document may be missing (HTTP 404) and how to fix it.
pub fn not_found_hint(issuer: &str, fetch_location: &str) -> String {
    let kc = if issuer.contains("/auth/realms/") {
        "Keycloak 17+ serves realms without the /auth prefix: try \"".to_string()
            + &issuer.replacen("/auth/realms/", "/realms/", 1)
            + "\""
    } else {
        "for Keycloak the issuer is https://<host>/realms/<realm> (with /auth/ before realms \
         only on Keycloak 16 and older)"
            .to_string()
    };
    format!(
        " (no discovery document at this URL: check `issuer`; {kc}; if the provider is fine, \
         check that `location {fetch_location} {{ internal; proxy_pass $oidc_fetch_url; }}` is \
         in this server)"
    )
}

pub fn parse(body: &[u8], configured_issuer: &str) -> Result<Discovery, DiscoveryError> {
    let d: Discovery =
        serde_json::from_slice(body).map_err(|e| DiscoveryError::Malformed(e.to_string()))?;
    if d.issuer != configured_issuer {
        return Err(DiscoveryError::IssuerMismatch {
            found: d.issuer,
            configured: configured_issuer.to_string(),
        });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"issuer":"http://kc/realms/test",
        "authorization_endpoint":"http://kc/realms/test/protocol/openid-connect/auth",
        "token_endpoint":"http://kc/realms/test/protocol/openid-connect/token",
        "jwks_uri":"http://kc/realms/test/protocol/openid-connect/certs",
        "end_session_endpoint":"http://kc/realms/test/protocol/openid-connect/logout",
        "grant_types_supported":["authorization_code"]}"#;

    #[test]
    fn a_keycloak_document_parses() {
        let d = parse(DOC.as_bytes(), "http://kc/realms/test").unwrap();
        assert!(d.token_endpoint.ends_with("/protocol/openid-connect/token"));
        assert_eq!(d.userinfo_endpoint, None);
        assert!(!d.authorization_response_iss_parameter_supported);
        assert_eq!(
            url("http://kc/realms/test/"),
            "http://kc/realms/test/.well-known/openid-configuration"
        );
    }

    #[test]
    fn an_issuer_mismatch_explains_the_keycloak_auth_prefix() {
        let hint = not_found_hint("http://kc/auth/realms/test", "/_oidc");
        assert!(hint.contains("try \"http://kc/realms/test\""), "{hint}");
        let err = parse(DOC.as_bytes(), "http://kc/auth/realms/test").unwrap_err();
        assert!(err.to_string().contains("/auth prefix"), "{err}");
    }

    #[test]
    fn an_issuer_ending_in_a_slash_is_found_and_compared_exactly() {
        let issuer = "https://sso.example.com/application/o/app/";
        assert_eq!(
            url(issuer),
            "https://sso.example.com/application/o/app/.well-known/openid-configuration"
        );
        let doc = DOC.replace("http://kc/realms/test\",", &format!("{issuer}\","));
        assert_eq!(parse(doc.as_bytes(), issuer).unwrap().issuer, issuer);
        // Exact comparison both ways: a slash more or less is another issuer.
        let err = parse(doc.as_bytes(), issuer.trim_end_matches('/')).unwrap_err();
        assert!(err.to_string().contains("trailing \"/\""), "{err}");
        assert!(matches!(
            parse(DOC.as_bytes(), "http://kc/realms/test/"),
            Err(DiscoveryError::IssuerMismatch { .. })
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            parse(b"<html>", "x"),
            Err(DiscoveryError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"{}", "x"),
            Err(DiscoveryError::Malformed(_))
        ));
    }
}
