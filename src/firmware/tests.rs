use super::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};

use flate2::{Decompress, FlushDecompress};

const MTIME: u64 = 1_700_000_000;

/// Appends an entry with a raw (unvalidated) name, as a hostile tar would.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &[u8],
    ty: EntryType,
    mode: u32,
    data: &[u8],
    link: Option<&[u8]>,
) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    if let Some(link) = link {
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(ty);
    h.set_mode(mode);
    h.set_size(data.len() as u64);
    h.set_mtime(MTIME);
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32, data: &[u8]) {
    raw_entry(b, name.as_bytes(), EntryType::Regular, mode, data, None);
}

fn dir(b: &mut tar::Builder<Vec<u8>>, name: &str) {
    raw_entry(b, name.as_bytes(), EntryType::Directory, 0o775, b"", None);
}

/// 20 KB whose only redundancy is at distance 1000 (> 512): a compressor
/// that used a bigger window than it declares would emit far references.
fn far_repeats() -> Vec<u8> {
    let mut seed: u32 = 0x1234_5678;
    let block: Vec<u8> = (0..1000)
        .map(|_| {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (seed >> 16) as u8
        })
        .collect();
    block.repeat(20)
}

fn long_name() -> String {
    format!("deep/{}/module.py", "x".repeat(120))
}

/// A hostile git-archive-like tar.
fn source_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    raw_entry(
        &mut b,
        b"pax_global_header",
        EntryType::XGlobalHeader,
        0o666,
        b"52 comment=0123456789abcdef0123456789abcdef01234567\n",
        None,
    );
    file(&mut b, ".pepeignore", 0o664, b"*.md\r\nbuild/\n!keep.md\n");
    dir(&mut b, "src/");
    file(&mut b, "src/main.py", 0o664, b"print('hi')\n");
    dir(&mut b, "src/lib/");
    file(&mut b, "src/lib/run.sh", 0o775, b"#!/bin/sh\n");
    file(&mut b, "src/lib/blob.bin", 0o664, &far_repeats());
    file(&mut b, "README.md", 0o664, b"# readme\n");
    file(&mut b, "keep.md", 0o664, b"kept\n");
    dir(&mut b, "docs/");
    file(&mut b, "docs/guide.md", 0o664, b"guide\n");
    dir(&mut b, "build/");
    file(&mut b, "build/out.bin", 0o664, b"binary\n");
    // Re-included by name, but its parent directory is excluded.
    file(&mut b, "build/keep.md", 0o664, b"no\n");
    file(&mut b, "env.json", 0o664, b"{\"OLD\":true}");
    file(&mut b, "./dotted/file.txt", 0o600, b"dotted\n");
    // Hostile entries.
    file(&mut b, "../escape", 0o644, b"escape");
    file(&mut b, "src/../../escape2", 0o644, b"escape");
    file(&mut b, "/etc/passwd", 0o644, b"root:x:0:0");
    file(&mut b, "a\\..\\..\\evil", 0o644, b"evil");
    raw_entry(
        &mut b,
        b"bad\xff\xfe.py",
        EntryType::Regular,
        0o644,
        b"x",
        None,
    );
    file(&mut b, "setuid", 0o4755, b"suid");
    raw_entry(
        &mut b,
        b"link",
        EntryType::Symlink,
        0o777,
        b"",
        Some(b"/etc/passwd"),
    );
    raw_entry(
        &mut b,
        b"src/up",
        EntryType::Symlink,
        0o777,
        b"",
        Some(b"../../"),
    );
    raw_entry(
        &mut b,
        b"hard",
        EntryType::Link,
        0o644,
        b"",
        Some(b"src/main.py"),
    );
    raw_entry(
        &mut b,
        b"hard2",
        EntryType::Link,
        0o644,
        b"",
        Some(b"/etc/shadow"),
    );
    raw_entry(&mut b, b"dev", EntryType::Char, 0o644, b"", None);
    raw_entry(&mut b, b"blk", EntryType::Block, 0o644, b"", None);
    raw_entry(&mut b, b"fifo", EntryType::Fifo, 0o644, b"", None);
    // Long name through the tar crate (GNU 'L' record).
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o664);
    h.set_mtime(MTIME);
    h.set_size(4);
    b.append_data(&mut h, long_name(), &b"long"[..]).unwrap();
    // Long name through a pax 'x' record, like git archive does.
    let pax_path = format!("paxdir/{}.txt", "p".repeat(110));
    let record = format!("path={pax_path}\n");
    let len = record.len() + 4; // "NNN " prefix, 3 digits
    let pax = format!("{len} {record}");
    assert_eq!(pax.len(), len);
    raw_entry(
        &mut b,
        b"pax_header",
        EntryType::XHeader,
        0o644,
        pax.as_bytes(),
        None,
    );
    file(&mut b, "paxdir/truncated", 0o664, b"pax");
    b.into_inner().unwrap()
}

