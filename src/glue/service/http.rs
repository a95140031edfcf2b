//! Request plumbing: headers in and out, cookies, query, and sending a response.

use core::ptr;

use ngx::ffi::{
    ngx_alloc_chain_link, ngx_buf_t, ngx_http_discard_request_body, ngx_http_output_filter,
    ngx_http_request_t, ngx_http_send_header, ngx_http_send_special, ngx_int_t, ngx_list_init,
    ngx_list_part_t, ngx_list_push, ngx_list_t, ngx_pcalloc, ngx_pool_t, ngx_str_t,
    ngx_table_elt_t, ngx_uint_t, NGX_ERROR, NGX_HTTP_LAST, NGX_OK,
};

use crate::forwarded;
use crate::oidc::query;
use crate::session::cookies;

/// Headers this module sets for the upstream; a client must never be able to send its own.
pub const IDENTITY_HEADER_PREFIX: &[u8] = b"x-auth-request-";

/// The error log of the request's connection.
pub fn log(r: *mut ngx_http_request_t) -> *mut ngx::ffi::ngx_log_t {
    // SAFETY: a live request always has a connection with a log.
    unsafe { (*(*r).connection).log }
}

/// Iterates the elements of an nginx list of `ngx_table_elt_t`.
///
/// # Safety
/// `list` must be a valid, initialised list of table elements that is not modified meanwhile.
pub unsafe fn list_elts<'a>(
    list: *const ngx_list_t,
) -> impl Iterator<Item = &'a mut ngx_table_elt_t> {
    // SAFETY: per the caller's contract the parts chain is valid.
    let mut part: *const ngx_list_part_t = unsafe { &(*list).part };
    core::iter::from_fn(move || {
        if part.is_null() {
            return None;
        }
        // SAFETY: `part` is a valid list part; nelts elements of table elts follow `elts`.
        let p = unsafe { &*part };
        let elts =
            unsafe { core::slice::from_raw_parts_mut(p.elts as *mut ngx_table_elt_t, p.nelts) };
        part = p.next;
        Some(elts.iter_mut())
    })
    .flatten()
}

pub fn bytes(s: &ngx_str_t) -> &[u8] {
    if s.len == 0 || s.data.is_null() {
        return &[];
    }
    // SAFETY: an ngx_str_t with a non-null pointer refers to `len` readable bytes.
    unsafe { core::slice::from_raw_parts(s.data, s.len) }
}

/// Copies `data` into the request pool.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn pool_str(r: *mut ngx_http_request_t, data: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: the request pool lives as long as the request.
    unsafe { ngx_str_t::from_bytes((*r).pool, data) }
}

/// Copies `data` into the configuration pool.
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn conf_str(cf: *mut ngx::ffi::ngx_conf_t, data: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: the configuration pool lives as long as the configuration.
    unsafe { ngx_str_t::from_bytes((*cf).pool, data) }
}

/// Appends a header to `list`, with the lower-case key nginx's consumers expect.
///
/// # Safety
/// `r` must be a live request and `list` one of its header lists.
pub unsafe fn push_header(
    r: *mut ngx_http_request_t,
    list: *mut ngx_list_t,
    key: &str,
    value: &[u8],
) -> Option<()> {
    // SAFETY: per the caller's contract; the copies live in the request pool.
    unsafe {
        let lower = key.to_ascii_lowercase();
        let key = pool_str(r, key.as_bytes())?;
        let lowcase_key = pool_str(r, lower.as_bytes())?.data;
        let value = pool_str(r, value)?;
        push_elt(list, key, lowcase_key, value)
    }
}

/// Appends a header whose key, lower-case key and value live at least as long as the request
/// (static names, a value held by the request context): no copies.
///
/// # Safety
/// `list` must be a header list of a live request, and `value` must outlive that request.
pub unsafe fn push_header_borrowed(
    list: *mut ngx_list_t,
    key: &'static str,
    lowcase_key: &'static str,
    value: &[u8],
) -> Option<()> {
    // SAFETY: per the caller's contract; nginx only reads header names and values.
    unsafe {
        let key_str = ngx_str_t {
            len: key.len(),
            data: key.as_ptr() as *mut u8,
        };
        let value = ngx_str_t {
            len: value.len(),
            data: value.as_ptr() as *mut u8,
        };
        push_elt(list, key_str, lowcase_key.as_ptr() as *mut u8, value)
    }
}

