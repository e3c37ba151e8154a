//! The key layout of the shared tier, in one place.
//!
//! Per key of a cache, the *slot* `<prefix>:{<name>:<encoded key>}` and:
//!
//! | key or channel | holds |
//! |---|---|
//! | `<slot>:value` | the value's envelope (see `codec`), expiring with its stale window |
//! | `<slot>:lock` | the token of the process loading the key (`SET NX PX`) |
//! | `<slot>:fail` | the failure record of the key's last failed load, for the retry backoff |
//! | `<slot>:ready` (channel) | "look again": a value was written, a lock released, a load failed |
//!
//! Per cache, `<prefix>:{<name>}` and:
//!
//! | key or channel | holds |
//! |---|---|
//! | `<cache>:gen` | the cache's generation, bumped by `invalidate_all` |
//! | `<cache>:inval` (channel) | invalidation notices: `<sender> <generation> <encoded key or *>` |
//!
//! The braces are a Redis Cluster hash tag: one key's value, lock and
//! failure record live in one slot, so each script touches one slot. The
//! encoded key is hex (see `codec::encode_key`) and never contains `:`,
//! `{`, `}` or a space, so every name here parses back unambiguously.

use std::fmt;

/// The slot of one key of one cache: `<prefix>:{<name>:<encoded key>}`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Slot(String);

impl Slot {
    pub(crate) fn new(prefix: &str, name: &str, encoded: &str) -> Self {
        Slot(format!("{prefix}:{{{name}:{encoded}}}"))
    }

    /// A slot as a tag record holds it (its `as_str`).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn recorded(raw: String) -> Self {
        Slot(raw)
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn value(&self) -> String {
        format!("{}:value", self.0)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn lock(&self) -> String {
        format!("{}:lock", self.0)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn fail(&self) -> String {
        format!("{}:fail", self.0)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn ready(&self) -> String {
        format!("{}:ready", self.0)
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The keys of one whole cache: `<prefix>:{<name>}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CacheKeys {
    base: String,
}

impl CacheKeys {
    pub(crate) fn new(prefix: &str, name: &str) -> Self {
        CacheKeys {
            base: format!("{prefix}:{{{name}}}"),
        }
    }

    pub(crate) fn generation(&self) -> String {
        format!("{}:gen", self.base)
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn invalidations(&self) -> String {
        format!("{}:inval", self.base)
    }
}

/// The sorted set of slots whose entries carry `tag`: `<prefix>:tagset:{<hex of the tag>}`
/// (hex, so any tag text is a safe key), scored by when each may be forgotten.
pub(crate) fn tag_set(prefix: &str, tag: &str) -> String {
    let mut hex = String::with_capacity(tag.len() * 2);
    for b in tag.bytes() {
        hex.push_str(&format!("{b:02x}"));
    }
    format!("{prefix}:tagset:{{{hex}}}")
}

/// The channel tag invalidations are published on: `<prefix>:tags`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn tags_channel(prefix: &str) -> String {
    format!("{prefix}:tags")
}

/// What a notice channel is about.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Channel<'a> {
    /// `<slot>:ready`: the slot.
    Ready(&'a str),
    /// `<prefix>:{<name>}:inval`: the cache name.
    Invalidations(&'a str),
    /// `<prefix>:tags`: tag invalidations.
    Tags,
}

/// Parses a channel name of this layout under `prefix`.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn parse_channel<'a>(prefix: &str, channel: &'a str) -> Option<Channel<'a>> {
    if channel.strip_prefix(prefix) == Some(":tags") {
        return Some(Channel::Tags);
    }
    let (base, kind) = channel.rsplit_once(':')?;
    let tag = base
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .strip_suffix('}')?;
    match kind {
        "ready" => Some(Channel::Ready(base)),
        "inval" => Some(Channel::Invalidations(tag)),
        _ => None,
    }
}

/// The name and encoded key of a slot's hash tag `<name>:<encoded>`.
pub(crate) fn split_tag(tag: &str) -> Option<(&str, &str)> {
    tag.rsplit_once(':')
}

/// What an invalidation notice says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Notice<'a> {
    /// The tier that sent it (it does not apply its own notices).
    pub sender: u64,
    /// The cache generation it carries (0 for a single key).
    pub generation: u64,
    /// The encoded key, or `None` for every key of the cache.
    pub key: Option<&'a str>,
}

/// The payload of an invalidation notice for one key (or `None`: all keys).
pub(crate) fn notice(sender: u64, generation: u64, key: Option<&str>) -> String {
    format!("{sender} {generation} {}", key.unwrap_or("*"))
}

pub(crate) fn parse_notice(payload: &str) -> Option<Notice<'_>> {
    let mut parts = payload.split(' ');
    let sender = parts.next()?.parse().ok()?;
    let generation = parts.next()?.parse().ok()?;
    let key = match parts.next()? {
        "*" => None,
        key => Some(key),
    };
    parts.next().is_none().then_some(Notice {
        sender,
        generation,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back() {
        let slot = Slot::new("app", "crate::users::by_id", "0a1b");
        assert_eq!(slot.as_str(), "app:{crate::users::by_id:0a1b}");
        assert_eq!(slot.value(), "app:{crate::users::by_id:0a1b}:value");
        assert_eq!(
            parse_channel("app", &slot.ready()),
            Some(Channel::Ready(slot.as_str()))
        );
        let cache = CacheKeys::new("app", "crate::users::by_id");
        assert_eq!(
            parse_channel("app", &cache.invalidations()),
            Some(Channel::Invalidations("crate::users::by_id"))
        );
        assert_eq!(parse_channel("other", &cache.invalidations()), None);
        assert_eq!(
            parse_channel("app", &tags_channel("app")),
            Some(Channel::Tags)
        );
        assert_eq!(tag_set("app", "a:{b}"), "app:tagset:{613a7b627d}");
        assert_eq!(parse_channel("app", &slot.lock()), None);
        assert_eq!(
            split_tag("crate::users::by_id:0a1b"),
            Some(("crate::users::by_id", "0a1b"))
        );
    }

    #[test]
    fn notices_round_trip_and_reject_garbage() {
        let one = notice(7, 0, Some("0a"));
        assert_eq!(
            parse_notice(&one),
            Some(Notice {
                sender: 7,
                generation: 0,
                key: Some("0a")
            })
        );
        let all = notice(7, 3, None);
        assert_eq!(parse_notice(&all).unwrap().key, None);
        for garbage in ["", "x 1 a", "1 x a", "1 2", "1 2 a b"] {
            assert_eq!(parse_notice(garbage), None, "{garbage:?}");
        }
    }
}
