//! The hub: a full-text index (tantivy) of the public Repos and Units of this instance and of
//! remote instances, keyed by each object's ActivityPub id (`url`).
//!
//! Derived data: the server's database is the truth and [`Hub::rebuild`] restores the index
//! from it. Methods block (call them from `spawn_blocking`). One `IndexWriter` sits behind a
//! mutex; every write commits and reloads the reader before it returns, so searches see it.
//!
//! A query is plain words, never a query language. Every word must occur in the document
//! (name, description, README, topics, platform or instance; a name word also by its first
//! letters: "weath" finds "weather-station"). Documents that match without their README
//! come first, by relevance with the name weighing most; the others follow. A blank query
//! lists everything by name. Each of the two groups is one field (`head`, `all`), so a query
//! is an intersection of single terms, which tantivy counts without scoring and ranks with
//! block-WAND (figures in BENCHMARKS.md).

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tantivy::collector::{Count, TopDocs};
use tantivy::columnar::Column;
use tantivy::directory::MmapDirectory;
use tantivy::indexer::{LogMergePolicy, NoMergePolicy};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};
use tantivy::{
    DocAddress, DocSet, Index, IndexReader, IndexWriter, Order, ReloadPolicy, Searcher,
    TantivyDocument, TantivyError, Term, TERMINATED,
};

/// Written as the payload of every commit; an index with another payload (or another schema)
/// is from an older binary and is recreated. Bump it when the analyzer or the fields change.
const FORMAT: &str = "pepeunit-hub/1";
const TOKENIZER: &str = "hub";
/// Shared by the indexing threads; tantivy flushes a segment when a thread's share is full.
const WRITER_BUDGET: usize = 96 * 1024 * 1024;
/// Blank queries walk names in order for pages ending up to here, and sort every match by
/// name beyond (or when the walk passes [`WALK_BUDGET`] names).
const WALK_NAMES_UP_TO: usize = 10_000;
const WALK_BUDGET: usize = 30_000;
/// Longer urls are refused (tantivy drops terms over 64 KiB, which would break replacing).
const MAX_URL_BYTES: usize = 4096;
/// Blank queries order by this many characters of the name, then by url digest.
const NAME_KEY_CHARS: usize = 256;
/// A query uses at most this many distinct words; the rest of a long input is ignored.
const MAX_QUERY_WORDS: usize = 16;
/// Name words are also indexed as their prefixes of this many characters.
const PREFIX_CHARS: std::ops::RangeInclusive<usize> = 3..=16;
/// Dropped from queries (not from documents) unless the query has nothing else, so that
/// "a weather station" needs no "a" in the document.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "for", "in", "is", "it", "of", "on", "or",
    "the", "to", "with",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HubKind {
    Repo,
    Unit,
}

impl HubKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HubKind::Repo => "Repo",
            HubKind::Unit => "Unit",
        }
    }
}

impl fmt::Display for HubKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HubKind {
    type Err = HubError;

    fn from_str(s: &str) -> Result<Self, HubError> {
        match s {
            "Repo" => Ok(HubKind::Repo),
            "Unit" => Ok(HubKind::Unit),
            other => Err(HubError::UnknownKind(other.to_string())),
        }
    }
}

/// One public Repo or Unit, as indexed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HubDoc {
    pub kind: HubKind,
    /// The object's uuid on its origin instance.
    pub uuid: String,
    pub name: String,
    pub description: String,
    /// Searchable, not returned in hits.
    pub readme: String,
    pub topics: Vec<String>,
    /// "Gitlab", "Github" or "".
    pub platform: String,
    /// Origin instance, "host" or "host:port"; stored lowercase.
    pub instance: String,
    /// The object's ActivityPub id on its origin: the unique key.
    pub url: String,
}

#[derive(Clone, Debug, Default)]
pub struct HubQuery {
    /// Words typed by a user; any text is accepted. Blank means every document.
    pub q: String,
    pub kind: Option<HubKind>,
    /// Exact instance, compared lowercase.
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
    /// Relevance (BM25) within its group (see the module docs); 0 for a blank query, which is
    /// ordered by name.
    pub score: f32,
}

#[derive(Clone, Debug, Serialize)]
pub struct HubPage {
    /// Matching documents in total, not only this page.
    pub count: usize,
    pub items: Vec<HubHit>,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("hub index: {0}")]
    Index(#[from] TantivyError),
    #[error("hub index: {0}")]
    Io(#[from] std::io::Error),
    #[error("hub index: unknown kind {0:?}")]
    UnknownKind(String),
    #[error("hub index is closed")]
    Closed,
    #[error("hub index: a url must have 1 to {MAX_URL_BYTES} bytes")]
    InvalidUrl,
}

/// Handle to the index; cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    index: Index,
    reader: IndexReader,
    /// `None` after [`Hub::close`].
    writer: Mutex<Option<IndexWriter>>,
    fields: Fields,
    needs_rebuild: AtomicBool,
}

#[derive(Clone, Copy)]
struct Fields {
    kind: Field,
    uuid: Field,
    url: Field,
    name: Field,
    /// [`name_key`], the order of blank queries: a term (walked in order) and a fast column
    /// (sorted on, with filters).
    name_sort: Field,
    description: Field,
    topics: Field,
    platform: Field,
    /// Lowercase, exact: the filter.
    instance: Field,
    /// Searched first: name (three times, so that it weighs most) and its word prefixes,
    /// topics (twice), description, platform, instance.
    head: Field,
    /// What a document matches: the words of `head` once, and the README.
    all: Field,
}

