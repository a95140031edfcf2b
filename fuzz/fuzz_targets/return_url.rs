//! The `rd` return URL: whatever is accepted must resolve, in a browser's URL parser, to this
//! very origin.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::oidc::query;
use ngx_http_oidc_module::redirect::safe_return_path;

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    // As the sign-in endpoint sees it: the decoded `rd` parameter of the query.
    let candidates: Vec<String> = match query::param(q, "rd") {
        Ok(Some(rd)) => vec![rd.into_owned(), q.to_string()],
        _ => vec![q.to_string()],
    };
    let base = url::Url::parse("https://app.example.com/some/page").unwrap();
    for rd in &candidates {
        let Some(path) = safe_return_path(rd) else {
            continue;
        };
        assert!(path.starts_with('/') && !path.starts_with("//"), "{path:?}");
        let resolved = base.join(path).expect("an accepted path parses");
        assert_eq!(
            resolved.origin(),
            base.origin(),
            "{path:?} leaves the site: {resolved}"
        );
    }
});
