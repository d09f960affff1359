//! TEMPORARY in-memory stand-in with the hub's API while the tantivy index is written on
//! branch `hub`; replaced by that branch before federation is switched on.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HubKind {
    Repo,
    Unit,
}

impl std::fmt::Display for HubKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HubKind::Repo => "Repo",
            HubKind::Unit => "Unit",
        })
    }
}

impl std::str::FromStr for HubKind {
    type Err = HubError;
    fn from_str(s: &str) -> Result<Self, HubError> {
        match s {
            "Repo" => Ok(HubKind::Repo),
            "Unit" => Ok(HubKind::Unit),
            _ => Err(HubError::Kind(s.to_string())),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HubDoc {
    pub kind: HubKind,
    pub uuid: String,
    pub name: String,
    pub description: String,
    pub readme: String,
    pub topics: Vec<String>,
    pub platform: String,
    pub instance: String,
    pub url: String,
}

#[derive(Clone, Debug, Default)]
pub struct HubQuery {
    pub q: String,
    pub kind: Option<HubKind>,
    pub instance: Option<String>,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct HubHit {
    pub kind: HubKind,
    pub uuid: String,
    pub name: String,
    pub url: String,
    pub instance: String,
    pub description: String,
    pub platform: String,
    pub topics: Vec<String>,
    pub score: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct HubPage {
    pub count: usize,
    pub items: Vec<HubHit>,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("unknown kind {0}")]
    Kind(String),
}

#[derive(Clone, Default)]
pub struct Hub {
    docs: Arc<Mutex<Vec<HubDoc>>>,
}

impl Hub {
    pub fn open(_dir: &Path) -> Result<Hub, HubError> {
        Ok(Hub::default())
    }
    pub fn in_memory() -> Result<Hub, HubError> {
        Ok(Hub::default())
    }
    pub fn needs_rebuild(&self) -> bool {
        true
    }
    pub fn upsert(&self, doc: HubDoc) -> Result<(), HubError> {
        self.upsert_many(vec![doc])
    }
    pub fn upsert_many(&self, docs: Vec<HubDoc>) -> Result<(), HubError> {
        let mut all = self.docs.lock().unwrap();
        for d in docs {
            all.retain(|x| x.url != d.url);
            all.push(d);
        }
        Ok(())
    }
    pub fn remove(&self, url: &str) -> Result<(), HubError> {
        self.docs.lock().unwrap().retain(|x| x.url != url);
        Ok(())
    }
    pub fn remove_instance(&self, instance: &str) -> Result<usize, HubError> {
        let mut all = self.docs.lock().unwrap();
        let before = all.len();
        all.retain(|x| x.instance != instance);
        Ok(before - all.len())
    }
    pub fn search(&self, q: &HubQuery) -> Result<HubPage, HubError> {
        let all = self.docs.lock().unwrap();
        let needle = q.q.trim().to_lowercase();
        let hits: Vec<HubHit> = all
            .iter()
            .filter(|d| q.kind.is_none_or(|k| k == d.kind))
            .filter(|d| q.instance.as_deref().is_none_or(|i| i == d.instance))
            .filter(|d| {
                needle.is_empty()
                    || d.name.to_lowercase().contains(&needle)
                    || d.description.to_lowercase().contains(&needle)
                    || d.readme.to_lowercase().contains(&needle)
                    || d.topics.iter().any(|t| t.to_lowercase().contains(&needle))
            })
            .map(|d| HubHit {
                kind: d.kind,
                uuid: d.uuid.clone(),
                name: d.name.clone(),
                url: d.url.clone(),
                instance: d.instance.clone(),
                description: d.description.clone(),
                platform: d.platform.clone(),
                topics: d.topics.clone(),
                score: 1.0,
            })
            .collect();
        Ok(HubPage {
            count: hits.len(),
            items: hits.into_iter().skip(q.offset).take(q.limit).collect(),
        })
    }
    pub fn rebuild(
        &self,
        docs: impl Iterator<Item = HubDoc>,
        mut progress: impl FnMut(usize),
    ) -> Result<usize, HubError> {
        let docs: Vec<HubDoc> = docs.collect();
        let n = docs.len();
        *self.docs.lock().unwrap() = docs;
        progress(n);
        Ok(n)
    }
    pub fn is_empty(&self) -> Result<bool, HubError> {
        Ok(self.len()? == 0)
    }
    pub fn len(&self) -> Result<u64, HubError> {
        Ok(self.docs.lock().unwrap().len() as u64)
    }
}
