//! The authorization request (PKCE and the URL the browser is sent to, through
//! `openidconnect`), the token requests' form bodies and RP-initiated logout's URL.

use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AuthUrl, ClientId, CsrfToken, IssuerUrl, JsonWebKeySet, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope,
};
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

/// The authorization request of the authorization code flow with PKCE (OpenID Connect Core
/// §3.1.2.1, RFC 7636 §4.3), built by `openidconnect`'s client.
pub struct AuthorizationRequest<'a> {
    /// The provider's issuer identifier (an absolute URL).
    pub issuer: &'a str,
    /// The provider's `authorization_endpoint` (an absolute URL; it may carry a query).
    pub endpoint: &'a str,
    /// This relying party's client id.
    pub client_id: &'a str,
    /// Where the provider sends the browser back (an absolute URL, registered at the provider).
    pub redirect_uri: &'a str,
    /// The configured scopes, space-separated (`openid` among them), sent as they are.
    pub scope: &'a str,
    /// The `state` (RFC 6749 §10.12) that names this login's state cookie.
    pub state: &'a str,
    /// The `nonce` the ID token must carry (OpenID Connect Core §3.1.2.1).
    pub nonce: &'a str,
    /// The PKCE `code_verifier`; only its S256 challenge is sent.
    pub verifier: &'a str,
    /// `extra_auth_args`: further parameters as (name, value), values not yet escaped.
    pub extra: &'a [(&'a str, String)],
}

/// Why no authorization request URL could be built: a URL that does not parse (RFC 3986).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the {what} \"{value}\" is not an absolute URL ({cause})")]
pub struct AuthorizationUrlError {
    /// Which input.
    pub what: UrlInput,
    /// The input, for the log.
    pub value: String,
    /// What the URL parser said.
    pub cause: String,
}

/// The inputs of an authorization request that must be absolute URLs; shown as the name of
/// the configuration directive or discovery member they come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlInput {
    /// `issuer` (directive).
    Issuer,
    /// `authorization_endpoint` (discovery document, OpenID Connect Discovery §3).
    AuthorizationEndpoint,
    /// `redirect_uri` (directive, completed with the request's scheme and host when it is a
    /// path): the only one a client's request can make invalid.
    RedirectUri,
}

impl std::fmt::Display for UrlInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UrlInput::Issuer => "issuer",
            UrlInput::AuthorizationEndpoint => "authorization_endpoint",
            UrlInput::RedirectUri => "redirect_uri",
        })
    }
}

impl AuthorizationRequest<'_> {
    /// The URL the browser is sent to: the authorization endpoint with `response_type=code`,
    /// `client_id`, `state`, `code_challenge` (S256), `redirect_uri`, `scope`, the `extra`
    /// parameters (`extra_auth_args`) and `nonce`, form-encoded (`application/x-www-form-urlencoded`: a space is `+`). Errors: an input
    /// that is no absolute URL.
    pub fn url(&self) -> Result<String, AuthorizationUrlError> {
        fn parse<T>(
            what: UrlInput,
            value: &str,
            new: fn(String) -> Result<T, openidconnect::url::ParseError>,
        ) -> Result<T, AuthorizationUrlError> {
            new(value.to_string()).map_err(|e| AuthorizationUrlError {
                what,
                value: value.chars().take(200).collect(),
                cause: e.to_string(),
            })
        }
        let client = CoreClient::new(
            ClientId::new(self.client_id.to_string()),
            parse(UrlInput::Issuer, self.issuer, IssuerUrl::new)?,
            JsonWebKeySet::default(),
        )
        .set_auth_uri(parse(
            UrlInput::AuthorizationEndpoint,
            self.endpoint,
            AuthUrl::new,
        )?)
        .set_redirect_uri(parse(
            UrlInput::RedirectUri,
            self.redirect_uri,
            RedirectUrl::new,
        )?)
        // The configured scope is sent as configured, `openid` included.
        .disable_openid_scope();
        let (state, nonce) = (self.state.to_string(), self.nonce.to_string());
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state),
                move || Nonce::new(nonce),
            )
            .add_scopes(
                self.scope
                    .split_ascii_whitespace()
                    .map(|s| Scope::new(s.to_string())),
            )
            .set_pkce_challenge(PkceCodeChallenge::from_code_verifier_sha256(
                &PkceCodeVerifier::new(self.verifier.to_string()),
            ));
        for (name, value) in self.extra {
            request = request.add_extra_param(*name, value.clone());
        }
        let (url, _, _) = request.url();
        Ok(url.into())
    }
}

/// Parameters the module sets itself on the authorization request (OIDC Core §3.1.2.1,
/// RFC 7636 §4.3) or that would replace it (`request`, `request_uri`: OIDC Core §6): an
/// `extra_auth_args` entry may not name them.
pub const RESERVED_AUTH_PARAMS: [&str; 11] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "response_mode",
    "request",
    "request_uri",
];

