//! The pause of a request that waits for another one's refresh (like `limit_req`'s delay).

use ngx::ffi::{
    ngx_add_timer, ngx_handle_read_event, ngx_handle_write_event, ngx_http_block_reading,
    ngx_http_core_run_phases, ngx_http_finalize_request, ngx_http_request_t, ngx_http_test_reading,
    ngx_int_t, NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_OK,
};

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
