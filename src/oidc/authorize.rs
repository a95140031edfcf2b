//! The authorization request: PKCE and the URL the browser is sent to.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// RFC 3986 unreserved characters stay as they are; everything else is escaped.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, QUERY_VALUE).to_string()
}

/// PKCE S256 challenge of a verifier (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

pub struct AuthorizationRequest<'a> {
    pub endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scope: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    pub verifier: &'a str,
    /// `extra_auth_args`: further parameters as (name, value), values not yet escaped.
    pub extra: &'a [(&'a str, String)],
}

impl AuthorizationRequest<'_> {
    /// The authorization endpoint with the request's parameters in its query (OIDC Core
    /// §3.1.2.1, PKCE per RFC 7636 §4.3); `extra` parameters come last, each escaped.
    pub fn url(&self) -> String {
        let sep = if self.endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        let mut url = format!(
            "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}\
             &code_challenge={}&code_challenge_method=S256",
            self.endpoint,
            encode(self.client_id),
            encode(self.redirect_uri),
            encode(self.scope),
            encode(self.state),
            encode(self.nonce),
            pkce_challenge(self.verifier),
        );
        for (name, value) in self.extra {
            url.push('&');
            url.push_str(name);
            url.push('=');
            url.push_str(&encode(value));
        }
        url
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
            extra: &[],
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
    fn extra_parameters_follow_the_standard_ones_escaped() {
        let extra = [
            ("kc_idp_hint", "github".to_string()),
            ("login_hint", "ann@example.test & co".to_string()),
        ];
        let url = AuthorizationRequest {
            endpoint: "http://idp/auth",
            client_id: "test",
            redirect_uri: "/cb",
            scope: "openid",
            state: "st",
            nonce: "no",
            verifier: "v",
            extra: &extra,
        }
        .url();
        assert!(
            url.ends_with("&kc_idp_hint=github&login_hint=ann%40example.test%20%26%20co"),
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