/// One `extra_auth_args` parameter: its name, and its value as written (percent-escapes
/// decoded; it may hold nginx variables, evaluated per request and escaped on the way out).
#[derive(Debug, PartialEq, Eq)]
pub struct ExtraArg {
    pub name: String,
    pub value: String,
}

/// Parses an `extra_auth_args` value, `name=value&name=value` (NGINX Plus's form). Names are
/// literal; a name the module sets itself is refused, since it would let the configuration (or
/// a request, through a variable) replace the state, nonce or PKCE challenge.
pub fn parse_extra_args(text: &str) -> Result<Vec<ExtraArg>, String> {
    let mut args: Vec<ExtraArg> = Vec::new();
    for part in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('=').unwrap_or((part, ""));
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'~'));
        if !valid {
            return Err(format!(
                "\"{name}\" is not a parameter name like prompt or kc_idp_hint"
            ));
        }
        if RESERVED_AUTH_PARAMS.contains(&name) {
            return Err(format!(
                "\"{name}\" is set by the module itself and cannot be given here (reserved: {})",
                RESERVED_AUTH_PARAMS.join(", ")
            ));
        }
        if args.iter().any(|a| a.name == name) {
            return Err(format!("\"{name}\" is given twice"));
        }
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| format!("the value of \"{name}\" is not UTF-8 once decoded"))?;
        args.push(ExtraArg {
            name: name.to_string(),
            value: value.into_owned(),
        });
    }
    if args.is_empty() {
        return Err("give parameters like \"prompt=login&kc_idp_hint=github\"".into());
    }
    Ok(args)
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

    fn request(endpoint: &str) -> AuthorizationRequest<'_> {
        AuthorizationRequest {
            issuer: "http://idp/realms/test",
            endpoint,
            client_id: "test",
            redirect_uri: "http://app/oauth2/callback",
            scope: "openid email",
            state: "st",
            nonce: "no",
            verifier: "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk",
            extra: &[],
        }
    }

    #[test]
    fn the_authorization_url_carries_every_parameter_escaped() {
        // The code_challenge is RFC 7636 Appendix B's for its verifier.
        assert_eq!(
            request("http://idp/auth").url().unwrap(),
            "http://idp/auth?response_type=code&client_id=test&state=st\
             &code_challenge=ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc\
             &code_challenge_method=S256&redirect_uri=http%3A%2F%2Fapp%2Foauth2%2Fcallback\
             &scope=openid+email&nonce=no"
        );
        // An endpoint with a query of its own keeps it.
        let url = request("http://idp/auth?kc_idp_hint=corp").url().unwrap();
        assert!(
            url.starts_with("http://idp/auth?kc_idp_hint=corp&response_type=code&"),
            "{url}"
        );
    }

    #[test]
    fn an_input_that_is_no_url_is_named() {
        let mut r = request("http://idp/auth");
        r.redirect_uri = "/oauth2/callback";
        let err = r.url().unwrap_err();
        assert_eq!(err.what, UrlInput::RedirectUri);
        assert!(
            err.to_string()
                .contains("\"/oauth2/callback\" is not an absolute URL"),
            "{err}"
        );
        assert_eq!(
            request("auth").url().unwrap_err().what,
            UrlInput::AuthorizationEndpoint
        );
    }

    #[test]
    fn extra_parameters_are_added_to_the_standard_ones_escaped() {
        let extra = [
            ("kc_idp_hint", "github".to_string()),
            ("login_hint", "ann@example.test & co".to_string()),
        ];
        let url = AuthorizationRequest {
            issuer: "http://idp",
            endpoint: "http://idp/auth",
            client_id: "test",
            redirect_uri: "http://app/cb",
            scope: "openid",
            state: "st",
            nonce: "no",
            verifier: "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk",
            extra: &extra,
        }
        .url()
        .unwrap();
        assert!(
            url.contains("&kc_idp_hint=github&login_hint=ann%40example.test+%26+co&")
                && url.contains("&nonce=no"),
            "{url}"
        );
    }

    #[test]
    fn extra_auth_args_are_read_like_nginx_plus_writes_them() {
        let args =
            parse_extra_args("prompt=login&acr_values=urn%3Aloa%3A2&kc_idp_hint=$idp").unwrap();
        let pairs: Vec<(&str, &str)> = args
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("prompt", "login"),
                ("acr_values", "urn:loa:2"),
                ("kc_idp_hint", "$idp")
            ]
        );
    }

    #[test]
    fn extra_auth_args_may_not_replace_what_the_module_sets() {
        for reserved in RESERVED_AUTH_PARAMS {
            let err = parse_extra_args(&format!("prompt=login&{reserved}=x")).unwrap_err();
            assert!(err.contains(reserved) && err.contains("reserved"), "{err}");
        }
        assert!(parse_extra_args("pro mpt=x").is_err());
        assert!(parse_extra_args("$name=x").is_err());
        assert!(parse_extra_args("prompt=a&prompt=b").is_err());
        assert!(parse_extra_args("&").is_err());
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