fn schema() -> (Schema, Fields) {
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    // filters are terms of the intersection too: block-WAND needs their frequencies; the
    // walk in name order reads them from columns
    let exact = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("raw")
                .set_index_option(IndexRecordOption::WithFreqs),
        )
        .set_fast("raw")
        .set_stored();
    let mut b = Schema::builder();
    let fields = Fields {
        kind: b.add_text_field("kind", exact.clone()),
        uuid: b.add_text_field("uuid", STORED),
        url: b.add_text_field("url", STRING | STORED),
        name: b.add_text_field("name", STORED),
        name_sort: b.add_text_field("name_sort", STRING.set_fast("raw")),
        description: b.add_text_field("description", STORED),
        topics: b.add_text_field("topics", STORED),
        platform: b.add_text_field("platform", STORED),
        instance: b.add_text_field("instance", exact),
        head: b.add_text_field("head", words.clone()),
        all: b.add_text_field("all", words),
    };
    (b.build(), fields)
}

fn analyzer() -> TextAnalyzer {
    // SimpleTokenizer splits on anything not alphanumeric: "esp32-weather_station" gives
    // "esp32", "weather", "station".
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

fn words(text: &str) -> Vec<String> {
    let mut analyzer = analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while let Some(token) = stream.next() {
        out.push(token.text.clone());
    }
    out
}

fn normalize_instance(instance: &str) -> String {
    instance.trim().to_lowercase()
}

impl Hub {
    /// Opens the index in `dir/index`, creating it if missing. An index written by another
    /// version (schema or format differ) or that cannot be opened is deleted and created
    /// empty; [`Hub::needs_rebuild`] then says so.
    pub fn open(dir: &Path) -> Result<Hub, HubError> {
        let path = dir.join("index");
        std::fs::create_dir_all(&path)?;
        let (expected, fields) = schema();
        let existing = if Index::exists(&MmapDirectory::open(&path).map_err(TantivyError::from)?)
            .map_err(TantivyError::from)?
        {
            match Index::open_in_dir(&path).and_then(|index| Ok((index.load_metas()?, index))) {
                Ok((metas, index))
                    if index.schema() == expected && metas.payload.as_deref() == Some(FORMAT) =>
                {
                    Some(index)
                }
                Ok(_) => {
                    tracing::warn!(path = %path.display(), "hub index is from another version; recreating it");
                    None
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "hub index cannot be opened; recreating it");
                    None
                }
            }
        } else {
            None
        };
        let (index, created) = match existing {
            Some(index) => (index, false),
            None => {
                std::fs::remove_dir_all(&path)?;
                std::fs::create_dir_all(&path)?;
                (Index::create_in_dir(&path, expected)?, true)
            }
        };
        Hub::start(index, fields, created)
    }

    /// An empty index in memory (tests, tools).
    pub fn in_memory() -> Result<Hub, HubError> {
        let (schema, fields) = schema();
        Hub::start(Index::create_in_ram(schema), fields, true)
    }

    fn start(index: Index, fields: Fields, created: bool) -> Result<Hub, HubError> {
        index.tokenizers().register(TOKENIZER, analyzer());
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let mut writer = index.writer_with_num_threads(threads, WRITER_BUDGET)?;
        if created {
            // stamps the format, so that reopening an empty index does not recreate it
            commit(&mut writer)?;
        }
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Hub {
            inner: Arc::new(Inner {
                index,
                reader,
                writer: Mutex::new(Some(writer)),
                fields,
                needs_rebuild: AtomicBool::new(created),
            }),
        })
    }

    /// True when the index was created empty by [`Hub::open`] or [`Hub::in_memory`] (missing,
    /// from another version, or unreadable) and no [`Hub::rebuild`] has completed since: the
    /// caller should rebuild it from its database.
    pub fn needs_rebuild(&self) -> bool {
        self.inner.needs_rebuild.load(Ordering::Relaxed)
    }

    /// Adds `doc`, replacing any document with the same url.
    pub fn upsert(&self, doc: HubDoc) -> Result<(), HubError> {
        self.upsert_many(vec![doc])
    }

    /// Adds `docs` in one commit, each replacing any document with its url (the last wins
    /// within `docs`). Nothing is written if a url is empty or too long.
    pub fn upsert_many(&self, docs: Vec<HubDoc>) -> Result<(), HubError> {
        let f = self.inner.fields;
        if !docs.iter().all(|d| valid_url(&d.url)) {
            return Err(HubError::InvalidUrl);
        }
        self.write(|writer| {
            for doc in &docs {
                writer.delete_term(Term::from_field_text(f.url, &doc.url));
                writer.add_document(f.document(doc))?;
            }
            Ok(())
        })
    }

    pub fn remove(&self, url: &str) -> Result<(), HubError> {
        let f = self.inner.fields;
        self.write(|writer| {
            writer.delete_term(Term::from_field_text(f.url, url));
            Ok(())
        })
    }

    /// Removes every document of `instance` (compared lowercase) and returns how many there
    /// were.
    pub fn remove_instance(&self, instance: &str) -> Result<usize, HubError> {
        let term = Term::from_field_text(self.inner.fields.instance, &normalize_instance(instance));
        self.write(|writer| {
            // exact: the reader is reloaded after every commit, all of which hold this lock
            let count = self.inner.reader.searcher().search(
                &TermQuery::new(term.clone(), IndexRecordOption::Basic),
                &Count,
            )?;
            writer.delete_term(term);
            Ok(count)
        })
    }

    /// Replaces the whole contents with `docs` in one commit (searches see the old contents
    /// until then), then merges the index into one segment, holding the writer (other writes
    /// wait). Returns how many documents were indexed: one with an empty or too long url is
    /// skipped with a warning. `progress` gets the number added so far, every 10,000 and
    /// after the commit. `docs` must not repeat a url (not detected: the caller reads them
    /// from a table where the url is unique).
    pub fn rebuild(
        &self,
        docs: impl Iterator<Item = HubDoc>,
        mut progress: impl FnMut(usize),
    ) -> Result<usize, HubError> {
        let f = self.inner.fields;
        // no merges while loading: they would be redone; one merge at the end instead
        self.writer()?.set_merge_policy(Box::new(NoMergePolicy));
        let loaded = self.write(|writer| {
            writer.delete_all_documents()?;
            let mut n = 0;
            for doc in docs {
                if !valid_url(&doc.url) {
                    tracing::warn!(url = %doc.url.chars().take(100).collect::<String>(), "hub index: url empty or too long; skipped");
                    continue;
                }
                writer.add_document(f.document(&doc))?;
                n += 1;
                if n % 10_000 == 0 {
                    progress(n);
                }
            }
            Ok(n)
        });
        let mut writer = self.writer()?;
        writer.set_merge_policy(Box::<LogMergePolicy>::default());
        let total = loaded?;
        progress(total);
        self.inner.needs_rebuild.store(false, Ordering::Relaxed);
        // one segment: searches then pay no per-segment cost, and nothing is left to merge
        let segments = self.inner.index.searchable_segment_ids()?;
        if segments.len() > 1 {
            match writer.merge(&segments).wait() {
                Ok(_) => self.inner.reader.reload()?,
                Err(e) => tracing::warn!(error = %e, "hub index: merging after rebuild failed"),
            }
        }
        Ok(total)
    }

    /// Number of documents.
    pub fn len(&self) -> Result<u64, HubError> {
        Ok(self.inner.reader.searcher().num_docs())
    }

    pub fn is_empty(&self) -> Result<bool, HubError> {
        Ok(self.len()? == 0)
    }

    pub fn search(&self, q: &HubQuery) -> Result<HubPage, HubError> {
        let f = self.inner.fields;
        let searcher = self.inner.reader.searcher();
        let mut filters = Vec::new();
        if let Some(kind) = q.kind {
            filters.push(Term::from_field_text(f.kind, kind.as_str()));
        }
        if let Some(instance) = &q.instance {
            filters.push(Term::from_field_text(
                f.instance,
                &normalize_instance(instance),
            ));
        }
        let page = |count: usize| {
            // tantivy sizes its buffers by offset + limit: keep them within the matches
            let start = q.offset.min(count);
            start..start.saturating_add(q.limit).min(count)
        };
        if q.q.trim().is_empty() {
            let query: Box<dyn Query> = if filters.is_empty() {
                Box::new(AllQuery)
            } else {
                intersection(filters.clone())
            };
            let count = searcher.search(&query, &Count)?;
            let range = page(count);
            if range.is_empty() {
                return Ok(HubPage {
                    count,
                    items: Vec::new(),
                });
            }
            let walked = if range.end <= WALK_NAMES_UP_TO {
                first_by_name(&searcher, f.name_sort, &filters, range.end)?
            } else {
                None
            };
            let top = if let Some(mut first) = walked {
                first.split_off(range.start)
            } else {
                searcher
                    .search(
                        &query,
                        &TopDocs::for_doc_range(range)
                            .order_by_string_fast_field("name_sort", Order::Asc),
                    )?
                    .into_iter()
                    .map(|(_, address)| address)
                    .collect()
            };
            let items = top
                .into_iter()
                .map(|address| f.hit(&searcher, address, 0.0))
                .collect::<Result<_, _>>()?;
            return Ok(HubPage { count, items });
        }
        let words = query_words(&q.q);
        if words.is_empty() {
            // only punctuation: nothing to look for
            return Ok(HubPage {
                count: 0,
                items: Vec::new(),
            });
        }
        let in_field = |field: Field| -> Box<dyn Query> {
            let terms = words.iter().map(|w| Term::from_field_text(field, w));
            intersection(terms.chain(filters.iter().cloned()).collect())
        };
        let (all, head) = (in_field(f.all), in_field(f.head));
        let count = searcher.search(&all, &Count)?;
        let range = page(count);
        if range.is_empty() {
            return Ok(HubPage {
                count,
                items: Vec::new(),
            });
        }
        // `head` matches are a subset of `all` matches and come first; their count is only
        // needed when the page reaches past them
        let mut hits = searcher.search(
            &head,
            &TopDocs::for_doc_range(range.clone()).order_by_score(),
        )?;
        if hits.len() < range.len() {
            let head_count = if hits.is_empty() {
                searcher.search(&head, &Count)?
            } else {
                range.start + hits.len()
            };
            let rest = range.start.saturating_sub(head_count)..range.end - head_count;
            let readme_only = BooleanQuery::new(vec![(Occur::Must, all), (Occur::MustNot, head)]);
            hits.extend(
                searcher.search(&readme_only, &TopDocs::for_doc_range(rest).order_by_score())?,
            );
        }
        let items = hits
            .into_iter()
            .map(|(score, address)| f.hit(&searcher, address, score))
            .collect::<Result<_, _>>()?;
        Ok(HubPage { count, items })
    }

    /// Runs `change` with the writer, then commits and reloads the reader; on any error the
    /// uncommitted changes are rolled back.
    fn write<T>(
        &self,
        change: impl FnOnce(&mut IndexWriter) -> Result<T, HubError>,
    ) -> Result<T, HubError> {
        let mut writer = self.writer()?;
        match change(&mut writer).and_then(|out| {
            commit(&mut writer)?;
            Ok(out)
        }) {
            Ok(out) => {
                self.inner.reader.reload()?;
                Ok(out)
            }
            Err(e) => {
                if let Err(rollback) = writer.rollback() {
                    tracing::error!(error = %rollback, "hub index rollback failed");
                }
                Err(e)
            }
        }
    }

    fn writer(&self) -> Result<WriterGuard<'_>, HubError> {
        let guard = match self.inner.writer.lock() {
            Ok(guard) => guard,
            Err(poisoned) => {
                // a panic mid-write (e.g. in a rebuild's iterator) left changes uncommitted
                let mut guard = poisoned.into_inner();
                if let Some(writer) = guard.as_mut() {
                    writer.rollback()?;
                    writer.set_merge_policy(Box::<LogMergePolicy>::default());
                }
                self.inner.writer.clear_poison();
                guard
            }
        };
        if guard.is_none() {
            return Err(HubError::Closed);
        }
        Ok(WriterGuard(guard))
    }

    /// Releases the index's writer (and its lock on the directory), waiting for merges; later
    /// writes fail with [`HubError::Closed`], searches keep working. Lets the same process open
    /// the directory again (an instance restarted in place).
    pub fn close(&self) {
        let writer = match self.inner.writer.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(writer) = writer {
            if let Err(e) = writer.wait_merging_threads() {
                tracing::warn!(error = %e, "hub index merge did not finish");
            }
        }
    }
}

