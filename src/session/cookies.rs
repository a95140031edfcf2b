//! Cookie header parsing, chunking of large values and `Set-Cookie` lines.

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
    /// The cookie `name` (an RFC 6265 §4.1.1 token), with a searcher for it in `Cookie` headers.
    pub fn new(name: &str) -> CookieName {
        CookieName {
            name: name.to_string(),
            finder: memchr::memmem::Finder::new(name.as_bytes()).into_owned(),
        }
    }

    /// The first value of this cookie.
    pub fn find<'a>(&self, headers: &[&'a [u8]]) -> Option<&'a [u8]> {
        self.find_all(headers).next()
    }

    /// Every value of this cookie, in the order the browser sent them. A browser sends several
    /// cookies of one name when they differ in Path or Domain (another application on the
    /// site, a parent-domain cookie, a stale one), longest Path first (RFC 6265 §5.4), so the
    /// first one need not be ours.
    pub fn find_all<'a, 'h>(
        &'h self,
        headers: &'h [&'a [u8]],
    ) -> impl Iterator<Item = &'a [u8]> + 'h
    where
        'a: 'h,
    {
        let len = self.name.len();
        headers.iter().flat_map(move |h: &&'a [u8]| {
            let h: &'a [u8] = h;
            self.finder.find_iter(h).filter_map(move |at| {
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

/// Every value of cookie `name`, in the order the browser sent them.
pub fn find_all<'a>(headers: &[&'a [u8]], name: &str) -> Vec<&'a [u8]> {
    CookieName::new(name).find_all(headers).collect()
}

/// Most values [`open_chunked`] tries for one request: bounds the work that many same-named
/// cookies can cause (each try is one decryption).
pub const MAX_TRIES: usize = 8;

/// The first value of the chunked cookie `name` (`name`, `name_1`, `name_2`… joined) that
/// `open` accepts, with how many cookies it spans. Every chunk but the last is full, so a
/// short first chunk is the whole value (no copy) and stale chunks after a shorter value are
/// ignored. When the browser sends several cookies of one of these names (another
/// application's, a stale one), each combination is tried in the order sent, up to
/// [`MAX_TRIES`]; so a foreign cookie sent first cannot hide the session.
pub fn open_chunked<T>(
    headers: &[&[u8]],
    name: &CookieName,
    mut open: impl FnMut(&[u8]) -> Option<T>,
) -> Option<(T, usize)> {
    let room = chunk_room(name);
    let mut tries = 0;
    for first in name.find_all(headers) {
        if tries >= MAX_TRIES {
            return None;
        }
        if first.len() < room {
            tries += 1;
            if let Some(t) = open(first) {
                return Some((t, 1));
            }
            continue;
        }
        let mut joined = first.to_vec();
        if let Some(found) = open_rest(headers, name, 1, &mut joined, &mut tries, &mut open) {
            return Some(found);
        }
    }
    None
}

/// Tries `joined` (chunks `0..i`, all full) extended by each value of chunk `i` in turn, and
/// `joined` alone last (a value that filled its last chunk exactly, next to a stale chunk).
fn open_rest<T>(
    headers: &[&[u8]],
    name: &CookieName,
    i: usize,
    joined: &mut Vec<u8>,
    tries: &mut usize,
    open: &mut impl FnMut(&[u8]) -> Option<T>,
) -> Option<(T, usize)> {
    let room = chunk_room(name);
    if i < MAX_CHUNKS {
        for part in find_all(headers, &chunk_name(name, i)) {
            if *tries >= MAX_TRIES {
                return None;
            }
            let keep = joined.len();
            joined.extend_from_slice(part);
            let found = if part.len() >= room {
                open_rest(headers, name, i + 1, joined, tries, open)
            } else {
                *tries += 1;
                open(joined).map(|t| (t, i + 1))
            };
            joined.truncate(keep);
            if found.is_some() {
                return found;
            }
        }
    }
    if *tries >= MAX_TRIES {
        return None;
    }
    *tries += 1;
    open(joined).map(|t| (t, i))
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

/// The `SameSite` attribute (RFC 6265bis §4.1.2.7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites: the provider's redirect back to the
    /// callback carries the login-state cookie.
    #[default]
    Lax,
    /// Never sent from another site, so the login-state cookie is missing on the provider's
    /// redirect back: the callback then starts the login once more from this site.
    Strict,
    /// Sent everywhere, also in cross-site iframes and requests; browsers require `Secure`.
    None,
}

impl SameSite {
    /// Parses the `cookie_samesite` value: `lax`, `strict` or `none` (any case).
    pub fn parse(value: &str) -> Option<SameSite> {
        match value.to_ascii_lowercase().as_str() {
            "lax" => Some(SameSite::Lax),
            "strict" => Some(SameSite::Strict),
            "none" => Some(SameSite::None),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// Where and how the browser keeps every cookie of one provider (session, chunks, login states,
/// loop guard): the same scope on each write and delete, since a browser only replaces or
/// deletes a cookie whose name, `Domain` and `Path` all match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieScope {
    /// Whether cookies carry `Secure` (RFC 6265 §4.1.2.5): `cookie_secure`.
    pub secure: bool,
    /// `Domain` attribute: the cookie goes to this domain and its subdomains (RFC 6265 §5.2.3);
    /// `None` keeps it to the host that set it.
    pub domain: Option<String>,
    /// `Path` attribute, `/` by default.
    pub path: String,
    /// `SameSite` attribute: `cookie_samesite`.
    pub same_site: SameSite,
}

impl Default for CookieScope {
    fn default() -> CookieScope {
        CookieScope {
            secure: true,
            domain: None,
            path: "/".into(),
            same_site: SameSite::Lax,
        }
    }
}

/// Attributes shared by every cookie we write.
pub type CookieAttrs<'a> = &'a CookieScope;

/// A `Set-Cookie` value; `max_age` of 0 deletes the cookie.
pub fn set_cookie(name: &str, value: &str, max_age: u64, attrs: CookieAttrs) -> String {
    let secure = if attrs.secure { "; Secure" } else { "" };
    let domain = match &attrs.domain {
        Some(d) => format!("; Domain={d}"),
        None => String::new(),
    };
    format!(
        "{name}={value}; Path={}{domain}; Max-Age={max_age}; HttpOnly; SameSite={}{secure}",
        attrs.path,
        attrs.same_site.as_str()
    )
}

/// Why a `cookie_domain` value is refused, or `None` when it is usable: a domain name (a
/// leading dot is dropped by browsers, RFC 6265 §5.2.3, so we refuse it to keep `Set-Cookie`
/// lines unambiguous), with at least one inner dot, since browsers refuse a cookie for a
/// top-level domain.
pub fn domain_problem(domain: &str) -> Option<String> {
    if domain.starts_with('.') {
        return Some(format!(
            "write \"{}\" without the leading dot (it covers the subdomains anyway)",
            domain.trim_start_matches('.')
        ));
    }
    let valid_chars = domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if domain.is_empty() || !valid_chars || domain.ends_with('.') || domain.contains("..") {
        return Some(format!(
            "\"{domain}\" is not a domain name like example.com"
        ));
    }
    if !domain.contains('.') {
        return Some(format!(
            "\"{domain}\" has no dot: browsers refuse cookies for a single-label domain"
        ));
    }
    None
}

/// Whether a host the browser used (`Host` header, maybe with a port) lies inside the cookie
/// domain, so that the browser will keep a cookie with that `Domain` (RFC 6265 §5.1.3).
pub fn domain_matches(host: &str, domain: &str) -> bool {
    let host = host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let host = host.trim_end_matches('.');
    host.eq_ignore_ascii_case(domain)
        || (host.len() > domain.len()
            && host[host.len() - domain.len()..].eq_ignore_ascii_case(domain)
            && host.as_bytes()[host.len() - domain.len() - 1] == b'.')
}

/// The `Set-Cookie` lines that store a sealed session in `name`, `name_1`…, deleting chunks
/// left over from a bigger session (`present`: how many chunks the session that opened spans;
/// a cookie that did not open is not proven ours and is never deleted).
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

    /// Opens only `want`, recording every value tried.
    fn opener<'w>(
        want: &'w [u8],
        tried: &'w mut Vec<Vec<u8>>,
    ) -> impl FnMut(&[u8]) -> Option<()> + 'w {
        move |v| {
            tried.push(v.to_vec());
            (v == want).then_some(())
        }
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
        let mut tried = Vec::new();
        let found = open_chunked(
            &h,
            &CookieName::new("_oidc"),
            opener(value.as_bytes(), &mut tried),
        );
        assert_eq!(found, Some(((), 3)));
        assert_eq!(tried.len(), 1);
    }

    #[test]
    fn a_short_first_chunk_is_the_whole_value_and_stale_chunks_are_ignored() {
        let h: [&[u8]; 1] = [b"_oidc=aa; _oidc_1=bb; _oidc_3=cc"];
        let mut tried = Vec::new();
        let found = open_chunked(&h, &CookieName::new("_oidc"), opener(b"aa", &mut tried));
        assert_eq!(found, Some(((), 1)));
        assert_eq!(tried, [b"aa".to_vec()]);
    }

    #[test]
    fn a_missing_middle_chunk_leaves_a_value_that_will_not_open() {
        let full = "A".repeat(chunk_room("_oidc"));
        let header = format!("_oidc={full}; _oidc_2=cc");
        let h = [header.as_bytes()];
        let mut tried = Vec::new();
        let found = open_chunked(&h, &CookieName::new("_oidc"), opener(b"-", &mut tried));
        assert_eq!(found, None);
        assert_eq!(tried, [full.as_bytes().to_vec()]);
    }

    #[test]
    fn a_foreign_cookie_of_the_same_name_does_not_hide_ours_in_either_order() {
        let name = CookieName::new("_oidc");
        for header in [
            "_oidc=foreign; _oidc=v1.ours",
            "_oidc=v1.ours; a=1; _oidc=foreign",
        ] {
            let h = [header.as_bytes()];
            let mut tried = Vec::new();
            assert_eq!(
                open_chunked(&h, &name, opener(b"v1.ours", &mut tried)),
                Some(((), 1)),
                "{header}"
            );
        }
        // In two Cookie headers (HTTP/2 sends one per cookie) too.
        let h: [&[u8]; 2] = [b"_oidc=foreign", b"_oidc=v1.ours"];
        assert_eq!(
            open_chunked(&h, &name, opener(b"v1.ours", &mut Vec::new())),
            Some(((), 1))
        );
        assert_eq!(find_all(&h, "_oidc"), [&b"foreign"[..], &b"v1.ours"[..]]);
    }

    #[test]
    fn foreign_chunks_of_the_same_names_do_not_hide_a_chunked_session() {
        let value = "v1.".to_string() + &"B".repeat(6000);
        let parts = split_chunks("_oidc", &value);
        let name = CookieName::new("_oidc");
        let full_foreign = "F".repeat(chunk_room("_oidc"));
        let headers = [
            format!(
                "_oidc=short; _oidc={}; _oidc_1=x; _oidc_1={}",
                parts[0], parts[1]
            ),
            format!(
                "_oidc={full_foreign}; _oidc_1=x; _oidc={}; _oidc_1={}",
                parts[0], parts[1]
            ),
            format!("_oidc={}; _oidc_1={}; _oidc_1=x", parts[0], parts[1]),
        ];
        for header in &headers {
            let h = [header.as_bytes()];
            assert_eq!(
                open_chunked(&h, &name, opener(value.as_bytes(), &mut Vec::new())),
                Some(((), 2)),
                "{}",
                &header[..60]
            );
        }
    }

    #[test]
    fn a_value_that_fills_its_last_chunk_exactly_opens_next_to_a_stale_chunk() {
        let value = "C".repeat(chunk_room("_oidc"));
        let header = format!("_oidc={value}; _oidc_1=stale");
        let h = [header.as_bytes()];
        assert_eq!(
            open_chunked(
                &h,
                &CookieName::new("_oidc"),
                opener(value.as_bytes(), &mut Vec::new())
            ),
            Some(((), 1))
        );
    }

    #[test]
    fn many_same_named_cookies_cost_a_bounded_number_of_tries() {
        let full = "D".repeat(chunk_room("_oidc"));
        let mut header = String::new();
        for i in 0..20 {
            header.push_str(&format!("_oidc={full}; _oidc_1={full}; _oidc_2=x{i}; "));
        }
        let h = [header.as_bytes()];
        let mut tried = Vec::new();
        assert_eq!(
            open_chunked(&h, &CookieName::new("_oidc"), opener(b"-", &mut tried)),
            None
        );
        assert_eq!(tried.len(), MAX_TRIES);
    }

    #[test]
    fn a_smaller_session_deletes_the_chunks_it_no_longer_needs() {
        let attrs = &CookieScope {
            secure: false,
            ..Default::default()
        };
        let lines = session_cookies("_oidc", "v1.small", 60, 3, attrs);
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("_oidc=v1.small;"));
        assert!(lines[1].starts_with("_oidc_1=;") && lines[1].contains("Max-Age=0"));
        assert!(lines[2].starts_with("_oidc_2=;"));
    }

    #[test]
    fn set_cookie_lines_carry_the_safe_attributes() {
        let line = set_cookie("_oidc", "v", 60, &CookieScope::default());
        assert_eq!(
            line,
            "_oidc=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        let plain = CookieScope {
            secure: false,
            ..Default::default()
        };
        let del = delete_cookie("_oidc_1", &plain);
        assert_eq!(del, "_oidc_1=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    }

    #[test]
    fn a_shared_domain_and_path_appear_on_writes_and_deletes_alike() {
        let scope = CookieScope {
            secure: true,
            domain: Some("example.test".into()),
            path: "/app".into(),
            same_site: SameSite::None,
        };
        assert_eq!(
            set_cookie("_oidc", "v", 60, &scope),
            "_oidc=v; Path=/app; Domain=example.test; Max-Age=60; HttpOnly; SameSite=None; Secure"
        );
        assert_eq!(
            delete_cookie("_oidc_2", &scope),
            "_oidc_2=; Path=/app; Domain=example.test; Max-Age=0; HttpOnly; SameSite=None; Secure"
        );
    }

    #[test]
    fn samesite_reads_the_three_values_in_any_case() {
        assert_eq!(SameSite::parse("lax"), Some(SameSite::Lax));
        assert_eq!(SameSite::parse("Strict"), Some(SameSite::Strict));
        assert_eq!(SameSite::parse("NONE"), Some(SameSite::None));
        assert_eq!(SameSite::parse("off"), None);
    }

    #[test]
    fn a_cookie_domain_must_be_a_registrable_looking_name() {
        assert_eq!(domain_problem("example.test"), None);
        assert_eq!(domain_problem("a-b.example.test"), None);
        for bad in [
            ".example.test",
            "test",
            "",
            "exa mple.test",
            "example..test",
            "ex.test.",
        ] {
            assert!(domain_problem(bad).is_some(), "{bad:?}");
        }
        assert!(domain_problem(".example.test")
            .unwrap()
            .contains("\"example.test\""));
    }

    #[test]
    fn hosts_inside_the_cookie_domain_are_recognised_with_or_without_port() {
        assert!(domain_matches("a.example.test", "example.test"));
        assert!(domain_matches("B.Example.Test:8443", "example.test"));
        assert!(domain_matches("example.test", "example.test"));
        assert!(!domain_matches("badexample.test", "example.test"));
        assert!(!domain_matches("example.test.evil", "example.test"));
        assert!(!domain_matches("127.0.0.1:8080", "example.test"));
    }
}
