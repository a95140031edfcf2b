//! Cookie header parsing, chunking of large values and `Set-Cookie` lines.

use std::borrow::Cow;

/// Browsers drop a cookie whose name and value together exceed 4096 bytes; stay well below so
/// that attributes and odd browsers fit too.
pub const MAX_COOKIE_BYTES: usize = 4000;

/// Upper bound on chunks read back; a session never needs more, and it bounds attacker work.
pub const MAX_CHUNKS: usize = 16;

/// Iterates `name=value` pairs of one or more `Cookie` header values.
pub fn pairs<'a, 'h>(headers: &'h [&'a [u8]]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'h
where
    'a: 'h,
{
    headers.iter().flat_map(|h| {
        h.split(|&b| b == b';').filter_map(|part| {
            let part = trim(part);
            let eq = part.iter().position(|&b| b == b'=')?;
            Some((trim(&part[..eq]), trim(&part[eq + 1..])))
        })
    })
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// A cookie name with its search prepared once: the lookup runs on every protected request,
/// and memchr's SIMD search beats splitting the whole header.
pub struct CookieName {
    name: String,
    finder: memchr::memmem::Finder<'static>,
}

impl CookieName {
    pub fn new(name: &str) -> CookieName {
        CookieName {
            name: name.to_string(),
            finder: memchr::memmem::Finder::new(name.as_bytes()).into_owned(),
        }
    }

    /// The first value of this cookie.
    pub fn find<'a>(&self, headers: &[&'a [u8]]) -> Option<&'a [u8]> {
        let len = self.name.len();
        headers.iter().find_map(|h| {
            self.finder.find_iter(h).find_map(|at| {
                let starts_pair = at == 0 || matches!(h[at - 1], b';' | b' ' | b'\t');
                let rest = trim(&h[at + len..]);
                let value = rest.strip_prefix(b"=").filter(|_| starts_pair)?;
                let end = memchr::memchr(b';', value).unwrap_or(value.len());
                Some(trim(&value[..end]))
            })
        })
    }

    fn occurs_in(&self, header: &[u8]) -> bool {
        self.finder.find(header).is_some()
    }
}

impl std::ops::Deref for CookieName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.name
    }
}

/// The first value of cookie `name`.
pub fn find<'a>(headers: &[&'a [u8]], name: &str) -> Option<&'a [u8]> {
    CookieName::new(name).find(headers)
}

/// Whether cookie `name` is one of ours: `cookie_name` itself, a chunk or a login state.
pub fn belongs_to(cookie_name: &str, name: &[u8]) -> bool {
    let base = cookie_name.as_bytes();
    name.starts_with(base) && (name.len() == base.len() || name[base.len()] == b'_')
}

/// A `Cookie` header without our cookies, for the upstream: `None` when it holds none of them
/// (checked with one SIMD search, the common case), empty when it held only ours.
pub fn strip_ours(header: &[u8], cookie_name: &CookieName) -> Option<Vec<u8>> {
    if !cookie_name.occurs_in(header) {
        return None;
    }
    let mut out = Vec::with_capacity(header.len());
    let mut changed = false;
    let mut start = 0;
    for end in memchr::memchr_iter(b';', header).chain(std::iter::once(header.len())) {
        let part = trim(&header[start..end]);
        start = end + 1;
        if part.is_empty() {
            continue;
        }
        let name = trim(&part[..memchr::memchr(b'=', part).unwrap_or(part.len())]);
        if belongs_to(cookie_name, name) {
            changed = true;
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(part);
    }
    changed.then_some(out)
}

/// Name of chunk `i` of cookie `name`: the first chunk keeps the plain name.
pub fn chunk_name(name: &str, i: usize) -> String {
    if i == 0 {
        name.to_string()
    } else {
        format!("{name}_{i}")
    }
}

/// Joins `name`, `name_1`, `name_2`… as sent by the browser. Every chunk but the last is
/// full, so a short first chunk is the whole value (no copy) and stale chunks after a shorter
/// value are ignored.
pub fn join_chunks<'a>(headers: &[&'a [u8]], name: &CookieName) -> Option<Cow<'a, [u8]>> {
    let first = name.find(headers)?;
    let room = chunk_room(name);
    if first.len() < room {
        return Some(Cow::Borrowed(first));
    }
    let mut joined = first.to_vec();
    let mut last_len = first.len();
    let mut i = 1;
    while i < MAX_CHUNKS && last_len >= room {
        let Some(part) = find(headers, &chunk_name(name, i)) else {
            break;
        };
        joined.extend_from_slice(part);
        last_len = part.len();
        i += 1;
    }
    Some(Cow::Owned(joined))
}

/// How many of `name`, `name_1`… the browser sent, stale ones included.
pub fn count_chunks(headers: &[&[u8]], name: &CookieName) -> usize {
    if name.find(headers).is_none() {
        return 0;
    }
    (1..MAX_CHUNKS)
        .take_while(|&i| find(headers, &chunk_name(name, i)).is_some())
        .count()
        + 1
}

fn chunk_room(name: &str) -> usize {
    MAX_COOKIE_BYTES - name.len() - 4
}

/// Splits a value into chunks so that each `name_i=chunk` stays under [`MAX_COOKIE_BYTES`].
pub fn split_chunks<'a>(name: &str, value: &'a str) -> Vec<&'a str> {
    let room = chunk_room(name);
    let bytes = value.as_bytes();
    // Sealed values are ASCII (base64url), so any byte offset is a char boundary.
    bytes
        .chunks(room)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect()
}

