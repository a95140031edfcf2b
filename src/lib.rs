//! ngx-oidc: OpenID Connect login inside nginx.
//!
//! Everything but `glue` is plain Rust without nginx types, unit-tested with `cargo test`. The
//! glue is compiled only into the module: a test or fuzz binary that references nginx symbols
//! does not link (cargo-fuzz sets `--cfg fuzzing`).

pub mod authz;
pub mod cluster;
pub mod conf;
pub mod forwarded;
pub mod header_value;
pub mod metrics;
pub mod navigation;
pub mod oidc;
pub mod redirect;
pub mod session;
pub mod shared;

#[cfg(not(any(test, fuzzing)))]
mod glue;
