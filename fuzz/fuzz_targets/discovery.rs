//! The provider's discovery document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_oidc_module::oidc::discovery;

fuzz_target!(|data: &[u8]| {
    let _ = discovery::parse(data, "http://127.0.0.1:8081/realms/test");
    let _ = discovery::parse(data, "");
});
