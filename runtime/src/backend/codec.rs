//! The bytes a `shared` cache keeps in the shared tier (L2): value
//! envelopes, failure records and encoded keys.
//!
//! A value is stored as a MessagePack map (rmp-serde with named fields, so a
//! field added later does not break entries written before) inside a small
//! envelope:
//!
//! | field | meaning |
//! |---|---|
//! | `format` | envelope format version ([`FORMAT`]) |
//! | `ty` | fingerprint of the cache's key and value types |
//! | `generation` | the cache generation it was loaded under (`invalidate_all` bumps it) |
//! | `stale_us` | how long past freshness it may be served stale (`swr`) |
//! | `delta_us` | duration of the origin load that produced it (XFetch's `delta`) |
//! | `lead_us` | XFetch: how long before expiry it is refreshed early, drawn once by its loader |
//! | `value` | the value itself |
//!
//! No wall-clock instant is stored: the value key expires (`PX`) at the end
//! of its stale window, and a reader takes the time left from the backend's
//! own clock (Redis `PTTL`), so the pods' clock skew can neither stretch nor
//! void a value. Bytes that do not decode — garbage, another format version,
//! a value of another type (a deploy changed it), a truncated write — are a
//! miss, never a panic.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Version of the envelope layout; bumped when it changes incompatibly.
pub(crate) const FORMAT: u8 = 2;

#[derive(Serialize)]
struct EnvelopeRef<'a, V> {
    format: u8,
    ty: u64,
    generation: u64,
    stale_us: u64,
    delta_us: u64,
    lead_us: u64,
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
    generation: u64,
    stale_us: u64,
    delta_us: u64,
    lead_us: u64,
    value: V,
}

/// A decoded shared-tier entry.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decoded<V> {
    pub value: V,
    pub generation: u64,
    /// The stale window it was written with.
    pub stale: Duration,
    pub delta: Duration,
    /// XFetch's early-refresh lead.
    pub lead: Duration,
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

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Encodes `value` of a `Cache<K, V>` loaded under `generation`.
pub(crate) fn encode<K: 'static, V: Serialize + 'static>(
    value: &V,
    generation: u64,
    stale: Duration,
    delta: Duration,
    lead: Duration,
) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(&EnvelopeRef {
        format: FORMAT,
        ty: fingerprint::<(K, V)>(),
        generation,
        stale_us: micros(stale),
        delta_us: micros(delta),
        lead_us: micros(lead),
        value,
    })
}

/// Decodes bytes written by [`encode`] for the same `K` and `V`.
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
        generation: env.generation,
        stale: Duration::from_micros(env.stale_us),
        delta: Duration::from_micros(env.delta_us),
        lead: Duration::from_micros(env.lead_us),
    })
}

/// How a load failed, as its failure record tells the other processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FailureKind {
    /// The loader returned `Err`.
    Error,
    /// The loader panicked.
    Panic,
    /// The load ran past `load_timeout`.
    Timeout,
    /// A batch loader did not return the key: no value, and not an error
    /// of the origin either — a waiter loads it itself (its loader says
    /// what the key is worth to it).
    NotFound,
}

/// The failure record a leader leaves at `<slot>:fail` for the retry
/// backoff. It answers the callers that waited on that flight, and only
/// those later flights that have a value to serve instead (fail-safe,
/// stale): they are throttled by it, as in process. A flight with nothing
/// to serve ignores it and loads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    /// The error's `Debug` text (when the cache can render it), or the panic message.
    pub message: String,
    /// For a timeout: the bound, in ms.
    pub after_ms: u64,
    /// The failed flight's lock token: two records are never equal, so a
    /// waiter can tell the failure of the flight it waited on from an
    /// older record that was already there.
    #[serde(default)]
    pub flight: String,
}

pub(crate) fn encode_failure(failure: &Failure) -> Vec<u8> {
    // A struct of plain fields always serialises.
    rmp_serde::to_vec_named(failure).unwrap_or_default()
}

pub(crate) fn decode_failure(bytes: &[u8]) -> Option<Failure> {
    rmp_serde::from_slice(bytes).ok()
}

/// Encodes a key for the backend key space: lowercase hex of its compact
/// MessagePack bytes. Injective: distinct keys have distinct MessagePack
/// encodings (the format is self-delimiting, so `("a:b", "c")` and
/// `("a", "b:c")` differ), and hex is injective over bytes; hex never contains
/// `:`, `{`, `}` or a space, so it cannot break the key layout.
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

/// The key an [`encode_key`] text stands for; `None` for text that is not one.
pub(crate) fn decode_key<K: DeserializeOwned>(encoded: &str) -> Option<K> {
    let hex = encoded.as_bytes();
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let bytes: Option<Vec<u8>> = hex
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect();
    rmp_serde::from_slice(&bytes?).ok()
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
        let user = User {
            id: 7,
            name: "ada".into(),
        };
        let bytes = encode::<u64, _>(
            &user,
            3,
            Duration::from_secs(5),
            Duration::from_millis(12),
            Duration::from_millis(30),
        )
        .unwrap();
        let d: Decoded<User> = decode::<u64, User>(&bytes).unwrap();
        assert_eq!(d.value, user);
        assert_eq!(d.generation, 3);
        assert_eq!(d.stale, Duration::from_secs(5));
        assert_eq!(d.delta, Duration::from_millis(12));
        assert_eq!(d.lead, Duration::from_millis(30));
    }

    #[test]
    fn garbage_and_foreign_types_are_errors_not_panics() {
        for garbage in [
            &b""[..],
            b"\xff\xff\xff",
            b"hello world",
            b"\x81\xa6format\x02",
        ] {
            assert!(decode::<u64, User>(garbage).is_err());
        }
        let bytes =
            encode::<u64, _>(&42u32, 0, Duration::ZERO, Duration::ZERO, Duration::ZERO).unwrap();
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
    fn keys_round_trip_and_garbage_is_none() {
        let key = (42u64, "a:b c".to_string());
        let encoded = encode_key(&key).unwrap();
        assert!(!encoded.contains([':', '{', '}', ' ']));
        assert_eq!(decode_key::<(u64, String)>(&encoded), Some(key));
        assert_eq!(decode_key::<u64>("zz"), None);
        assert_eq!(decode_key::<u64>("abc"), None);
    }

    #[test]
    fn failure_records_round_trip() {
        let failure = Failure {
            kind: FailureKind::Error,
            message: "db down".into(),
            after_ms: 0,
            flight: "f00d".into(),
        };
        assert_eq!(decode_failure(&encode_failure(&failure)), Some(failure));
        assert_eq!(decode_failure(b"garbage"), None);
    }
}