const ENV: &[u8] = b"{\"PEPEUNIT_URL\":\"x\"}";
const SCHEMA: &[u8] = b"{\"input_base_topic\":[]}";

fn generated() -> Vec<(&'static str, &'static [u8])> {
    vec![("env.json", ENV), ("schema.json", SCHEMA)]
}

fn pax_path() -> String {
    format!("paxdir/{}.txt", "p".repeat(110))
}

/// Expected `(path, is_dir) -> content` without the `./` prefix.
fn expected() -> BTreeMap<String, Option<Vec<u8>>> {
    let mut m = BTreeMap::new();
    let f = |m: &mut BTreeMap<_, _>, p: &str, d: &[u8]| {
        m.insert(p.to_string(), Some(d.to_vec()));
    };
    f(&mut m, ".pepeignore", b"*.md\r\nbuild/\n!keep.md\n");
    m.insert("src/".into(), None);
    f(&mut m, "src/main.py", b"print('hi')\n");
    m.insert("src/lib/".into(), None);
    f(&mut m, "src/lib/run.sh", b"#!/bin/sh\n");
    f(&mut m, "src/lib/blob.bin", &far_repeats());
    f(&mut m, "keep.md", b"kept\n");
    m.insert("docs/".into(), None);
    f(&mut m, "dotted/file.txt", b"dotted\n");
    f(&mut m, "setuid", b"suid");
    f(&mut m, &long_name(), b"long");
    f(&mut m, &pax_path(), b"pax");
    f(&mut m, "env.json", ENV);
    f(&mut m, "schema.json", SCHEMA);
    m
}

struct TarEntry {
    name: String,
    ty: EntryType,
    mode: u32,
    mtime: u64,
    data: Vec<u8>,
}

fn read_tar(bytes: &[u8]) -> Vec<TarEntry> {
    let mut ar = tar::Archive::new(bytes);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            TarEntry {
                name: String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                ty: e.header().entry_type(),
                mode: e.header().mode().unwrap(),
                mtime: e.header().mtime().unwrap(),
                data,
            }
        })
        .collect()
}