/// Appends one header element (a single value, not chained to another of its name).
///
/// # Safety
/// `list` must be a header list of a live request; the strings must outlive the request.
unsafe fn push_elt(
    list: *mut ngx_list_t,
    key: ngx_str_t,
    lowcase_key: *mut u8,
    value: ngx_str_t,
) -> Option<()> {
    // SAFETY: per this function's contract; ngx_list_push returns room for one element.
    unsafe {
        let h = ngx_list_push(list) as *mut ngx_table_elt_t;
        if h.is_null() {
            return None;
        }
        (*h).key = key;
        (*h).value = value;
        (*h).lowcase_key = lowcase_key;
        (*h).hash = 1;
        #[cfg(not(ngx_oidc_pre_1_23))]
        {
            (*h).next = ptr::null_mut();
        }
        Some(())
    }
}

/// The values of every `Cookie` header of the request.
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn cookie_headers<'a>(r: *mut ngx_http_request_t) -> Vec<&'a [u8]> {
    // SAFETY: per this function's contract; the elements live as long as the request.
    unsafe { cookie_elts(r).map(|h| bytes(&(*h).value)).collect() }
}

/// The request's `Cookie` header elements: a `next` chain since nginx 1.23, an array before.
///
/// # Safety
/// `r` must be a live request.
unsafe fn cookie_elts(r: *mut ngx_http_request_t) -> impl Iterator<Item = *mut ngx_table_elt_t> {
    #[cfg(not(ngx_oidc_pre_1_23))]
    {
        // SAFETY: headers_in.cookie is null or the head of a `next`-linked chain.
        let mut h = unsafe { (*r).headers_in.cookie };
        core::iter::from_fn(move || {
            let cur = h;
            if cur.is_null() {
                return None;
            }
            // SAFETY: `cur` is a live element of the chain.
            h = unsafe { (*cur).next };
            Some(cur)
        })
    }
    #[cfg(ngx_oidc_pre_1_23)]
    {
        // SAFETY: headers_in.cookies is an array of element pointers (maybe never initialised,
        // then empty).
        let a = unsafe { &(*r).headers_in.cookies };
        let elts: &[*mut ngx_table_elt_t] = if a.elts.is_null() || a.nelts == 0 {
            &[]
        } else {
            // SAFETY: `nelts` pointers are stored at `elts`.
            unsafe { core::slice::from_raw_parts(a.elts as *const *mut ngx_table_elt_t, a.nelts) }
        };
        elts.iter().copied()
    }
}

/// The first request header named `name` (lower case).
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn header_in<'a>(r: *mut ngx_http_request_t, name: &[u8]) -> Option<&'a [u8]> {
    // SAFETY: the request's header list is valid for the request's lifetime; lowcase_key holds
    // key.len bytes.
    unsafe { list_elts(&(*r).headers_in.headers) }
        .find(|h| {
            h.key.len == name.len()
                && unsafe { core::slice::from_raw_parts(h.lowcase_key, h.key.len) } == name
        })
        .map(|h| bytes(&h.value))
}

/// Removes client-sent `X-Auth-Request-*` headers; only rebuilds the list when one is there.
///
/// # Safety
/// `r` must be a live main request before its headers are forwarded.
pub unsafe fn strip_identity_headers(r: *mut ngx_http_request_t) -> Result<(), ()> {
    let spoofed = |h: &ngx_table_elt_t| {
        // SAFETY: lowcase_key holds key.len bytes for every request header.
        let lk = unsafe { core::slice::from_raw_parts(h.lowcase_key, h.key.len) };
        lk.len() >= IDENTITY_HEADER_PREFIX.len()
            && lk[..IDENTITY_HEADER_PREFIX.len()] == *IDENTITY_HEADER_PREFIX
    };
    // SAFETY: per this function's contract.
    unsafe {
        if !list_elts(&(*r).headers_in.headers).any(|h| spoofed(h)) {
            return Ok(());
        }
        remove_headers_in(r, |h| spoofed(h))
    }
}