/// The locked writer of an open hub.
struct WriterGuard<'a>(MutexGuard<'a, Option<IndexWriter>>);

impl std::ops::Deref for WriterGuard<'_> {
    type Target = IndexWriter;
    fn deref(&self) -> &IndexWriter {
        self.0.as_ref().expect("checked when the guard was made")
    }
}

impl std::ops::DerefMut for WriterGuard<'_> {
    fn deref_mut(&mut self) -> &mut IndexWriter {
        self.0.as_mut().expect("checked when the guard was made")
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("index", &self.inner.index)
            .finish_non_exhaustive()
    }
}

fn commit(writer: &mut IndexWriter) -> Result<(), HubError> {
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(FORMAT);
    prepared.commit()?;
    Ok(())
}

/// The first `end` live documents in name order that have every `filters` term, found by
/// walking the sorted terms of `name_sort` instead of sorting every match. `None` when that
/// takes more than [`WALK_BUDGET`] terms (a rare kind, a small instance): sort instead.
fn first_by_name(
    searcher: &Searcher,
    name_sort: Field,
    filters: &[Term],
    end: usize,
) -> Result<Option<Vec<DocAddress>>, HubError> {
    let segments = searcher.segment_readers();
    let inverted = segments
        .iter()
        .map(|s| s.inverted_index(name_sort))
        .collect::<Result<Vec<_>, _>>()?;
    let mut terms = inverted
        .iter()
        .map(|i| i.terms().stream())
        .collect::<Result<Vec<_>, _>>()?;
    let mut more: Vec<bool> = terms.iter_mut().map(|t| t.advance()).collect();
    // per segment, each filter as (column, ordinal of the wanted value); a segment without
    // the value has nothing to give
    let schema = searcher.schema();
    let mut wanted: Vec<Vec<(Column<u64>, u64)>> = Vec::with_capacity(segments.len());
    for (segment, more) in segments.iter().zip(&mut more) {
        let mut columns = Vec::with_capacity(filters.len());
        for term in filters {
            let name = schema.get_field_name(term.field());
            let value = term.value();
            let value = value.as_str().unwrap_or_default();
            let found = match segment.fast_fields().str(name)? {
                Some(column) => column
                    .dictionary()
                    .term_ord(value)?
                    .map(|ord| (column.ords().clone(), ord)),
                None => None,
            };
            match found {
                Some(filter) => columns.push(filter),
                None => *more = false,
            }
        }
        wanted.push(columns);
    }
    let mut out = Vec::with_capacity(end);
    let mut walked = 0;
    while out.len() < end {
        // the segment whose current term is the smallest
        let Some(next) = (0..terms.len())
            .filter(|&i| more[i])
            .min_by(|&a, &b| terms[a].key().cmp(terms[b].key()))
        else {
            break;
        };
        walked += 1;
        if walked > WALK_BUDGET {
            return Ok(None);
        }
        let mut postings = inverted[next]
            .read_postings_from_terminfo(terms[next].value(), IndexRecordOption::Basic)?;
        // the same key can be in several segments (replaced documents): keep the live one
        let mut doc = postings.doc();
        while doc != TERMINATED && out.len() < end {
            let passes = wanted[next]
                .iter()
                .all(|(column, ord)| column.first(doc) == Some(*ord));
            if passes && !segments[next].is_deleted(doc) {
                out.push(DocAddress::new(next as u32, doc));
            }
            doc = postings.advance();
        }
        more[next] = terms[next].advance();
    }
    Ok(Some(out))
}

