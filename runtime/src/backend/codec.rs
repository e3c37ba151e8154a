//! The bytes a `shared` cache keeps in the shared tier (L2).
//!
//! A value is stored as a MessagePack map (rmp-serde with named fields, so a
//! field added later does not break entries written before) inside a small
//! envelope:
//!
//! | field | meaning |
//! |---|---|
//! | `format` | envelope format version ([`FORMAT`]) |
//! | `ty` | fingerprint of the value's Rust type |
//! | `fresh_until` | wall-clock instant (µs since the Unix epoch) the value stops being fresh |
//! | `stale_until` | wall-clock instant it stops being servable (`swr`); = `fresh_until` otherwise |
//! | `delta_us` | duration of the origin load that produced it (XFetch's `delta`) |
//! | `value` | the value itself |
//!
//! Instants are wall-clock (`SystemTime`) because they cross processes; a
//! reader turns them into durations remaining from its own now. Bytes that do
//! not decode — garbage, another format version, a value of another type
//! (a deploy changed it), a truncated write — are a miss, never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version of the envelope layout; bumped when it changes incompatibly.
pub(crate) const FORMAT: u8 = 1;

#[derive(Serialize)]
struct EnvelopeRef<'a, V> {
    format: u8,
    ty: u64,
    fresh_until: u64,
    stale_until: u64,
    delta_us: u64,
    value: &'a V,
}

/// The envelope without its value: decoded first, so a foreign or outdated
/// entry is rejected before the value's bytes are interpreted.
#[derive(Deserialize)]
struct Header {
    format: u8,
    ty: u64,
}

#[derive(Deserialize)]
struct Envelope<V> {
    fresh_until: u64,
    stale_until: u64,
    delta_us: u64,
    value: V,
}

/// A decoded shared-tier entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded<V> {
    pub value: V,
    pub fresh_until: SystemTime,
    pub stale_until: SystemTime,
    pub delta: Duration,
}

/// Why bytes from the shared tier were not used.
#[derive(Debug)]
pub(crate) enum DecodeError {
    /// Not an envelope at all (garbage, truncated).
    Malformed(String),
    /// An envelope of another format version.
    Format(u8),
    /// A value of another type (fingerprint mismatch).
    Type,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Malformed(e) => write!(f, "undecodable shared entry: {e}"),
            DecodeError::Format(v) => {
                write!(f, "shared entry of envelope format {v}, expected {FORMAT}")
            }
            DecodeError::Type => f.write_str("shared entry holds a value of another type"),
        }
    }
}

