//! A check that runs before any GraphQL parser sees a document. async-graphql's parser recurses
//! once per nesting level of `{`, `[` and `(` (selection sets, list and object values) and has
//! no limit of its own: a few thousand `[` overflow a worker thread's stack and abort the whole
//! process. The schema's depth limits apply only after parsing, so the raw text is measured
//! first.

/// The deepest bracket nesting accepted (introspection needs about 15).
pub const MAX_NESTING: usize = 64;

/// The deepest nesting of `{`, `[` and `(` in a GraphQL document, outside strings and comments.
pub fn nesting(doc: &str) -> usize {
    let b = doc.as_bytes();
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while i < b.len() {
        match b[i] {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
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
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
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
/// passes [`check`]; anything else is left to the protocol to answer.
pub fn check_message(text: &str) -> bool {
    let Ok(message) = serde_json::from_str::<serde_json::Value>(text) else {
        return true;
    };
    match message.pointer("/payload/query").and_then(|q| q.as_str()) {
        Some(query) => check(query).is_ok(),
        None => true,
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
    }
}