/// Removes our own cookies from the `Cookie` headers the upstream will receive.
///
/// # Safety
/// `r` must be a live main request before its headers are forwarded.
pub unsafe fn strip_cookies(
    r: *mut ngx_http_request_t,
    cookie_name: &cookies::CookieName,
) -> Result<(), ()> {
    let mut emptied = false;
    // SAFETY: the cookie elements are live header elements of the request.
    unsafe {
        for h in cookie_elts(r) {
            if let Some(kept) = cookies::strip_ours(bytes(&(*h).value), cookie_name) {
                emptied |= kept.is_empty();
                (*h).value = pool_str(r, &kept).ok_or(())?;
            }
        }
        if !emptied {
            return Ok(());
        }
        let is_empty_cookie = |h: &ngx_table_elt_t| {
            h.value.len == 0
                && h.key.len == 6
                && core::slice::from_raw_parts(h.lowcase_key, 6) == b"cookie"
        };
        remove_headers_in(r, is_empty_cookie)
    }
}

/// nginx lists cannot delete elements, so the request header list is rebuilt without the
/// removed ones, and the pointers nginx keeps into it (`headers_in.host`, `.cookie`, …, and the
/// `next` links of repeated headers) are moved to the copies. Elements keep their order, so an
/// old element's copy is found by counting; no allocation besides the new list.
///
/// # Safety
/// `r` must be a live request; no one may hold header element pointers across this call other
/// than `headers_in`'s own fields.
unsafe fn remove_headers_in(
    r: *mut ngx_http_request_t,
    remove: impl Fn(&ngx_table_elt_t) -> bool,
) -> Result<(), ()> {
    // SAFETY: per this function's contract. The old elements stay in the pool, so reading
    // them after re-initialising the list is fine.
    unsafe {
        let hin = &mut (*r).headers_in;
        let old: ngx_list_t = ptr::read(&hin.headers);
        let size = core::mem::size_of::<ngx_table_elt_t>();
        if ngx_list_init(&mut hin.headers, (*r).pool, 20, size) != NGX_OK as ngx_int_t {
            return Err(());
        }
        for h in list_elts(&old) {
            if remove(h) {
                continue;
            }
            let slot = ngx_list_push(&mut hin.headers) as *mut ngx_table_elt_t;
            if slot.is_null() {
                return Err(());
            }
            ptr::write(slot, ptr::read(h));
        }
        let new: *const ngx_list_t = &hin.headers;
        // A pointer to a removed element moves on along its chain (1.23+) or becomes null.
        let remap = |mut p: *mut ngx_table_elt_t| -> *mut ngx_table_elt_t {
            while !p.is_null() && remove(&*p) {
                #[cfg(not(ngx_oidc_pre_1_23))]
                {
                    p = (*p).next;
                }
                #[cfg(ngx_oidc_pre_1_23)]
                {
                    p = ptr::null_mut();
                }
            }
            if p.is_null() {
                return p;
            }
            let mut kept = 0;
            for h in list_elts(&old) {
                if ptr::eq(h, p) {
                    return list_elts(new).nth(kept).map_or(p, |n| n as *mut _);
                }
                if !remove(h) {
                    kept += 1;
                }
            }
            p
        };
        // The element pointers of ngx_http_headers_in_t are declared one after another, from
        // `host` to `cookie`. Only elements on these chains have a meaningful `next` (nginx
        // leaves it uninitialised for headers it does not know), so only chains are followed.
        #[cfg(not(ngx_oidc_pre_1_23))]
        {
            let first = &mut hin.host as *mut *mut ngx_table_elt_t;
            let last = &mut hin.cookie as *mut *mut ngx_table_elt_t;
            let mut slot = first;
            while slot <= last {
                *slot = remap(*slot);
                let mut cur = *slot;
                while !cur.is_null() {
                    (*cur).next = remap((*cur).next);
                    cur = (*cur).next;
                }
                slot = slot.add(1);
            }
        }
        // Before 1.23 the pointers run from `host` to `keep_alive` and from `x_real_ip` to
        // `date`, with `x_forwarded_for` and `cookies` as arrays of element pointers.
        #[cfg(ngx_oidc_pre_1_23)]
        {
            let runs = [
                (
                    &mut hin.host as *mut *mut ngx_table_elt_t,
                    &mut hin.keep_alive as *mut *mut ngx_table_elt_t,
                ),
                (
                    &mut hin.x_real_ip as *mut *mut ngx_table_elt_t,
                    &mut hin.date as *mut *mut ngx_table_elt_t,
                ),
            ];
            for (first, last) in runs {
                let mut slot = first;
                while slot <= last {
                    *slot = remap(*slot);
                    slot = slot.add(1);
                }
            }
            for a in [&mut hin.x_forwarded_for, &mut hin.cookies] {
                if a.elts.is_null() {
                    continue;
                }
                let elts =
                    core::slice::from_raw_parts_mut(a.elts as *mut *mut ngx_table_elt_t, a.nelts);
                let mut kept = 0;
                for i in 0..elts.len() {
                    let p = remap(elts[i]);
                    if !p.is_null() {
                        elts[kept] = p;
                        kept += 1;
                    }
                }
                a.nelts = kept;
            }
        }
    }
    Ok(())
}

