//! Query-string parsing for the endpoints (`rd`, and the callback's `code`/`state`/`error`).

use std::borrow::Cow;

/// Why a query parameter was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("parameter \"{0}\" appears more than once")]
    Duplicate(&'static str),
    #[error("parameter \"{0}\" is not valid UTF-8")]
    NotUtf8(&'static str),
}

/// The single value of `name` (`+` as space, percent-decoded). A repeated parameter is an error:
/// which copy wins differs between parsers, and that difference is an attack surface.
pub fn param<'a>(query: &'a str, name: &'static str) -> Result<Option<Cow<'a, str>>, QueryError> {
    let mut found = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != name {
            continue;
        }
        if found.is_some() {
            return Err(QueryError::Duplicate(name));
        }
        found = Some(decode(v).ok_or(QueryError::NotUtf8(name))?);
    }
    Ok(found)
}

fn decode(v: &str) -> Option<Cow<'_, str>> {
    if !v.contains(['+', '%']) {
        return Some(Cow::Borrowed(v));
    }
    let spaced = v.replace('+', " ");
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(&spaced).collect();
    String::from_utf8(bytes).ok().map(Cow::Owned)
}

/// What the provider sent back to the redirect URI.
#[derive(Debug, PartialEq, Eq)]
pub enum Callback<'a> {
    /// The authorization response (RFC 6749 §4.1.2).
    Code {
        /// The authorization code, for the token request.
        code: Cow<'a, str>,
        /// The `state` of the authorization request, naming the login state.
        state: Cow<'a, str>,
    },
    /// The error response (RFC 6749 §4.1.2.1), e.g. `access_denied`.
    Error {
        /// The error code.
        error: Cow<'a, str>,
        /// `error_description`, for the user and the log.
        description: Option<Cow<'a, str>>,
        /// The `state`, when the provider sent it back.
        state: Option<Cow<'a, str>>,
    },
}

/// Why a request to the redirect URI is no authorization response (RFC 6749 §4.1.2).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error("{0}")]
    Query(#[from] QueryError),
    #[error("the callback has no \"state\" parameter")]
    MissingState,
    #[error("the callback has neither \"code\" nor \"error\"")]
    MissingCode,
}

/// Reads the authorization response from the redirect URI's query (RFC 6749 §4.1.2, §4.1.2.1):
/// `code` and `state`, or `error` with its description; `iss` (RFC 9207) is read by the caller.
/// Errors: a repeated or non-UTF-8 parameter, no `state`, neither `code` nor `error`.
pub fn parse_callback(query: &str) -> Result<Callback<'_>, CallbackError> {
    let state = param(query, "state")?;
    if let Some(error) = param(query, "error")? {
        let description = param(query, "error_description")?;
        return Ok(Callback::Error {
            error,
            description,
            state,
        });
    }
    let code = param(query, "code")?.ok_or(CallbackError::MissingCode)?;
    let state = state.ok_or(CallbackError::MissingState)?;
    Ok(Callback::Code { code, state })
}

/// Why the `iss` of an authorization response (RFC 9207) refuses the login.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IssuerError {
    #[error(
        "the authorization response names issuer \"{found}\", not \"{expected}\" (RFC 9207: \
         the response comes from another provider, a mix-up attack; or `issuer` differs from \
         what the provider reports)"
    )]
    Mismatch { found: String, expected: String },
    #[error(
        "the authorization response has no \"iss\" parameter, though the provider's discovery \
         document says authorization_response_iss_parameter_supported (RFC 9207)"
    )]
    Missing,
}

/// Checks the callback's `iss` (RFC 9207 §2.4): when present it must equal `issuer` exactly;
/// when absent the login goes on unless the provider promised to send it (`required`, from
/// discovery's `authorization_response_iss_parameter_supported`).
pub fn check_response_issuer(
    iss: Option<&str>,
    issuer: &str,
    required: bool,
) -> Result<(), IssuerError> {
    match iss {
        Some(i) if i == issuer => Ok(()),
        Some(i) => Err(IssuerError::Mismatch {
            found: i.chars().filter(|c| !c.is_control()).take(200).collect(),
            expected: issuer.to_string(),
        }),
        None if required => Err(IssuerError::Missing),
        None => Ok(()),
    }
}

/// Callback parameters whose values finish a login (with the state cookie) or name the
/// provider session: never logged.
const ONE_TIME: &[&[u8]] = &[b"code", b"state", b"session_state"];

