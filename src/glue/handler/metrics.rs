//! `oidc_metrics`: the content handler that answers with every provider's counters in the
//! Prometheus text format ([`crate::metrics::render`]).

use ngx::ffi::{
    ngx_http_request_t, ngx_int_t, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_INTERNAL_SERVER_ERROR,
    NGX_HTTP_NOT_ALLOWED, NGX_HTTP_OK,
};
use ngx::http::{HttpModuleMainConf, Request};

use crate::glue::service::http::Response;
use crate::glue::service::zone;
use crate::glue::Module;
use crate::metrics;

/// Answers GET and HEAD with the counters of every `oidc_provider`; 405 otherwise.
pub extern "C" fn content_handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls content handlers with a live request.
    unsafe {
        let method = (*r).method as u32;
        if method != NGX_HTTP_GET && method != NGX_HTTP_HEAD {
            return Response::new(NGX_HTTP_NOT_ALLOWED as usize)
                .header("Allow", "GET, HEAD".into())
                .send(r);
        }
        let req = Request::from_ngx_http_request(r);
        let Some(main) = Module::main_conf(req) else {
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        let providers: Vec<(&str, &metrics::Metrics)> = main
            .providers
            .iter()
            .filter_map(|p| zone::metrics(p.zone).map(|m| (p.conf.name.as_str(), m)))
            .collect();
        Response {
            content_type: metrics::CONTENT_TYPE,
            body: metrics::render(&providers),
            ..Response::new(NGX_HTTP_OK as usize)
        }
        .send(r)
    }
}
