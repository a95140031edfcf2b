//! The state of a node's link to its cluster store: when to try again, and what to log.

use std::time::Duration;

/// Delays between reconnection attempts: doubling from 100 ms to 5 s, so that a Redis back
/// from a restart is found within seconds without hammering one that is gone.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

const FIRST: Duration = Duration::from_millis(100);
const MAX: Duration = Duration::from_secs(5);

impl Backoff {
    /// The wait before the next attempt after a failure.
    pub fn next_delay(&mut self) -> Duration {
        let d = FIRST.saturating_mul(1 << self.failures.min(6)).min(MAX);
        self.failures = self.failures.saturating_add(1);
        d
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What the error log gets about the link: one warning when an outage starts, one notice
/// when it ends, nothing for every failed attempt in between.
#[derive(Debug, Default)]
pub struct Outage {
    down: bool,
}

/// A line to log about the link.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// The store became unreachable.
    Lost,
    /// The store is reachable again after an outage.
    Back,
}

impl Outage {
    /// A connection or command failed; `Some` the first time of an outage.
    pub fn failed(&mut self) -> Option<Event> {
        (!std::mem::replace(&mut self.down, true)).then_some(Event::Lost)
    }

    /// The link works (connected, loaded); `Some` when it ends an outage.
    pub fn working(&mut self) -> Option<Event> {
        std::mem::replace(&mut self.down, false).then_some(Event::Back)
    }
}

/// The message of a line nginx logged (`2026/01/02 03:04:05 [info] 7#0: *3 SSL_read() failed
/// ...`): without the time, level, process and connection number.
pub fn log_message(nginx_line: &str) -> &str {
    let line = nginx_line.trim_end();
    let message = line
        .find("] ")
        .and_then(|i| line[i + 2..].split_once(": "))
        .map_or(line, |(_, rest)| rest);
    message
        .strip_prefix('*')
        .and_then(|m| m.split_once(' '))
        .filter(|(n, _)| n.bytes().all(|b| b.is_ascii_digit()))
        .map_or(message, |(_, rest)| rest)
}

/// Why a TLS connection to Redis failed, from the line nginx's SSL layer logged about it: its
/// message, and what to do when the cause is a usual setup mistake.
pub fn tls_failure(nginx_line: &str) -> String {
    let message = log_message(nginx_line);
    let hint = if message.contains("certificate required") {
        "; Redis asks for a client certificate (tls-auth-clients): set \
         cluster_store_certificate and cluster_store_certificate_key"
    } else if message.contains("wrong version number") || message.contains("packet length") {
        "; is this port a TLS port of Redis (tls-port), or should the URL be redis://?"
    } else {
        ""
    };
    format!("{message}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_up_to_five_seconds_and_start_over_once_connected() {
        let mut b = Backoff::default();
        let delays: Vec<u128> = (0..9).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_delay(), FIRST);
    }

    #[test]
    fn an_outage_is_logged_once_and_its_end_once() {
        let mut o = Outage::default();
        assert_eq!(o.working(), None, "a first connection is no recovery");
        assert_eq!(o.failed(), Some(Event::Lost));
        for _ in 0..100 {
            assert_eq!(o.failed(), None);
        }
        assert_eq!(o.working(), Some(Event::Back));
        assert_eq!(o.working(), None);
    }

    #[test]
    fn a_tls_failure_keeps_nginxs_message_and_says_what_to_do() {
        let line = "2026/11/30 11:00:00 [info] 4242#0: *7 SSL_read() failed (SSL: \
                    error:0A00045C:SSL routines::tlsv13 alert certificate required:SSL alert \
                    number 116)\n";
        let why = tls_failure(line);
        assert!(
            why.starts_with("SSL_read() failed (SSL: error:0A00045C"),
            "{why}"
        );
        assert!(why.contains("set cluster_store_certificate and"), "{why}");
        let line = "2026/11/30 11:00:00 [crit] 4242#0: SSL_do_handshake() failed (SSL: \
                    error:0A00010B:SSL routines::wrong version number)";
        assert!(tls_failure(line).contains("tls-port"));
        let line = "2026/11/30 11:00:00 [info] 1#0: peer closed connection in SSL handshake";
        assert_eq!(tls_failure(line), "peer closed connection in SSL handshake");
    }
}
