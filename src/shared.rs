//! State all workers share through a shared-memory zone: which token refreshes are under way
//! (and their outcome, for requests that still carry the old cookie), and which provider
//! sessions were logged out, and the provider's counters. Fixed-size tables, no pointers: the
//! zone survives reloads.

use sha2::{Digest, Sha256};

use core::sync::atomic::AtomicU64;

use crate::metrics::Metrics;

/// A slot key in the zone: the first 16 bytes of a SHA-256 (see [`key`]).
pub type Key = [u8; 16];

/// A short digest of a token or session id: the zone never holds the secret itself.
pub fn key(data: &[u8]) -> Key {
    let digest = Sha256::digest(data);
    let mut k = [0u8; 16];
    k.copy_from_slice(&digest[..16]);
    k
}

const REFRESH_SLOTS: usize = 64;
/// Largest sealed session kept as a refresh result (about two cookie chunks).
pub const RESULT_MAX: usize = 8000;
const REVOKED_SLOTS: usize = 4096;
/// Slots looked at from a key's home slot before giving up (open addressing).
const PROBES: usize = 8;
/// A refresh that has not reported back by then is presumed lost (worker gone).
pub const REFRESH_TIMEOUT: u64 = 15;
/// How long a refresh outcome is kept for requests that still carry the old cookie: with
/// rotating refresh tokens their copy of the token is dead.
pub const RESULT_TTL: u64 = 60;

const FREE: u32 = 0;
const RUNNING: u32 = 1;
const DONE: u32 = 2;
const ENDED: u32 = 3;

#[repr(C)]
struct RefreshSlot {
    key: Key,
    state: u32,
    len: u32,
    stamp: u64,
    data: [u8; RESULT_MAX],
}

#[repr(C)]
struct RevokedSlot {
    key: Key,
    until: u64,
    /// Made on this node and not yet delivered to the cluster store (1), or not (0). Kept in
    /// the zone rather than per worker: it survives a worker's crash and is bounded by the
    /// table, and any worker of the node can deliver it.
    pending: u64,
    /// Sessions whose login (`iat`) is at or before this Unix time are over; [`ALL_LOGINS`]
    /// for a provider session id, where every session carrying it is.
    since: u64,
}

/// `since` of a revocation that ends every session carrying its key (a `sid`).
pub const ALL_LOGINS: u64 = u64::MAX;

/// The zone key of a user (`sub`) whose every login up to some time was ended by a
/// back-channel logout without `sid`; apart from session-id keys.
pub fn subject_key(sub: &str) -> Key {
    key(format!("sub\0{sub}").as_bytes())
}

/// The zone's content. All-zero bytes are a valid empty table.
#[repr(C)]
pub struct Table {
    revoked_count: u64,
    /// How many revocations by user (`since` other than [`ALL_LOGINS`]) were ever recorded:
    /// until one is, requests need not hash their `sub`.
    subjects_revoked: u64,
    refresh: [RefreshSlot; REFRESH_SLOTS],
    revoked: [RevokedSlot; REVOKED_SLOTS],
    /// The provider's counters for `oidc_metrics`: atomics, read and added to without the
    /// zone's lock.
    pub metrics: Metrics,
    /// When (unix seconds) a worker last had both the discovery document and the JWKS, for
    /// `/oauth2/ready`; 0: never. An atomic, read and written without the zone's lock.
    pub documents_at: AtomicU64,
}

/// What a request should do about a refresh of its token.
#[derive(Debug, PartialEq, Eq)]
pub enum Begin<'a> {
    /// This request refreshes; it must call [`Table::finish_refresh`].
    Go,
    /// Another request is refreshing right now.
    Running,
    /// Another request refreshed: here is the new sealed session.
    Done(&'a [u8]),
    /// Another request learnt that the session is over (`invalid_grant`).
    Ended,
}

/// How a refresh ended, for [`Table::finish_refresh`].
pub enum Outcome<'a> {
    /// Refreshed: the new sealed session (at most [`RESULT_MAX`] bytes).
    Done(&'a [u8]),
    /// The provider said the session is over (`invalid_grant`, RFC 6749 §5.2).
    Ended,
    /// The provider could not be asked; let the next request try again.
    Failed,
}

fn home(key: &Key, slots: usize) -> usize {
    u32::from_le_bytes([key[0], key[1], key[2], key[3]]) as usize % slots
}

