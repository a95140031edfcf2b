//! Per-request state of this module, kept in the request's module context.

use ngx::ffi::{ngx_http_request_t, ngx_msec_t, ngx_shm_zone_t, ngx_str_t};
use ngx::http::HttpModule;

use crate::glue::Module;
use crate::metrics::Endpoint;
use crate::oidc::token::TokenResponse;
use std::rc::Rc;
use zeroize::Zeroizing;

use crate::session::Verified;

/// A provider call made through the fetch location, and which endpoint it went to.
pub enum FetchSlot {
    Idle,
    Pending(Endpoint),
    /// HTTP status (0 when no response arrived, [`super::fetch::TOO_BIG`] when it did not fit)
    /// and body.
    Done(Endpoint, u16, Zeroizing<Vec<u8>>),
}

/// Where this request stands with refreshing its session's access token.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RefreshState {
    Idle,
    /// This request asked the provider; the answer is in `fetch`.
    Fetching,
    /// The answer (in `token`) holds an ID token, being verified (keys may be fetched).
    Verifying,
    /// Another request is refreshing; this one has waited this many times.
    Waiting(u32),
    /// This request holds its node's refresh and asks the cluster store whether another node
    /// refreshes: paused `waits` times in all, `unanswered` of them for Redis' answer.
    Claiming {
        waits: u32,
        unanswered: u32,
    },
}

pub struct RequestCtx {
    /// The session that let this request through (shared with the per-worker cache).
    pub session: Option<Rc<Verified>>,
    /// The provider call this request is waiting for, or its result.
    pub fetch: FetchSlot,
    /// The callback's token response, kept while the keys are being fetched.
    pub token: Option<TokenResponse>,
    /// On a fetch subrequest: the provider URL behind `$oidc_fetch_url`.
    pub fetch_url: Option<ngx_str_t>,
    /// On a fetch subrequest: the answer so far.
    pub answer: Zeroizing<Vec<u8>>,
    /// On a fetch subrequest: the answer is over the limit and discarded.
    pub too_big: bool,
    pub refresh: RefreshState,
    /// `Set-Cookie` lines for whatever response this request ends up sending.
    pub set_cookies: Vec<String>,
    /// How many cookies (chunks) the session that opened spans: the only ones of our names
    /// this request may delete or replace (0: none opened).
    pub cookie_chunks: usize,
    /// The provider call in flight: which endpoint, when it was sent (nginx's millisecond
    /// clock) and the zone whose histogram it goes into.
    pub fetch_timer: Option<(Endpoint, ngx_msec_t, *mut ngx_shm_zone_t)>,
    /// This request's session decision has been counted (a handler that waits for the
    /// provider runs again on the same request).
    pub counted: bool,
}

impl Default for RequestCtx {
    fn default() -> Self {
        RequestCtx {
            session: None,
            fetch: FetchSlot::Idle,
            token: None,
            fetch_url: None,
            answer: Zeroizing::default(),
            too_big: false,
            refresh: RefreshState::Idle,
            set_cookies: Vec::new(),
            cookie_chunks: 0,
            fetch_timer: None,
            counted: false,
        }
    }
}

impl RequestCtx {
    /// Takes the finished result of a call to `endpoint`, leaving the slot idle. The answer of
    /// another endpoint is dropped: a step that found its document cached meanwhile (another
    /// request of this worker fetched it first) leaves its own answer behind, which must never
    /// be read as the next step's (a discovery document taken for a token response).
    pub fn take_fetched(&mut self, endpoint: Endpoint) -> Option<(u16, Zeroizing<Vec<u8>>)> {
        match std::mem::replace(&mut self.fetch, FetchSlot::Idle) {
            FetchSlot::Done(e, status, body) if e == endpoint => Some((status, body)),
            FetchSlot::Done(..) | FetchSlot::Idle => None,
            pending @ FetchSlot::Pending(_) => {
                self.fetch = pending;
                None
            }
        }
    }
}

/// This request's context, if the module created one.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn get<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut RequestCtx> {
    // SAFETY: r->ctx has one slot per http module; ours holds null or a RequestCtx.
    unsafe {
        let slot = *(*r).ctx.add(Module::module().ctx_index);
        (slot as *mut RequestCtx).as_mut()
    }
}

/// This request's context, created on first use. `None` only when the pool is exhausted.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn get_or_create<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut RequestCtx> {
    // SAFETY: as in `get`; the new context lives in the request pool, dropped with it.
    unsafe {
        if let Some(c) = get(r) {
            return Some(c);
        }
        set(r, RequestCtx::default())
    }
}

/// Installs a fresh context on `r`.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn set<'a>(r: *mut ngx_http_request_t, value: RequestCtx) -> Option<&'a mut RequestCtx> {
    // SAFETY: the pool allocation registers a cleanup that drops the value with the pool.
    unsafe {
        let pool = ngx::core::Pool::from_ngx_pool((*r).pool);
        let p = pool.allocate(value);
        if p.is_null() {
            return None;
        }
        *(*r).ctx.add(Module::module().ctx_index) = p.cast();
        p.as_mut()
    }
}
