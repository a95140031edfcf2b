//! Commands and replies in RESP2 (the Redis serialization protocol), encoded and decoded by
//! the `redis-protocol` crate: we bring the bytes, it brings the grammar.

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::encode::encode;
use redis_protocol::resp2::types::{OwnedFrame, Resp2Frame};

/// A reply, reduced to what the cluster store reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+PONG`: a simple string.
    Status(Vec<u8>),
    /// `-ERR ...`: the command failed.
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
    Nil,
}

impl From<OwnedFrame> for Reply {
    fn from(f: OwnedFrame) -> Reply {
        match f {
            OwnedFrame::SimpleString(s) => Reply::Status(s),
            OwnedFrame::Error(e) => Reply::Error(e),
            OwnedFrame::Integer(i) => Reply::Integer(i),
            OwnedFrame::BulkString(b) => Reply::Bulk(b),
            OwnedFrame::Array(a) => Reply::Array(a.into_iter().map(Reply::from).collect()),
            OwnedFrame::Null => Reply::Nil,
        }
    }
}

impl Reply {
    /// The bytes of a bulk or simple string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Bulk(b) | Reply::Status(b) => Some(b),
            _ => None,
        }
    }
}

/// Appends one command (an array of bulk strings, as clients send them) to `out`.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let frame = OwnedFrame::Array(
        args.iter()
            .map(|a| OwnedFrame::BulkString(a.to_vec()))
            .collect(),
    );
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    // The buffer has exactly the encoded length, the only way encoding can fail.
    let n = encode(&mut out[start..], &frame, false).unwrap_or(0);
    out.truncate(start + n);
}

/// Why the byte stream from Redis cannot be read on.
#[derive(Debug, thiserror::Error)]
#[error("malformed reply from Redis: {0}")]
pub struct Malformed(String);

/// Takes the first complete reply off the front of `buf`; `Ok(None)` until one is complete.
pub fn take_reply(buf: &mut Vec<u8>) -> Result<Option<Reply>, Malformed> {
    match decode(buf) {
        Ok(Some((frame, used))) => {
            buf.drain(..used);
            Ok(Some(frame.into()))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SET", b"k", b"12"]);
        command(&mut out, &[b"PING"]);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n*1\r\n$4\r\nPING\r\n"
        );
    }

    #[test]
    fn replies_are_taken_one_at_a_time_and_a_partial_one_waits() {
        let mut buf = b"+OK\r\n:3\r\n*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$3\r\nab".to_vec();
        assert_eq!(
            take_reply(&mut buf).unwrap(),
            Some(Reply::Status(b"OK".to_vec()))
        );
        assert_eq!(take_reply(&mut buf).unwrap(), Some(Reply::Integer(3)));
        assert_eq!(take_reply(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"c\r\n$-1\r\n");
        let Some(Reply::Array(parts)) = take_reply(&mut buf).unwrap() else {
            panic!("an array")
        };
        assert_eq!(parts[2].bytes(), Some(&b"abc"[..]));
        assert_eq!(take_reply(&mut buf).unwrap(), Some(Reply::Nil));
        assert!(buf.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_wait() {
        let mut buf = b"HTTP/1.1 400 Bad Request\r\n".to_vec();
        assert!(take_reply(&mut buf).is_err());
    }
}
