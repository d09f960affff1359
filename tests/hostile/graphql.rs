//! GraphQL documents: the bracket and shape checks that run before async-graphql's parser,
//! and whole requests over HTTP (documents built from the schema's own names, with hostile
//! values and variables).

use std::sync::LazyLock;

use pepeunit::graphql::limits::{self, MAX_NESTING};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::{check, hostile_string, json_value, mutated, raw_json_text, Tally};
use crate::common::graphql::endpoint;
use crate::common::{Backend, TestInstance};

/// Every name the schema's SDL uses (types, fields, arguments, enum values).
static NAMES: LazyLock<Vec<String>> = LazyLock::new(|| {
    let sdl = pepeunit::graphql::sdl();
    let mut names: Vec<String> = sdl
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        })
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
});

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(NAMES.clone()),
        1 => prop::sample::select(vec!["__typename", "__schema", "__type", "F", "G", "x"])
            .prop_map(str::to_string),
        1 => "[_a-zA-Z][_a-zA-Z0-9]{0,8}",
    ]
}

/// A GraphQL value: scalars at their edges, strings with escapes, lists, objects, variables.
fn value() -> impl Strategy<Value = String> {
    // every value of a document must be valid for it to parse: the odd ones are rare
    let leaf = prop_oneof![
        8 => any::<i64>().prop_map(|n| n.to_string()),
        2 => "[0-9]{20,40}",
        2 => any::<f64>().prop_map(|f| format!("{f:e}")),
        8 => hostile_string().prop_map(|s| Value::String(s).to_string()),
        2 => hostile_string().prop_map(|s| format!("\"\"\"{}\"\"\"", s.replace('"', "'"))),
        1 => prop::sample::select(vec!["\"\\ud800\"", "\"\\u{10FFFF}\"", "\"\\x\""])
            .prop_map(str::to_string),
        8 => prop::sample::select(vec!["true", "null", "$v", "$file", "ADMIN", "Info"])
            .prop_map(str::to_string),
        8 => name(),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((name(), inner), 0..4).prop_map(|kv| {
                let fields: Vec<String> =
                    kv.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", fields.join(", "))
            }),
        ]
    })
}

fn field() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-z][a-z0-9]{0,4}"),
        name(),
        prop::option::of(prop::collection::vec((name(), value()), 1..3)),
        prop::option::of(prop::sample::select(vec![
            "@skip(if: true)",
            "@include(if: $v)",
            "@deprecated",
            "@nope",
        ])),
    )
        .prop_map(|(alias, name, args, directive)| {
            let mut f = alias.map(|a| format!("{a}: ")).unwrap_or_default() + &name;
            if let Some(args) = args {
                let a: Vec<String> = args.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                f += &format!("({})", a.join(", "));
            }
            if let Some(d) = directive {
                f += " ";
                f += d;
            }
            f
        })
}

fn selection() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => field(),
        1 => prop::sample::select(vec!["...F", "...G", "...Nope"]).prop_map(str::to_string),
    ];
    leaf.prop_recursive(5, 40, 5, |inner| {
        prop_oneof![
            (field(), prop::collection::vec(inner.clone(), 1..5))
                .prop_map(|(f, items)| format!("{f} {{ {} }}", items.join(" "))),
            (name(), prop::collection::vec(inner, 1..4))
                .prop_map(|(t, items)| format!("... on {t} {{ {} }}", items.join(" "))),
        ]
    })
}

/// Operations and fragments from the schema's names.
fn document() -> impl Strategy<Value = String> {
    let operation = (
        prop::sample::select(vec!["query", "mutation", "subscription", "query Q"]),
        prop::option::of(prop::sample::select(vec![
            "($v: Boolean)",
            "($v: String!, $file: Upload)",
            "($v: [[Int]])",
            "($v: UUID = \"x\")",
        ])),
        prop_oneof![
            4 => prop::collection::vec(selection(), 1..6),
            1 => prop::collection::vec(selection(), 15..25),
        ],
    )
        .prop_map(|(kw, vars, items)| {
            format!("{kw}{} {{ {} }}", vars.unwrap_or_default(), items.join(" "))
        })
        .boxed();
    let fragment = (name(), prop::collection::vec(selection(), 1..4))
        .prop_map(|(t, items)| format!("on {t} {{ {} }}", items.join(" ")));
    (
        prop_oneof![4 => prop::collection::vec(operation.clone(), 1..2), 1 => prop::collection::vec(operation, 2..3)],
        prop::collection::vec(fragment, 0..3),
    )
        .prop_map(|(ops, frags)| {
            // fragments F and G (a third F is a duplicate, which is refused)
            let frags = frags
                .iter()
                .zip(["F", "G", "F"])
                .map(|(f, n)| format!("fragment {n} {f}"));
            ops.into_iter().chain(frags).collect::<Vec<_>>().join("\n")
        })
}

