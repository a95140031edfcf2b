//! Provider I/O: an in-memory subrequest to the `internal` fetch location, which
//! `proxy_pass`es to `$oidc_fetch_url`. nginx does DNS, TLS, timeouts and keepalive; the worker
//! never blocks.

use core::mem::size_of;
use core::ptr;

use ngx::ffi::{
    ngx_alloc_chain_link, ngx_chain_t, ngx_current_msec, ngx_http_post_subrequest_t,
    ngx_http_request_body_t, ngx_http_request_t, ngx_http_subrequest, ngx_int_t, ngx_list_init,
    ngx_palloc, ngx_pcalloc, ngx_shm_zone_t, ngx_table_elt_t, ngx_uint_t, NGX_ERROR,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_HTTP_POST, NGX_HTTP_SPECIAL_RESPONSE,
    NGX_HTTP_SUBREQUEST_IN_MEMORY, NGX_HTTP_SUBREQUEST_WAITED, NGX_OK,
};

use zeroize::{Zeroize, Zeroizing};

use super::ctx::{self, FetchSlot, RequestCtx};
use super::http::{calloc_buf, list_elts, pool_str, push_header};
use super::zone;
use crate::metrics::Endpoint;

/// Largest provider answer kept; a bigger one fails the call instead of filling memory.
/// Keycloak token responses for users in hundreds of groups stay far below this.
const MAX_RESPONSE: usize = 256 * 1024;

/// The status a call reports when its answer was larger than `MAX_RESPONSE`. HTTP statuses
/// start at 100, so it cannot be mistaken for one the provider sent.
pub const TOO_BIG: u16 = 1;

/// Whether `status` came from an HTTP answer (rather than from no answer or one too big).
pub fn answered(status: u16) -> bool {
    status >= 100
}

/// An operator's hint for the status of a provider call: 404/405 come from a missing fetch
/// location more often than from the provider.
pub fn location_hint(status: u16, location: &str) -> String {
    match status {
        404 | 405 => format!(
            " (is `location {location} {{ internal; proxy_pass $oidc_fetch_url; }}` configured in this server?)"
        ),
        _ => String::new(),
    }
}

/// A call that brought no usable answer, described for the error log.
pub fn describe(status: u16, location: &str) -> String {
    match status {
        0 => format!(
            "no answer through {location} (is the provider reachable from nginx? nginx's own \
             line about the call comes just before this one)"
        ),
        TOO_BIG => format!(
            "an answer larger than {} KiB, the most a provider call may return",
            MAX_RESPONSE / 1024
        ),
        _ => format!("HTTP {status}{}", location_hint(status, location)),
    }
}

pub struct FetchRequest<'a> {
    /// Which provider endpoint is called, and the provider's zone: the call is timed into its
    /// histogram.
    pub endpoint: Endpoint,
    pub zone: *mut ngx_shm_zone_t,
    pub url: &'a str,
    /// An `application/x-www-form-urlencoded` body; makes the call a POST.
    pub form: Option<Zeroizing<String>>,
    pub authorization: Option<Zeroizing<String>>,
}

