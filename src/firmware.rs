//! Firmware archive builder.
//!
//! Turns the output of `git archive --format=tar <commit>` (plus a few
//! generated files such as `env.json` / `schema.json`) into the archive a
//! device downloads: a plain tar, a zip, or a "tgz" whose compression wrapper
//! (zlib / gzip / raw deflate) and window size are chosen by `wbits`.
//!
//! Wire contract (existing devices depend on it):
//! * tar: entries are named `./<path>` (directories `./<dir>/`), only regular
//!   files (mode 0644 or 0755, mtime from the source) and directories (0755);
//!   names longer than 100 bytes use a GNU long-name (`L`) record, nothing else
//!   is ever emitted (no pax headers, links, devices, fifos).
//! * zip: entries are named `<path>` (directories `<dir>/`), deflate.
//! * tgz: the tar above compressed as a single stream, see [`ArchiveFormat::Tgz`].
//!
//! The source tar is untrusted: unsafe paths (absolute, `..`, backslashes,
//! NUL, non-UTF-8) and every non-regular, non-directory entry are dropped.
//! `.pepeignore` at the repository root (gitignore syntax) removes paths.

use std::collections::{HashMap, HashSet};
use std::io::{self, Cursor, Read, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::{Compress, Compression, FlushCompress, Status};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use tar::EntryType;

#[cfg(test)]
mod tests;

/// Name of the ignore file at the repository root.
pub const PEPEIGNORE: &str = ".pepeignore";

/// Output format of [`build_archive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// Zip archive, deflate, entries named `<path>`.
    Zip,
    /// Uncompressed tar, entries named `./<path>`.
    Tar,
    /// The tar compressed as one stream. `wbits` follows Python's `zlib`
    /// convention: `9..=15` zlib stream with a `2^wbits` window, `25..=31`
    /// gzip with a `2^(wbits-16)` window, `-15..=-9` raw deflate with a
    /// `2^-wbits` window. `level` is `-1..=9` (`-1` = default, 6).
    Tgz { wbits: i32, level: i32 },
}

/// Errors of [`build_archive`] and [`ArchiveFormat::tgz`].
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("invalid wbits {0}: expected 9..=15 (zlib), 25..=31 (gzip) or -15..=-9 (raw deflate)")]
    InvalidWbits(i32),
    #[error("invalid compression level {0}: expected -1..=9")]
    InvalidLevel(i32),
    /// The source tar is malformed (or a generated file name is unusable).
    #[error("malformed source archive: {0}")]
    Source(String),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("zip error: {0}")]
    Zip(String),
}

impl ArchiveFormat {
    /// Validated constructor for [`ArchiveFormat::Tgz`].
    pub fn tgz(wbits: i32, level: i32) -> Result<Self, ArchiveError> {
        validate_tgz(wbits, level)?;
        Ok(ArchiveFormat::Tgz { wbits, level })
    }

    /// HTTP `Content-Type` of the archive.
    pub fn content_type(&self) -> &'static str {
        match self {
            ArchiveFormat::Zip => "application/zip",
            ArchiveFormat::Tar | ArchiveFormat::Tgz { .. } => "application/x-tar",
        }
    }

    /// File extension, without the leading dot: `zip`, `tar` or `tgz`.
    pub fn file_extension(&self) -> &'static str {
        match self {
            ArchiveFormat::Zip => "zip",
            ArchiveFormat::Tar => "tar",
            ArchiveFormat::Tgz { .. } => "tgz",
        }
    }
}

fn validate_tgz(wbits: i32, level: i32) -> Result<(), ArchiveError> {
    if !matches!(wbits, 9..=15 | 25..=31 | -15..=-9) {
        return Err(ArchiveError::InvalidWbits(wbits));
    }
    if !(-1..=9).contains(&level) {
        return Err(ArchiveError::InvalidLevel(level));
    }
    Ok(())
}

/// Builds the firmware archive.
///
/// * `source_tar`: output of `git archive --format=tar <commit>`, or `None`
///   when the archive holds only the generated files.
/// * `generated`: `(relative path, content)` pairs added with mode 0644 and
///   the current time; they replace same-named source entries.
pub fn build_archive(
    source_tar: Option<&[u8]>,
    generated: &[(&str, &[u8])],
    format: ArchiveFormat,
) -> Result<Vec<u8>, ArchiveError> {
    if let ArchiveFormat::Tgz { wbits, level } = format {
        validate_tgz(wbits, level)?;
    }
    let items = collect_items(source_tar, generated, now_secs())?;
    match format {
        ArchiveFormat::Tar => Ok(write_tar(&items)),
        ArchiveFormat::Zip => write_zip(&items),
        ArchiveFormat::Tgz { wbits, level } => compress(&write_tar(&items), wbits, level),
    }
}

// ---------------------------------------------------------------------------
// Model

#[derive(Debug)]
enum Kind {
    Dir,
    File(Vec<u8>),
}

#[derive(Debug)]
struct Item {
    /// Normalised relative path: no leading `./`, no trailing `/`, no empty,
    /// `.` or `..` components.
    path: String,
    kind: Kind,
    mode: u32,
    mtime: u64,
}