fn valid_url(url: &str) -> bool {
    (1..=MAX_URL_BYTES).contains(&url.len())
}

/// Documents with every term. A filter term (kind, instance) has one occurrence in every
/// document it matches, so it adds the same amount to each score and leaves the order alone.
fn intersection(terms: Vec<Term>) -> Box<dyn Query> {
    let mut queries: Vec<(Occur, Box<dyn Query>)> = terms
        .into_iter()
        .map(|t| {
            let q: Box<dyn Query> = Box::new(TermQuery::new(t, IndexRecordOption::WithFreqs));
            (Occur::Must, q)
        })
        .collect();
    match queries.len() {
        1 => queries.pop().map(|(_, q)| q).expect("one term"),
        _ => Box::new(BooleanQuery::new(queries)),
    }
}

/// The distinct words of a user query, without stop words unless there is nothing else.
fn query_words(q: &str) -> Vec<String> {
    let mut all = words(q);
    let mut seen = HashSet::new();
    all.retain(|w| seen.insert(w.clone()));
    let content: Vec<String> = all
        .iter()
        .filter(|w| !STOP_WORDS.contains(&String::as_str(w)))
        .cloned()
        .collect();
    let mut chosen = if content.is_empty() { all } else { content };
    chosen.truncate(MAX_QUERY_WORDS);
    chosen
}