/// Checks the decoded tar against the wire contract and the expected tree.
fn check_tar(bytes: &[u8]) {
    assert_eq!(bytes.len() % 512, 0);
    // Only ustar regular/dir headers and GNU long names at the raw level.
    let mut raw = tar::Archive::new(bytes);
    for e in raw.entries().unwrap().raw(true) {
        let e = e.unwrap();
        let ty = e.header().entry_type();
        assert!(
            matches!(
                ty,
                EntryType::Regular | EntryType::Directory | EntryType::GNULongName
            ),
            "unexpected raw entry type {ty:?}"
        );
    }

    let entries = read_tar(bytes);
    let mut got = BTreeMap::new();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for e in &entries {
        let rel = e
            .name
            .strip_prefix("./")
            .unwrap_or_else(|| panic!("{} lacks ./", e.name));
        match e.ty {
            EntryType::Directory => {
                assert!(rel.ends_with('/'), "{}", e.name);
                assert_eq!(e.mode, 0o755);
                assert_eq!(e.mtime, MTIME);
                assert!(
                    got.insert(rel.to_string(), None).is_none(),
                    "dup {}",
                    e.name
                );
            }
            EntryType::Regular => {
                let want_mode = match rel {
                    "src/lib/run.sh" | "setuid" => 0o755,
                    _ => 0o644,
                };
                assert_eq!(e.mode, want_mode, "{}", e.name);
                if rel == "env.json" || rel == "schema.json" {
                    assert!(e.mtime + 3600 > before, "generated mtime should be now");
                } else {
                    assert_eq!(e.mtime, MTIME, "{}", e.name);
                }
                assert!(
                    got.insert(rel.to_string(), Some(e.data.clone())).is_none(),
                    "dup {}",
                    e.name
                );
            }
            ty => panic!("unexpected entry type {ty:?} for {}", e.name),
        }
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        expected().keys().collect::<Vec<_>>()
    );
    assert_eq!(got, expected());
    // Generated files come last, at the root.
    let tail: Vec<&str> = entries[entries.len() - 2..]
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(tail, ["./env.json", "./schema.json"]);
}

#[test]
fn tar_format() {
    let out = build_archive(Some(&source_tar()), &generated(), ArchiveFormat::Tar).unwrap();
    check_tar(&out);
    // Short names are stored literally with the ./ prefix in the ustar name field.
    assert!(out.windows(13).any(|w| w == b"./src/main.py"));
    assert!(!out.windows(11).any(|w| w == b"/etc/passwd"));
    assert!(!out.windows(10).any(|w| w == b"root:x:0:0"));
}

#[test]
fn zip_format() {
    let out = build_archive(Some(&source_tar()), &generated(), ArchiveFormat::Zip).unwrap();
    let mut z = zip::ZipArchive::new(Cursor::new(out)).unwrap();
    let mut got = BTreeMap::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).unwrap();
        let name = f.name().to_string();
        assert!(!name.starts_with("./") && !name.starts_with('/'), "{name}");
        if f.is_dir() {
            assert!(name.ends_with('/'));
            assert_eq!(f.unix_mode().map(|m| m & 0o777), Some(0o755));
            assert!(got.insert(name, None).is_none());
        } else {
            assert_eq!(f.compression(), zip::CompressionMethod::Deflated, "{name}");
            let want_mode = match name.as_str() {
                "src/lib/run.sh" | "setuid" => 0o755,
                _ => 0o644,
            };
            assert_eq!(f.unix_mode().map(|m| m & 0o7777), Some(want_mode), "{name}");
            if name == "src/main.py" {
                let t = f.last_modified().unwrap();
                // 1_700_000_000 = 2023-11-14T22:13:20Z
                assert_eq!(
                    (
                        t.year(),
                        t.month(),
                        t.day(),
                        t.hour(),
                        t.minute(),
                        t.second()
                    ),
                    (2023, 11, 14, 22, 13, 20)
                );
            }
            let mut data = Vec::new();
            f.read_to_end(&mut data).unwrap();
            assert!(got.insert(name, Some(data)).is_none());
        }
    }
    assert_eq!(got, expected());
    let last = z.by_index(z.len() - 1).unwrap().name().to_string();
    assert_eq!(last, "schema.json");
}

/// Inflates with flate2 (zlib-rs) through a small output buffer.
///
/// Note: zlib-rs always keeps a 32 KiB inflate window whatever `window_bits`
/// says; `window_bits` only makes it reject a header that declares a larger
/// window. The distances actually used are checked by [`max_distance`].
fn inflate(mut d: Decompress, input: &[u8]) -> Result<Vec<u8>, flate2::DecompressError> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 64];
    loop {
        let (in_before, out_before) = (d.total_in(), d.total_out());
        let status = d.decompress(
            &input[in_before as usize..],
            &mut chunk,
            FlushDecompress::None,
        )?;
        let produced = (d.total_out() - out_before) as usize;
        out.extend_from_slice(&chunk[..produced]);
        if status == Status::StreamEnd {
            assert_eq!(d.total_in() as usize, input.len(), "trailing garbage");
            return Ok(out);
        }
        assert!(
            produced > 0 || d.total_in() > in_before,
            "inflate made no progress (truncated stream?)"
        );
    }
}