/// Attributes shared by every cookie we write.
#[derive(Clone, Copy)]
pub struct CookieAttrs {
    pub secure: bool,
}

/// A `Set-Cookie` value; `max_age` of 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: u64, attrs: CookieAttrs) -> String {
    let secure = if attrs.secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}")
}

/// The `Set-Cookie` lines that store a sealed session in `name`, `name_1`…, deleting chunks
/// left over from a bigger session (`present` is how many the browser sent).
pub fn session_cookies(
    name: &str,
    sealed: &str,
    max_age: u64,
    present: usize,
    attrs: CookieAttrs,
) -> Vec<String> {
    let chunks = split_chunks(name, sealed);
    let mut out: Vec<String> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| set_cookie(&chunk_name(name, i), c, max_age, attrs))
        .collect();
    out.extend((chunks.len()..present).map(|i| delete_cookie(&chunk_name(name, i), attrs)));
    out
}

/// A `Set-Cookie` value that deletes `name`.
pub fn delete_cookie(name: &str, attrs: CookieAttrs) -> String {
    set_cookie(name, "", 0, attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cookies_across_headers_and_odd_spacing() {
        let h: [&[u8]; 2] = [b"a=1;b = 2 ;  _oidc=v1.x", b"c=3"];
        assert_eq!(find(&h, "_oidc"), Some(&b"v1.x"[..]));
        assert_eq!(find(&h, "b"), Some(&b"2"[..]));
        assert_eq!(find(&h, "c"), Some(&b"3"[..]));
        assert_eq!(find(&h, "d"), None);
        let tricky: [&[u8]; 1] = [b"x_oidc=1; _oidcx=2; a=_oidc=3; _oidc=4"];
        assert_eq!(find(&tricky, "_oidc"), Some(&b"4"[..]));
    }

    #[test]
    fn our_cookies_are_recognised_by_name() {
        for n in ["_oidc", "_oidc_1", "_oidc_st_abc"] {
            assert!(belongs_to("_oidc", n.as_bytes()), "{n}");
        }
        for n in ["_oidcx", "_oid", "x_oidc", "_session"] {
            assert!(!belongs_to("_oidc", n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn our_cookies_are_stripped_for_the_upstream_and_others_kept() {
        assert_eq!(strip_ours(b"a=1; b=2", &CookieName::new("_oidc")), None);
        assert_eq!(
            strip_ours(b"_oidc=v1.x", &CookieName::new("_oidc")).as_deref(),
            Some(&b""[..])
        );
        assert_eq!(
            strip_ours(
                b"a=1; _oidc=v1.x;_oidc_1=y ; _oidc_st_abc=z; b=_oidc",
                &CookieName::new("_oidc")
            )
            .as_deref(),
            Some(&b"a=1; b=_oidc"[..])
        );
        assert_eq!(
            strip_ours(b"x_oidc=1; y=_oidc", &CookieName::new("_oidc")),
            None
        );
    }

    #[test]
    fn large_values_round_trip_through_chunks() {
        let value = "v1.".to_string() + &"A".repeat(9000);
        let parts = split_chunks("_oidc", &value);
        assert_eq!(parts.len(), 3);
        let header: String = parts
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}={}", chunk_name("_oidc", i), p))
            .collect::<Vec<_>>()
            .join("; ");
        for (i, p) in parts.iter().enumerate() {
            assert!(chunk_name("_oidc", i).len() + 1 + p.len() <= MAX_COOKIE_BYTES);
        }
        let h = [header.as_bytes()];
        assert_eq!(
            join_chunks(&h, &CookieName::new("_oidc")).as_deref(),
            Some(value.as_bytes())
        );
        assert_eq!(count_chunks(&h, &CookieName::new("_oidc")), 3);
    }

    #[test]
    fn a_short_first_chunk_is_the_whole_value_and_stale_chunks_are_ignored() {
        let h: [&[u8]; 1] = [b"_oidc=aa; _oidc_1=bb; _oidc_3=cc"];
        assert_eq!(
            join_chunks(&h, &CookieName::new("_oidc")).as_deref(),
            Some(&b"aa"[..])
        );
        assert_eq!(count_chunks(&h, &CookieName::new("_oidc")), 2);
    }

    #[test]
    fn a_missing_middle_chunk_leaves_a_value_that_will_not_open() {
        let full = "A".repeat(chunk_room("_oidc"));
        let header = format!("_oidc={full}; _oidc_2=cc");
        let h = [header.as_bytes()];
        assert_eq!(
            join_chunks(&h, &CookieName::new("_oidc")).as_deref(),
            Some(full.as_bytes())
        );
    }

    #[test]
    fn a_smaller_session_deletes_the_chunks_it_no_longer_needs() {
        let attrs = CookieAttrs { secure: false };
        let lines = session_cookies("_oidc", "v1.small", 60, 3, attrs);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("_oidc=v1.small;"));
        assert!(lines[1].starts_with("_oidc_1=;") && lines[1].contains("Max-Age=0"));
        assert!(lines[2].starts_with("_oidc_2=;"));
    }

    #[test]
    fn set_cookie_lines_carry_the_safe_attributes() {
        let line = set_cookie("_oidc", "v", 60, CookieAttrs { secure: true });
        assert_eq!(
            line,
            "_oidc=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        let del = delete_cookie("_oidc_1", CookieAttrs { secure: false });
        assert_eq!(del, "_oidc_1=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    }
}
