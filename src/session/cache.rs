//! A per-worker cache of recently opened session cookies: a repeat request with the same
//! cookie costs a hash and a compare instead of base64, AES-GCM, inflate and JSON.
//!
//! Only values that opened with our keys are stored, and a hit needs the whole value to be
//! equal, so the cache decides nothing the codec would not. Keys are rotated by a reload, which
//! starts a new configuration and so an empty cache.

use std::rc::Rc;

type Slot<T> = Option<(Box<[u8]>, Rc<T>)>;

/// Direct-mapped: a new entry replaces whatever shared its slot.
pub struct SessionCache<T> {
    slots: Vec<Slot<T>>,
}

impl<T> SessionCache<T> {
    /// An empty cache of `size` slots (at least one).
    pub fn new(size: usize) -> Self {
        SessionCache {
            slots: (0..size.max(1)).map(|_| None).collect(),
        }
    }

    /// Sealed values end with the GCM tag, which is random: its bytes place entries evenly.
    fn slot(&self, value: &[u8]) -> usize {
        let tail = &value[value.len().saturating_sub(8)..];
        let h = tail.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        (h % self.slots.len() as u64) as usize
    }

    /// The item kept for exactly this cookie `value` (compared in constant time), if any.
    pub fn get(&self, value: &[u8]) -> Option<Rc<T>> {
        match &self.slots[self.slot(value)] {
            Some((k, v)) if constant_time_eq(k, value) => Some(Rc::clone(v)),
            _ => None,
        }
    }

    /// Keeps `item` for the cookie `value`, replacing what shared its slot.
    pub fn insert(&mut self, value: &[u8], item: Rc<T>) {
        let i = self.slot(value);
        self.slots[i] = Some((value.into(), item));
    }
}

/// Equality without an early exit, so response times do not tell how much of a guessed
/// cookie matched a cached one.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a8, a_rest) = a.split_at(a.len() / 8 * 8);
    let (b8, b_rest) = b.split_at(b.len() / 8 * 8);
    let words = a8
        .chunks_exact(8)
        .zip(b8.chunks_exact(8))
        .fold(0u64, |acc, (x, y)| {
            let x = u64::from_ne_bytes([x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7]]);
            let y = u64::from_ne_bytes([y[0], y[1], y[2], y[3], y[4], y[5], y[6], y[7]]);
            acc | (x ^ y)
        });
    let bytes = a_rest
        .iter()
        .zip(b_rest)
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(words | bytes as u64) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_value_hits_and_anything_else_misses() {
        let mut c = SessionCache::new(8);
        c.insert(b"v1.abcdefghijklmnop", Rc::new(1));
        assert_eq!(c.get(b"v1.abcdefghijklmnop").as_deref(), Some(&1));
        assert_eq!(c.get(b"v1.abcdefghijklmnoq"), None);
        assert_eq!(c.get(b"x1.abcdefghijklmnop"), None);
        assert_eq!(c.get(b"v1.abcdefghijklmno"), None);
        assert_eq!(c.get(b""), None);
    }

    #[test]
    fn a_colliding_value_replaces_the_old_entry() {
        let mut c = SessionCache::new(1);
        c.insert(b"one", Rc::new(1));
        c.insert(b"two", Rc::new(2));
        assert_eq!(c.get(b"one"), None);
        assert_eq!(c.get(b"two").as_deref(), Some(&2));
    }

    #[test]
    fn equality_is_exact() {
        assert!(constant_time_eq(b"0123456789abcdef!", b"0123456789abcdef!"));
        assert!(!constant_time_eq(
            b"0123456789abcdef!",
            b"0123456789abcdef?"
        ));
        assert!(!constant_time_eq(
            b"1123456789abcdef!",
            b"0123456789abcdef!"
        ));
        assert!(!constant_time_eq(b"short", b"shorter"));
    }
}