/// Starts the call; the request's phase handler runs again when it completes, and finds the
/// result in `ctx.fetch`.
///
/// # Safety
/// `r` must be the live main request that owns `ctx`.
pub unsafe fn start(
    r: *mut ngx_http_request_t,
    rctx: *mut RequestCtx,
    location: &str,
    req: FetchRequest,
) -> Result<(), ()> {
    // SAFETY: all memory comes from the main request's pool, which outlives the subrequest;
    // the subrequest's fields are set before nginx runs it (it is only posted here).
    unsafe {
        let pool = (*r).pool;
        let mut uri = pool_str(r, location.as_bytes()).ok_or(())?;
        let ps = ngx_palloc(pool, size_of::<ngx_http_post_subrequest_t>())
            as *mut ngx_http_post_subrequest_t;
        if ps.is_null() {
            return Err(());
        }
        (*ps).handler = Some(fetch_done);
        (*ps).data = rctx.cast();

        let mut sr: *mut ngx_http_request_t = ptr::null_mut();
        let flags = (NGX_HTTP_SUBREQUEST_IN_MEMORY | NGX_HTTP_SUBREQUEST_WAITED) as ngx_uint_t;
        if ngx_http_subrequest(r, &mut uri, ptr::null_mut(), &mut sr, ps, flags)
            != NGX_OK as ngx_int_t
        {
            return Err(());
        }

        // The provider must not see the browser's headers (cookies, credentials): start afresh.
        ptr::write_bytes(&mut (*sr).headers_in, 0, 1);
        if ngx_list_init(
            &mut (*sr).headers_in.headers,
            pool,
            4,
            size_of::<ngx_table_elt_t>(),
        ) != NGX_OK as ngx_int_t
        {
            return Err(());
        }
        (*sr).headers_in.content_length_n = -1;
        (*sr).headers_in.keep_alive_n = -1;
        push_header(
            r,
            &mut (*sr).headers_in.headers,
            "Accept",
            b"application/json",
        )
        .ok_or(())?;
        if let Some(auth) = &req.authorization {
            push_header(
                r,
                &mut (*sr).headers_in.headers,
                "Authorization",
                auth.as_bytes(),
            )
            .ok_or(())?;
        }
        if let Some(form) = &req.form {
            push_header(
                r,
                &mut (*sr).headers_in.headers,
                "Content-Type",
                b"application/x-www-form-urlencoded",
            )
            .ok_or(())?;
            let body = pool_str(r, form.as_bytes()).ok_or(())?;
            let b = calloc_buf(pool);
            let cl = ngx_alloc_chain_link(pool);
            let rb = ngx_pcalloc(pool, size_of::<ngx_http_request_body_t>())
                as *mut ngx_http_request_body_t;
            if b.is_null() || cl.is_null() || rb.is_null() {
                return Err(());
            }
            (*b).pos = body.data;
            (*b).start = body.data;
            (*b).last = body.data.add(body.len);
            (*b).end = (*b).last;
            (*b).set_memory(1);
            (*b).set_last_buf(1);
            (*b).set_last_in_chain(1);
            (*cl).buf = b;
            (*cl).next = ptr::null_mut();
            (*rb).bufs = cl;
            (*sr).request_body = rb;
            (*sr).headers_in.content_length_n = body.len as _;
            (*sr).method = NGX_HTTP_POST as ngx_uint_t;
            (*sr).method_name = pool_str(r, b"POST").ok_or(())?;
        } else {
            // A GET must not carry the parent's body: proxy_pass would send a back-channel
            // logout's form along with the discovery or JWKS GET, and providers answer 400.
            (*sr).request_body = ptr::null_mut();
        }

        let url = pool_str(r, req.url.as_bytes()).ok_or(())?;
        ctx::set(
            sr,
            RequestCtx {
                fetch_url: Some(url),
                ..Default::default()
            },
        )
        .ok_or(())?;
        (*rctx).fetch = FetchSlot::Pending(req.endpoint);
        (*rctx).fetch_timer = Some((req.endpoint, ngx_current_msec, req.zone));
        Ok(())
    }
}

/// Records the outcome once. nginx may call this twice for a failed subrequest (before and
/// after its error page); the first call carries the real status.
unsafe extern "C" fn fetch_done(
    sr: *mut ngx_http_request_t,
    data: *mut core::ffi::c_void,
    rc: ngx_int_t,
) -> ngx_int_t {
    // SAFETY: `data` is the parent's RequestCtx (pool memory of the main request, alive until
    // the main request ends); `sr` is the finished subrequest.
    unsafe {
        let rctx = &mut *(data as *mut RequestCtx);
        if let FetchSlot::Pending(endpoint) = rctx.fetch {
            let too_big = ctx::get(sr).is_some_and(|c| c.too_big);
            let status = if too_big {
                TOO_BIG
            } else if rc >= NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t
                || rc == NGX_ERROR as ngx_int_t
            {
                // nginx's own failure (connect refused, timeout, ...), logged by nginx: the
                // provider did not answer. A provider's own 5xx arrives as a response instead.
                0
            } else if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
                rc as u16
            } else {
                (*sr).headers_out.status as u16
            };
            let body = ctx::get(sr)
                .map(|c| core::mem::take(&mut c.answer))
                .unwrap_or_default();
            if let Some((endpoint, sent, zone)) = rctx.fetch_timer.take() {
                if let Some(m) = zone::metrics(zone) {
                    let ms = ngx_current_msec.wrapping_sub(sent);
                    m.observe(endpoint, ms as u64, (200..300).contains(&status));
                }
            }
            rctx.fetch = FetchSlot::Done(endpoint, status, body);
            wipe_request(sr);
        }
        // An error here would terminate the browser's request with no answer; the parent
        // reports the failure with a proper page instead.
        if rc == NGX_ERROR as ngx_int_t {
            NGX_OK as ngx_int_t
        } else {
            rc
        }
    }
}

/// Zeroes `len` bytes at `p` (zeroize: writes the compiler may not drop, although nothing in
/// Rust reads the memory again).
///
/// # Safety
/// `p..p+len` must be writable memory, or `len` 0.
unsafe fn wipe(p: *mut u8, len: usize) {
    if p.is_null() || len == 0 {
        return;
    }
    // SAFETY: per this function's contract.
    unsafe { core::slice::from_raw_parts_mut(p, len) }.zeroize();
}

