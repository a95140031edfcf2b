//! The loop guard's cookie (`<cookie_name>_n`, not encrypted: any bytes a browser sends).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::session::logins;

mod common;

fuzz_target!(|data: &[u8]| {
    let (rd, value) = match data.iter().position(|&b| b == 0) {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => ("/".to_string(), data),
    };
    let before = logins::rounds(value, &rd, common::NOW);
    let after = logins::record_return(value, &rd, common::NOW);
    // What it writes is a valid cookie value, small, and counts this return.
    assert!(after.len() < 256, "{} bytes", after.len());
    assert!(after.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b)));
    assert_eq!(
        logins::rounds(after.as_bytes(), &rd, common::NOW),
        before.saturating_add(1)
    );
});