fn tgz(wbits: i32, level: i32) -> Vec<u8> {
    let format = ArchiveFormat::tgz(wbits, level).unwrap();
    build_archive(Some(&source_tar()), &generated(), format).unwrap()
}

/// Reference raw-deflate decoder (after zlib's `puff.c`) that also reports
/// the largest back-reference distance, i.e. the window the stream needs.
mod puff {
    struct Bits<'a> {
        data: &'a [u8],
        pos: usize,
        buf: u32,
        cnt: u32,
    }

    impl Bits<'_> {
        fn need(&mut self, n: u32) -> u32 {
            let mut val = self.buf;
            while self.cnt < n {
                let byte = *self.data.get(self.pos).expect("deflate stream truncated");
                self.pos += 1;
                val |= u32::from(byte) << self.cnt;
                self.cnt += 8;
            }
            self.buf = val >> n;
            self.cnt -= n;
            val & ((1u32 << n) - 1)
        }
    }

    struct Huffman {
        count: [u16; 16],
        symbol: Vec<u16>,
    }

    impl Huffman {
        fn new(lengths: &[u8]) -> Huffman {
            let mut count = [0u16; 16];
            for &l in lengths {
                count[l as usize] += 1;
            }
            let mut offs = [0u16; 16];
            for len in 1..15 {
                offs[len + 1] = offs[len] + count[len];
            }
            let mut symbol = vec![0u16; lengths.len()];
            for (sym, &l) in lengths.iter().enumerate() {
                if l != 0 {
                    symbol[offs[l as usize] as usize] = sym as u16;
                    offs[l as usize] += 1;
                }
            }
            Huffman { count, symbol }
        }

        fn decode(&self, s: &mut Bits) -> usize {
            let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
            for len in 1..16 {
                code |= s.need(1) as i32;
                let count = i32::from(self.count[len]);
                if code - count < first {
                    return self.symbol[(index + (code - first)) as usize] as usize;
                }
                index += count;
                first = (first + count) << 1;
                code <<= 1;
            }
            panic!("invalid huffman code");
        }
    }

    const LBASE: [u16; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
        131, 163, 195, 227, 258,
    ];
    const LEXT: [u8; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    const DBASE: [u16; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
        2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
    ];
    const DEXT: [u8; 30] = [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
        13, 13,
    ];

    /// Decodes a raw deflate stream: (output, max distance, bytes consumed).
    pub fn inflate_raw(data: &[u8]) -> (Vec<u8>, usize, usize) {
        let mut s = Bits {
            data,
            pos: 0,
            buf: 0,
            cnt: 0,
        };
        let mut out: Vec<u8> = Vec::new();
        let mut max_dist = 0;
        loop {
            let last = s.need(1);
            match s.need(2) {
                0 => {
                    s.buf = 0;
                    s.cnt = 0;
                    let len = usize::from(u16::from_le_bytes([data[s.pos], data[s.pos + 1]]));
                    let nlen = u16::from_le_bytes([data[s.pos + 2], data[s.pos + 3]]);
                    assert_eq!(len as u16, !nlen, "stored block length check");
                    out.extend_from_slice(&data[s.pos + 4..s.pos + 4 + len]);
                    s.pos += 4 + len;
                }
                kind @ (1 | 2) => {
                    let (lencode, distcode) = if kind == 1 {
                        let mut l = [8u8; 288];
                        l[144..256].fill(9);
                        l[256..280].fill(7);
                        (Huffman::new(&l), Huffman::new(&[5u8; 30]))
                    } else {
                        let nlen = s.need(5) as usize + 257;
                        let ndist = s.need(5) as usize + 1;
                        let ncode = s.need(4) as usize + 4;
                        const ORDER: [usize; 19] = [
                            16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                        ];
                        let mut cl = [0u8; 19];
                        for &i in &ORDER[..ncode] {
                            cl[i] = s.need(3) as u8;
                        }
                        let clcode = Huffman::new(&cl);
                        let mut lengths = Vec::with_capacity(nlen + ndist);
                        while lengths.len() < nlen + ndist {
                            match clcode.decode(&mut s) {
                                sym @ 0..=15 => lengths.push(sym as u8),
                                16 => {
                                    let prev = *lengths.last().expect("repeat with no length");
                                    let n = 3 + s.need(2) as usize;
                                    lengths.extend(std::iter::repeat_n(prev, n));
                                }
                                17 => {
                                    let n = 3 + s.need(3) as usize;
                                    lengths.extend(std::iter::repeat_n(0, n));
                                }
                                _ => {
                                    let n = 11 + s.need(7) as usize;
                                    lengths.extend(std::iter::repeat_n(0, n));
                                }
                            }
                        }
                        (
                            Huffman::new(&lengths[..nlen]),
                            Huffman::new(&lengths[nlen..]),
                        )
                    };
                    loop {
                        let sym = lencode.decode(&mut s);
                        if sym < 256 {
                            out.push(sym as u8);
                        } else if sym == 256 {
                            break;
                        } else {
                            let i = sym - 257;
                            let len = usize::from(LBASE[i]) + s.need(u32::from(LEXT[i])) as usize;
                            let d = distcode.decode(&mut s);
                            let dist = usize::from(DBASE[d]) + s.need(u32::from(DEXT[d])) as usize;
                            assert!(dist <= out.len(), "distance before stream start");
                            max_dist = max_dist.max(dist);
                            for _ in 0..len {
                                out.push(out[out.len() - dist]);
                            }
                        }
                    }
                }
                _ => panic!("invalid block type"),
            }
            if last == 1 {
                return (out, max_dist, s.pos);
            }
        }
    }
}