/// Fingerprint of a type: FNV-1a of its name. Entries are fingerprinted by
/// `(K, V)`, the cache's key and value types together, so two caches that
/// share a name but not their types never read each other's entries. Type
/// names are not guaranteed stable across compiler versions; a change only
/// costs a miss.
pub(crate) fn fingerprint<V: ?Sized>() -> u64 {
    fnv1a(std::any::type_name::<V>().as_bytes())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

pub(crate) fn to_micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn from_micros(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

/// A wall-clock instant about a century after `now` (what saturated spans end at).
fn far_future(now: SystemTime) -> SystemTime {
    now + crate::strategy::FOREVER
}

/// Encodes `value`, fresh for `fresh` and servable `stale` longer from `now`.
pub(crate) fn encode<K: 'static, V: Serialize + 'static>(
    value: &V,
    now: SystemTime,
    fresh: Duration,
    stale: Duration,
    delta: Duration,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    // Saturating: a "never expires" TTL must not overflow the wall clock.
    let fresh_until = now.checked_add(fresh).unwrap_or(far_future(now));
    rmp_serde::to_vec_named(&EnvelopeRef {
        format: FORMAT,
        ty: fingerprint::<(K, V)>(),
        fresh_until: to_micros(fresh_until),
        stale_until: to_micros(fresh_until.checked_add(stale).unwrap_or(far_future(now))),
        delta_us: u64::try_from(delta.as_micros()).unwrap_or(u64::MAX),
        value,
    })
}

/// Decodes an entry written by [`encode`] for the same `V`.
pub(crate) fn decode<K: 'static, V: DeserializeOwned + 'static>(
    bytes: &[u8],
) -> Result<Decoded<V>, DecodeError> {
    let header: Header =
        rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if header.format != FORMAT {
        return Err(DecodeError::Format(header.format));
    }
    if header.ty != fingerprint::<(K, V)>() {
        return Err(DecodeError::Type);
    }
    let env: Envelope<V> =
        rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    Ok(Decoded {
        value: env.value,
        fresh_until: from_micros(env.fresh_until),
        stale_until: from_micros(env.stale_until.max(env.fresh_until)),
        delta: Duration::from_micros(env.delta_us),
    })
}

/// Encodes a key for the backend key space: lowercase hex of its compact
/// MessagePack bytes. Injective: distinct keys have distinct MessagePack
/// encodings (the format is self-delimiting, so `("a:b", "c")` and
/// `("a", "b:c")` differ), and hex is injective over bytes; hex never contains
/// `:`, `{` or `}`, so it cannot break the key layout or its hash tag.
pub(crate) fn encode_key<K: Serialize + ?Sized>(
    key: &K,
) -> Result<String, rmp_serde::encode::Error> {
    let bytes = rmp_serde::to_vec(key)?;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct User {
        id: u64,
        name: String,
    }

    #[test]
    fn round_trip_keeps_value_and_timing() {
        let now = SystemTime::now();
        let user = User {
            id: 7,
            name: "ada".into(),
        };
        let bytes = encode::<u64, _>(
            &user,
            now,
            Duration::from_secs(30),
            Duration::from_secs(5),
            Duration::from_millis(12),
        )
        .unwrap();
        let d: Decoded<User> = decode::<u64, User>(&bytes).unwrap();
        assert_eq!(d.value, user);
        assert_eq!(
            to_micros(d.fresh_until),
            to_micros(now + Duration::from_secs(30))
        );
        assert_eq!(
            to_micros(d.stale_until),
            to_micros(now + Duration::from_secs(35))
        );
        assert_eq!(d.delta, Duration::from_millis(12));
    }

    #[test]
    fn garbage_and_foreign_types_are_errors_not_panics() {
        for garbage in [
            &b""[..],
            b"\xff\xff\xff",
            b"hello world",
            b"\x81\xa6format\x01",
        ] {
            assert!(decode::<u64, User>(garbage).is_err());
        }
        let bytes = encode::<u64, _>(
            &42u32,
            SystemTime::now(),
            Duration::from_secs(1),
            Duration::ZERO,
            Duration::ZERO,
        )
        .unwrap();
        assert!(matches!(
            decode::<u64, User>(&bytes),
            Err(DecodeError::Type)
        ));
        assert!(matches!(
            decode::<u64, String>(&bytes),
            Err(DecodeError::Type)
        ));
        // Same value type, another key type: another cache's entry.
        assert!(matches!(
            decode::<String, u32>(&bytes),
            Err(DecodeError::Type)
        ));
        assert_eq!(decode::<u64, u32>(&bytes).unwrap().value, 42);
    }

    #[test]
    fn other_format_versions_are_rejected() {
        #[derive(Serialize)]
        struct Future {
            format: u8,
            ty: u64,
        }
        let bytes = rmp_serde::to_vec_named(&Future {
            format: 9,
            ty: fingerprint::<(u64, u32)>(),
        })
        .unwrap();
        assert!(matches!(
            decode::<u64, u32>(&bytes),
            Err(DecodeError::Format(9))
        ));
    }

    #[test]
    fn key_encoding_is_injective_on_separators() {
        let a = encode_key(&("a:b", "c")).unwrap();
        let b = encode_key(&("a", "b:c")).unwrap();
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(encode_key(&1u64).unwrap(), encode_key(&"1").unwrap());
    }
}