impl Item {
    fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
}

const FILE_MODE: u32 = 0o644;
const EXEC_MODE: u32 = 0o755;
const DIR_MODE: u32 = 0o755;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Normalises an archive path. Returns `None` for anything unsafe or empty.
/// The boolean tells whether the raw path ended with `/`.
fn sanitize_path(raw: &[u8]) -> Option<(String, bool)> {
    let s = std::str::from_utf8(raw).ok()?;
    if s.contains('\0') || s.contains('\\') || s.starts_with('/') {
        return None;
    }
    let mut parts = Vec::new();
    for comp in s.split('/') {
        match comp {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some((parts.join("/"), s.ends_with('/')))
}

/// Proper ancestors of a normalised path, shortest first: `a/b/c` -> `a`, `a/b`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

fn src_err(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Source(e.to_string())
}

/// Reads the source tar into safe items, last entry winning on duplicates.
fn read_source(tar_bytes: &[u8]) -> Result<Vec<Item>, ArchiveError> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut items: Vec<Item> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for entry in archive.entries().map_err(src_err)? {
        let mut entry = entry.map_err(src_err)?;
        let entry_type = entry.header().entry_type();
        let is_file = match entry_type {
            EntryType::Regular => true,
            EntryType::Directory => false,
            // pax_global_header (git's commit id), links, devices, fifos,
            // sparse files, unknown extension records: never emitted.
            _ => continue,
        };
        let Some((path, trailing_slash)) = sanitize_path(&entry.path_bytes()) else {
            continue;
        };
        let header_mode = entry.header().mode().unwrap_or(FILE_MODE);
        let mtime = entry.header().mtime().unwrap_or(0);
        let item = if is_file && !trailing_slash {
            let expected = entry.size();
            let mut data = Vec::with_capacity(expected.min(64 << 20) as usize);
            entry.read_to_end(&mut data).map_err(src_err)?;
            if data.len() as u64 != expected {
                return Err(ArchiveError::Source(format!(
                    "entry {path:?} is truncated ({} of {expected} bytes)",
                    data.len()
                )));
            }
            let mode = if header_mode & 0o111 != 0 {
                EXEC_MODE
            } else {
                FILE_MODE
            };
            Item {
                path,
                kind: Kind::File(data),
                mode,
                mtime,
            }
        } else {
            // Directory, or an old-style regular entry whose name ends in '/'.
            Item {
                path,
                kind: Kind::Dir,
                mode: DIR_MODE,
                mtime,
            }
        };
        match index.get(&item.path) {
            Some(&i) => items[i] = item,
            None => {
                index.insert(item.path.clone(), items.len());
                items.push(item);
            }
        }
    }
    Ok(items)
}

fn build_ignore(content: &[u8]) -> Option<Gitignore> {
    let text = String::from_utf8_lossy(content);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut builder = GitignoreBuilder::new(".");
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        // An invalid glob only disables its own line, as in git.
        let _ = builder.add_line(None, line);
    }
    builder.build().ok()
}

/// Git semantics: a path is excluded if it, or any of its parent
/// directories, is ignored (a file cannot be re-included when a parent
/// directory is excluded).
fn is_ignored(gi: &Gitignore, item: &Item) -> bool {
    if item.path == PEPEIGNORE {
        return false;
    }
    ancestors(&item.path).any(|dir| gi.matched(dir, true).is_ignore())
        || gi.matched(&item.path, item.is_dir()).is_ignore()
}

/// Source entries (filtered) followed by the generated files.
fn collect_items(
    source_tar: Option<&[u8]>,
    generated: &[(&str, &[u8])],
    now: u64,
) -> Result<Vec<Item>, ArchiveError> {
    let mut gen_items: Vec<Item> = Vec::with_capacity(generated.len());
    for (name, data) in generated {
        let path = match sanitize_path(name.as_bytes()) {
            Some((p, false)) => p,
            _ => {
                return Err(ArchiveError::Source(format!(
                    "invalid generated file name {name:?}"
                )))
            }
        };
        gen_items.retain(|g| g.path != path);
        gen_items.push(Item {
            path,
            kind: Kind::File(data.to_vec()),
            mode: FILE_MODE,
            mtime: now,
        });
    }

    let mut items = match source_tar {
        Some(bytes) => read_source(bytes)?,
        None => Vec::new(),
    };

    let gitignore = items
        .iter()
        .find_map(|it| match &it.kind {
            Kind::File(data) if it.path == PEPEIGNORE => Some(data.as_slice()),
            _ => None,
        })
        .and_then(build_ignore);
    if let Some(gi) = &gitignore {
        items.retain(|it| !is_ignored(gi, it));
    }

    let gen_names: HashSet<&str> = gen_items.iter().map(|g| g.path.as_str()).collect();
    items.retain(|it| !gen_names.contains(it.path.as_str()));
    drop(gen_names);
    items.extend(gen_items);

    // An entry below a regular file cannot be extracted: drop it.
    let files: HashSet<String> = items
        .iter()
        .filter(|it| !it.is_dir())
        .map(|it| it.path.clone())
        .collect();
    items.retain(|it| !ancestors(&it.path).any(|a| files.contains(a)));
    Ok(items)
}