/// Decodes a zlib stream with the reference decoder: (output, max distance).
fn max_distance_zlib(stream: &[u8]) -> (Vec<u8>, usize) {
    let (out, dist, used) = puff::inflate_raw(&stream[2..]);
    assert_eq!(2 + used + 4, stream.len(), "zlib trailer");
    (out, dist)
}

#[test]
fn tgz_zlib_wbits9_uses_512_byte_window() {
    let tar = build_archive(Some(&source_tar()), &generated(), ArchiveFormat::Tar).unwrap();
    for level in -1..=9 {
        let out = tgz(9, level);
        // CMF: CM=8 (deflate), CINFO=1 (2^(1+8) = 512-byte window).
        assert_eq!(out[0], 0x18, "level {level}");
        assert_eq!((u16::from(out[0]) << 8 | u16::from(out[1])) % 31, 0);
        // flate2 accepts the header with a 9-bit window and checks adler32.
        let decoded = inflate(Decompress::new_with_window_bits(true, 9), &out)
            .unwrap_or_else(|e| panic!("level {level}: {e}"));
        check_tar(&decoded);
        // And no back reference reaches further than 512 bytes.
        let (reference, dist) = max_distance_zlib(&out);
        assert_eq!(reference, decoded);
        assert!(dist <= 512, "level {level}: distance {dist} > 512");
        // Content is the same tar as the uncompressed format (modulo the
        // generated files' mtime, which can tick between the two builds).
        assert_eq!(decoded.len(), tar.len());
    }
}

#[test]
fn window_checks_are_not_vacuous() {
    // The test data does make a 32K-window compressor reach past 512 bytes...
    let out = tgz(15, 6);
    let (_, dist) = max_distance_zlib(&out);
    assert!(dist > 512, "test data too easy: max distance {dist}");
    // ...and such a stream is refused by a 9-bit flate2 inflater (header).
    assert!(inflate(Decompress::new_with_window_bits(true, 9), &out).is_err());
}

