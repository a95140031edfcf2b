//! Session cookie from the `Cookie` headers: finding our cookie, joining chunks, stripping ours
//! for the upstream, and opening the joined value.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::session::cookies::{self, CookieName};
use ngx_http_oidc_module::session::Session;

fuzz_target!(|data: &[u8]| {
    // One Cookie header per line, as nginx hands them over.
    let headers: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let name = CookieName::new("_oidc");
    let _ = name.find(&headers);
    let _ = cookies::count_chunks(&headers, &name);
    if let Some(joined) = cookies::join_chunks(&headers, &name) {
        let _ = Session::open(&common::keys(), b"_oidc\0keycloak", &joined);
    }
    for h in &headers {
        if let Some(stripped) = cookies::strip_ours(h, &name) {
            // What goes upstream never holds one of our cookies.
            assert!(
                cookies::pairs(&[&stripped]).all(|(n, _)| !cookies::belongs_to("_oidc", n)),
                "strip_ours left our cookie in {:?}",
                String::from_utf8_lossy(&stripped)
            );
        }
    }
});
