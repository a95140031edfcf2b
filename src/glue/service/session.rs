//! The session a request's cookies carry: opened (or taken from the per-worker cache) and
//! checked against the shared zone's revocations.

use std::rc::Rc;

use ngx::ffi::ngx_http_request_t;

use super::{http, zone};
use crate::glue::Provider;
use crate::session::cookies;
use crate::session::{Session, Verified};
use crate::shared;

/// What a request's session cookies hold for a provider.
pub struct Carried {
    /// The session that opened, if it is still valid (not yet checked for revocation).
    pub valid: Option<Rc<Verified>>,
    /// How many cookies (chunks) the session that opened spans, valid or not: the only cookies
    /// of our names the request may delete or replace (0: none opened).
    pub chunks: usize,
}

/// The session of this provider that the request's cookies hold at `now` (seconds since the
/// epoch): the first combination of cookies of our names that opens, so a same-named cookie of
/// another application cannot hide it. From the per-worker cache when this value was seen
/// before, else opened and cached.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn carried_session(r: *mut ngx_http_request_t, p: &Provider, now: u64) -> Carried {
    // SAFETY: per this function's contract.
    let headers = unsafe { http::cookie_headers(r) };
    let opened = cookies::open_chunked(&headers, &p.conf.cookie_name, |value| {
        let cached = p.sessions.borrow().get(value);
        if let Some(v) = cached {
            return Some(v);
        }
        let session = Session::open(&p.conf.keys, &p.conf.session_aad, value)?;
        let v = Rc::new(Verified::new(session, &p.conf.user_claim));
        p.sessions.borrow_mut().insert(value, Rc::clone(&v));
        Some(v)
    });
    match opened {
        Some((v, chunks)) => Carried {
            valid: Some(v).filter(|v| v.session.is_valid_at(now)),
            chunks,
        },
        None => Carried {
            valid: None,
            chunks: 0,
        },
    }
}

/// Whether the provider logged this session out (back-channel logout or sign-out): by its
/// `sid`, or every login of its `sub` up to a time (a logout token without `sid`).
///
/// # Safety
/// Must run in a worker (the zone exists).
pub unsafe fn is_revoked(p: &Provider, s: &Session, now: u64) -> bool {
    // SAFETY: per this function's contract.
    unsafe {
        zone::with_table(p.zone, |t| {
            if !t.any_revoked() {
                return false;
            }
            let by_sid = s
                .sid
                .as_ref()
                .is_some_and(|sid| t.is_revoked(&shared::key(sid.as_bytes()), now));
            by_sid
                || t.any_subject_revoked()
                    && s.claim_str("sub").is_some_and(|sub| {
                        t.revoked_since(&shared::subject_key(sub), now)
                            .is_some_and(|since| s.iat <= since)
                    })
        })
    }
    .unwrap_or(false)
}