#[test]
fn tgz_small_window_gzip_and_raw() {
    // gzip with a 512-byte window (wbits 25) and raw deflate wbits -9.
    let out = tgz(25, 9);
    let (decoded, dist, _) = puff::inflate_raw(&out[10..]);
    assert!(dist <= 512, "gzip wbits 25: distance {dist}");
    check_tar(&decoded);
    let out = tgz(-9, 6);
    let (decoded, dist, used) = puff::inflate_raw(&out);
    assert_eq!(used, out.len());
    assert!(dist <= 512, "raw wbits -9: distance {dist}");
    check_tar(&decoded);
}

#[test]
fn tgz_zlib_other_windows() {
    for (wbits, cmf) in [(10, 0x28), (12, 0x48), (15, 0x78)] {
        let out = tgz(wbits, 6);
        assert_eq!(out[0], cmf);
        let tar = inflate(Decompress::new_with_window_bits(true, wbits as u8), &out).unwrap();
        check_tar(&tar);
    }
    // Sanity check of the proof: a 32K-window stream is refused by a
    // 512-byte-window inflater.
    let out = tgz(15, 6);
    assert!(inflate(Decompress::new_with_window_bits(true, 9), &out).is_err());
}

#[test]
fn tgz_gzip() {
    for wbits in [31, 25] {
        let out = tgz(wbits, 9);
        assert_eq!(&out[..3], &[0x1f, 0x8b, 0x08]);
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut tar)
            .unwrap();
        check_tar(&tar);
    }
    let out = tgz(25, 6);
    let tar = inflate(Decompress::new_gzip(9), &out).unwrap();
    check_tar(&tar);
}

#[test]
fn tgz_raw_deflate() {
    let out = tgz(-15, 1);
    let tar = inflate(Decompress::new(false), &out).unwrap();
    check_tar(&tar);
    let mut tar = Vec::new();
    flate2::read::DeflateDecoder::new(&out[..])
        .read_to_end(&mut tar)
        .unwrap();
    check_tar(&tar);

    let out = tgz(-9, 0);
    let tar = inflate(Decompress::new_with_window_bits(false, 9), &out).unwrap();
    check_tar(&tar);
}

/// Runs `python3 -c script` with `input` on stdin. `None` if python3 is absent.
fn python(script: &str, input: Vec<u8>) -> Option<std::process::Output> {
    let mut child = match Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("python3 unavailable ({e}); skipping the Python zlib check");
            return None;
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let res = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    Some(res)
}

/// The official client's call, verbatim.
const PY_WHOLE: &str = "import zlib,sys; d=zlib.decompressobj(wbits=9); \
    sys.stdout.buffer.write(d.decompress(sys.stdin.buffer.read())+d.flush())";

/// Same, but 64 output bytes per call: C zlib then has to serve every back
/// reference from its 512-byte window and fails with "invalid distance too
/// far back" on a stream that needs more (like a device with a real 512-byte
/// window would).
const PY_CHUNKED: &str = "import zlib,sys
d=zlib.decompressobj(wbits=9); buf=sys.stdin.buffer.read(); out=[]
while not d.eof:
    o=d.decompress(buf,64); buf=d.unconsumed_tail
    if not o and not buf: break
    out.append(o)
out.append(d.flush())
assert d.eof and not d.unused_data, 'incomplete stream'
sys.stdout.buffer.write(b''.join(out))";

#[test]
fn tgz_wbits9_python_zlib() {
    for level in [-1, 0, 1, 6, 9] {
        for script in [PY_WHOLE, PY_CHUNKED] {
            let Some(res) = python(script, tgz(9, level)) else {
                return;
            };
            assert!(
                res.status.success(),
                "python zlib failed at level {level}: {}",
                String::from_utf8_lossy(&res.stderr)
            );
            check_tar(&res.stdout);
        }
    }
    // Control: a 32K-window stream relabelled as 512-byte-window passes the
    // whole-buffer call (zlib only needs its window across calls) but not the
    // chunked one.
    let tar = build_archive(Some(&source_tar()), &generated(), ArchiveFormat::Tar).unwrap();
    let mut lying = compress(&tar, 15, 6).unwrap();
    lying[0] = 0x18;
    lying[1] = (31 - (0x18u16 << 8) % 31) as u8;
    let Some(res) = python(PY_CHUNKED, lying) else {
        return;
    };
    assert!(
        !res.status.success(),
        "chunked decode must reject far references"
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains("too far back"));
}

