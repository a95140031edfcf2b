//! Several logins at once: which pending login states a browser keeps, and the loop guard
//! that tells a redirect loop from a burst of tabs.
//!
//! A burst of tabs (a restored browser session) starts many logins before any comes back, each
//! with its own login-state cookie; all of them must be able to finish. A loop is different: a
//! login comes back (the callback succeeds and sets the session), the browser returns to the
//! page, and that page starts a login again because the session cookie did not stick. So the
//! guard counts returns to the same page, not logins started.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Room for all pending login-state cookies together, counted as the browser sends them
/// (`name=value; `). With a one-chunk session (under 4000 bytes) and the loop guard this keeps
/// the `Cookie` header under 7.3 KB, inside one of nginx's default 8 KB header buffers
/// (`large_client_header_buffers 4 8k`: one header line must fit one buffer), with room for
/// the site's other cookies.
pub const STATE_BUDGET: usize = 3072;

/// Returns to the same page within [`ROUND_WINDOW`] seconds of each other before login stops
/// redirecting and explains.
pub const MAX_ROUNDS: u32 = 3;
/// Seconds within which a return counts as one more round of the same loop.
pub const ROUND_WINDOW: u64 = 20;
/// Pages the guard remembers at once (the most recent returns).
const MAX_PAGES: usize = 8;

/// A pending login state the browser sent: its cookie name, its size in the `Cookie` header
/// (`name=value`) and when it expires.
pub struct Pending {
    /// The cookie's name.
    pub name: String,
    /// Bytes of `name=value` in the `Cookie` header.
    pub bytes: usize,
    /// When the login state expires (Unix seconds).
    pub exp: u64,
}

/// The names of pending login states to delete so that a new one of `new_bytes` fits the
/// [`STATE_BUDGET`] next to them: the oldest go first, none while they all fit, and the new
/// one is always kept. `pending` is in the order the browser sent them, which among states
/// expiring in the same second is the order they were set (RFC 6265 §5.4).
pub fn states_to_drop(pending: Vec<Pending>, new_bytes: usize) -> Vec<String> {
    let mut pending: Vec<(usize, Pending)> = pending.into_iter().enumerate().collect();
    pending.sort_by_key(|(i, p)| std::cmp::Reverse((p.exp, *i)));
    let mut used = new_bytes + 2;
    let mut drop = Vec::new();
    for (_, p) in pending {
        used += p.bytes + 2;
        if used > STATE_BUDGET {
            drop.push(p.name);
        }
    }
    drop
}

/// One page in the loop guard: a tag of its return URL, how many returns in a row, the last.
struct Page {
    tag: String,
    rounds: u32,
    last: u64,
}

/// Characters of a page's tag: 6 bytes of SHA-256 in base64url.
const TAG_LEN: usize = 8;

/// A short, non-secret tag of a return URL (the guard cookie is not encrypted).
fn tag(rd: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(rd.as_bytes())[..6])
}

/// The guard cookie's pages still within the window; anything unreadable is ignored.
fn pages(value: &[u8], now: u64) -> Vec<Page> {
    let text = std::str::from_utf8(value).unwrap_or("");
    text.split('.')
        .filter_map(|entry| {
            let mut f = entry.split(':');
            let (tag, rounds, last) = (f.next()?, f.next()?, f.next()?);
            let page = Page {
                tag: tag.to_string(),
                rounds: rounds.parse().ok()?,
                last: last.parse().ok()?,
            };
            let tag_ok = page.tag.len() == TAG_LEN
                && page
                    .tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            let recent = page.last <= now && now < page.last.saturating_add(ROUND_WINDOW);
            (f.next().is_none() && tag_ok && recent).then_some(page)
        })
        .collect()
}

/// How many times in a row the browser came back from a login to `rd`, each within
/// [`ROUND_WINDOW`] of the previous one, according to the guard cookie `value`.
pub fn rounds(value: &[u8], rd: &str, now: u64) -> u32 {
    let t = tag(rd);
    pages(value, now)
        .iter()
        .find(|p| p.tag == t)
        .map_or(0, |p| p.rounds)
}

/// Which of the guard cookies the browser sent (`values`, all of that name in the order sent)
/// is ours: the first with a readable page still within [`ROUND_WINDOW`] at `now`, or an
/// empty value when none has one. Another application's cookie of the same name, sent first
/// (a longer Path, a parent domain), must not hide ours nor reset the count (RFC 6265 §5.4).
pub fn guard_value<'a>(values: &[&'a [u8]], now: u64) -> &'a [u8] {
    values
        .iter()
        .find(|v| !pages(v, now).is_empty())
        .copied()
        .unwrap_or_default()
}