// ---------------------------------------------------------------------------
// tar

const BLOCK: usize = 512;
const NAME_LEN: usize = 100;

fn pad_block(out: &mut Vec<u8>) {
    let rem = out.len() % BLOCK;
    if rem != 0 {
        out.resize(out.len() + BLOCK - rem, 0);
    }
}

fn tar_header(name: &[u8], entry_type: EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.as_old_mut().name[..name.len()].copy_from_slice(name);
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(size);
    header.set_mtime(mtime);
    // Both are short ASCII strings: cannot fail.
    let _ = header.set_username("root");
    let _ = header.set_groupname("root");
    header.set_cksum();
    header
}

fn push_tar_entry(
    out: &mut Vec<u8>,
    name: &str,
    entry_type: EntryType,
    mode: u32,
    mtime: u64,
    data: &[u8],
) {
    let name = name.as_bytes();
    let short = if name.len() <= NAME_LEN {
        name
    } else {
        // GNU long name record: "././@LongLink", type 'L', NUL-terminated name.
        let long = tar_header(
            b"././@LongLink",
            EntryType::GNULongName,
            0o644,
            name.len() as u64 + 1,
            0,
        );
        out.extend_from_slice(long.as_bytes());
        out.extend_from_slice(name);
        out.push(0);
        pad_block(out);
        // Truncated name, on a char boundary, for readers without 'L' support.
        let mut end = NAME_LEN;
        while std::str::from_utf8(&name[..end]).is_err() {
            end -= 1;
        }
        &name[..end]
    };
    let header = tar_header(short, entry_type, mode, data.len() as u64, mtime);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    pad_block(out);
}

fn write_tar(items: &[Item]) -> Vec<u8> {
    let total: usize = items
        .iter()
        .map(|it| match &it.kind {
            Kind::File(d) => d.len() + 2 * BLOCK,
            Kind::Dir => 2 * BLOCK,
        })
        .sum();
    let mut out = Vec::with_capacity(total + 2 * BLOCK);
    for it in items {
        match &it.kind {
            Kind::Dir => {
                let name = format!("./{}/", it.path);
                push_tar_entry(
                    &mut out,
                    &name,
                    EntryType::Directory,
                    it.mode,
                    it.mtime,
                    &[],
                );
            }
            Kind::File(data) => {
                let name = format!("./{}", it.path);
                push_tar_entry(&mut out, &name, EntryType::Regular, it.mode, it.mtime, data);
            }
        }
    }
    out.resize(out.len() + 2 * BLOCK, 0);
    out
}

// ---------------------------------------------------------------------------
// zip

/// Unix seconds -> zip (DOS) date/time, UTC, clamped to 1980..=2107.
fn dos_datetime(secs: u64) -> zip::DateTime {
    const MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
    const MAX: u64 = 4_354_819_198; // 2107-12-31T23:59:58Z
    let secs = secs.clamp(MIN, MAX);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    zip::DateTime::from_date_and_time(
        year as u16,
        month as u8,
        day as u8,
        (rem / 3600) as u8,
        (rem / 60 % 60) as u8,
        (rem % 60) as u8,
    )
    .unwrap_or_default()
}

fn write_zip(items: &[Item]) -> Result<Vec<u8>, ArchiveError> {
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;

    let zerr = |e: zip::result::ZipError| ArchiveError::Zip(e.to_string());
    let mut zw = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for it in items {
        let options = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .unix_permissions(it.mode)
            .last_modified_time(dos_datetime(it.mtime));
        match &it.kind {
            Kind::Dir => zw
                .add_directory(format!("{}/", it.path), options)
                .map_err(zerr)?,
            Kind::File(data) => {
                zw.start_file(it.path.as_str(), options).map_err(zerr)?;
                zw.write_all(data)?;
            }
        }
    }
    Ok(zw.finish().map_err(zerr)?.into_inner())
}

// ---------------------------------------------------------------------------
// tgz

fn compress(data: &[u8], wbits: i32, level: i32) -> Result<Vec<u8>, ArchiveError> {
    validate_tgz(wbits, level)?;
    let compression = if level < 0 {
        Compression::default()
    } else {
        Compression::new(level as u32)
    };
    let mut c = match wbits {
        9..=15 => Compress::new_with_window_bits(compression, true, wbits as u8),
        25..=31 => Compress::new_gzip(compression, (wbits - 16) as u8),
        -15..=-9 => Compress::new_with_window_bits(compression, false, (-wbits) as u8),
        _ => return Err(ArchiveError::InvalidWbits(wbits)),
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve((out.capacity() / 2).max(64 * 1024));
        }
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, FlushCompress::Finish)
            .map_err(io::Error::other)?;
        if status == Status::StreamEnd {
            return Ok(out);
        }
    }
}
