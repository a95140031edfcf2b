//! Who is asking: a browser navigating (send it to login) or a script/API client (answer 401).

/// The request headers that tell a navigation from an API call.
#[derive(Default)]
pub struct Signals<'a> {
    /// The `Accept` request header (RFC 9110 §12.5.1), raw.
    pub accept: Option<&'a [u8]>,
    /// `X-Requested-With` (sent by XMLHttpRequest libraries), raw.
    pub x_requested_with: Option<&'a [u8]>,
    /// `Sec-Fetch-Mode` (Fetch Metadata: `navigate` for a top-level navigation), raw.
    pub sec_fetch_mode: Option<&'a [u8]>,
    /// Whether the request carries an `Authorization` header (an API client).
    pub authorization: bool,
}

/// True when a login redirect makes sense. Browsers send `Sec-Fetch-*` only to secure origins,
/// so a missing `Sec-Fetch-Mode` means "unknown" and `Accept` decides.
pub fn is_navigation(s: &Signals) -> bool {
    if s.authorization {
        return false;
    }
    if s.x_requested_with
        .is_some_and(|v| v.eq_ignore_ascii_case(b"XMLHttpRequest"))
    {
        return false;
    }
    match s.sec_fetch_mode {
        Some(mode) if mode.eq_ignore_ascii_case(b"navigate") => true,
        Some(_) => false,
        None => s.accept.is_some_and(|a| contains(a, b"text/html")),
    }
}

/// A CORS preflight (Fetch standard, "CORS-preflight request"): `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`. Browsers never send cookies or `Authorization` with it, so
/// it can never carry a session; `oidc_skip_preflight on` lets it through to the upstream,
/// which answers with its CORS policy.
pub fn is_cors_preflight(
    method: &[u8],
    origin: Option<&[u8]>,
    request_method: Option<&[u8]>,
) -> bool {
    method == b"OPTIONS"
        && origin.is_some_and(|o| !o.is_empty())
        && request_method.is_some_and(|m| !m.is_empty())
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer_token(authorization: &[u8]) -> Option<&str> {
    let (scheme, token) = authorization.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    std::str::from_utf8(token)
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BROWSER_ACCEPT: &[u8] =
        b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

    #[test]
    fn only_a_complete_preflight_counts_as_one() {
        let origin = Some(&b"https://spa.example.test"[..]);
        assert!(is_cors_preflight(b"OPTIONS", origin, Some(b"PUT")));
        assert!(!is_cors_preflight(b"OPTIONS", None, Some(b"PUT")));
        assert!(!is_cors_preflight(b"OPTIONS", origin, None));
        assert!(!is_cors_preflight(b"OPTIONS", Some(b""), Some(b"PUT")));
        assert!(!is_cors_preflight(b"GET", origin, Some(b"PUT")));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(b"Bearer abc.def.ghi"), Some("abc.def.ghi"));
        assert_eq!(bearer_token(b"bearer  abc"), Some("abc"));
        assert_eq!(bearer_token(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bear"), None);
    }

    #[test]
    fn a_browser_navigation_is_sent_to_login() {
        assert!(is_navigation(&Signals {
            accept: Some(BROWSER_ACCEPT),
            ..Default::default()
        }));
        assert!(is_navigation(&Signals {
            accept: Some(b"*/*"),
            sec_fetch_mode: Some(b"navigate"),
            ..Default::default()
        }));
    }

    #[test]
    fn scripts_and_api_clients_get_401() {
        for s in [
            Signals {
                accept: Some(b"application/json"),
                ..Default::default()
            },
            Signals {
                accept: Some(b"*/*"),
                ..Default::default()
            },
            Signals::default(),
            Signals {
                accept: Some(BROWSER_ACCEPT),
                x_requested_with: Some(b"XMLHttpRequest"),
                ..Default::default()
            },
            Signals {
                accept: Some(BROWSER_ACCEPT),
                sec_fetch_mode: Some(b"cors"),
                ..Default::default()
            },
            Signals {
                accept: Some(BROWSER_ACCEPT),
                authorization: true,
                ..Default::default()
            },
        ] {
            assert!(!is_navigation(&s));
        }
    }
}