/// Prefixes of each word of `name` (in characters, within [`PREFIX_CHARS`], shorter than the
/// word).
fn name_prefixes(name: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for word in words(name) {
        let ends = word.char_indices().map(|(i, _)| i).skip(1);
        for (chars, end) in (1..).zip(ends) {
            if PREFIX_CHARS.contains(&chars) {
                out.insert(word[..end].to_string());
            }
        }
    }
    out
}

/// Orders by lowercase name, then by a digest of the url: total, stable, and short, since
/// tantivy's term dictionary is slow to build from long unique keys (a whole url made the
/// rebuild twice as slow).
fn name_key(name: &str, url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    let mut key: String = name.to_lowercase().chars().take(NAME_KEY_CHARS).collect();
    key.push('\u{1}');
    for byte in &digest[..8] {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

impl Fields {
    fn document(&self, doc: &HubDoc) -> TantivyDocument {
        let mut d = TantivyDocument::default();
        let instance = normalize_instance(&doc.instance);
        d.add_text(self.kind, doc.kind.as_str());
        d.add_text(self.uuid, &doc.uuid);
        d.add_text(self.url, &doc.url);
        d.add_text(self.name, &doc.name);
        d.add_text(self.name_sort, name_key(&doc.name, &doc.url));
        d.add_text(self.description, &doc.description);
        for topic in &doc.topics {
            d.add_text(self.topics, topic);
        }
        d.add_text(self.platform, &doc.platform);
        d.add_text(self.instance, &instance);

        let prefixes = name_prefixes(&doc.name)
            .into_iter()
            .collect::<Vec<_>>()
            .join(" ");
        let topics = doc.topics.join(" ");
        let head = [
            doc.name.as_str(),
            &doc.name,
            &doc.name,
            &prefixes,
            &topics,
            &topics,
            &doc.description,
            &doc.platform,
            &instance,
        ];
        let all = [
            doc.name.as_str(),
            &prefixes,
            &topics,
            &doc.description,
            &doc.platform,
            &instance,
            &doc.readme,
        ];
        for text in head {
            d.add_text(self.head, text);
        }
        for text in all {
            d.add_text(self.all, text);
        }
        d
    }

    fn hit(
        &self,
        searcher: &Searcher,
        address: DocAddress,
        score: f32,
    ) -> Result<HubHit, HubError> {
        let doc: TantivyDocument = searcher.doc(address)?;
        let text = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        Ok(HubHit {
            kind: text(self.kind).parse()?,
            uuid: text(self.uuid),
            name: text(self.name),
            url: text(self.url),
            instance: text(self.instance),
            description: text(self.description),
            platform: text(self.platform),
            topics: doc
                .get_all(self.topics)
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            score,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(kind: HubKind, name: &str, instance: &str) -> HubDoc {
        HubDoc {
            kind,
            uuid: format!("uuid-{name}"),
            name: name.to_string(),
            description: format!("{name} description"),
            readme: String::new(),
            topics: Vec::new(),
            platform: String::new(),
            instance: instance.to_string(),
            url: format!("https://{instance}/{}/{name}", kind.as_str().to_lowercase()),
        }
    }

    fn query(q: &str) -> HubQuery {
        HubQuery {
            q: q.to_string(),
            limit: 100,
            ..HubQuery::default()
        }
    }

    fn names(page: &HubPage) -> Vec<&str> {
        page.items.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn upsert_replaces_by_url_and_remove_deletes() {
        let hub = Hub::in_memory().unwrap();
        let mut d = doc(HubKind::Repo, "esp32-weather_station", "a.example");
        d.topics = vec!["greenhouse/temperature".into()];
        d.platform = "Gitlab".into();
        hub.upsert(d.clone()).unwrap();
        let page = hub.search(&query("weather")).unwrap();
        assert_eq!(page.count, 1);
        let hit = &page.items[0];
        assert_eq!(
            (hit.kind, hit.uuid.as_str(), hit.url.as_str()),
            (HubKind::Repo, d.uuid.as_str(), d.url.as_str())
        );
        assert_eq!(hit.topics, d.topics);
        assert_eq!(hit.platform, "Gitlab");
        assert!(hit.score > 0.0);

        d.name = "esp32-rain_gauge".into();
        d.description = "measures rain".into();
        hub.upsert(d.clone()).unwrap();
        assert_eq!(hub.len().unwrap(), 1);
        assert_eq!(hub.search(&query("weather")).unwrap().count, 0);
        assert_eq!(
            names(&hub.search(&query("rain")).unwrap()),
            ["esp32-rain_gauge"]
        );

        hub.remove(&d.url).unwrap();
        assert_eq!(hub.len().unwrap(), 0);
        assert_eq!(hub.search(&query("")).unwrap().count, 0);
        hub.remove("https://nowhere.example/x").unwrap();
    }

    #[test]
    fn urls_must_be_usable_keys_and_long_texts_are_indexed() {
        let hub = Hub::in_memory().unwrap();
        let good = doc(HubKind::Repo, "good", "a.example");
        let mut empty = doc(HubKind::Repo, "empty", "a.example");
        empty.url.clear();
        let mut long = doc(HubKind::Repo, "long", "a.example");
        long.url = format!("https://a.example/{}", "x".repeat(MAX_URL_BYTES));
        for bad in [&empty, &long] {
            let err = hub
                .upsert_many(vec![good.clone(), bad.clone()])
                .unwrap_err();
            assert!(matches!(err, HubError::InvalidUrl), "{err}");
        }
        assert_eq!(hub.len().unwrap(), 0);
        let total = hub
            .rebuild(vec![good, empty, long].into_iter(), |_| {})
            .unwrap();
        assert_eq!((total, hub.len().unwrap()), (1, 1));

        let mut huge = doc(HubKind::Unit, &"sensor-".repeat(20_000), "a.example");
        huge.url = "https://a.example/unit/huge".into();
        huge.description = "word ".repeat(100_000);
        huge.readme = "readme ".repeat(100_000);
        hub.upsert(huge).unwrap();
        assert_eq!(hub.search(&query("sensor readme")).unwrap().count, 1);
        assert_eq!(hub.search(&query("")).unwrap().count, 2);
    }

    #[test]
    fn upsert_many_last_of_a_url_wins() {
        let hub = Hub::in_memory().unwrap();
        let first = doc(HubKind::Unit, "first", "a.example");
        let mut second = first.clone();
        second.name = "second".into();
        hub.upsert_many(vec![
            first,
            second,
            doc(HubKind::Unit, "other", "a.example"),
        ])
        .unwrap();
        assert_eq!(names(&hub.search(&query("")).unwrap()), ["other", "second"]);
    }

    #[test]
    fn words_of_names_topics_readme_platform_and_instance_are_found() {
        let hub = Hub::in_memory().unwrap();
        let mut repo = doc(
            HubKind::Repo,
            "esp32-weather_station",
            "Iot.Example.org:8443",
        );
        repo.readme = "Flash it with Thonny and watch the barometer.".into();
        repo.platform = "Github".into();
        let mut unit = doc(HubKind::Unit, "kitchen", "b.example");
        unit.topics = vec!["output_humidity".into()];
        hub.upsert_many(vec![repo, unit]).unwrap();
        for (q, expected) in [
            ("weather", "esp32-weather_station"),
            ("ESP32", "esp32-weather_station"),
            ("weath", "esp32-weather_station"),
            ("statio", "esp32-weather_station"),
            ("barometer", "esp32-weather_station"),
            ("github", "esp32-weather_station"),
            ("iot", "esp32-weather_station"),
            ("8443", "esp32-weather_station"),
            ("humidity", "kitchen"),
            ("kitchen description", "kitchen"),
            ("the kitchen", "kitchen"),
        ] {
            assert_eq!(names(&hub.search(&query(q)).unwrap()), [expected], "{q:?}");
        }
        // every word must match
        assert_eq!(hub.search(&query("kitchen barometer")).unwrap().count, 0);
        // the README is searched, never returned
        let hit = &hub.search(&query("thonny")).unwrap().items[0];
        assert!(!format!("{hit:?}").contains("Thonny"));
        assert_eq!(hit.instance, "iot.example.org:8443");
    }

    #[test]
    fn name_matches_rank_first() {
        let hub = Hub::in_memory().unwrap();
        let mut mentions = doc(HubKind::Repo, "controller", "a.example");
        mentions.description = "drives a pump".into();
        hub.upsert_many(vec![mentions, doc(HubKind::Repo, "pump", "a.example")])
            .unwrap();
        assert_eq!(
            names(&hub.search(&query("pump")).unwrap()),
            ["pump", "controller"]
        );
    }

    #[test]
    fn readme_matches_come_after_the_others_across_pages() {
        let hub = Hub::in_memory().unwrap();
        let mut docs = Vec::new();
        for i in 0..5 {
            let mut d = doc(HubKind::Repo, &format!("readme{i}"), "a.example");
            d.readme = "pump ".repeat(i + 1);
            docs.push(d);
        }
        let mut named = doc(HubKind::Unit, "pump", "a.example");
        named.readme = "a long readme ".repeat(50);
        docs.push(named);
        docs.push(doc(HubKind::Repo, "pumphouse", "a.example"));
        let mut described = doc(HubKind::Repo, "controller", "a.example");
        described.description = "drives a pump".into();
        docs.push(described);
        hub.upsert_many(docs).unwrap();
        let mut seen = Vec::new();
        for offset in (0..8).step_by(3) {
            let page = hub
                .search(&HubQuery {
                    offset,
                    limit: 3,
                    ..query("pump")
                })
                .unwrap();
            assert_eq!(page.count, 8);
            seen.extend(page.items.into_iter().map(|h| h.name));
        }
        assert_eq!(seen[0], "pump");
        let mut head = seen[1..3].to_vec();
        head.sort();
        assert_eq!(head, ["controller", "pumphouse"]);
        let mut rest = seen[3..].to_vec();
        rest.sort();
        assert_eq!(
            rest,
            ["readme0", "readme1", "readme2", "readme3", "readme4"]
        );
    }

    #[test]
    fn kind_and_instance_filters_are_exact() {
        let hub = Hub::in_memory().unwrap();
        hub.upsert_many(vec![
            doc(HubKind::Repo, "sensor-a", "a.example"),
            doc(HubKind::Unit, "sensor-b", "a.example"),
            doc(HubKind::Unit, "sensor-c", "A.example:8080"),
            doc(HubKind::Unit, "sensor-d", "b.example"),
        ])
        .unwrap();
        let run = |q: &str, kind, instance: Option<&str>| {
            let page = hub
                .search(&HubQuery {
                    kind,
                    instance: instance.map(str::to_string),
                    ..query(q)
                })
                .unwrap();
            let mut n: Vec<String> = page.items.iter().map(|h| h.name.clone()).collect();
            n.sort();
            assert_eq!(page.count, n.len());
            n
        };
        assert_eq!(run("sensor", Some(HubKind::Repo), None), ["sensor-a"]);
        assert_eq!(
            run("", Some(HubKind::Unit), Some("A.EXAMPLE")),
            ["sensor-b"]
        );
        assert_eq!(run("sensor", None, Some("a.example:8080")), ["sensor-c"]);
        assert_eq!(run("", None, Some("example")), Vec::<String>::new());
        assert_eq!(run("sensor", None, None).len(), 4);
    }

    #[test]
    fn blank_query_lists_everything_by_name_in_pages() {
        let hub = Hub::in_memory().unwrap();
        let docs: Vec<HubDoc> = (0..25)
            .rev()
            .map(|i| doc(HubKind::Unit, &format!("Unit{i:02}"), "a.example"))
            .collect();
        hub.upsert_many(docs).unwrap();
        let page = |offset, limit| {
            hub.search(&HubQuery {
                q: "   ".into(),
                offset,
                limit,
                ..HubQuery::default()
            })
            .unwrap()
        };
        let first = page(0, 10);
        assert_eq!(first.count, 25);
        assert_eq!(names(&first)[..3], ["Unit00", "Unit01", "Unit02"]);
        assert!(first.items.iter().all(|h| h.score == 0.0));
        let last = page(20, 10);
        assert_eq!(
            (last.count, names(&last)),
            (25, vec!["Unit20", "Unit21", "Unit22", "Unit23", "Unit24"])
        );
        for (offset, limit) in [(25, 10), (1000, 10), (usize::MAX, usize::MAX), (3, 0)] {
            let p = page(offset, limit);
            assert_eq!((p.count, p.items.len()), (25, 0), "{offset} {limit}");
        }
        assert_eq!(page(24, usize::MAX).items.len(), 1);
        // scored queries page the same way
        let scored = hub
            .search(&HubQuery {
                offset: 20,
                limit: 10,
                ..query("unit20 OR description")
            })
            .unwrap();
        assert_eq!((scored.count, scored.items.len()), (1, 0));
    }

    #[test]
    fn blank_pages_skip_replaced_documents_in_every_segment() {
        let hub = Hub::in_memory().unwrap();
        // one commit each: several segments, then replacements leave deleted copies behind
        for name in ["delta", "Alpha", "charlie", "bravo", "echo"] {
            hub.upsert(doc(HubKind::Unit, name, "a.example")).unwrap();
        }
        for name in ["charlie", "Alpha"] {
            hub.upsert(doc(HubKind::Unit, name, "a.example")).unwrap();
        }
        let expected = ["Alpha", "bravo", "charlie", "delta", "echo"];
        for (offset, limit) in [(0, 5), (0, 2), (2, 2), (4, 10)] {
            let end = (offset + limit).min(5);
            // without a filter names are walked in order, with one every match is sorted
            for kind in [None, Some(HubKind::Unit)] {
                let page = hub
                    .search(&HubQuery {
                        offset,
                        limit,
                        kind,
                        ..query("")
                    })
                    .unwrap();
                assert_eq!(page.count, 5);
                assert_eq!(
                    names(&page),
                    expected[offset..end],
                    "{offset} {limit} {kind:?}"
                );
            }
        }
    }

    #[test]
    fn blank_pages_agree_whether_names_are_walked_or_sorted() {
        let hub = Hub::in_memory().unwrap();
        // pairs of equal names (ties go by url digest), then a few Units after every Repo
        let repos = (0..30_000).map(|i| {
            let mut d = doc(HubKind::Repo, &format!("r{:05}", i / 2), "a.example");
            d.url = format!("https://a.example/repo/{i}");
            d
        });
        let units = (0..5).map(|i| doc(HubKind::Unit, &format!("u{i}"), "b.example"));
        let docs: Vec<HubDoc> = repos.chain(units).collect();
        let mut expected: Vec<&HubDoc> = docs.iter().collect();
        expected.sort_by_key(|d| name_key(&d.name, &d.url));
        hub.rebuild(docs.clone().into_iter(), |_| {}).unwrap();
        let urls = |offset, limit, kind| {
            let page = hub
                .search(&HubQuery {
                    offset,
                    limit,
                    kind,
                    ..query("")
                })
                .unwrap();
            page.items.into_iter().map(|h| h.url).collect::<Vec<_>>()
        };
        // this page ends at WALK_NAMES_UP_TO, the next one past it
        let mut got = urls(WALK_NAMES_UP_TO - 20, 20, None);
        got.extend(urls(WALK_NAMES_UP_TO, 20, None));
        let want: Vec<&str> = expected[WALK_NAMES_UP_TO - 20..WALK_NAMES_UP_TO + 20]
            .iter()
            .map(|d| d.url.as_str())
            .collect();
        assert_eq!(got, want);
        // the Units lie beyond WALK_BUDGET names
        let units = hub
            .search(&HubQuery {
                kind: Some(HubKind::Unit),
                limit: 3,
                ..query("")
            })
            .unwrap();
        assert_eq!((units.count, names(&units)), (5, vec!["u0", "u1", "u2"]));
        let repos = urls(0, 4, Some(HubKind::Repo));
        let want: Vec<&str> = expected[..4].iter().map(|d| d.url.as_str()).collect();
        assert_eq!(repos, want);
    }

    #[test]
    fn garbage_queries_are_answered() {
        let hub = Hub::in_memory().unwrap();
        hub.upsert(doc(HubKind::Repo, "and-name", "a.example"))
            .unwrap();
        let long_word = "x".repeat(10 * 1024);
        let long_words = "lorem ipsum (dolor) ".repeat(512);
        for q in [
            "\"(((",
            "AND",
            "name:",
            "name:and",
            "*",
            "-",
            "+-!^~:/\\[]{}",
            "ünïcødé 🦀 名前",
            "\0\u{1}",
            long_word.as_str(),
            long_words.as_str(),
        ] {
            hub.search(&query(q))
                .unwrap_or_else(|e| panic!("{q:.20?}: {e}"));
        }
        assert_eq!(hub.search(&query("\"(((")).unwrap().count, 0);
        assert_eq!(
            names(&hub.search(&query("name:and")).unwrap()),
            ["and-name"]
        );
    }

    #[test]
    fn remove_instance_drops_only_that_instance() {
        let hub = Hub::in_memory().unwrap();
        hub.upsert_many(vec![
            doc(HubKind::Repo, "one", "bad.example"),
            doc(HubKind::Unit, "two", "bad.example"),
            doc(HubKind::Unit, "three", "good.example"),
        ])
        .unwrap();
        assert_eq!(hub.remove_instance("BAD.example").unwrap(), 2);
        assert_eq!(hub.remove_instance("bad.example").unwrap(), 0);
        assert_eq!(names(&hub.search(&query("")).unwrap()), ["three"]);
    }

    #[test]
    fn rebuild_replaces_contents_and_reports_progress() {
        let hub = Hub::in_memory().unwrap();
        assert!(hub.needs_rebuild());
        hub.upsert(doc(HubKind::Repo, "old", "a.example")).unwrap();
        let mut seen = Vec::new();
        let docs = (0..20_500).map(|i| doc(HubKind::Unit, &format!("new{i}"), "b.example"));
        assert_eq!(hub.rebuild(docs, |n| seen.push(n)).unwrap(), 20_500);
        assert_eq!(seen, [10_000, 20_000, 20_500]);
        assert!(!hub.needs_rebuild());
        assert_eq!(hub.len().unwrap(), 20_500);
        let searcher = hub.inner.reader.searcher();
        assert_eq!(
            searcher.segment_readers().len(),
            1,
            "merged into one segment"
        );
        assert_eq!(hub.search(&query("old")).unwrap().count, 0);
        assert_eq!(
            names(&hub.search(&query("new20499")).unwrap()),
            ["new20499"]
        );
    }

    #[test]
    fn a_panicking_rebuild_leaves_the_old_contents() {
        let hub = Hub::in_memory().unwrap();
        hub.upsert(doc(HubKind::Repo, "old", "a.example")).unwrap();
        let h = hub.clone();
        let panicked = std::thread::spawn(move || {
            let docs = (0..3).map(|i| {
                assert!(i < 2, "source failed");
                doc(HubKind::Unit, &format!("new{i}"), "b.example")
            });
            h.rebuild(docs, |_| {})
        })
        .join();
        assert!(panicked.is_err());
        hub.upsert(doc(HubKind::Repo, "after", "a.example"))
            .unwrap();
        assert_eq!(names(&hub.search(&query("")).unwrap()), ["after", "old"]);
    }

    #[test]
    fn reopening_keeps_documents_and_another_format_is_recreated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let hub = Hub::open(dir.path()).unwrap();
            assert!(hub.needs_rebuild());
            assert_eq!(hub.len().unwrap(), 0);
        }
        {
            let hub = Hub::open(dir.path()).unwrap();
            assert!(
                !hub.needs_rebuild(),
                "an empty index of this version is kept"
            );
            hub.upsert(doc(HubKind::Repo, "kept", "a.example")).unwrap();
        }
        let hub = Hub::open(dir.path()).unwrap();
        assert!(!hub.needs_rebuild());
        assert_eq!(names(&hub.search(&query("kept")).unwrap()), ["kept"]);
        drop(hub);

        // an index with another schema, as an older binary would have left it
        let path = dir.path().join("index");
        std::fs::remove_dir_all(&path).unwrap();
        std::fs::create_dir_all(&path).unwrap();
        let mut b = Schema::builder();
        let title = b.add_text_field("title", STRING | STORED);
        let old = Index::create_in_dir(&path, b.build()).unwrap();
        let mut w: IndexWriter = old.writer_with_num_threads(1, 15_000_000).unwrap();
        let mut d = TantivyDocument::default();
        d.add_text(title, "x");
        w.add_document(d).unwrap();
        w.commit().unwrap();
        drop((w, old));
        let hub = Hub::open(dir.path()).unwrap();
        assert!(hub.needs_rebuild());
        assert_eq!(hub.len().unwrap(), 0);
        hub.upsert(doc(HubKind::Unit, "fresh", "a.example"))
            .unwrap();
        assert_eq!(hub.len().unwrap(), 1);
        drop(hub);

        // an unreadable one
        std::fs::write(path.join("meta.json"), b"{not json").unwrap();
        let hub = Hub::open(dir.path()).unwrap();
        assert!(hub.needs_rebuild());
        assert_eq!(hub.len().unwrap(), 0);
    }

    #[test]
    fn hub_is_shared_between_threads() {
        fn send_sync<T: Send + Sync + Clone>() {}
        send_sync::<Hub>();
    }

    #[test]
    fn kind_round_trips_as_text() {
        for kind in [HubKind::Repo, HubKind::Unit] {
            assert_eq!(kind.to_string().parse::<HubKind>().unwrap(), kind);
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
        assert!("repo".parse::<HubKind>().is_err());
    }
}
