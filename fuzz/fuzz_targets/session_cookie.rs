//! Session cookie from the `Cookie` headers: finding our cookie, trying each combination of
//! same-named chunks, stripping ours
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
    let mut tries = 0;
    let opened = cookies::open_chunked(&headers, &name, |joined| {
        tries += 1;
        Session::open(&common::keys(), b"_oidc\0keycloak", joined)
    });
    // Many same-named cookies cost a bounded number of decryptions.
    assert!(tries <= cookies::MAX_TRIES, "{tries} tries");
    if let Some((_, chunks)) = opened {
        assert!((1..=cookies::MAX_CHUNKS).contains(&chunks));
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
