//! TLS on the cluster store's link (`rediss://`) with nginx's own SSL layer, the way
//! `ngx_http_proxy` does `proxy_ssl_verify on`: one client context (`ngx_ssl_t`) per provider,
//! made when the configuration is read and freed with the configuration's pool (a reload frees
//! the old one), and per connection the SSL connection, SNI, the check of the server's
//! certificate after the handshake, and the shutdown. Once the handshake is done the
//! connection's `recv`/`send` are nginx's SSL ones, so the link reads and writes as over TCP.

use core::ffi::{c_char, c_long, c_void, CStr};
use core::ptr::{self, NonNull};
use std::ffi::CString;
use std::net::IpAddr;
use std::path::Path;

use ngx::ffi::{
    ngx_conf_t, ngx_connection_t, ngx_int_t, ngx_pcalloc, ngx_pool_cleanup_add,
    ngx_ssl_certificate, ngx_ssl_check_host, ngx_ssl_cleanup_ctx, ngx_ssl_create,
    ngx_ssl_create_connection, ngx_ssl_shutdown, ngx_ssl_t, ngx_ssl_trusted_certificate, ngx_str_t,
    ngx_uint_t, NGX_SSL_TLSv1_2, NGX_SSL_TLSv1_3, SSL_CTX_set_default_verify_paths, SSL_ctrl,
    SSL_get1_peer_certificate, SSL_get_verify_result, TLSEXT_NAMETYPE_host_name, X509_check_ip_asc,
    X509_free, X509_verify_cert_error_string, NGX_AGAIN, NGX_OK, NGX_SSL_BUFFER, NGX_SSL_CLIENT,
    SSL_CTRL_SET_TLSEXT_HOSTNAME, X509_V_OK,
};

use crate::conf::cluster::StoreTls;
use crate::conf::provider::ConfError;

/// Longest certificate chain accepted above the server's certificate (intermediates + root),
/// as nginx-acme; `proxy_ssl_verify_depth`'s default of 1 would refuse common two-level CAs.
const VERIFY_DEPTH: ngx_int_t = 10;

/// A provider's TLS client context for its Redis: lives in the configuration's pool.
pub struct Context(NonNull<ngx_ssl_t>);

impl Context {
    /// Makes the context of a `rediss://` store: TLS 1.2 and 1.3, the client certificate when
    /// configured, and the trust anchors (`cluster_store_trusted_certificate`, or OpenSSL's
    /// default store). OpenSSL's own complaint about a file is logged by nginx just before;
    /// the error names the directive.
    ///
    /// # Safety
    /// `cf` must be the configuration being parsed; the context lives as long as its pool.
    pub unsafe fn create(cf: *mut ngx_conf_t, tls: &StoreTls) -> Result<Context, ConfError> {
        let fail = |directive: &'static str, why: &str| ConfError::Invalid {
            directive,
            why: why.to_string(),
        };
        // SAFETY: per this function's contract; every pointer below comes from nginx or from
        // the pool, and the pool cleanup frees the SSL_CTX with the configuration.
        unsafe {
            let pool = (*cf).pool;
            let ssl: *mut ngx_ssl_t = ngx_pcalloc(pool, size_of::<ngx_ssl_t>()).cast();
            let Some(ssl) = NonNull::new(ssl) else {
                return Err(fail("cluster_store", "out of memory"));
            };
            (*ssl.as_ptr()).log = (*cf).log;
            let protocols = (NGX_SSL_TLSv1_2 | NGX_SSL_TLSv1_3) as ngx_uint_t;
            if ngx_ssl_create(ssl.as_ptr(), protocols, ptr::null_mut()) != NGX_OK as ngx_int_t {
                return Err(fail(
                    "cluster_store",
                    "OpenSSL could not make a TLS client context (see the line above)",
                ));
            }
            let cln = ngx_pool_cleanup_add(pool, 0);
            if cln.is_null() {
                ngx_ssl_cleanup_ctx(ssl.as_ptr().cast());
                return Err(fail("cluster_store", "out of memory"));
            }
            (*cln).handler = Some(ngx_ssl_cleanup_ctx);
            (*cln).data = ssl.as_ptr().cast::<c_void>();

            if let Some(client) = &tls.client {
                let mut cert = conf_path(cf, &client.certificate)?;
                let mut key = conf_path(cf, &client.key)?;
                let rc =
                    ngx_ssl_certificate(cf, ssl.as_ptr(), &mut cert, &mut key, ptr::null_mut());
                if rc != NGX_OK as ngx_int_t {
                    return Err(fail(
                        "cluster_store_certificate",
                        "OpenSSL refused the certificate or its key (see the line above); give \
                         the PEM certificate in cluster_store_certificate and its own \
                         unencrypted key in cluster_store_certificate_key",
                    ));
                }
            }
            let mut trusted = match &tls.trusted_certificate {
                Some(path) => conf_path(cf, path)?,
                None => ngx_str_t {
                    len: 0,
                    data: ptr::null_mut(),
                },
            };
            let rc = ngx_ssl_trusted_certificate(cf, ssl.as_ptr(), &mut trusted, VERIFY_DEPTH);
            if rc != NGX_OK as ngx_int_t {
                return Err(fail(
                    "cluster_store_trusted_certificate",
                    "OpenSSL could not read the CA certificates (see the line above); give a \
                     PEM file of the CA that signed Redis's certificate",
                ));
            }
            if tls.trusted_certificate.is_none()
                && SSL_CTX_set_default_verify_paths((*ssl.as_ptr()).ctx) != 1
            {
                return Err(fail(
                    "cluster_store",
                    "OpenSSL's default trust store cannot be used; name the CA that signed \
                     Redis's certificate with cluster_store_trusted_certificate",
                ));
            }
            Ok(Context(ssl))
        }
    }
}