#[test]
fn tgz_validation() {
    for wbits in [0, 8, 16, 17, 24, 32, 40, -8, -16, -1, i32::MIN, i32::MAX] {
        assert!(
            matches!(ArchiveFormat::tgz(wbits, 6), Err(ArchiveError::InvalidWbits(w)) if w == wbits),
            "wbits {wbits}"
        );
        // Unvalidated enum values are rejected by build_archive too.
        let format = ArchiveFormat::Tgz { wbits, level: 6 };
        assert!(matches!(
            build_archive(None, &generated(), format),
            Err(ArchiveError::InvalidWbits(_))
        ));
    }
    for level in [-2, 10, 100, i32::MIN] {
        assert!(matches!(
            ArchiveFormat::tgz(9, level),
            Err(ArchiveError::InvalidLevel(l)) if l == level
        ));
        let format = ArchiveFormat::Tgz { wbits: 9, level };
        assert!(matches!(
            build_archive(None, &generated(), format),
            Err(ArchiveError::InvalidLevel(_))
        ));
    }
    for wbits in (9..=15).chain(25..=31).chain(-15..=-9) {
        for level in -1..=9 {
            assert_eq!(
                ArchiveFormat::tgz(wbits, level).unwrap(),
                ArchiveFormat::Tgz { wbits, level }
            );
        }
    }
}

#[test]
fn content_types_and_extensions() {
    let tgz = ArchiveFormat::tgz(9, -1).unwrap();
    assert_eq!(ArchiveFormat::Zip.content_type(), "application/zip");
    assert_eq!(ArchiveFormat::Tar.content_type(), "application/x-tar");
    assert_eq!(tgz.content_type(), "application/x-tar");
    assert_eq!(ArchiveFormat::Zip.file_extension(), "zip");
    assert_eq!(ArchiveFormat::Tar.file_extension(), "tar");
    assert_eq!(tgz.file_extension(), "tgz");
}

#[test]
fn generated_only_archive() {
    let out = build_archive(None, &generated(), ArchiveFormat::Tar).unwrap();
    let names: Vec<String> = read_tar(&out).into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["./env.json", "./schema.json"]);

    let out = build_archive(None, &generated(), ArchiveFormat::Zip).unwrap();
    let z = zip::ZipArchive::new(Cursor::new(out)).unwrap();
    let names: Vec<&str> = z.file_names().collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"env.json") && names.contains(&"schema.json"));

    let out = build_archive(None, &[], ArchiveFormat::Tar).unwrap();
    assert_eq!(out, vec![0u8; 1024]);
}

#[test]
fn pepeignore_semantics() {
    let mut b = tar::Builder::new(Vec::new());
    file(
        &mut b,
        ".pepeignore",
        0o644,
        b"# comment\n.*\n/secret\nlogs\n*.log\n!important.log\n",
    );
    file(&mut b, ".hidden", 0o644, b"h");
    file(&mut b, "secret", 0o644, b"s");
    dir(&mut b, "sub/");
    file(&mut b, "sub/secret", 0o644, b"anchored pattern: kept");
    file(&mut b, "sub/a.log", 0o644, b"a");
    file(&mut b, "sub/important.log", 0o644, b"kept");
    dir(&mut b, "sub/logs/");
    file(&mut b, "sub/logs/x.txt", 0o644, b"x");
    dir(&mut b, "sub/.git/");
    file(&mut b, "sub/.git/config", 0o644, b"c");
    let src = b.into_inner().unwrap();
    let out = build_archive(Some(&src), &[], ArchiveFormat::Tar).unwrap();
    let names: Vec<String> = read_tar(&out).into_iter().map(|e| e.name).collect();
    assert_eq!(
        names,
        [
            "./.pepeignore",
            "./sub/",
            "./sub/secret",
            "./sub/important.log"
        ]
    );
}

