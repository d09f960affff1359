//! Recently read units, so that a device's requests (each authenticated by its unit token) do
//! not all go to the database.
//!
//! Every write of a unit row in the service layer calls [`UnitCache::invalidate`]; the short
//! time-to-live is only a safety net against a write path that forgets to. Rows written by
//! another process (a second instance on the same database) are seen after the TTL at worst.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::store::units::Unit;

const TTL: Duration = Duration::from_secs(2);
const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct UnitCache {
    entries: RwLock<HashMap<Uuid, (Instant, Arc<Unit>)>>,
}

impl UnitCache {
    pub fn get(&self, uuid: Uuid) -> Option<Arc<Unit>> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        map.get(&uuid)
            .filter(|(at, _)| at.elapsed() < TTL)
            .map(|(_, u)| u.clone())
    }

    pub fn put(&self, unit: Arc<Unit>) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (at, _)| at.elapsed() < TTL);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(unit.uuid, (Instant::now(), unit));
    }

    pub fn invalidate(&self, uuid: Uuid) {
        self.entries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uuid);
    }
}
