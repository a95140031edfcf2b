//! Output filters: the cookies a request queued (a refreshed session, a cleared one) go out
//! with whatever response it gets — from the upstream, a static file or an error page — and a
//! provider call's answer is collected (see `service::fetch`).

use ngx::ffi::{
    ngx_chain_t, ngx_http_output_body_filter_pt, ngx_http_output_header_filter_pt,
    ngx_http_request_t, ngx_http_top_body_filter, ngx_http_top_header_filter, ngx_int_t, NGX_ERROR,
    NGX_OK,
};

use crate::glue::service::{ctx, fetch, http};

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
