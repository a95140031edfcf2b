//! Return-URL validation: after login the browser may only be sent to a path on this site.

use std::borrow::Cow;

/// Longest return path considered, in bytes. What really fits is decided by the login-state
/// cookie that carries it (`LoginState::seal_for_cookie`: about 3.7 KB of random text, far
/// more of a typical app-state URL, which compresses); this only bounds the work.
pub const MAX_RETURN_PATH: usize = 16 * 1024;

/// Why a return URL was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("it is empty or not a path starting with /")]
    NotAPath,
    #[error("it is {0} bytes long, more than {MAX_RETURN_PATH}")]
    TooLong(usize),
    #[error("it holds a control character, a space, a backslash or a raw non-ASCII byte")]
    BadCharacter,
    #[error("it names another host (starts with // or /\\, maybe percent-encoded)")]
    OtherHost,
}

/// Returns `rd` when it is a same-origin relative path (`/...`), `None` otherwise.
pub fn safe_return_path(rd: &str) -> Option<&str> {
    check_return_path(rd).ok()
}

/// Returns `rd` when it is a same-origin relative path (`/...`), or why not.
///
/// Browsers repair many malformed URLs into absolute ones (`//host`, `/\host`, `\/host`, a tab or
/// newline inside `//`), so anything that is not plainly a path is refused: no backslash, no
/// control character or space, no non-ASCII byte, and no `//` at the start even after one round
/// of percent-decoding (a proxy or framework may decode it once more).
pub fn check_return_path(rd: &str) -> Result<&str, Refused> {
    if rd.is_empty() || !rd.starts_with('/') {
        return Err(Refused::NotAPath);
    }
    if rd.len() > MAX_RETURN_PATH {
        return Err(Refused::TooLong(rd.len()));
    }
    if rd.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b'\\') {
        return Err(Refused::BadCharacter);
    }
    if rd.starts_with("//") {
        return Err(Refused::OtherHost);
    }
    let decoded = percent_encoding::percent_decode_str(rd).collect::<Vec<u8>>();
    if decoded.len() >= 2 && decoded[0] == b'/' && (decoded[1] == b'/' || decoded[1] == b'\\') {
        return Err(Refused::OtherHost);
    }
    if decoded.iter().any(|&b| b < b' ' || b == 0x7f || b == b'\\') {
        return Err(Refused::BadCharacter);
    }
    Ok(rd)
}

/// The return path for a request the browser sent for `uri` (its request line's target): raw
/// non-ASCII bytes, which nginx accepts and browsers send percent-encoded, are percent-encoded
/// (the same resource), then the result is checked like any return URL.
pub fn return_path_for_request(uri: &[u8]) -> Result<String, Refused> {
    let uri: Cow<[u8]> = if uri.iter().any(|&b| b >= 0x80) {
        let mut out = Vec::with_capacity(uri.len() + 16);
        for &b in uri {
            if b >= 0x80 {
                out.extend_from_slice(format!("%{b:02X}").as_bytes());
            } else {
                out.push(b);
            }
        }
        Cow::Owned(out)
    } else {
        Cow::Borrowed(uri)
    };
    let uri = std::str::from_utf8(&uri).map_err(|_| Refused::BadCharacter)?;
    check_return_path(uri).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_kept() {
        for ok in [
            "/",
            "/some/page?x=1",
            "/a/b#frag",
            "/.well/known",
            "/a//b",
            "/%41bc",
        ] {
            assert_eq!(safe_return_path(ok), Some(ok), "{ok}");
        }
    }

    #[test]
    fn open_redirect_payloads_are_refused() {
        let payloads = [
            "",
            "//evil.com",
            "///evil.com",
            "/\\evil.com",
            "\\/evil.com",
            "\\\\evil.com",
            "https:evil.com",
            "https://evil.com",
            "http://evil.com/",
            "HTTPS://evil.com",
            "javascript:alert(1)",
            "data:text/html,x",
            "evil.com",
            "/%2fevil.com",
            "/%2Fevil.com",
            "/%5cevil.com",
            "/%5Cevil.com",
            "/\tevil.com",
            "/\t/evil.com",
            "/\n/evil.com",
            "/\r\n/evil.com",
            "/%0d%0aSet-Cookie:x=y",
            "/%0aLocation:%20//evil.com",
            " //evil.com",
            "/ /evil.com",
            "/\u{3002}evil.com",
            "/\u{ff0f}evil.com",
            "/\u{2215}evil.com",
            "/path\\..\\evil",
            "@evil.com",
            "/@evil.com\\",
            "//user:pass@evil.com",
            "/\u{0}evil",
            "/%00evil",
            "/x\u{7f}",
            "//%09/evil.com",
            "/\\/evil.com",
            "//\\evil.com",
            "%2f%2fevil.com",
            "ftp://evil.com",
            "//evil.com/%2e%2e",
            "/%09/evil.com",
        ];
        assert!(payloads.len() >= 40);
        for p in payloads {
            assert_eq!(safe_return_path(p), None, "{p:?} must be refused");
        }
        assert_eq!(
            check_return_path(&format!("/{}", "a".repeat(MAX_RETURN_PATH))),
            Err(Refused::TooLong(MAX_RETURN_PATH + 1))
        );
    }

    #[test]
    fn long_deep_links_are_paths_like_any_other() {
        let rd = format!("/app/dashboards?_g=({})", "a".repeat(3000));
        assert_eq!(safe_return_path(&rd), Some(rd.as_str()));
    }

    #[test]
    fn a_refusal_says_why() {
        assert_eq!(check_return_path("evil.com"), Err(Refused::NotAPath));
        assert_eq!(check_return_path("//evil.com"), Err(Refused::OtherHost));
        assert_eq!(check_return_path("/%2fevil.com"), Err(Refused::OtherHost));
        assert_eq!(check_return_path("/a\tb"), Err(Refused::BadCharacter));
    }

    #[test]
    fn a_raw_non_ascii_request_target_comes_back_percent_encoded() {
        assert_eq!(
            return_path_for_request("/wiki/Zoë?q=ü".as_bytes()).as_deref(),
            Ok("/wiki/Zo%C3%AB?q=%C3%BC")
        );
        assert_eq!(
            return_path_for_request(b"/plain?x=1").as_deref(),
            Ok("/plain?x=1")
        );
        assert_eq!(
            return_path_for_request(b"//evil.com"),
            Err(Refused::OtherHost)
        );
        assert_eq!(
            return_path_for_request(b"/\xef\xbc\x8fevil.com").as_deref(),
            Ok("/%EF%BC%8Fevil.com")
        );
    }
}
