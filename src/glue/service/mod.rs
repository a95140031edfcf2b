//! What the flows and handlers share, standing only on each other and the pure layers: the
//! cluster store (Redis), the provider's documents, the outcome of a decided request, the
//! session a request carries, the cookies we set, the fetch subrequest, the shared zone, the
//! request context, the pause, the clock, directive values with variables and nginx helpers.

pub mod cluster;
pub mod cluster_tls;
pub mod ctx;
pub mod fetch;
pub mod http;
pub mod metrics;
pub mod outcome;
pub mod pause;
pub mod provider;
pub mod session;
pub mod set_cookie;
pub mod time;
pub mod values;
pub mod zone;