/// The request body when it is in memory (small forms); `None` when it was written to a file.
///
/// # Safety
/// `r` must be a live request whose body has been read.
pub unsafe fn request_body(r: *mut ngx_http_request_t) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    // SAFETY: per this function's contract; the chain belongs to the request.
    unsafe {
        let rb = (*r).request_body;
        if rb.is_null() || !(*rb).temp_file.is_null() {
            return None;
        }
        let mut cl = (*rb).bufs;
        while !cl.is_null() {
            let b = (*cl).buf;
            if (*b).in_file() != 0 {
                return None;
            }
            if !(*b).pos.is_null() && (*b).last > (*b).pos {
                let len = (*b).last.offset_from((*b).pos) as usize;
                out.extend_from_slice(core::slice::from_raw_parts((*b).pos, len));
            }
            cl = (*cl).next;
        }
    }
    Some(out)
}

/// The request's query string (without `?`).
pub fn args(r: &ngx_http_request_t) -> &str {
    core::str::from_utf8(bytes(&r.args)).unwrap_or("")
}

/// Hides the callback's one-time values from everything nginx logs about this request: the
/// access log's `$request` and `$request_uri`, and the request context of every error-log line
/// (a provider subrequest copies it from here, so this runs before one starts).
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn hide_callback_values(r: *mut ngx_http_request_t) {
    // SAFETY: per this function's contract; the replacements live in the request pool and
    // `args` keeps pointing at the original query, which the callback still parses.
    unsafe {
        let args = bytes(&(*r).args);
        if let Some(line) = query::hide_one_time_values(bytes(&(*r).request_line), args) {
            if let Some(s) = pool_str(r, &line) {
                (*r).request_line = s;
            }
        }
        if let Some(uri) = query::hide_one_time_values(bytes(&(*r).unparsed_uri), args) {
            if let Some(s) = pool_str(r, &uri) {
                (*r).unparsed_uri = s;
            }
        }
    }
}

/// `scheme://host[:port]` as the browser addressed this server: from the connection and
/// `Host`, or from `X-Forwarded-Proto`/`X-Forwarded-Host` when the peer is one of `trusted`
/// (a TLS-terminating load balancer).
///
/// # Safety
/// `r` must be a live request.
pub unsafe fn origin(r: *mut ngx_http_request_t, trusted: &[ipnet::IpNet]) -> String {
    // SAFETY: connection and headers are valid for a live request.
    unsafe {
        let c = (*r).connection;
        let host = if (*r).headers_in.host.is_null() {
            bytes(&(*r).headers_in.server)
        } else {
            bytes(&(*(*r).headers_in.host).value)
        };
        let host = String::from_utf8_lossy(host);
        let arrival = forwarded::Arrival {
            tls: !(*c).ssl.is_null(),
            host: &host,
            peer: peer_ip((*c).sockaddr),
            forwarded_proto: header_in(r, b"x-forwarded-proto"),
            forwarded_host: header_in(r, b"x-forwarded-host"),
        };
        forwarded::origin(&arrival, trusted)
    }
}