#[test]
fn pepeignore_only_at_root_and_only_regular() {
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "sub/.pepeignore", 0o644, b"*.py\n");
    file(&mut b, "a.py", 0o644, b"a");
    raw_entry(
        &mut b,
        b".pepeignore",
        EntryType::Symlink,
        0o777,
        b"",
        Some(b"/etc/ignore"),
    );
    let src = b.into_inner().unwrap();
    let out = build_archive(Some(&src), &[], ArchiveFormat::Tar).unwrap();
    let names: Vec<String> = read_tar(&out).into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["./sub/.pepeignore", "./a.py"]);
}

#[test]
fn duplicates_and_conflicts() {
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "a.txt", 0o644, b"first");
    file(&mut b, "./a.txt", 0o644, b"second");
    dir(&mut b, "schema.json/");
    file(&mut b, "schema.json/inner", 0o644, b"shadowed");
    file(&mut b, "f", 0o644, b"file");
    file(&mut b, "f/child", 0o644, b"under a file");
    let src = b.into_inner().unwrap();
    let out = build_archive(Some(&src), &generated(), ArchiveFormat::Tar).unwrap();
    let entries = read_tar(&out);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["./a.txt", "./f", "./env.json", "./schema.json"]);
    assert_eq!(entries[0].data, b"second");
    assert_eq!(entries[3].data, SCHEMA);
}

#[test]
fn generated_names_validated_and_deduplicated() {
    for bad in ["../env.json", "/env.json", "", "./", "a\\b", "dir/"] {
        assert!(
            matches!(
                build_archive(None, &[(bad, b"x")], ArchiveFormat::Tar),
                Err(ArchiveError::Source(_))
            ),
            "{bad:?}"
        );
    }
    let out = build_archive(
        None,
        &[("env.json", b"1"), ("./env.json", b"2")],
        ArchiveFormat::Tar,
    )
    .unwrap();
    let entries = read_tar(&out);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].data, b"2");
}

#[test]
fn malformed_source_is_an_error() {
    let mut garbage = vec![b'A'; 1024];
    garbage.extend_from_slice(&[0; 1024]);
    assert!(matches!(
        build_archive(Some(&garbage), &generated(), ArchiveFormat::Tar),
        Err(ArchiveError::Source(_))
    ));

    // Header claims more data than present.
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "big", 0o644, &[7u8; 4096]);
    let mut src = b.into_inner().unwrap();
    src.truncate(512 + 1000);
    assert!(matches!(
        build_archive(Some(&src), &[], ArchiveFormat::Zip),
        Err(ArchiveError::Source(_))
    ));

    // Empty input is an empty archive, not an error.
    let out = build_archive(Some(&[][..]), &[], ArchiveFormat::Tar).unwrap();
    assert!(read_tar(&out).is_empty());
}

#[test]
fn sanitize_rules() {
    assert_eq!(sanitize_path(b"./a//b/./c"), Some(("a/b/c".into(), false)));
    assert_eq!(sanitize_path(b"dir/"), Some(("dir".into(), true)));
    for bad in [
        &b"../x"[..],
        b"a/../b",
        b"/abs",
        b"a\\b",
        b"a\0b",
        b"\xff",
        b".",
        b"./",
        b"",
        b"..",
    ] {
        assert_eq!(sanitize_path(bad), None, "{bad:?}");
    }
}

#[test]
fn dos_datetime_conversion() {
    let t = dos_datetime(0);
    assert_eq!((t.year(), t.month(), t.day()), (1980, 1, 1));
    let t = dos_datetime(951_782_400); // 2000-02-29T00:00:00Z
    assert_eq!((t.year(), t.month(), t.day(), t.hour()), (2000, 2, 29, 0));
    let t = dos_datetime(u64::MAX);
    assert_eq!((t.year(), t.month(), t.day()), (2107, 12, 31));
}