/// The guard cookie's new value after a login came back to `rd` at `now`.
pub fn record_return(value: &[u8], rd: &str, now: u64) -> String {
    let t = tag(rd);
    let rounds = rounds(value, rd, now).saturating_add(1);
    let mut pages = pages(value, now);
    pages.retain(|p| p.tag != t);
    pages.push(Page {
        tag: t,
        rounds,
        last: now,
    });
    let skip = pages.len().saturating_sub(MAX_PAGES);
    pages[skip..]
        .iter()
        .map(|p| format!("{}:{}:{}", p.tag, p.rounds, p.last))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(name: &str, bytes: usize, exp: u64) -> Pending {
        Pending {
            name: name.into(),
            bytes,
            exp,
        }
    }

    #[test]
    fn six_tabs_logging_in_at_once_all_keep_their_state() {
        // The size of a login-state cookie with a short return URL.
        let states: Vec<Pending> = (0..5)
            .map(|i| pending(&format!("_oidc_st_{i}"), 300, 1000 + i))
            .collect();
        assert!(states_to_drop(states, 300).is_empty());
    }

    #[test]
    fn when_the_budget_is_full_the_oldest_states_go_first() {
        let states: Vec<Pending> = (0..12)
            .map(|i| pending(&format!("_oidc_st_{i}"), 300, 1000 + i))
            .collect();
        let drop = states_to_drop(states, 300);
        // 3072 bytes hold 10 states of 300 bytes (+2 for "; "): the new one and 9 others.
        assert_eq!(drop, ["_oidc_st_2", "_oidc_st_1", "_oidc_st_0"]);
        // Within one second the browser's order tells the oldest.
        let states: Vec<Pending> = (0..12)
            .map(|i| pending(&format!("_oidc_st_{i}"), 300, 1000))
            .collect();
        let drop = states_to_drop(states, 300);
        assert_eq!(drop, ["_oidc_st_2", "_oidc_st_1", "_oidc_st_0"]);
        // A new state bigger than the budget (a very long return URL) is still kept.
        let drop = states_to_drop(vec![pending("a", 300, 1)], STATE_BUDGET + 1);
        assert_eq!(drop, ["a"]);
    }

    #[test]
    fn a_loop_is_three_returns_to_the_same_page_in_a_row() {
        let mut v = String::new();
        for (i, now) in [100, 101, 102].into_iter().enumerate() {
            assert_eq!(rounds(v.as_bytes(), "/page", now), i as u32);
            v = record_return(v.as_bytes(), "/page", now);
        }
        assert_eq!(rounds(v.as_bytes(), "/page", 103), MAX_ROUNDS);
        // Another page has its own count; the loop is forgotten after the window.
        assert_eq!(rounds(v.as_bytes(), "/other", 103), 0);
        assert_eq!(rounds(v.as_bytes(), "/page", 102 + ROUND_WINDOW), 0);
        let v = record_return(v.as_bytes(), "/page", 102 + ROUND_WINDOW);
        assert_eq!(rounds(v.as_bytes(), "/page", 102 + ROUND_WINDOW), 1);
    }

    #[test]
    fn tabs_returning_to_their_own_pages_are_no_loop() {
        let mut v = String::new();
        for i in 0..12 {
            v = record_return(v.as_bytes(), &format!("/tab/{i}"), 100);
        }
        for i in 4..12 {
            assert_eq!(rounds(v.as_bytes(), &format!("/tab/{i}"), 100), 1);
        }
        assert_eq!(v.split('.').count(), MAX_PAGES, "{v}");
        assert!(v.len() < 200, "{} bytes", v.len());
    }

    #[test]
    fn an_unreadable_guard_cookie_counts_nothing() {
        let slash = tag("/");
        let future = format!("{slash}:1:999999");
        let odd_tag = "a b\"c,d:1:100".to_string();
        for junk in [
            &b"3"[..],
            b"a:b:c",
            b"x:1:100:9",
            b"\xff\xfe",
            b"",
            future.as_bytes(),
            odd_tag.as_bytes(),
        ] {
            assert_eq!(rounds(junk, "/", 100), 0);
            assert!(!record_return(junk, "/", 100).contains([' ', '"', ',']));
        }
        // A page listed twice counts once, and a return counts exactly one more.
        let twice = format!("{slash}:5:100.{slash}:9:100");
        assert_eq!(rounds(twice.as_bytes(), "/", 100), 5);
        let v = record_return(twice.as_bytes(), "/", 100);
        assert_eq!(rounds(v.as_bytes(), "/", 100), 6);
        let v = record_return(b"3", "/", 100);
        assert_eq!(rounds(v.as_bytes(), "/", 100), 1);
    }

    #[test]
    fn a_foreign_guard_cookie_sent_first_does_not_hide_ours() {
        let mut ours = String::new();
        for now in [100, 101] {
            ours = record_return(ours.as_bytes(), "/page", now);
        }
        let stale = record_return(b"", "/page", 50);
        let values = [&b"foreign"[..], b"", stale.as_bytes(), ours.as_bytes()];
        assert_eq!(guard_value(&values, 102), ours.as_bytes());
        assert_eq!(rounds(guard_value(&values, 102), "/page", 102), 2);
        // With no readable guard the count starts from nothing.
        assert_eq!(guard_value(&[&b"foreign"[..]], 102), b"");
        assert_eq!(guard_value(&[], 102), b"");
    }
}
