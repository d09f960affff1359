//! Recently read rows that device requests need on every call (the unit behind a token, its
//! repo), so that they do not all go to the database.
//!
//! Every write of such a row in the service layer calls [`RowCache::invalidate`] after its
//! transaction commits; the short time-to-live is only a safety net against a write path that
//! forgets to. Rows written by another process (a second instance on the same database) are
//! seen after the TTL at worst.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

const TTL: Duration = Duration::from_secs(2);
const MAX_ENTRIES: usize = 100_000;

pub struct RowCache<T> {
    entries: RwLock<HashMap<Uuid, (Instant, Arc<T>)>>,
}

impl<T> Default for RowCache<T> {
    fn default() -> Self {
        RowCache {
            entries: RwLock::new(HashMap::new()),
        }
    }
}

impl<T> RowCache<T> {
    pub fn get(&self, uuid: Uuid) -> Option<Arc<T>> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(&uuid)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, row)| row.clone())
    }

    pub fn put(&self, uuid: Uuid, row: Arc<T>) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (at, _)| at.elapsed() < TTL);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(uuid, (Instant::now(), row));
    }

    /// Applies a change just committed to the row, when it is cached and fresh; its age stays,
    /// so the time-to-live still bounds how long a cached row can be wrong.
    pub fn update(&self, uuid: Uuid, change: impl FnOnce(&mut T))
    where
        T: Clone,
    {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if let Some((at, row)) = map.get_mut(&uuid) {
            if at.elapsed() < TTL {
                change(Arc::make_mut(row));
            } else {
                map.remove(&uuid);
            }
        }
    }

    pub fn invalidate(&self, uuid: Uuid) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uuid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_invalidate() {
        let cache = RowCache::<String>::default();
        let id = Uuid::new_v4();
        assert!(cache.get(id).is_none());
        cache.put(id, Arc::new("row".into()));
        assert_eq!(cache.get(id).as_deref().map(String::as_str), Some("row"));
        cache.invalidate(id);
        assert!(cache.get(id).is_none());
    }

    #[test]
    fn update_changes_only_cached_rows() {
        let cache = RowCache::<String>::default();
        let (id, other) = (Uuid::new_v4(), Uuid::new_v4());
        let held = Arc::new("row".to_string());
        cache.put(id, held.clone());
        cache.update(id, |r| r.push_str(" changed"));
        cache.update(other, |r| r.push_str(" changed"));
        assert_eq!(
            cache.get(id).as_deref().map(String::as_str),
            Some("row changed")
        );
        assert!(cache.get(other).is_none());
        // a reader holding the old row keeps what it read
        assert_eq!(held.as_str(), "row");
    }
}
