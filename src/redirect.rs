//! Return-URL validation: after login the browser may only be sent to a path on this site.

/// Longest return path kept; longer ones are refused rather than truncated.
const MAX_RETURN_PATH: usize = 2048;

/// Returns `rd` when it is a same-origin relative path (`/...`), `None` otherwise.
///
/// Browsers repair many malformed URLs into absolute ones (`//host`, `/\host`, `\/host`, a tab or
/// newline inside `//`), so anything that is not plainly a path is refused: no backslash, no
/// control character or space, no non-ASCII byte, and no `//` at the start even after one round
/// of percent-decoding (a proxy or framework may decode it once more).
pub fn safe_return_path(rd: &str) -> Option<&str> {
    if rd.is_empty() || rd.len() > MAX_RETURN_PATH || !rd.starts_with('/') {
        return None;
    }
    if rd.bytes().any(|b| b <= b' ' || b >= 0x7f || b == b'\\') {
        return None;
    }
    if rd.starts_with("//") {
        return None;
    }
    let decoded = percent_encoding::percent_decode_str(rd).collect::<Vec<u8>>();
    if decoded.len() >= 2 && decoded[0] == b'/' && (decoded[1] == b'/' || decoded[1] == b'\\') {
        return None;
    }
    if decoded.iter().any(|&b| b < b' ' || b == 0x7f || b == b'\\') {
        return None;
    }
    Some(rd)
}

#[cfg(test)]
mod tests {
    use super::safe_return_path;

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
        assert_eq!(safe_return_path(&format!("/{}", "a".repeat(3000))), None);
    }
}
