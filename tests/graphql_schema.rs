//! The GraphQL contract: our printed schema keeps every type, field, argument, default,
//! nullability, enum value and union member of `../shared/upstream-schema.graphql` (vendored as
//! `tests/graphql/upstream-schema.graphql`). Additions are allowed, as long as they cannot break
//! an upstream client: no new required argument or input field.

use std::collections::{BTreeMap, BTreeSet};

use async_graphql::parser::parse_schema;
use async_graphql::parser::types::{
    InputValueDefinition, ServiceDocument, TypeDefinition, TypeKind, TypeSystemDefinition,
};

const CONTRACT: &str = include_str!("graphql/upstream-schema.graphql");

fn types(doc: &ServiceDocument) -> BTreeMap<String, TypeDefinition> {
    doc.definitions
        .iter()
        .filter_map(|d| match d {
            TypeSystemDefinition::Type(t) => Some((t.node.name.node.to_string(), t.node.clone())),
            _ => None,
        })
        .collect()
}

fn kind(k: &TypeKind) -> &'static str {
    match k {
        TypeKind::Scalar => "scalar",
        TypeKind::Object(_) => "type",
        TypeKind::Interface(_) => "interface",
        TypeKind::Union(_) => "union",
        TypeKind::Enum(_) => "enum",
        TypeKind::InputObject(_) => "input",
    }
}

/// Compares input values (arguments or input fields) of `at`.
fn inputs(
    at: &str,
    theirs: &[async_graphql::parser::Positioned<InputValueDefinition>],
    ours: &[async_graphql::parser::Positioned<InputValueDefinition>],
    problems: &mut Vec<String>,
) {
    let ours: BTreeMap<String, &InputValueDefinition> = ours
        .iter()
        .map(|v| (v.node.name.node.to_string(), &v.node))
        .collect();
    let mut seen = BTreeSet::new();
    for v in theirs {
        let name = v.node.name.node.to_string();
        seen.insert(name.clone());
        let Some(o) = ours.get(&name) else {
            problems.push(format!("{at}({name}): missing"));
            continue;
        };
        if o.ty.node.to_string() != v.node.ty.node.to_string() {
            problems.push(format!(
                "{at}({name}): type {} instead of {}",
                o.ty.node, v.node.ty.node
            ));
        }
        let d = |x: &InputValueDefinition| x.default_value.as_ref().map(|d| d.node.clone());
        if d(o) != d(&v.node) {
            problems.push(format!(
                "{at}({name}): default {:?} instead of {:?}",
                d(o).map(|v| v.to_string()),
                d(&v.node).map(|v| v.to_string())
            ));
        }
    }
    for (name, o) in ours {
        if !seen.contains(&name) && !o.ty.node.nullable && o.default_value.is_none() {
            problems.push(format!("{at}({name}): a new required input breaks clients"));
        }
    }
}

