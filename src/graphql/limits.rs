//! Checks that run before async-graphql sees a document.
//!
//! - [`check`], before any parser: async-graphql's parser recurses once per nesting level of
//!   `{`, `[` and `(` (selection sets, list and object values) and has no limit of its own: a
//!   few thousand `[` overflow a worker thread's stack and abort the whole process. The
//!   schema's depth limits apply only after parsing, so the raw text is measured first, with
//!   the parser's own rules for comments and strings (a comment ends at `\r` or `\n`).
//! - [`check_shape`], on the parsed document, before async-graphql walks it: its recursion
//!   check and validation expand every fragment spread again without memo, so a 1.5 KB
//!   document of fragments spreading each other four times costs 4^30 steps. The expanded size
//!   is computed here with a memo and refused past [`MAX_EXPANDED`]; and one operation may
//!   hold at most [`MAX_ROOT_FIELDS`] root fields, `getToken` once (each alias of it is a
//!   PBKDF2 password check: aliases would multiply guesses and CPU per request).

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// The deepest bracket nesting accepted (introspection needs about 15).
pub const MAX_NESTING: usize = 64;

/// The deepest nesting of `{`, `[` and `(` in a GraphQL document, outside strings and comments.
pub fn nesting(doc: &str) -> usize {
    let b = doc.as_bytes();
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if b[i..].starts_with(b"\"\"\"") => {
                // block string: ends at the next unescaped """
                i += 3;
                while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                    i += if b[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' && b[i] != b'\r' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

/// Refuses a document nested deeper than [`MAX_NESTING`], with the message the client sees.
pub fn check(doc: &str) -> Result<(), String> {
    let n = nesting(doc);
    if n > MAX_NESTING {
        return Err(format!(
            "The document is nested too deeply: {n} levels of brackets, at most {MAX_NESTING}"
        ));
    }
    Ok(())
}

/// A WebSocket message (`{"type": "subscribe", "payload": {"query": ...}}`) whose document
/// passes [`check`]; anything else is left to the protocol to answer. Only the query is read
/// (no JSON tree of the whole message is built).
pub fn check_message(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Message {
        payload: Option<Payload>,
    }
    #[derive(serde::Deserialize)]
    struct Payload {
        query: Option<String>,
    }
    match serde_json::from_str::<Message>(text) {
        Ok(Message {
            payload: Some(Payload { query: Some(q) }),
        }) => check(&q).is_ok() && shape_of_text(&q).is_ok(),
        _ => true,
    }
}

/// The most fields a document may expand to, fragments spread in place.
pub const MAX_EXPANDED: u64 = 10_000;
/// The most root fields (aliases included) of one operation.
pub const MAX_ROOT_FIELDS: usize = 20;

/// Refuses documents whose fragments expand past [`MAX_EXPANDED`] fields, operations with more
/// than [`MAX_ROOT_FIELDS`] root fields, and more than one `getToken`.
pub fn check_shape(doc: &ExecutableDocument) -> Result<(), String> {
    let mut memo: HashMap<&str, u64> = HashMap::new();
    let mut visiting: HashSet<&str> = HashSet::new();
    for (_, op) in doc.operations.iter() {
        let set = &op.node.selection_set.node;
        let size = expanded(doc, set, &mut memo, &mut visiting);
        if size > MAX_EXPANDED {
            return Err(format!(
                "The document expands to more than {MAX_EXPANDED} fields (fragments counted where they are spread)"
            ));
        }
        let mut roots = Vec::new();
        root_fields(doc, set, &mut roots, &mut HashSet::new());
        if roots.len() > MAX_ROOT_FIELDS {
            return Err(format!(
                "An operation may select at most {MAX_ROOT_FIELDS} root fields, this one {}",
                roots.len()
            ));
        }
        if roots.iter().filter(|f| **f == "getToken").count() > 1 {
            return Err("An operation may ask for getToken once".to_string());
        }
    }
    Ok(())
}

/// [`check_shape`] of a text that passed [`check`]; text that does not parse passes (the
/// server reports the syntax error itself).
pub fn shape_of_text(text: &str) -> Result<(), String> {
    match async_graphql::parser::parse_query(text) {
        Ok(doc) => check_shape(&doc),
        Err(_) => Ok(()),
    }
}

/// Fields of `set` with fragments expanded, saturating; a fragment on a cycle counts 0 (the
/// cycle is refused by validation).
fn expanded<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    memo: &mut HashMap<&'a str, u64>,
    visiting: &mut HashSet<&'a str>,
) -> u64 {
    let mut total: u64 = 0;
    for item in &set.items {
        let n = match &item.node {
            Selection::Field(f) => {
                1u64.saturating_add(expanded(doc, &f.node.selection_set.node, memo, visiting))
            }
            Selection::InlineFragment(i) => {
                expanded(doc, &i.node.selection_set.node, memo, visiting)
            }
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.as_str();
                if let Some(n) = memo.get(name) {
                    *n
                } else if !visiting.insert(name) {
                    0
                } else {
                    let n = match doc.fragments.get(name) {
                        Some(f) => expanded(doc, &f.node.selection_set.node, memo, visiting),
                        None => 0,
                    };
                    visiting.remove(name);
                    memo.insert(name, n);
                    n
                }
            }
        };
        total = total.saturating_add(n);
        if total > MAX_EXPANDED {
            // no need to count further
            return total;
        }
    }
    total
}

/// The root field names an operation's selection resolves (fragments spread in place).
fn root_fields<'a>(
    doc: &'a ExecutableDocument,
    set: &'a SelectionSet,
    out: &mut Vec<&'a str>,
    seen: &mut HashSet<&'a str>,
) {
    for item in &set.items {
        if out.len() > MAX_ROOT_FIELDS {
            return;
        }
        match &item.node {
            Selection::Field(f) => out.push(f.node.name.node.as_str()),
            Selection::InlineFragment(i) => root_fields(doc, &i.node.selection_set.node, out, seen),
            Selection::FragmentSpread(s) => {
                let name = s.node.fragment_name.node.as_str();
                if seen.insert(name) {
                    if let Some(f) = doc.fragments.get(name) {
                        root_fields(doc, &f.node.selection_set.node, out, seen);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_brackets_outside_strings_and_comments() {
        assert_eq!(nesting("{ a }"), 1);
        assert_eq!(nesting("query($x: [Int!]) { a(x: $x) { b } }"), 2);
        assert_eq!(nesting("{ a(s: \"{{{{[[[[\") }"), 2);
        assert_eq!(nesting("{ a(s: \"\\\"{{{{\") }"), 2);
        assert_eq!(nesting("{ a(s: \"\"\"{{{\n[[[\"\"\") }"), 2);
        assert_eq!(nesting("# {{{{{{\n{ a }"), 1);
        assert_eq!(nesting("{ a(v: [[[[1]]]]) }"), 6);
        assert_eq!(nesting("}}}}{"), 1, "stray closers do not go below zero");
        // the parser ends a comment at a bare carriage return, and so does the scanner
        assert_eq!(nesting("#\r{ a(v: [[1]]) }"), 4);
        assert_eq!(nesting("# x\r\n{ a }"), 1);
    }

    #[test]
    fn fragments_are_counted_where_they_are_spread() {
        let mut doc = String::from("query { ...F0 }\n");
        for i in 0..30 {
            doc.push_str(&format!(
                "fragment F{i} on Query {{ ...F{n} ...F{n} ...F{n} ...F{n} }}\n",
                n = i + 1
            ));
        }
        doc.push_str("fragment F30 on Query { __typename }\n");
        let e = shape_of_text(&doc).unwrap_err();
        assert!(e.contains("expands to more than"), "{e}");
        // cycles and unknown fragments do not loop (validation refuses them later)
        assert!(shape_of_text(
            "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"
        )
        .is_ok());
        assert!(shape_of_text("{ ...Nope }").is_ok());
        assert!(shape_of_text("{ a { b c } d }").is_ok());
    }

    #[test]
    fn root_fields_and_get_token_are_bounded() {
        let many = format!(
            "{{ {} }}",
            (0..21)
                .map(|i| format!("a{i}: getBaseMetrics {{ userCount }}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(shape_of_text(&many)
            .unwrap_err()
            .contains("at most 20 root fields"));
        let twenty = format!(
            "{{ {} }}",
            (0..20)
                .map(|i| format!("a{i}: getBaseMetrics {{ userCount }}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        assert!(shape_of_text(&twenty).is_ok());
        let tokens = "{ a: getToken(data: {credentials: \"x\", password: \"y\"}) ...F } fragment F on Query { b: getToken(data: {credentials: \"x\", password: \"z\"}) }";
        assert!(shape_of_text(tokens).unwrap_err().contains("getToken once"));
    }

    #[test]
    fn refuses_what_would_overflow_the_parser() {
        let deep = format!("{{ a(v: {}1{}) }}", "[".repeat(5000), "]".repeat(5000));
        let e = check(&deep).unwrap_err();
        assert!(e.contains("5002 levels"), "{e}");
        assert!(check(&format!("{}{}", "{a ".repeat(64), "}".repeat(64))).is_ok());
        assert!(check(&format!("{}{}", "{a ".repeat(65), "}".repeat(65))).is_err());
        let message = |q: &str| {
            serde_json::json!({"id": "1", "type": "subscribe", "payload": {"query": q}}).to_string()
        };
        assert!(!check_message(&message(&deep)));
        assert!(check_message(&message(
            "subscription { unitState(uuid: \"x\") { unitUuid } }"
        )));
        assert!(check_message("{\"type\": \"connection_init\"}"));
        let comment = format!("#\r{{ a(v: {}1{}) }}", "[".repeat(5000), "]".repeat(5000));
        assert!(!check_message(&message(&comment)));
    }
}