/// The IP address of a connection's peer (`None` for a unix socket).
///
/// # Safety
/// `sa` must be null or point to a socket address of the family it names.
unsafe fn peer_ip(sa: *const ngx::ffi::sockaddr) -> Option<std::net::IpAddr> {
    // SAFETY: per this function's contract; the family tells which structure it is.
    unsafe {
        if sa.is_null() {
            return None;
        }
        match u32::from((*sa).sa_family) {
            ngx::ffi::AF_INET => {
                let sin = &*(sa as *const ngx::ffi::sockaddr_in);
                Some(std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into())
            }
            ngx::ffi::AF_INET6 => {
                let sin6 = &*(sa as *const ngx::ffi::sockaddr_in6);
                Some(std::net::Ipv6Addr::from(sin6.sin6_addr.__in6_u.__u6_addr8).into())
            }
            _ => None,
        }
    }
}

/// One response: status, extra headers, an HTML (or other) body.
pub struct Response<'a> {
    pub status: ngx_uint_t,
    pub content_type: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: String,
}

impl<'a> Response<'a> {
    pub fn new(status: ngx_uint_t) -> Response<'a> {
        Response {
            status,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, key: &'a str, value: String) -> Self {
        self.headers.push((key, value));
        self
    }

    /// A small page that says what happened; `text` is escaped.
    pub fn page(mut self, title: &str, text: &str) -> Self {
        self.body = format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
             <body><h1>{t}</h1><p>{x}</p></body></html>\n",
            t = html_escape(title),
            x = html_escape(text)
        );
        self
    }

    pub fn json(mut self, body: String) -> Self {
        self.content_type = "application/json";
        self.body = body;
        self
    }

    /// Sends the whole response; returns what nginx's content phase would return.
    ///
    /// # Safety
    /// `r` must be a live request that has not sent its header yet.
    pub unsafe fn send(self, r: *mut ngx_http_request_t) -> ngx_int_t {
        // SAFETY: all pointers come from the live request and its pool.
        unsafe {
            if r == (*r).main && ngx_http_discard_request_body(r) != NGX_OK as ngx_int_t {
                return NGX_ERROR as ngx_int_t;
            }
            let out = &mut (*r).headers_out;
            out.status = self.status;
            out.content_length_n = self.body.len() as _;
            let Some(ct) = pool_str(r, self.content_type.as_bytes()) else {
                return NGX_ERROR as ngx_int_t;
            };
            out.content_type = ct;
            out.content_type_len = ct.len;
            if push_header(
                r,
                &mut (*r).headers_out.headers,
                "Cache-Control",
                b"no-store",
            )
            .is_none()
            {
                return NGX_ERROR as ngx_int_t;
            }
            for (k, v) in &self.headers {
                if push_header(r, &mut (*r).headers_out.headers, k, v.as_bytes()).is_none() {
                    return NGX_ERROR as ngx_int_t;
                }
            }
            let rc = ngx_http_send_header(r);
            if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
                return rc;
            }
            if self.body.is_empty() {
                return ngx_http_send_special(r, NGX_HTTP_LAST as ngx_uint_t);
            }
            let b = calloc_buf((*r).pool);
            let cl = ngx_alloc_chain_link((*r).pool);
            let Some(data) = pool_str(r, self.body.as_bytes()) else {
                return NGX_ERROR as ngx_int_t;
            };
            if b.is_null() || cl.is_null() {
                return NGX_ERROR as ngx_int_t;
            }
            (*b).pos = data.data;
            (*b).last = data.data.add(data.len);
            (*b).set_memory(1);
            if r == (*r).main {
                (*b).set_last_buf(1);
            } else {
                (*b).set_last_in_chain(1);
            }
            (*cl).buf = b;
            (*cl).next = ptr::null_mut();
            ngx_http_output_filter(r, cl)
        }
    }
}

/// A zeroed buffer header (nginx's `ngx_calloc_buf` macro).
///
/// # Safety
/// `pool` must be a live pool.
pub unsafe fn calloc_buf(pool: *mut ngx_pool_t) -> *mut ngx_buf_t {
    // SAFETY: per this function's contract; a zeroed ngx_buf_t is a valid empty buffer.
    unsafe { ngx_pcalloc(pool, core::mem::size_of::<ngx_buf_t>()) as *mut ngx_buf_t }
}

pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