/// Every difference that breaks the contract.
fn differences(contract: &str, ours: &str) -> Vec<String> {
    let theirs = types(&parse_schema(contract).expect("the contract parses"));
    let ours = types(&parse_schema(ours).expect("our SDL parses"));
    let mut problems = Vec::new();
    for (name, t) in &theirs {
        let Some(o) = ours.get(name) else {
            problems.push(format!("{name}: missing"));
            continue;
        };
        if kind(&t.kind) != kind(&o.kind) {
            problems.push(format!(
                "{name}: {} instead of {}",
                kind(&o.kind),
                kind(&t.kind)
            ));
            continue;
        }
        match (&t.kind, &o.kind) {
            (TypeKind::Object(t), TypeKind::Object(o)) => {
                let ofields: BTreeMap<String, _> = o
                    .fields
                    .iter()
                    .map(|f| (f.node.name.node.to_string(), &f.node))
                    .collect();
                for f in &t.fields {
                    let fname = f.node.name.node.to_string();
                    let Some(of) = ofields.get(&fname) else {
                        problems.push(format!("{name}.{fname}: missing"));
                        continue;
                    };
                    if of.ty.node.to_string() != f.node.ty.node.to_string() {
                        problems.push(format!(
                            "{name}.{fname}: type {} instead of {}",
                            of.ty.node, f.node.ty.node
                        ));
                    }
                    inputs(
                        &format!("{name}.{fname}"),
                        &f.node.arguments,
                        &of.arguments,
                        &mut problems,
                    );
                }
            }
            (TypeKind::InputObject(t), TypeKind::InputObject(o)) => {
                inputs(name, &t.fields, &o.fields, &mut problems);
            }
            (TypeKind::Enum(t), TypeKind::Enum(o)) => {
                let ovalues: BTreeSet<String> = o
                    .values
                    .iter()
                    .map(|v| v.node.value.node.to_string())
                    .collect();
                for v in &t.values {
                    let v = v.node.value.node.to_string();
                    if !ovalues.contains(&v) {
                        problems.push(format!("{name}.{v}: enum value missing"));
                    }
                }
            }
            (TypeKind::Union(t), TypeKind::Union(o)) => {
                let members = |u: &async_graphql::parser::types::UnionType| -> BTreeSet<String> {
                    u.members.iter().map(|m| m.node.to_string()).collect()
                };
                if members(t) != members(o) {
                    problems.push(format!(
                        "{name}: members {:?} instead of {:?}",
                        members(o),
                        members(t)
                    ));
                }
            }
            _ => {}
        }
    }
    problems
}

#[test]
fn our_schema_keeps_the_whole_upstream_contract() {
    let ours = pepeunit::graphql::sdl();
    let problems = differences(CONTRACT, &ours);
    assert!(
        problems.is_empty(),
        "{} differences from the contract:\n{}\n\nour SDL:\n{ours}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_vendored_contract_is_the_shared_one() {
    // the shared file is the source of truth where it exists (a developer's checkout)
    if let Ok(shared) = std::fs::read_to_string("../shared/upstream-schema.graphql") {
        assert_eq!(
            shared, CONTRACT,
            "tests/graphql/upstream-schema.graphql is stale"
        );
    }
}

#[test]
fn the_checker_sees_each_kind_of_break() {
    let contract = r#"
        type Query { a(x: Int = null, y: [E!] = [A, B]): T! }
        type T { f: String! g: Int }
        enum E { A B }
        input I { p: Int = null q: String! }
        union U = T | T2
        type T2 { h: Int }
    "#;
    assert!(differences(contract, contract).is_empty());
    let broken = [
        // field type, nullability, missing field
        (r#"type T { f: String g: Int }"#, "T.f: type"),
        (r#"type T { g: Int }"#, "T.f: missing"),
        // argument default and type
        (
            r#"type Query { a(x: Int, y: [E!] = [A, B]): T! }"#,
            "default",
        ),
        (
            r#"type Query { a(x: Int = null, y: [E!] = [A]): T! }"#,
            "default",
        ),
        (
            r#"type Query { a(x: Int = null, y: [E!] = [A, B], z: Int!): T! }"#,
            "new required",
        ),
        // enum value, input field, union member
        (r#"enum E { A }"#, "E.B"),
        (r#"input I { p: Int = null }"#, "I(q): missing"),
        (
            r#"input I { p: Int = null q: String! r: Int! }"#,
            "new required",
        ),
        (r#"union U = T"#, "members"),
    ];
    for (replacement, expected) in broken {
        let name = replacement.split_whitespace().nth(1).unwrap();
        let ours: String = contract
            .lines()
            .map(|l| {
                let t = l.trim_start();
                let head = t.split_whitespace().take(2).collect::<Vec<_>>();
                if head.len() == 2 && head[1].trim_end_matches(['(', '{']) == name {
                    replacement.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let found = differences(contract, &ours);
        assert!(
            found.iter().any(|p| p.contains(expected)),
            "{replacement}: expected a problem with {expected:?}, got {found:?}"
        );
    }
}
