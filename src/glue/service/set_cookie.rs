//! The cookies this module sets and deletes: their attributes, and which cookies of our names a
//! request carries that are proven ours (only those are replaced or deleted).

use super::ctx::RequestCtx;
use crate::glue::Provider;
use crate::session::cookies::{self, CookieAttrs};
use crate::session::LoginState;

/// The attributes of every cookie this provider's sessions and logins use.
pub fn attrs(p: &Provider) -> CookieAttrs<'_> {
    &p.conf.cookie
}

/// Deletions for the `chunks` cookies of a session that opened (0: none did, nothing is
/// deleted).
pub fn clear_session_cookies(p: &Provider, chunks: usize) -> Vec<String> {
    let attrs = attrs(p);
    (0..chunks)
        .map(|i| cookies::delete_cookie(&cookies::chunk_name(&p.conf.cookie_name, i), attrs))
        .collect()
}

/// Queues the cookies that store `sealed` on this request's response, replacing the chunks of
/// the session that opened.
pub fn queue_session(rctx: &mut RequestCtx, p: &Provider, sealed: &str, max_age: u64) {
    rctx.set_cookies.extend(cookies::session_cookies(
        &p.conf.cookie_name,
        sealed,
        max_age,
        rctx.cookie_chunks,
        attrs(p),
    ));
}

/// The loop guard's cookie: the pages logins recently came back to (see [`crate::session::logins`]).
pub fn guard_cookie(p: &Provider) -> String {
    format!("{}_n", &*p.conf.cookie_name)
}

/// The login-state cookies of this provider that the request carries, as (name, bytes in the
/// `Cookie` header, state): only those that open with the provider's keys, since a cookie of
/// another application under a name like ours is never ours to count or delete.
pub fn own_login_states<'a>(
    p: &'a Provider,
    headers: &'a [&'a [u8]],
) -> impl Iterator<Item = (&'a [u8], usize, LoginState)> + 'a {
    let prefix = LoginState::cookie_prefix(&p.conf.cookie_name);
    cookies::pairs(headers)
        .filter(move |(n, _)| n.starts_with(prefix.as_bytes()))
        .filter_map(|(n, v)| {
            let plain = p.conf.keys.open(&p.conf.state_aad, v)?;
            Some((
                n,
                n.len() + 1 + v.len(),
                LoginState::from_plaintext(&plain)?,
            ))
        })
}
