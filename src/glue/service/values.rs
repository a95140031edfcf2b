//! Directive values that may hold nginx variables (`ngx_http_complex_value_t`): compiled when
//! the configuration is read, evaluated per request, as NGINX Plus's OIDC module does for
//! `redirect_uri`, `logout_uri` and the provider named in `auth_oidc`.

use core::mem::{size_of, zeroed};

use ngx::ffi::{
    ngx_conf_t, ngx_http_compile_complex_value, ngx_http_compile_complex_value_t,
    ngx_http_complex_value, ngx_http_complex_value_t, ngx_http_request_t, ngx_pcalloc, ngx_str_t,
    NGX_OK,
};

use ngx::ffi::NGX_LOG_ERR;
use ngx::ngx_log_error;

use super::http::{self, bytes, conf_str, log};
use crate::conf::provider::url_problem;
use crate::glue::Provider;

/// A compiled value; lives in the configuration pool as long as the configuration.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Complex(*mut ngx_http_complex_value_t);

impl Complex {
    /// Compiles `value` (with or without variables); `None` when nginx refuses it (it has
    /// logged why, e.g. an unknown variable).
    ///
    /// # Safety
    /// `cf` must be the configuration being parsed.
    pub unsafe fn compile(cf: *mut ngx_conf_t, value: &str) -> Option<Complex> {
        // SAFETY: the configuration pool outlives every request of this configuration; the
        // compile structure is plain data that nginx expects zeroed but for the fields set.
        unsafe {
            let cv = ngx_pcalloc((*cf).pool, size_of::<ngx_http_complex_value_t>())
                as *mut ngx_http_complex_value_t;
            if cv.is_null() {
                return None;
            }
            let mut text = conf_str(cf, value.as_bytes())?;
            let mut ccv: ngx_http_compile_complex_value_t = zeroed();
            ccv.cf = cf;
            ccv.value = &mut text;
            ccv.complex_value = cv;
            (ngx_http_compile_complex_value(&mut ccv) == NGX_OK as isize).then_some(Complex(cv))
        }
    }

    /// The value for request `r`; `None` when a variable could not be evaluated (out of
    /// memory).
    ///
    /// # Safety
    /// `r` must be a live request.
    pub unsafe fn eval(&self, r: *mut ngx_http_request_t) -> Option<String> {
        let mut out = ngx_str_t {
            len: 0,
            data: core::ptr::null_mut(),
        };
        // SAFETY: `self.0` was compiled for this configuration; `r` is live.
        let rc = unsafe { ngx_http_complex_value(r, self.0, &mut out) };
        (rc == NGX_OK as isize).then(|| String::from_utf8_lossy(bytes(&out)).into_owned())
    }

    /// The value as configured, variables unevaluated (for error messages).
    pub fn template(&self) -> String {
        // SAFETY: the compiled value keeps the configured text in the configuration pool.
        String::from_utf8_lossy(bytes(unsafe { &(*self.0).value })).into_owned()
    }
}

/// A URL of this site from a provider directive (`redirect_uri`, `post_logout_redirect_uri`):
/// its variables evaluated (`compiled`), a path completed with the origin the browser used
/// ([`http::origin`], which trusts forwarded headers only from `trusted_proxies`). `None`, logged
/// at `error` naming the directive, when the evaluated value is neither a path nor an http(s)
/// URL.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn site_url(
    r: *mut ngx_http_request_t,
    p: &Provider,
    directive: &str,
    configured: &str,
    compiled: Option<Complex>,
) -> Option<String> {
    let value = match compiled {
        // SAFETY: per this function's contract.
        Some(cv) => unsafe { cv.eval(r) }?,
        None => configured.to_string(),
    };
    if let Some(why) = url_problem(&value) {
        ngx_log_error!(
            NGX_LOG_ERR,
            log(r),
            "oidc: provider \"{}\": {} \"{}\" gives \"{}\", {}",
            p.conf.name,
            directive,
            configured,
            value,
            why
        );
        return None;
    }
    if value.starts_with('/') {
        // SAFETY: per this function's contract.
        let origin = unsafe { http::origin(r, &p.conf.trusted_proxies) };
        Some(format!("{origin}{value}"))
    } else {
        Some(value)
    }
}
