//! Claim values as header text. Every value a token gives that reaches a header or a variable
//! (`X-Auth-Request-*` to the upstream, the `/oauth2/auth` answer, `$oidc_user`, `$oidc_email`,
//! `$oidc_groups`, `$oidc_claim_*`) and every user name in a log line goes through [`encode`]
//! or [`encode_list_item`], so a claim holding CR, LF or any other control character can
//! neither split a header (RFC 9110 §5.5 forbids CR, LF and NUL in field values) nor forge a log
//! line.
//!
//! The encoding is percent-encoding of the value's UTF-8 bytes (RFC 3986 §2.1, the same shape
//! as RFC 8187's `value-chars`): every byte outside printable ASCII (0x00–0x1F, 0x7F and every
//! byte of a non-ASCII character) and `%` itself become `%XX` with upper-case hex digits, so a
//! header is always plain visible ASCII, and an upstream that percent-decodes gets the claim
//! back exactly. Encoding, not refusal: a user whose display name has an odd character still
//! logs in, and the upstream still learns who it is.

use std::borrow::Cow;

/// Whether byte `b` stands for itself in a header value; `list` also encodes `,`, the
/// separator of list values.
fn is_plain(b: u8, list: bool) -> bool {
    (0x20..0x7f).contains(&b) && b != b'%' && !(list && b == b',')
}

fn encode_bytes(value: &str, list: bool) -> Cow<'_, str> {
    if value.bytes().all(|b| is_plain(b, list)) {
        return Cow::Borrowed(value);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if is_plain(b, list) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        }
    }
    Cow::Owned(out)
}

/// `value` as header text: unchanged when it is printable ASCII without `%` (the common case,
/// no copy), otherwise percent-encoded as described in the module documentation.
pub fn encode(value: &str) -> Cow<'_, str> {
    encode_bytes(value, false)
}

/// One item of a list value (a group, a role), encoded like [`encode`] and with `,` as `%2C`
/// too: the items are joined with `,`, so a group named `/users,/admins` must not read as two.
pub fn encode_list_item(value: &str) -> Cow<'_, str> {
    encode_bytes(value, true)
}

/// Whether `token` may be sent as it is in a header: a non-empty string of visible ASCII and
/// spaces (RFC 6749 Appendix A.12 `access-token = 1*VSCHAR`). A credential cannot be encoded
/// without breaking it, so one that fails this is refused instead.
pub fn is_vschar_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_values_pass_unchanged_without_a_copy() {
        for v in ["demo", "mallory@example.com", "Demo User", "/a/b", "x=1;y"] {
            assert!(matches!(encode(v), Cow::Borrowed(s) if s == v), "{v}");
        }
    }

    #[test]
    fn crlf_cannot_start_a_second_header() {
        assert_eq!(
            encode("mallory@example.com\r\nX-Auth-Request-User: admin"),
            "mallory@example.com%0D%0AX-Auth-Request-User: admin"
        );
        assert_eq!(
            encode_list_item("/users\r\nX-Auth-Request-Groups: /admins"),
            "/users%0D%0AX-Auth-Request-Groups: /admins"
        );
    }

    #[test]
    fn every_control_character_and_del_is_encoded() {
        for b in (0u8..0x20).chain([0x7f]) {
            let v = format!("a{}b", b as char);
            let want = format!("a%{b:02X}b");
            assert_eq!(encode(&v), want, "byte {b:#04x}");
            assert_eq!(encode_list_item(&v), want, "byte {b:#04x}");
        }
    }

    #[test]
    fn non_ascii_is_percent_encoded_utf8_and_percent_itself_too() {
        assert_eq!(encode("José Müller"), "Jos%C3%A9 M%C3%BCller");
        assert_eq!(encode("100%"), "100%25");
        assert_eq!(encode("\u{2028}"), "%E2%80%A8");
        let encoded = encode("Zoë\r\n%41");
        let back = percent_encoding::percent_decode_str(&encoded).decode_utf8();
        assert_eq!(back.unwrap(), "Zoë\r\n%41");
    }

    #[test]
    fn a_comma_inside_a_list_item_cannot_split_it() {
        assert_eq!(encode_list_item("/users,/admins"), "/users%2C/admins");
        assert_eq!(encode("a,b"), "a,b");
    }

    #[test]
    fn tokens_with_control_characters_are_not_header_safe() {
        assert!(is_vschar_token("eyJhbGciOi.x-y_z~+/="));
        for bad in ["", "a\r\nb", "a\nb", "a\0", "a\u{7f}", "ä"] {
            assert!(!is_vschar_token(bad), "{bad:?}");
        }
    }
}
