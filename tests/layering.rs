//! Architecture invariant (ARCHITECTURE.md): imports go one way. Front doors (`http`,
//! `graphql`, `telegram`, `mqtt` with its EMQX worker) call the service layer; the service layer calls the
//! stores (`store`, `telemetry`, `git`, `platform`, `firmware`) and the vocabulary (`domain`);
//! nothing imports upward. This test reads the sources and fails on a `crate::` path (in a
//! `use` or inline, `super::` paths resolved) that crosses a layer the wrong way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What everything below the service layer must never name: the service layer, the front
/// doors and the wiring.
const ABOVE_STORES: &[&str] = &[
    "service", "http", "graphql", "telegram", "mqtt", "server", "poller", "load",
];

/// Modules each module (first level under `src/`) must never name.
const FORBIDDEN: &[(&str, &[&str])] = &[
    // the vocabulary depends on nothing of ours
    (
        "domain",
        &[
            "config",
            "error",
            "token",
            "crypto",
            "net",
            "store",
            "telemetry",
            "git",
            "grafana",
            "platform",
            "firmware",
            "observe",
            "service",
            "http",
            "graphql",
            "telegram",
            "mqtt",
            "server",
            "poller",
            "load",
        ],
    ),
    // stores answer with their own StoreError, not the service layer's AppError
    (
        "store",
        &[
            "error",
            "telemetry",
            "observe",
            "service",
            "http",
            "graphql",
            "telegram",
            "mqtt",
            "server",
            "poller",
            "load",
        ],
    ),
    (
        "telemetry",
        &[
            "error", "observe", "service", "http", "graphql", "telegram", "mqtt", "server",
            "poller", "load",
        ],
    ),
    // self-observation knows counters, not the parts it observes
    (
        "observe",
        &[
            "store",
            "telemetry",
            "service",
            "http",
            "graphql",
            "telegram",
            "mqtt",
            "server",
            "poller",
            "load",
        ],
    ),
    ("git", ABOVE_STORES),
    ("grafana", ABOVE_STORES),
    ("platform", ABOVE_STORES),
    ("firmware", ABOVE_STORES),
    ("net", ABOVE_STORES),
    ("crypto", ABOVE_STORES),
    ("token", ABOVE_STORES),
    ("config", ABOVE_STORES),
    ("error", ABOVE_STORES),
    // the service layer owns the ports the front doors implement; it never names them
    (
        "service",
        &[
            "http", "graphql", "telegram", "mqtt", "server", "poller", "load",
        ],
    ),
    // front doors go through the service layer, never around it, and not through each other
    (
        "http",
        &[
            "store",
            "telemetry",
            "graphql",
            "telegram",
            "mqtt",
            "server",
            "poller",
            "load",
        ],
    ),
    (
        "telegram",
        &[
            "store",
            "telemetry",
            "http",
            "graphql",
            "mqtt",
            "server",
            "poller",
            "load",
        ],
    ),
    (
        "mqtt",
        &[
            "store",
            "telemetry",
            "http",
            "graphql",
            "telegram",
            "server",
            "poller",
            "load",
        ],
    ),
    (
        "graphql",
        &[
            "store",
            "telemetry",
            "http",
            "telegram",
            "mqtt",
            "server",
            "poller",
            "load",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source without comments and string/char literals (so doc links and messages do not
/// count), keeping line breaks for line numbers.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == b'\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if c == b'r' && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) && {
            // raw string: r"..." or r#"..."#
            let mut j = i + 1;
            while b.get(j) == Some(&b'#') {
                j += 1;
            }
            let word = |k: usize| b[k].is_ascii_alphanumeric() || b[k] == b'_';
            // not the end of an identifier, but `br"..."` is a raw byte string
            let starts = i == 0 || !word(i - 1) || (b[i - 1] == b'b' && (i < 2 || !word(i - 2)));
            b.get(j) == Some(&b'"') && starts
        } {
            let mut j = i + 1;
            let mut hashes = 0;
            while b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            j += 1;
            let closing: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&closing) {
                if b[j] == b'\n' {
                    out.push('\n');
                }
                j += 1;
            }
            i = j + closing.len();
            out.push_str("\"\"");
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                } else if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' && b.get(i + 2) == Some(&b'\'') {
            out.push_str("' '");
            i += 3;
        } else if c == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // '\n', '\'', '\u{..}'
            let mut j = i + 2;
            while j < b.len() && b[j] != b'\'' {
                j += 1;
            }
            if b.get(i + 2) == Some(&b'\'') {
                j = i + 3;
                while j < b.len() && b[j] != b'\'' {
                    j += 1;
                }
            }
            out.push_str("' '");
            i = j + 1;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first-level modules a path group names: `{a::X, b, c::{d, e}}` -> a, b, c.
fn group_heads(s: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    start = true;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => start = true,
            c if c.is_whitespace() => {}
            _ if depth == 1 && start => {
                let id = ident_at(&s[i..]);
                if !id.is_empty() {
                    heads.push(id.to_string());
                }
                start = false;
            }
            _ => {}
        }
    }
    heads
}

