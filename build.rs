//! nginx-sys tells dependents which nginx it was built against (`DEP_NGINX_VERSION_NUMBER`).
//! nginx 1.23 chained repeated request headers (`ngx_table_elt_t.next`, `headers_in.cookie`);
//! older versions, like Debian 12's 1.22, keep arrays instead, so the glue needs to know.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(ngx_oidc_pre_1_23)");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    let version = std::env::var("DEP_NGINX_VERSION_NUMBER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    if version.is_some_and(|v| v < 1_023_000) {
        println!("cargo::rustc-cfg=ngx_oidc_pre_1_23");
    }
}
