//! The provider's discovery document (`<issuer>/.well-known/openid-configuration`, OpenID
//! Connect Discovery 1.0 §3, §4), read with `openidconnect`'s provider metadata types.

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::{AdditionalProviderMetadata, LogoutProviderMetadata};
use serde::{Deserialize, Serialize};

/// What the module takes from a provider's discovery document. The URLs are absolute (the
/// document is refused otherwise) and kept exactly as the provider wrote them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The issuer identifier, equal character for character to the configured `issuer`.
    pub issuer: String,
    /// Where the browser is sent with the authorization request (OpenID Connect Core §3.1.2).
    pub authorization_endpoint: String,
    /// Where the authorization code and refresh tokens are exchanged (OpenID Connect Core
    /// §3.1.3, §12).
    pub token_endpoint: String,
    /// The provider's JWKS (RFC 7517 §5).
    pub jwks_uri: String,
    /// The UserInfo endpoint (OpenID Connect Core §5.3), when the provider has one.
    pub userinfo_endpoint: Option<String>,
    /// Where sign-out sends the browser (OpenID Connect RP-Initiated Logout 1.0 §2), when the
    /// provider has one.
    pub end_session_endpoint: Option<String>,
    /// The provider puts `iss` into every authorization response (RFC 9207 §3); the callback
    /// then refuses one without it.
    pub authorization_response_iss_parameter_supported: bool,
}

/// The discovery metadata beyond OpenID Connect Discovery 1.0 §3 that the module reads (RFC
/// 9207 §3); RP-Initiated Logout's `end_session_endpoint` comes from `openidconnect`'s
/// [`LogoutProviderMetadata`].
#[derive(Debug, Clone, Deserialize, Serialize)]
struct IssParameter {
    #[serde(default)]
    authorization_response_iss_parameter_supported: bool,
}

impl AdditionalProviderMetadata for IssParameter {}

/// `openidconnect`'s provider metadata with its core value types.
type ProviderMetadata = openidconnect::ProviderMetadata<
    LogoutProviderMetadata<IssParameter>,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Why a discovery document was refused; `Display` says how to fix it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiscoveryError {
    /// Not JSON, a required member (OpenID Connect Discovery 1.0 §3) missing, or an endpoint
    /// that is not an absolute URL; the text is `openidconnect`'s, naming the member.
    #[error(
        "the discovery document is not OpenID Connect provider metadata (Discovery 1.0 §3): {0}"
    )]
    Malformed(String),
    /// The document's `issuer` is not the configured one (Discovery 1.0 §4.3).
    #[error(
        "issuer mismatch: discovery says \"{found}\", the config says \"{configured}\"; \
         set `issuer` to exactly the value the provider reports{}",
        mismatch_hint(.found, .configured)
    )]
    IssuerMismatch {
        /// The document's `issuer`.
        found: String,
        /// The configured `issuer`.
        configured: String,
    },
}

/// Why two issuers that look alike differ, for the operator.
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

/// Why a discovery document may be missing (HTTP 404) and how to fix it: a sentence for the
/// error log naming the Keycloak `/auth` prefix and the fetch `location` (`fetch_location`).
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