/// Top-level modules a file names, with line numbers: `crate::x`, and `super::x` resolved.
fn named_modules(rel: &Path, code: &str) -> Vec<(usize, String)> {
    // the module path of this file below src/
    let mut dirs: Vec<String> = rel
        .parent()
        .map(|p| {
            p.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let stem = rel.file_stem().unwrap().to_string_lossy().into_owned();
    if stem != "mod" && stem != "lib" && stem != "main" {
        dirs.push(stem);
    }
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let mut rest = line;
        loop {
            let (is_crate, at) = match (rest.find("crate::"), rest.find("super::")) {
                (Some(c), Some(s)) if c < s => (true, c),
                (Some(c), None) => (true, c),
                (_, Some(s)) => (false, s),
                (None, None) => break,
            };
            // a whole word only (not `pepeunit_crate::`)
            let before = rest[..at].chars().last();
            let standalone = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            let mut after = &rest[at + 7..];
            if standalone {
                let mut module_path: Vec<String> = if is_crate {
                    Vec::new()
                } else {
                    let mut p = dirs.clone();
                    p.pop();
                    while let Some(more) = after.strip_prefix("super::") {
                        p.pop();
                        after = more;
                    }
                    p
                };
                if module_path.is_empty() {
                    if after.starts_with('{') {
                        for head in group_heads(after) {
                            found.push((n + 1, head));
                        }
                    } else {
                        let id = ident_at(after);
                        if !id.is_empty() {
                            found.push((n + 1, id.to_string()));
                        }
                    }
                } else {
                    found.push((n + 1, module_path.swap_remove(0)));
                }
            }
            rest = after;
        }
    }
    found
}

#[test]
fn imports_go_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(files.len() > 50, "the sources were not found under {src:?}");
    let mut violations = BTreeSet::new();
    let mut seen_modules = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        seen_modules.insert(top.clone());
        let Some((_, forbidden)) = FORBIDDEN.iter().find(|(m, _)| *m == top) else {
            continue; // main, lib, server, poller, load: the wiring may name anything
        };
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for (line, module) in named_modules(rel, &code) {
            if forbidden.contains(&module.as_str()) {
                violations.insert(format!("src/{}:{line}: {top} -> {module}", rel.display()));
            }
        }
    }
    for (module, _) in FORBIDDEN {
        assert!(
            seen_modules.contains(*module),
            "the rule names a module {module} that no longer exists: update FORBIDDEN"
        );
    }
    assert!(
        violations.is_empty(),
        "imports against the layering (ARCHITECTURE.md):\n{}",
        violations.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_checker_sees_each_form_of_import() {
    let code = code_only(
        "use crate::store::units;\nuse crate::{mqtt::X, telegram};\nlet a = crate::http::f();\n\
         // crate::service in a comment\nlet s = \"crate::poller\";\nuse super::super::load;\n",
    );
    let found: Vec<String> = named_modules(Path::new("service/ingest/x.rs"), &code)
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(found, ["store", "mqtt", "telegram", "http", "service"]);
    // super:: from a first-level file is the crate root
    let found = named_modules(Path::new("http/units.rs"), "use super::super::store;\n");
    assert_eq!(found, [(1, "store".to_string())]);
    let found = named_modules(Path::new("http/units.rs"), "use super::extract::Caller;\n");
    assert_eq!(found, [(1, "http".to_string())]);
}
