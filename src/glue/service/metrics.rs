//! The provider's counters (`oidc_metrics`) and the readiness stamp, both in its shared zone:
//! what the flows and handlers call to count an outcome. Each is one relaxed atomic operation,
//! no lock (see [`crate::metrics`]).

use core::sync::atomic::Ordering;

use super::ctx::RequestCtx;
use super::zone;
use crate::glue::Provider;
use crate::metrics::Counter;

/// Counts one `c` for provider `p`.
#[inline]
pub fn count(p: &Provider, c: Counter) {
    // SAFETY: `p.zone` was created by zone::add for this provider; this runs in a worker.
    if let Some(m) = unsafe { zone::metrics(p.zone) } {
        m.add(c);
    }
}

/// Counts how the request's session was decided, once per request: a handler that waits for
/// the provider (a refresh, a login start fetching discovery) runs again on the same request.
#[inline]
pub fn decided(rctx: &mut RequestCtx, p: &Provider, c: Counter) {
    if !rctx.counted {
        rctx.counted = true;
        count(p, c);
    }
}

/// Records for every worker that this one has the discovery document and JWKS (at unix time
/// `now`), for `/oauth2/ready`.
pub fn documents_cached(p: &Provider, now: u64) {
    // SAFETY: as in `count`.
    if let Some(at) = unsafe { zone::documents_at(p.zone) } {
        at.fetch_max(now, Ordering::Relaxed);
    }
}

/// Whether some worker had the discovery document and JWKS within their cache lifetime
/// ([`crate::oidc::cache::TTL`]) at unix time `now`.
pub fn documents_known(p: &Provider, now: u64) -> bool {
    // SAFETY: as in `count`.
    unsafe { zone::documents_at(p.zone) }
        .map(|at| at.load(Ordering::Relaxed))
        .is_some_and(|at| at > 0 && now < at + crate::oidc::cache::TTL)
}