/// Reads a discovery document (OpenID Connect Discovery 1.0 §3) with `openidconnect` and checks
/// that its `issuer` is `configured_issuer` exactly (§4.3). Errors: [`DiscoveryError::Malformed`]
/// (also for a document without `token_endpoint`, which Discovery makes optional but the
/// authorization code flow needs), [`DiscoveryError::IssuerMismatch`].
pub fn parse(body: &[u8], configured_issuer: &str) -> Result<Discovery, DiscoveryError> {
    // The issuer first: a wrong `issuer` (a proxy's public URL, the /auth prefix) is the usual
    // mistake, and its fix should be named even when the document lacks other members.
    #[derive(serde::Deserialize)]
    struct Issuer {
        issuer: String,
    }
    if let Ok(Issuer { issuer }) = serde_json::from_slice::<Issuer>(body) {
        if issuer != configured_issuer {
            return Err(DiscoveryError::IssuerMismatch {
                found: issuer,
                configured: configured_issuer.to_string(),
            });
        }
    }
    let m: ProviderMetadata =
        serde_json::from_slice(body).map_err(|e| DiscoveryError::Malformed(e.to_string()))?;
    let issuer = m.issuer().as_str();
    let token_endpoint = m
        .token_endpoint()
        .ok_or_else(|| DiscoveryError::Malformed("missing field `token_endpoint`".into()))?;
    let logout = m.additional_metadata();
    Ok(Discovery {
        issuer: issuer.to_string(),
        authorization_endpoint: m.authorization_endpoint().as_str().to_string(),
        token_endpoint: token_endpoint.as_str().to_string(),
        jwks_uri: m.jwks_uri().as_str().to_string(),
        userinfo_endpoint: m.userinfo_endpoint().map(|u| u.as_str().to_string()),
        end_session_endpoint: logout
            .end_session_endpoint
            .as_ref()
            .map(|u| u.as_str().to_string()),
        authorization_response_iss_parameter_supported: logout
            .additional_metadata
            .authorization_response_iss_parameter_supported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"{"issuer":"http://kc/realms/test",
        "authorization_endpoint":"http://kc/realms/test/protocol/openid-connect/auth",
        "token_endpoint":"http://kc/realms/test/protocol/openid-connect/token",
        "jwks_uri":"http://kc/realms/test/protocol/openid-connect/certs",
        "end_session_endpoint":"http://kc/realms/test/protocol/openid-connect/logout",
        "grant_types_supported":["authorization_code"],"response_types_supported":["code"],
        "subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}"#;

    /// Keycloak 26.5's document for a realm, as served (tests/keycloak/realm-test.json).
    const KEYCLOAK_26: &str = include_str!("testdata/keycloak-26-discovery.json");
    /// The stand-in provider's (tests/idp, oidc-provider 8.8).
    const STAND_IN: &str = include_str!("testdata/stand-in-discovery.json");

    #[test]
    fn keycloaks_and_the_stand_ins_documents_parse_with_every_member_the_module_reads() {
        let kc = parse(KEYCLOAK_26.as_bytes(), "http://127.0.0.1:38775/realms/test").unwrap();
        assert_eq!(
            kc.authorization_endpoint,
            "http://127.0.0.1:38775/realms/test/protocol/openid-connect/auth"
        );
        assert_eq!(
            kc.jwks_uri,
            "http://127.0.0.1:38775/realms/test/protocol/openid-connect/certs"
        );
        assert_eq!(
            kc.end_session_endpoint.as_deref(),
            Some("http://127.0.0.1:38775/realms/test/protocol/openid-connect/logout")
        );
        assert!(kc.userinfo_endpoint.is_some());
        assert!(kc.authorization_response_iss_parameter_supported);

        let idp = parse(STAND_IN.as_bytes(), "http://127.0.0.1:18991/realms/test").unwrap();
        assert!(idp
            .token_endpoint
            .ends_with("/protocol/openid-connect/token"));
        assert!(idp.authorization_response_iss_parameter_supported);
        // IDP_ISSUER_TRAILING_SLASH=1 (like authentik): the issuer is kept as written.
        let slashed = STAND_IN.replace(
            r#""issuer":"http://127.0.0.1:18991/realms/test""#,
            r#""issuer":"http://127.0.0.1:18991/realms/test/""#,
        );
        assert_ne!(slashed, STAND_IN);
        let d = parse(slashed.as_bytes(), "http://127.0.0.1:18991/realms/test/").unwrap();
        assert_eq!(d.issuer, "http://127.0.0.1:18991/realms/test/");
    }

    #[test]
    fn a_document_missing_required_metadata_or_with_a_relative_endpoint_is_refused_by_name() {
        let without = |member: &str| {
            let mut v: serde_json::Value = serde_json::from_str(DOC).unwrap();
            v.as_object_mut().unwrap().remove(member);
            parse(v.to_string().as_bytes(), "http://kc/realms/test").unwrap_err()
        };
        for member in [
            "authorization_endpoint",
            "token_endpoint",
            "jwks_uri",
            "response_types_supported",
            "subject_types_supported",
            "id_token_signing_alg_values_supported",
        ] {
            let err = without(member).to_string();
            assert!(err.contains(&format!("`{member}`")), "{err}");
        }
        let relative = DOC.replace(
            "\"http://kc/realms/test/protocol/openid-connect/auth\"",
            "\"/protocol/openid-connect/auth\"",
        );
        assert_ne!(relative, DOC);
        assert!(matches!(
            parse(relative.as_bytes(), "http://kc/realms/test"),
            Err(DiscoveryError::Malformed(_))
        ));
        // A logout endpoint that is no URL is refused too, not found out at sign-out.
        let bad_logout = DOC.replace(
            "\"http://kc/realms/test/protocol/openid-connect/logout\"",
            "\"not a url\"",
        );
        assert!(matches!(
            parse(bad_logout.as_bytes(), "http://kc/realms/test"),
            Err(DiscoveryError::Malformed(_))
        ));
    }

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
    fn a_wrong_issuer_is_named_even_in_a_document_missing_other_members() {
        let doc = r#"{"issuer":"https://sso.example.com/realms/test","jwks_uri":"https://sso.example.com/j"}"#;
        assert!(matches!(
            parse(doc.as_bytes(), "http://127.0.0.1/kc/realms/test"),
            Err(DiscoveryError::IssuerMismatch { .. })
        ));
        assert!(matches!(
            parse(doc.as_bytes(), "https://sso.example.com/realms/test"),
            Err(DiscoveryError::Malformed(_))
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
