//! Shared-cache names claimed in this process: two live `shared` caches
//! with one name and different key or value types would read each other's
//! entries in the shared tier, so the second one's build panics.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Mutex;

/// The key and value types a `shared` cache name is bound to in this
/// process, and how many live caches hold it.
struct Claimed {
    key: TypeId,
    value: TypeId,
    types: String,
    holders: usize,
}

static CLAIMS: Mutex<Option<HashMap<String, Claimed>>> = Mutex::new(None);

/// A live `shared` cache's claim on its name: two caches with one name and
/// different key or value types would read each other's shared entries, so
/// the second one's build panics. Released when the cache is dropped.
pub(crate) struct NameClaim {
    name: String,
}

impl NameClaim {
    pub(crate) fn take<K: 'static, V: 'static>(name: &str) -> NameClaim {
        let types = format!(
            "Cache<{}, {}>",
            std::any::type_name::<K>(),
            std::any::type_name::<V>()
        );
        let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        let claims = claims.get_or_insert_with(HashMap::new);
        match claims.get_mut(name) {
            Some(claimed)
                if claimed.key == TypeId::of::<K>() && claimed.value == TypeId::of::<V>() =>
            {
                claimed.holders += 1;
            }
            Some(claimed) => panic!(
                "stampede-cache: two shared caches are named `{name}` with different types \
                 ({} and {types}); they would read each other's entries in the shared tier. \
                 Give one of them another name (`name = \"...\"` on the attribute, or \
                 Cache::builder(\"...\"))",
                claimed.types
            ),
            None => {
                claims.insert(
                    name.to_owned(),
                    Claimed {
                        key: TypeId::of::<K>(),
                        value: TypeId::of::<V>(),
                        types,
                        holders: 1,
                    },
                );
            }
        }
        NameClaim {
            name: name.to_owned(),
        }
    }
}

impl Drop for NameClaim {
    fn drop(&mut self) {
        let mut claims = CLAIMS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(claims) = claims.as_mut()
            && let Some(claimed) = claims.get_mut(&self.name)
        {
            claimed.holders -= 1;
            if claimed.holders == 0 {
                claims.remove(&self.name);
            }
        }
    }
}
