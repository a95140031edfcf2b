//! The cluster store's pure side: what nodes say to each other through Redis (key names,
//! values, messages), the RESP wire format through `redis-protocol`, and the reconnect policy.
//! No nginx types; the connections live in `glue::cluster`.

pub mod link;
pub mod names;
pub mod refresh;
pub mod revocation;
pub mod wire;