/// What replaces a hidden value.
const HIDDEN: &[u8] = b"[hidden]";

/// `line` (a request line or URI that contains the callback's `query`) with the values of
/// `code`, `state` and `session_state` hidden, for what nginx logs about the request; `None`
/// when there is nothing to hide.
pub fn hide_one_time_values(line: &[u8], query: &[u8]) -> Option<Vec<u8>> {
    let mut hidden = Vec::with_capacity(query.len());
    let mut changed = false;
    for (i, pair) in query.split(|&b| b == b'&').enumerate() {
        if i > 0 {
            hidden.push(b'&');
        }
        match pair.iter().position(|&b| b == b'=') {
            Some(eq) if ONE_TIME.contains(&&pair[..eq]) => {
                hidden.extend_from_slice(&pair[..=eq]);
                hidden.extend_from_slice(HIDDEN);
                changed = true;
            }
            _ => hidden.extend_from_slice(pair),
        }
    }
    if !changed {
        return None;
    }
    let at = memchr::memmem::find(line, query)?;
    let mut out = Vec::with_capacity(line.len() - query.len() + hidden.len());
    out.extend_from_slice(&line[..at]);
    out.extend_from_slice(&hidden);
    out.extend_from_slice(&line[at + query.len()..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_decoded() {
        assert_eq!(
            param("a=1&rd=%2Fx%3Fy%3D1+2", "rd").unwrap().as_deref(),
            Some("/x?y=1 2")
        );
        assert_eq!(param("a=1", "rd").unwrap(), None);
        assert_eq!(param("rd", "rd").unwrap().as_deref(), Some(""));
    }

    #[test]
    fn repeated_or_broken_parameters_are_refused() {
        assert_eq!(param("rd=/a&rd=/b", "rd"), Err(QueryError::Duplicate("rd")));
        assert_eq!(param("rd=%ff", "rd"), Err(QueryError::NotUtf8("rd")));
    }

    #[test]
    fn callbacks_are_classified() {
        assert!(matches!(
            parse_callback("code=c&state=s"),
            Ok(Callback::Code { .. })
        ));
        assert!(matches!(
            parse_callback("error=access_denied&state=s"),
            Ok(Callback::Error { .. })
        ));
        assert_eq!(parse_callback("code=c"), Err(CallbackError::MissingState));
        assert_eq!(parse_callback("state=s"), Err(CallbackError::MissingCode));
        assert_eq!(
            parse_callback("code=a&code=b&state=s"),
            Err(CallbackError::Query(QueryError::Duplicate("code")))
        );
    }

    #[test]
    fn the_responses_issuer_must_be_ours_when_present_or_promised() {
        let kc = "https://sso.example.com/realms/test";
        assert_eq!(check_response_issuer(Some(kc), kc, true), Ok(()));
        assert_eq!(check_response_issuer(None, kc, false), Ok(()));
        assert_eq!(
            check_response_issuer(None, kc, true),
            Err(IssuerError::Missing)
        );
        for other in [
            "https://evil.example/realms/test",
            "https://sso.example.com/realms/test/",
            "https://sso.example.com/realms/Test",
        ] {
            let e = check_response_issuer(Some(other), kc, false).unwrap_err();
            assert!(e.to_string().contains(other), "{e}");
        }
        let e = check_response_issuer(Some("a\nb"), kc, false).unwrap_err();
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn the_logged_request_line_hides_code_and_state() {
        let q = b"state=s3cr3t&session_state=ss&code=c0de&iss=http%3A%2F%2Fkc";
        let line = [b"GET /oauth2/callback?".as_slice(), q, b" HTTP/1.1"].concat();
        assert_eq!(
            String::from_utf8(hide_one_time_values(&line, q).unwrap()).unwrap(),
            "GET /oauth2/callback?state=[hidden]&session_state=[hidden]&code=[hidden]\
             &iss=http%3A%2F%2Fkc HTTP/1.1"
        );
        assert_eq!(
            hide_one_time_values(b"/cb?error=access_denied", b"error=access_denied"),
            None
        );
        // Already hidden (the query is no longer in the line), or a bare `code` without a value.
        let once = hide_one_time_values(&line, q).unwrap();
        assert_eq!(hide_one_time_values(&once, q), None);
        assert_eq!(hide_one_time_values(b"/cb?code", b"code"), None);
    }
}