/// Text that makes a bracket scanner and a parser disagree, if they can: strings, block
/// strings, escapes, comments and line ends around brackets, then a deep run of brackets.
fn tricky_text() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "\"", "\"\"\"", "\\", "\\\"", "\\\"\"\"", "#", "\r", "\n", "{", "[", "(", "}", "]", ")",
        "a", ":", " ", "\u{2028}", "é", "query", "...",
    ]);
    (
        prop::collection::vec(token, 0..40),
        prop::sample::select(vec!["{", "[", "(", "{a(b:"]),
        0usize..4000,
    )
        .prop_map(|(prefix, open, depth)| prefix.concat() + &open.repeat(depth))
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(vec![
            "{ __typename }",
            "query Q { getBaseMetrics { userCount } }",
            "query($v: Boolean) { getUsers(filters: {}) @include(if: $v) { count } }",
        ])
        .prop_map(str::to_string),
        // documents the shape check refuses (a random one rarely is: CI once saw none)
        1 => (21usize..40, prop::bool::ANY).prop_map(|(n, token)| if token {
            "{ getToken(data: {credentials: \"a\", password: \"b\"}) b: getToken(data: {credentials: \"a\", password: \"b\"}) }".to_string()
        } else {
            format!("{{ {} }}", (0..n).map(|i| format!("f{i}: __typename")).collect::<Vec<_>>().join(" "))
        }),
        2 => any::<String>(),
        2 => tricky_text(),
        3 => document(),
        2 => mutated(document().prop_map(String::into_bytes))
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// The checks before the parser: a reason for every refusal, and the nesting they measure is
/// at most the number of brackets.
#[test]
fn pre_parse_checks() {
    let tally = Tally::default();
    check(512, any_text(), |text| {
        let n = limits::nesting(&text);
        if async_graphql::parser::parse_query(&text).is_ok() && n <= MAX_NESTING {
            tally.saw("parses");
        }
        let brackets = text.bytes().filter(|b| b"{[(".contains(b)).count();
        prop_assert!(n <= brackets);
        match limits::check(&text) {
            Ok(()) => prop_assert!(n <= MAX_NESTING),
            Err(e) => {
                tally.saw("too deep");
                prop_assert!(n > MAX_NESTING && e.contains("nested too deeply"))
            }
        }
        if n <= MAX_NESTING {
            if let Err(e) = limits::shape_of_text(&text) {
                tally.saw("shape refused");
                prop_assert!(!e.is_empty());
            }
        }
        let message = json!({"type": "subscribe", "id": "1", "payload": {"query": text}});
        if limits::check(&text).is_err() {
            prop_assert!(!limits::check_message(&message.to_string()));
        }
        Ok(())
    });
    tally.expect(&["parses", "too deep", "shape refused"]);
}

/// What passes [`limits::check`] never overflows the parser: parsed on a thread with the
/// stack of a tokio worker (2 MiB), as the server parses it. An overflow aborts this process.
#[test]
fn what_passes_the_checks_parses_on_a_worker_stack() {
    check(512, prop_oneof![tricky_text(), any_text()], |text| {
        if limits::check(&text).is_ok() {
            std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || {
                    let _ = async_graphql::parser::parse_query(&text);
                })
                .unwrap()
                .join()
                .unwrap();
        }
        Ok(())
    });
}

/// One request over HTTP: a document, variables that may be hostile, and sometimes an
/// operation name or the admin's token.
fn request() -> impl Strategy<Value = (Vec<u8>, bool, bool)> {
    let body = prop_oneof![
        6 => (any_text(), prop::option::of(prop_oneof![json_value(), Just(json!({"v": true}))]),
              prop::option::of(prop_oneof![Just("Q".to_string()), hostile_string()]))
            .prop_map(|(q, vars, op)| {
                let mut body = json!({"query": q});
                if let Some(v) = vars {
                    body["variables"] = v;
                }
                if let Some(op) = op {
                    body["operationName"] = json!(op);
                }
                body.to_string().into_bytes()
            }),
        1 => raw_json_text().prop_map(|t| format!("{{\"query\": \"{{a}}\", \"variables\": {t}}}").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ];
    (body, any::<bool>(), any::<bool>())
}

async fn over_http(backend: Backend) {
    let rt = tokio::runtime::Handle::current();
    let inst = TestInstance::start(backend).await;
    let (_, admin) = inst.user("admin").await;
    let url = endpoint(&inst);
    let inst_ref = &inst;
    let tally = Tally::default();
    tokio::task::block_in_place(|| {
        check(256, request(), |(body, as_admin, get)| {
            // a URL has a length limit of its own (the client refuses longer ones)
            let get = get && body.len() < 8 * 1024;
            let res = rt.block_on(async {
                let mut req = if get {
                    let q: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let query = q["query"].as_str().unwrap_or("{a}").to_string();
                    inst_ref.http.get(&url).query(&[("query", query)])
                } else {
                    inst_ref
                        .http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body.clone())
                };
                if as_admin {
                    req = req.header("x-auth-token", &admin);
                }
                let res = req.send().await.expect("the server answers");
                let status = res.status().as_u16();
                (status, res.bytes().await.expect("a whole answer"))
            });
            let (status, answer) = res;
            let text = String::from_utf8_lossy(&answer);
            prop_assert!(status < 500, "{status}: {text}");
            if let Ok(v) = serde_json::from_slice::<Value>(&answer) {
                tally.saw(match (status, v.get("errors")) {
                    (200, None) => "data",
                    (200, Some(_)) => "errors",
                    _ => "refused",
                });
                for e in v["errors"].as_array().into_iter().flatten() {
                    let m = e["message"].as_str().unwrap_or_default();
                    prop_assert!(!m.is_empty() && !m.contains("Internal Server Error"), "{v}");
                }
            }
            Ok(())
        })
    });
    tally.expect(&["data", "errors", "refused"]);
    let (s, _) = inst.get("/users", Some(&admin)).await;
    assert!(s.is_success(), "still serving: {s}");
    inst.stop().await;
}

crate::both_backends!(over_http);