impl Table {
    fn refresh_slot(&self, key: &Key) -> Option<usize> {
        let h = home(key, REFRESH_SLOTS);
        (0..PROBES)
            .map(|i| (h + i) % REFRESH_SLOTS)
            .find(|&i| self.refresh[i].state != FREE && self.refresh[i].key == *key)
    }

    fn is_stale(slot: &RefreshSlot, now: u64) -> bool {
        match slot.state {
            FREE => true,
            RUNNING => now >= slot.stamp + REFRESH_TIMEOUT,
            _ => now >= slot.stamp + RESULT_TTL,
        }
    }

    /// What a request whose token is due should do. A finished refresh's result is handed out
    /// only when `usable(result)` says so (under the zone's lock, so that exactly one request
    /// takes over otherwise): a result that is the very session the request carries is no
    /// answer to it. That is the case with a provider that returns the same refresh token, so
    /// that the key stays the same from one refresh to the next.
    pub fn begin_refresh(
        &mut self,
        key: &Key,
        now: u64,
        usable: impl FnOnce(&[u8]) -> bool,
    ) -> Begin<'_> {
        if let Some(i) = self.refresh_slot(key) {
            let slot = &mut self.refresh[i];
            let taken_over = slot.state == DONE && !usable(&slot.data[..slot.len as usize]);
            if !taken_over && !Self::is_stale(slot, now) {
                return match slot.state {
                    RUNNING => Begin::Running,
                    DONE => Begin::Done(&self.refresh[i].data[..self.refresh[i].len as usize]),
                    _ => Begin::Ended,
                };
            }
            slot.state = RUNNING;
            slot.stamp = now;
            slot.len = 0;
            return Begin::Go;
        }
        let h = home(key, REFRESH_SLOTS);
        let free = (0..PROBES)
            .map(|i| (h + i) % REFRESH_SLOTS)
            .find(|&i| Self::is_stale(&self.refresh[i], now));
        if let Some(i) = free {
            let slot = &mut self.refresh[i];
            slot.key = *key;
            slot.state = RUNNING;
            slot.stamp = now;
            slot.len = 0;
        }
        // With every nearby slot busy the refresh goes ahead uncoordinated: rare, and safe
        // for providers that do not rotate refresh tokens.
        Begin::Go
    }

    /// Records the `outcome` of the refresh [`Table::begin_refresh`] let this request do, at
    /// `now` (Unix seconds): requests that still carry the old cookie take it.
    pub fn finish_refresh(&mut self, key: &Key, outcome: Outcome, now: u64) {
        let Some(i) = self.refresh_slot(key) else {
            return;
        };
        let slot = &mut self.refresh[i];
        slot.stamp = now;
        match outcome {
            Outcome::Done(data) if data.len() <= RESULT_MAX => {
                slot.data[..data.len()].copy_from_slice(data);
                slot.len = data.len() as u32;
                slot.state = DONE;
            }
            Outcome::Ended => slot.state = ENDED,
            Outcome::Done(_) | Outcome::Failed => slot.state = FREE,
        }
    }

    /// Records a logged-out provider session until `until`. When the table is full around the
    /// key, the entry closest to expiry is replaced.
    pub fn revoke(&mut self, key: &Key, until: u64, now: u64) {
        self.record(key, until, ALL_LOGINS, now, false);
    }

    /// Records that sessions under `key` logged in at or before `since` are over (until
    /// `until`), as learnt from the cluster store.
    pub fn revoke_logins(&mut self, key: &Key, until: u64, since: u64, now: u64) {
        self.record(key, until, since, now, false);
    }

    /// Records a revocation made on this node that the cluster store must still hear of
    /// (see [`Table::pending`]).
    pub fn revoke_for_cluster(&mut self, key: &Key, until: u64, since: u64, now: u64) {
        self.record(key, until, since, now, true);
    }

    /// Revocations made here that the cluster store has not confirmed: key, until, since.
    pub fn pending(&self, now: u64) -> Vec<(Key, u64, u64)> {
        self.revoked
            .iter()
            .filter(|s| s.pending != 0 && s.until > now)
            .map(|s| (s.key, s.until, s.since))
            .collect()
    }

    /// The cluster store has `key` (until at least `until`).
    pub fn delivered(&mut self, key: &Key, until: u64) {
        let h = home(key, REVOKED_SLOTS);
        for i in (0..PROBES).map(|i| (h + i) % REVOKED_SLOTS) {
            let s = &mut self.revoked[i];
            if s.key == *key && s.until <= until {
                s.pending = 0;
            }
        }
    }

    fn record(&mut self, key: &Key, until: u64, since: u64, now: u64, pending: bool) {
        let h = home(key, REVOKED_SLOTS);
        let slots: Vec<usize> = (0..PROBES).map(|i| (h + i) % REVOKED_SLOTS).collect();
        let pick = slots
            .iter()
            .copied()
            .find(|&i| self.revoked[i].key == *key)
            .or_else(|| {
                slots
                    .iter()
                    .copied()
                    .find(|&i| self.revoked[i].until <= now)
            })
            .unwrap_or_else(|| {
                slots
                    .iter()
                    .copied()
                    .min_by_key(|&i| self.revoked[i].until)
                    .unwrap_or(h)
            });
        let slot = &mut self.revoked[pick];
        if slot.until <= now {
            self.revoked_count += 1;
        }
        if slot.key != *key || slot.until <= now {
            slot.pending = 0;
            slot.since = 0;
        }
        if since != ALL_LOGINS && slot.since != since {
            self.subjects_revoked += 1;
        }
        slot.since = slot.since.max(since);
        slot.key = *key;
        if pending && until > now {
            slot.pending = 1;
        }
        slot.until = slot.until.max(until);
    }

    /// Whether anything was ever revoked: lets the per-request check skip hashing.
    pub fn any_revoked(&self) -> bool {
        self.revoked_count > 0
    }

    /// Whether a user (`sub`) was ever logged out as a whole.
    pub fn any_subject_revoked(&self) -> bool {
        self.subjects_revoked > 0
    }

    /// Up to when logins under `key` are over (see [`ALL_LOGINS`]); `None` when nothing is.
    pub fn revoked_since(&self, key: &Key, now: u64) -> Option<u64> {
        let h = home(key, REVOKED_SLOTS);
        (0..PROBES)
            .map(|i| &self.revoked[(h + i) % REVOKED_SLOTS])
            .find(|s| s.key == *key && s.until > now)
            .map(|s| s.since)
    }

    /// Whether the provider session `key` was logged out and the record is still live at
    /// `now` (Unix seconds).
    pub fn is_revoked(&self, key: &Key, now: u64) -> bool {
        let h = home(key, REVOKED_SLOTS);
        (0..PROBES)
            .map(|i| &self.revoked[(h + i) % REVOKED_SLOTS])
            .any(|s| s.key == *key && s.until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Box<Table> {
        // SAFETY: all-zero bytes are a valid Table (integers and byte arrays only).
        unsafe { Box::new_zeroed().assume_init() }
    }

    fn any(_: &[u8]) -> bool {
        true
    }

    #[test]
    fn a_result_that_is_the_requests_own_session_is_no_answer_to_it() {
        // A provider that returns the same refresh token: the key stays the same from one
        // refresh to the next.
        let mut t = table();
        let k = key(b"same-refresh-token");
        assert_eq!(t.begin_refresh(&k, 100, any), Begin::Go);
        t.finish_refresh(&k, Outcome::Done(b"v1.first"), 100);
        // A request still carrying the session before it gets the result...
        let not_first = |r: &[u8]| r != b"v1.first";
        assert_eq!(t.begin_refresh(&k, 101, |_| true), Begin::Done(b"v1.first"));
        // ...but once the first result is itself due, its own request refreshes, and only one.
        assert_eq!(t.begin_refresh(&k, 110, not_first), Begin::Go);
        assert_eq!(t.begin_refresh(&k, 110, not_first), Begin::Running);
        t.finish_refresh(&k, Outcome::Done(b"v1.second"), 111);
        assert_eq!(
            t.begin_refresh(&k, 111, not_first),
            Begin::Done(b"v1.second")
        );
    }

    #[test]
    fn one_refresh_runs_and_the_others_get_its_result() {
        let mut t = table();
        let k = key(b"refresh-token-1");
        assert_eq!(t.begin_refresh(&k, 100, any), Begin::Go);
        for _ in 0..31 {
            assert_eq!(t.begin_refresh(&k, 100, any), Begin::Running);
        }
        t.finish_refresh(&k, Outcome::Done(b"v1.new"), 101);
        assert_eq!(t.begin_refresh(&k, 102, any), Begin::Done(b"v1.new"));
        // Another session is independent.
        assert_eq!(t.begin_refresh(&key(b"other"), 102, any), Begin::Go);
        // Results are forgotten after a while, and then a refresh may run again.
        assert_eq!(t.begin_refresh(&k, 101 + RESULT_TTL, any), Begin::Go);
    }

    #[test]
    fn an_ended_session_stays_ended_and_a_failure_lets_the_next_request_retry() {
        let mut t = table();
        let k = key(b"rt");
        assert_eq!(t.begin_refresh(&k, 0, any), Begin::Go);
        t.finish_refresh(&k, Outcome::Ended, 1);
        assert_eq!(t.begin_refresh(&k, 2, any), Begin::Ended);
        let k2 = key(b"rt2");
        assert_eq!(t.begin_refresh(&k2, 0, any), Begin::Go);
        t.finish_refresh(&k2, Outcome::Failed, 1);
        assert_eq!(t.begin_refresh(&k2, 2, any), Begin::Go);
    }

    #[test]
    fn a_lost_refresh_times_out() {
        let mut t = table();
        let k = key(b"rt");
        assert_eq!(t.begin_refresh(&k, 0, any), Begin::Go);
        assert_eq!(
            t.begin_refresh(&k, REFRESH_TIMEOUT - 1, any),
            Begin::Running
        );
        assert_eq!(t.begin_refresh(&k, REFRESH_TIMEOUT, any), Begin::Go);
    }

    #[test]
    fn revocations_hold_until_they_expire() {
        let mut t = table();
        assert!(!t.any_revoked());
        let sid = key(b"sid-1");
        t.revoke(&sid, 500, 100);
        assert!(t.any_revoked());
        assert!(t.is_revoked(&sid, 499));
        assert!(!t.is_revoked(&sid, 500));
        assert!(!t.is_revoked(&key(b"sid-2"), 200));
        for i in 0..10_000u32 {
            t.revoke(&key(&i.to_le_bytes()), 1000, 100);
        }
        assert!(t.is_revoked(&key(&9999u32.to_le_bytes()), 999));
    }

    #[test]
    fn a_revocation_made_here_waits_for_the_cluster_store_and_a_mirrored_one_does_not() {
        let mut t = table();
        let here = key(b"sid-here");
        let there = key(b"sid-there");
        t.revoke_for_cluster(&here, 500, ALL_LOGINS, 100);
        t.revoke(&there, 500, 100);
        assert!(t.is_revoked(&here, 200) && t.is_revoked(&there, 200));
        assert_eq!(t.pending(100), vec![(here, 500, ALL_LOGINS)]);
        // Still owed after any number of failed attempts; gone once delivered...
        assert_eq!(t.pending(300), vec![(here, 500, ALL_LOGINS)]);
        t.delivered(&here, 500);
        assert!(t.pending(300).is_empty());
        // ...and never owed once over: Redis would forget it at once anyway.
        t.revoke_for_cluster(&key(b"late"), 400, ALL_LOGINS, 100);
        assert!(t.pending(400).is_empty());
    }

    #[test]
    fn a_logout_by_subject_ends_the_logins_before_it_and_not_the_next_one() {
        let mut t = table();
        let demo = subject_key("demo");
        assert_ne!(demo, key(b"demo"), "apart from session ids");
        assert!(!t.any_subject_revoked());
        t.revoke(&key(b"sid"), 1000, 200);
        assert!(!t.any_subject_revoked(), "a session id is no user");
        t.revoke_logins(&demo, 1000, 200, 200);
        assert!(t.any_subject_revoked());
        assert_eq!(t.revoked_since(&demo, 300), Some(200));
        assert_eq!(t.revoked_since(&subject_key("alice"), 300), None);
        // A later logout of the same user covers more logins; an earlier one changes nothing.
        t.revoke_logins(&demo, 1000, 250, 250);
        t.revoke_logins(&demo, 1000, 100, 250);
        assert_eq!(t.revoked_since(&demo, 300), Some(250));
        assert_eq!(t.revoked_since(&demo, 1000), None);
    }

    #[test]
    fn the_table_fits_a_one_megabyte_zone() {
        assert!(std::mem::size_of::<Table>() < 900 * 1024);
        assert!(std::mem::align_of::<Table>() <= 8);
    }
}