/// A path as nginx wants it for OpenSSL: in the configuration's pool and NUL-terminated
/// (nginx hands absolute paths to OpenSSL as they are).
///
/// # Safety
/// `cf` must be the configuration being parsed.
unsafe fn conf_path(cf: *mut ngx_conf_t, path: &Path) -> Result<ngx_str_t, ConfError> {
    let text = path.as_os_str().as_encoded_bytes();
    // SAFETY: an allocation of len + 1 bytes in the configuration's pool, filled below.
    let data: *mut u8 = unsafe { ngx_pcalloc((*cf).pool, text.len() + 1) }.cast();
    if data.is_null() {
        return Err(ConfError::Invalid {
            directive: "cluster_store",
            why: "out of memory".into(),
        });
    }
    // SAFETY: `data` has room for the bytes and the NUL that pcalloc left after them.
    unsafe { ptr::copy_nonoverlapping(text.as_ptr(), data, text.len()) };
    Ok(ngx_str_t {
        len: text.len(),
        data,
    })
}

/// Puts nginx's SSL connection on the connected `c` (whose pool it allocates from) and names
/// `host` in SNI unless it is an IP address (RFC 6066 §3 allows host names only). The
/// handshake is then `ngx_ssl_handshake`.
///
/// # Safety
/// `c` must be a live, connected peer connection with a pool.
pub unsafe fn start(c: *mut ngx_connection_t, ctx: &Context, host: &str) -> Result<(), String> {
    let flags = (NGX_SSL_CLIENT | NGX_SSL_BUFFER) as ngx_uint_t;
    // SAFETY: per this function's contract; the context outlives every connection (it goes
    // with the configuration, the connections before it).
    unsafe {
        if ngx_ssl_create_connection(ctx.0.as_ptr(), c, flags) != NGX_OK as ngx_int_t {
            return Err("cannot start TLS on the connection".into());
        }
        if host.parse::<IpAddr>().is_err() {
            let name = CString::new(host).map_err(|_| "the host name holds a NUL".to_string())?;
            // SSL_set_tlsext_host_name is this macro; OpenSSL copies the name.
            let rc = SSL_ctrl(
                (*(*c).ssl).connection,
                SSL_CTRL_SET_TLSEXT_HOSTNAME as i32,
                TLSEXT_NAMETYPE_host_name as c_long,
                name.as_ptr().cast_mut().cast::<c_void>(),
            );
            if rc != 1 {
                return Err(format!("OpenSSL refused \"{host}\" as SNI"));
            }
        }
    }
    Ok(())
}

/// After a completed handshake: whether the server's certificate chains to a trusted CA
/// (RFC 5280, OpenSSL's verification; nginx's verify callback lets the handshake finish either
/// way, so the result is read here) and is for `host` (RFC 6125: DNS names through nginx's
/// `ngx_ssl_check_host`, IP addresses against the iPAddress names). The error is what the
/// operator reads in the outage warning, e.g. "certificate verify failed: unable to get local
/// issuer certificate".
///
/// # Safety
/// `c` must be a live connection whose SSL handshake completed.
pub unsafe fn verify(c: *mut ngx_connection_t, host: &str) -> Result<(), String> {
    // SAFETY: per this function's contract.
    unsafe {
        let ssl = (*(*c).ssl).connection;
        let rc = SSL_get_verify_result(ssl);
        if rc != X509_V_OK as c_long {
            // A static string of OpenSSL's for every code.
            let why = CStr::from_ptr(X509_verify_cert_error_string(rc)).to_string_lossy();
            return Err(format!("certificate verify failed: {why}"));
        }
        let matches = if host.parse::<IpAddr>().is_ok() {
            let cert = SSL_get1_peer_certificate(ssl);
            if cert.is_null() {
                return Err("Redis sent no certificate".into());
            }
            let ip = CString::new(host).unwrap_or_default();
            let ok = X509_check_ip_asc(cert, ip.as_ptr().cast::<c_char>(), 0) == 1;
            X509_free(cert);
            ok
        } else {
            let mut name = ngx_str_t {
                len: host.len(),
                data: host.as_ptr().cast_mut(),
            };
            ngx_ssl_check_host(c, &mut name) == NGX_OK as ngx_int_t
        };
        if !matches {
            return Err(format!(
                "certificate verify failed: the certificate is not for \"{host}\" (none of its \
                 subjectAltName entries matches the host of cluster_store)"
            ));
        }
    }
    Ok(())
}

/// Ends TLS before the connection is closed: sends close_notify without waiting for Redis's
/// (as nginx does towards upstreams), quietly when the socket is full, and frees the SSL
/// connection either way.
///
/// # Safety
/// `c` must be a live connection.
pub unsafe fn shutdown(c: *mut ngx_connection_t) {
    // SAFETY: per this function's contract.
    unsafe {
        if (*c).ssl.is_null() {
            return;
        }
        (*(*c).ssl).set_no_wait_shutdown(1);
        if ngx_ssl_shutdown(c) == NGX_AGAIN as ngx_int_t {
            // Not freed yet: a connection in error shuts down quietly, which frees it.
            (*c).set_error(1);
            ngx_ssl_shutdown(c);
        }
    }
}
