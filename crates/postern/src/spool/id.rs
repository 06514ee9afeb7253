//! Queue identifiers.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
/// Characters of the time part (base 36 microseconds since the Unix epoch; good until 2084).
const TIME_LEN: usize = 10;
/// Characters of the per-process nonce.
const NONCE_LEN: usize = 6;
/// Length of a freshly generated id.
pub(crate) const ID_LEN: usize = TIME_LEN + NONCE_LEN;
/// Longest id accepted by [`QueueId::parse`] (derived ids such as bounces add a suffix).
const MAX_LEN: usize = 24;

/// A queue identifier: 16 characters of `[0-9A-Z]` that sort by reception time.
///
/// The first ten characters are the reception time in microseconds (base 36), made strictly
/// monotonic within the process; the last six are a random per-process nonce, so two
/// processes (or a restart within the same microsecond) never collide. Derived ids (a bounce
/// of message `X` is `X` + `B` + a sequence number) stay within `[0-9A-Z]`.
///
/// The id appears in every SMTP reply and log line about the message, and names its files in
/// the spool.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueId(Box<str>);

impl QueueId {
    /// Generates a new, unique id.
    pub fn generate() -> Self {
        static LAST: AtomicU64 = AtomicU64::new(0);
        static NONCE: OnceLock<[u8; NONCE_LEN]> = OnceLock::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let prev = LAST
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        let micros = now.max(prev + 1);
        let nonce = NONCE.get_or_init(|| {
            let mut n = [0u8; NONCE_LEN];
            for b in &mut n {
                *b = ALPHABET[rand::random_range(0..ALPHABET.len())];
            }
            n
        });
        let mut out = [0u8; ID_LEN];
        let mut v = micros;
        for slot in out[..TIME_LEN].iter_mut().rev() {
            *slot = ALPHABET[(v % 36) as usize];
            v /= 36;
        }
        out[TIME_LEN..].copy_from_slice(nonce);
        // The bytes come from ALPHABET, so they are ASCII.
        Self(String::from_utf8_lossy(&out).into())
    }

    /// Parses an id (as found in a spool file name): 16 to 24 characters of `[0-9A-Z]`.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = (ID_LEN..=MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
        ok.then(|| Self(s.into()))
    }

    /// The id of the `seq`-th delivery status notification generated for this message.
    pub fn bounce(&self, seq: u32) -> Self {
        Self(format!("{}B{seq}", self.0).into())
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_sorted_and_parse() {
        let ids: Vec<QueueId> = (0..1000).map(|_| QueueId::generate()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{} !< {}", w[0], w[1]);
        }
        for id in &ids {
            assert_eq!(id.as_str().len(), ID_LEN);
            assert_eq!(QueueId::parse(id.as_str()).as_ref(), Some(id));
        }
        let b = ids[0].bounce(0);
        assert_eq!(QueueId::parse(b.as_str()), Some(b));
        assert_eq!(QueueId::parse("abc"), None);
        assert_eq!(QueueId::parse("0123456789abcdef"), None);
    }
}
