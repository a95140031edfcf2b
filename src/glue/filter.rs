//! Output filters: the cookies a request queued (a refreshed session, a cleared one) go out
//! with whatever response it gets — from the upstream, a static file or an error page — and a
//! provider call's answer is collected (see `fetch`). Also the pause of a request that waits
//! for another one's refresh.

use ngx::ffi::{
    ngx_add_timer, ngx_chain_t, ngx_handle_read_event, ngx_handle_write_event,
    ngx_http_block_reading, ngx_http_core_run_phases, ngx_http_finalize_request,
    ngx_http_output_body_filter_pt, ngx_http_output_header_filter_pt, ngx_http_request_t,
    ngx_http_test_reading, ngx_http_top_body_filter, ngx_http_top_header_filter, ngx_int_t,
    NGX_ERROR, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_OK,
};

use super::{ctx, fetch, http};

static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;
static mut NEXT_BODY_FILTER: ngx_http_output_body_filter_pt = None;

/// # Safety
/// Call once from postconfiguration.
pub unsafe fn install() {
    // SAFETY: filters are chained while the configuration is built, single-threaded.
    unsafe {
        NEXT_HEADER_FILTER = ngx_http_top_header_filter;
        ngx_http_top_header_filter = Some(header_filter);
        NEXT_BODY_FILTER = ngx_http_top_body_filter;
        ngx_http_top_body_filter = Some(body_filter);
    }
}

unsafe extern "C" fn body_filter(r: *mut ngx_http_request_t, chain: *mut ngx_chain_t) -> ngx_int_t {
    // SAFETY: nginx calls body filters with a live request and its chain; NEXT_BODY_FILTER was
    // set before any request.
    unsafe {
        if fetch::collect(r, chain) {
            return NGX_OK as ngx_int_t;
        }
        match NEXT_BODY_FILTER {
            Some(next) => next(r, chain),
            None => NGX_OK as ngx_int_t,
        }
    }
}

unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls header filters with a live request; NEXT_HEADER_FILTER was set
    // before any request.
    unsafe {
        if r == (*r).main {
            if let Some(c) = ctx::get(r) {
                for line in c.set_cookies.drain(..) {
                    let list = &mut (*r).headers_out.headers;
                    if http::push_header(r, list, "Set-Cookie", line.as_bytes()).is_none() {
                        return NGX_ERROR as ngx_int_t;
                    }
                }
            }
        } else {
            fetch::check_header(r);
        }
        match NEXT_HEADER_FILTER {
            Some(next) => next(r),
            None => NGX_OK as ngx_int_t,
        }
    }
}

/// Pauses the request for `ms`, then runs its phases again (like `limit_req`'s delay).
///
/// # Safety
/// `r` must be a live main request in a phase handler that then returns `NGX_AGAIN`.
pub unsafe fn pause(r: *mut ngx_http_request_t, ms: usize) {
    // SAFETY: per this function's contract; the timer lives on the connection's write event.
    unsafe {
        (*r).read_event_handler = Some(ngx_http_test_reading);
        (*r).write_event_handler = Some(resume);
        let wev = (*(*r).connection).write;
        (*wev).set_delayed(1);
        ngx_add_timer(wev, ms as _);
    }
}

unsafe extern "C" fn resume(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls the write handler with the live request; nginx clears `delayed`
    // when the timer fired, so a still-delayed event is an unrelated wake-up.
    unsafe {
        let c = (*r).connection;
        if (*(*c).write).delayed() != 0 {
            if ngx_handle_write_event((*c).write, 0) != NGX_OK as ngx_int_t {
                ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
            }
            return;
        }
        if ngx_handle_read_event((*c).read, 0) != NGX_OK as ngx_int_t {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
            return;
        }
        (*r).read_event_handler = Some(ngx_http_block_reading);
        (*r).write_event_handler = Some(ngx_http_core_run_phases);
        ngx_http_core_run_phases(r);
    }
}
