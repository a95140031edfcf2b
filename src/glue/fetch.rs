//! Provider I/O: an in-memory subrequest to the `internal` fetch location, which
//! `proxy_pass`es to `$oidc_fetch_url`. nginx does DNS, TLS, timeouts and keepalive; the worker
//! never blocks.

use core::mem::size_of;
use core::ptr;

use ngx::ffi::{
    ngx_alloc_chain_link, ngx_create_temp_buf, ngx_http_post_subrequest_t, ngx_http_request_body_t,
    ngx_http_request_t, ngx_http_subrequest, ngx_int_t, ngx_list_init, ngx_palloc, ngx_pcalloc,
    ngx_table_elt_t, ngx_uint_t, NGX_ERROR, NGX_HTTP_POST, NGX_HTTP_SPECIAL_RESPONSE,
    NGX_HTTP_SUBREQUEST_IN_MEMORY, NGX_HTTP_SUBREQUEST_WAITED, NGX_OK,
};

use super::ctx::{self, FetchSlot, RequestCtx};
use super::http::{calloc_buf, pool_str, push_header};

/// Largest provider answer kept; a bigger one fails the call instead of filling memory.
/// Keycloak token responses for users in hundreds of groups stay far below this.
const MAX_RESPONSE: usize = 256 * 1024;

pub struct FetchRequest<'a> {
    pub url: &'a str,
    /// An `application/x-www-form-urlencoded` body; makes the call a POST.
    pub form: Option<String>,
    pub authorization: Option<String>,
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
        }

        // The postpone filter appends an in-memory response to `out` when it already exists,
        // so a buffer of our size replaces the (small) subrequest_output_buffer_size default.
        let buf = ngx_create_temp_buf(pool, MAX_RESPONSE);
        let out = ngx_alloc_chain_link(pool);
        if buf.is_null() || out.is_null() {
            return Err(());
        }
        (*buf).set_last_buf(1);
        (*out).buf = buf;
        (*out).next = ptr::null_mut();
        (*sr).out = out;

        let url = pool_str(r, req.url.as_bytes()).ok_or(())?;
        ctx::set(
            sr,
            RequestCtx {
                fetch_url: Some(url),
                ..Default::default()
            },
        )
        .ok_or(())?;
        (*rctx).fetch = FetchSlot::Pending;
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
        if matches!(rctx.fetch, FetchSlot::Pending) {
            let status = if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
                rc as u16
            } else if rc == NGX_ERROR as ngx_int_t {
                0
            } else {
                (*sr).headers_out.status as u16
            };
            let out = (*sr).out;
            let body = if out.is_null() || (*out).buf.is_null() {
                Vec::new()
            } else {
                let b = (*out).buf;
                let len = (*b).last.offset_from((*b).pos).max(0) as usize;
                core::slice::from_raw_parts((*b).pos, len).to_vec()
            };
            rctx.fetch = FetchSlot::Done(status, body);
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
