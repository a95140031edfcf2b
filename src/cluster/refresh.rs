//! One refresh per session in the whole cluster.
//!
//! The node-local winner of a refresh (see [`crate::shared::Table::begin_refresh`]) asks Redis
//! before it calls the provider, in one round trip: `GET <prefix>refresh:<digest>` (has some
//! node refreshed this session already?) and `SET <prefix>lock:<digest> 1 NX PX <ms>` (may this
//! node refresh it?). The digest is the zone's key of the pre-refresh refresh token. The node
//! that refreshed stores the refreshed session, sealed with the cookie key (AES-GCM: no token
//! is ever in Redis in the clear), with the zone's result lifetime, then drops its lock.

use std::time::Duration;

use super::wire::Reply;
use crate::shared::{REFRESH_TIMEOUT, RESULT_TTL};

/// What a failed refresh leaves under the result key: the login has ended (`invalid_grant`).
pub const ENDED: &[u8] = b"ended";

/// How long a node's lock holds when it never reports back (its worker died): the zone's own
/// timeout for a refresh in flight.
pub const LOCK_TTL_MS: u64 = REFRESH_TIMEOUT * 1000;

/// How long a refreshed session waits in Redis for requests that still carry the old cookie.
pub const RESULT_TTL_SECS: u64 = RESULT_TTL;

/// Longest a request waits for Redis' answer before it refreshes with node-local
/// coordination only, as without a cluster store.
pub const ANSWER_WAIT: Duration = Duration::from_millis(500);

/// Redis' answer to a node that wants to refresh a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// This node holds the lock: it refreshes.
    Won,
    /// Another node refreshed already: the refreshed session, sealed.
    Taken(Vec<u8>),
    /// Another node learnt that the login has ended.
    Ended,
    /// Another node is refreshing right now.
    Busy,
    /// Redis could not say (error reply): coordinate in this node only.
    Unavailable,
}

/// Reads the replies to `GET <result>` and `SET <lock> 1 NX PX <ms>`, in that order.
pub fn claim(result: &Reply, lock: &Reply) -> Claim {
    match result {
        Reply::Bulk(v) if v == ENDED => return Claim::Ended,
        Reply::Bulk(v) => return Claim::Taken(v.clone()),
        Reply::Nil => {}
        _ => return Claim::Unavailable,
    }
    match lock {
        Reply::Status(_) => Claim::Won,
        Reply::Nil => Claim::Busy,
        _ => Claim::Unavailable,
    }
}

/// What the node that refreshed tells Redis.
#[derive(Debug, PartialEq, Eq)]
pub enum Report {
    /// The refreshed session, sealed.
    Done(Vec<u8>),
    /// `invalid_grant`: the login has ended.
    Ended,
    /// The provider could not be asked: the lock goes, another node may try.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Reply {
        Reply::Status(b"OK".to_vec())
    }

    #[test]
    fn a_stored_result_wins_over_the_lock() {
        let sealed = Reply::Bulk(b"v1.sealed".to_vec());
        assert_eq!(
            claim(&sealed, &Reply::Nil),
            Claim::Taken(b"v1.sealed".to_vec())
        );
        assert_eq!(claim(&Reply::Bulk(ENDED.to_vec()), &ok()), Claim::Ended);
    }

    #[test]
    fn without_a_result_the_lock_decides() {
        assert_eq!(claim(&Reply::Nil, &ok()), Claim::Won);
        assert_eq!(claim(&Reply::Nil, &Reply::Nil), Claim::Busy);
    }

    #[test]
    fn an_error_reply_means_node_local_coordination() {
        let err = Reply::Error("OOM command not allowed".into());
        assert_eq!(claim(&err, &ok()), Claim::Unavailable);
        assert_eq!(claim(&Reply::Nil, &err), Claim::Unavailable);
    }

    #[test]
    fn a_lost_lock_expires_with_the_zones_refresh_timeout() {
        assert_eq!(LOCK_TTL_MS, REFRESH_TIMEOUT * 1000);
        assert!(ANSWER_WAIT < Duration::from_secs(REFRESH_TIMEOUT));
    }
}
