//! ngx-oidc: OpenID Connect login inside nginx.
//!
//! Everything but `glue` is plain Rust without nginx types, unit-tested with `cargo test`. The
//! glue is compiled only into the module: a test binary that references nginx symbols does not
//! link.

pub mod authz;
pub mod conf;
pub mod navigation;
pub mod oidc;
pub mod redirect;
pub mod session;
pub mod shared;

#[cfg(not(test))]
mod glue;
