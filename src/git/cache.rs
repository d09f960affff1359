//! Answers read from a mirror, kept until that mirror changes.
//!
//! Devices ask for env, schema and firmware far more often than repositories change, and each
//! uncached answer costs several `git` processes. Every entry belongs to one registry; a sync or
//! removal of that registry drops its entries and bumps its generation, and a value computed
//! while a sync was running is not stored (its generation is stale), so readers never see an
//! answer older than the last completed sync.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use uuid::Uuid;

/// Entries per registry before its cache is emptied and refilled (bounds memory).
const MAX_ENTRIES_PER_REGISTRY: usize = 512;
/// Bytes kept over all registries; past it everything is dropped and refilled on demand.
const MAX_TOTAL_BYTES: usize = 64 * 1024 * 1024;
/// Cached files larger than this are not kept.
const MAX_CACHED_VALUE_BYTES: usize = 256 * 1024;

type Entry = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
struct RegistryEntries {
    generation: u64,
    entries: HashMap<String, Entry>,
}

#[derive(Default)]
pub(super) struct ReadCache {
    registries: Mutex<HashMap<Uuid, RegistryEntries>>,
    /// Sum of the weights currently stored (approximate after per-registry clears).
    total_bytes: std::sync::atomic::AtomicUsize,
}

/// Size estimate, so that big blobs are not pinned in memory.
pub(super) trait CacheWeight {
    fn weight(&self) -> usize;
}

impl<T: CacheWeight> CacheWeight for Vec<T> {
    fn weight(&self) -> usize {
        self.iter()
            .map(|v| std::mem::size_of::<T>() + v.weight())
            .sum()
    }
}
impl CacheWeight for u8 {
    fn weight(&self) -> usize {
        0
    }
}
impl CacheWeight for String {
    fn weight(&self) -> usize {
        self.len()
    }
}
impl CacheWeight for super::CommitInfo {
    fn weight(&self) -> usize {
        self.commit.len() + self.summary.len() + self.tag.as_ref().map_or(0, String::len)
    }
}
impl<T: CacheWeight> CacheWeight for Option<T> {
    fn weight(&self) -> usize {
        self.as_ref().map_or(0, CacheWeight::weight)
    }
}
impl CacheWeight for bool {
    fn weight(&self) -> usize {
        1
    }
}

impl ReadCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, RegistryEntries>> {
        self.registries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached value for `key`, or the result of `load` (stored when it succeeded and no
    /// invalidation happened meanwhile).
    pub(super) async fn get_or_load<T, E, F>(
        &self,
        registry: Uuid,
        key: String,
        load: F,
    ) -> Result<T, E>
    where
        T: Clone + Send + Sync + CacheWeight + 'static,
        F: Future<Output = Result<T, E>>,
    {
        let generation = {
            let map = self.lock();
            match map.get(&registry) {
                Some(r) => {
                    if let Some(v) = r.entries.get(&key).and_then(|e| e.downcast_ref::<T>()) {
                        return Ok(v.clone());
                    }
                    r.generation
                }
                None => 0,
            }
        };
        let value = load.await?;
        let weight = value.weight() + key.len();
        if weight <= MAX_CACHED_VALUE_BYTES {
            use std::sync::atomic::Ordering::Relaxed;
            let mut map = self.lock();
            if self.total_bytes.load(Relaxed) + weight > MAX_TOTAL_BYTES {
                // keep generations (they guard against stale loads), drop every entry
                map.values_mut().for_each(|r| r.entries.clear());
                self.total_bytes.store(0, Relaxed);
            }
            let r = map.entry(registry).or_default();
            if r.generation == generation {
                if r.entries.len() >= MAX_ENTRIES_PER_REGISTRY {
                    r.entries.clear();
                }
                r.entries.insert(key, Arc::new(value.clone()));
                self.total_bytes.fetch_add(weight, Relaxed);
            }
        }
        Ok(value)
    }

    fn invalidate(&self, registry: Uuid) {
        let mut map = self.lock();
        let r = map.entry(registry).or_default();
        r.generation += 1;
        r.entries.clear();
    }

    /// Invalidates now and again when the guard drops (covers a sync that fails or is
    /// cancelled half-way, and readers that loaded during it).
    pub(super) fn invalidate_on_drop(&self, registry: Uuid) -> InvalidateGuard<'_> {
        self.invalidate(registry);
        InvalidateGuard {
            cache: self,
            registry,
        }
    }
}

pub(super) struct InvalidateGuard<'a> {
    cache: &'a ReadCache,
    registry: Uuid,
}

impl Drop for InvalidateGuard<'_> {
    fn drop(&mut self) {
        self.cache.invalidate(self.registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loads_once_and_invalidates() {
        let cache = ReadCache::default();
        let r = Uuid::new_v4();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let load = || async {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok::<_, ()>(vec![1u8, 2, 3])
        };
        assert_eq!(
            cache.get_or_load(r, "k".into(), load()).await,
            Ok(vec![1, 2, 3])
        );
        assert_eq!(
            cache.get_or_load(r, "k".into(), load()).await,
            Ok(vec![1, 2, 3])
        );
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        drop(cache.invalidate_on_drop(r));
        cache.get_or_load(r, "k".into(), load()).await.unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn value_loaded_during_invalidation_is_not_kept() {
        let cache = ReadCache::default();
        let r = Uuid::new_v4();
        let value = cache
            .get_or_load(r, "k".into(), async {
                cache.invalidate(r); // a sync finished while we were reading
                Ok::<_, ()>(vec![1u8])
            })
            .await
            .unwrap();
        assert_eq!(value, vec![1]);
        assert!(cache.lock()[&r].entries.is_empty());
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let cache = ReadCache::default();
        let r = Uuid::new_v4();
        assert!(cache
            .get_or_load(r, "k".into(), async { Err::<Vec<u8>, _>("boom") })
            .await
            .is_err());
        assert_eq!(
            cache
                .get_or_load(r, "k".into(), async { Ok::<_, &str>(vec![7u8]) })
                .await,
            Ok(vec![7])
        );
    }
}
