//! nginx's entry points: the access-phase handler, the `/oauth2/*` endpoints, the output
//! filters and the `$oidc_*` variables. Each hands a request to a flow or answers it from the
//! services.

pub mod access;
pub mod endpoints;
pub mod filter;
pub mod metrics;
pub mod variables;
