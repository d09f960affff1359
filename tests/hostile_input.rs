//! Hostile input, property-based (issue 16, part 6): every parser of outside input gets many
//! generated cases, random bytes and near-valid documents alike, and must not panic, must keep
//! what it holds bounded by what it was sent, and must refuse with a reason (a 4xx with a
//! `detail` over HTTP, never a 5xx). Cases per property: `PROPTEST_CASES`, or each property's
//! default (256 for most); failures are not persisted, the minimal input is printed instead.
//!
//! Pure parsers are driven directly (`hostile::pure`, the signature and document parts of
//! `hostile::federation`, the pre-parse checks of `hostile::graphql`); the rest through HTTP
//! on a test instance: a unit's env, account imports, signed inbox deliveries, GraphQL
//! requests. Defects found this way have plain regression tests at the end of this file.

mod common;
mod hostile;