/// Wipes what this module put into the subrequest's pool for the provider: the form body (a
/// code and PKCE verifier, or a refresh token) and the header values (client credentials).
/// nginx's own copy in the proxied request's buffer goes with the pool unwiped, like any
/// proxied request.
///
/// # Safety
/// `sr` must be a finished fetch subrequest whose pool memory is still alive.
unsafe fn wipe_request(sr: *mut ngx_http_request_t) {
    // SAFETY: per this function's contract; the body buffer and the header list were built by
    // `start` in the main request's pool.
    unsafe {
        let rb = (*sr).request_body;
        if !rb.is_null() && !(*rb).bufs.is_null() {
            let b = (*(*rb).bufs).buf;
            if !b.is_null() && (*b).memory() != 0 {
                wipe((*b).start, (*b).end.offset_from((*b).start).max(0) as usize);
            }
        }
        for h in list_elts(&(*sr).headers_in.headers) {
            wipe(h.value.data, h.value.len);
        }
    }
}

// The answer is collected by this module's own body filter, ahead of nginx's in-memory
// subrequest filter: memory grows with the answer instead of a fixed buffer per call, and an
// answer over MAX_RESPONSE never reaches that filter, whose failure ("too big subrequest
// response") would close the browser's connection with the subrequest.

/// The context of `r` if it is a fetch subrequest.
///
/// # Safety
/// `r` must be a live request.
unsafe fn fetch_ctx<'a>(r: *mut ngx_http_request_t) -> Option<&'a mut RequestCtx> {
    // SAFETY: per this function's contract.
    unsafe {
        if r == (*r).main {
            return None;
        }
        ctx::get(r).filter(|c| c.fetch_url.is_some())
    }
}

/// Header filter, for a fetch subrequest: an answer whose Content-Length is over the limit ends
/// after its header (nginx does not read the body); one that fits gets its room up front.
/// The body is passed unbuffered, so nginx never spills it to a temp file.
///
/// # Safety
/// `r` must be a live request in the header filter.
pub unsafe fn check_header(r: *mut ngx_http_request_t) {
    // SAFETY: per this function's contract; `upstream` of a proxied subrequest is live while
    // its header is sent, and nginx reads `buffering` only after the header filters (as for
    // X-Accel-Buffering).
    unsafe {
        let Some(c) = fetch_ctx(r) else {
            return;
        };
        if !(*r).upstream.is_null() {
            (*(*r).upstream).set_buffering(0);
        }
        let len = (*r).headers_out.content_length_n;
        if len > MAX_RESPONSE as i64 {
            c.too_big = true;
            (*r).set_header_only(1);
        } else if len > 0 {
            c.answer.reserve_exact(len as usize);
        }
    }
}

/// Body filter: takes a fetch subrequest's answer into its context (up to MAX_RESPONSE; a
/// bigger one is read to its end, bounded by `proxy_read_timeout`, and discarded). Returns
/// false for any other request.
///
/// # Safety
/// `r` must be a live request and `chain` its output chain, in the body filter.
pub unsafe fn collect(r: *mut ngx_http_request_t, chain: *mut ngx_chain_t) -> bool {
    // SAFETY: per this function's contract; the chain's buffers belong to the upstream, which
    // takes a buffer whose data was consumed (pos == last) as free again.
    unsafe {
        let Some(c) = fetch_ctx(r) else {
            return false;
        };
        let mut cl = chain;
        while !cl.is_null() {
            let b = (*cl).buf;
            let len = (*b).last.offset_from((*b).pos).max(0) as usize;
            if len > 0 && !c.too_big {
                if c.answer.len() + len > MAX_RESPONSE {
                    c.too_big = true;
                    c.answer = Zeroizing::default();
                } else {
                    grow_zeroizing(&mut c.answer, len);
                    c.answer
                        .extend_from_slice(core::slice::from_raw_parts((*b).pos, len));
                }
            }
            (*b).pos = (*b).last;
            cl = (*cl).next;
        }
        true
    }
}

/// Makes room for `more` bytes without leaving a copy of the answer in freed memory.
fn grow_zeroizing(v: &mut Zeroizing<Vec<u8>>, more: usize) {
    if v.capacity() - v.len() >= more {
        return;
    }
    let mut bigger = Zeroizing::new(Vec::with_capacity((v.len() + more).max(2 * v.capacity())));
    bigger.extend_from_slice(v);
    *v = bigger;
}
