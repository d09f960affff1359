//! MQTT topics: the one place that spells and parses every topic of the product (API.md §5.3,
//! §5.4, §6). Two kinds exist:
//!
//! - unit base topics `{domain}/{input|output}_base_topic/{unit}/{name}/pepeunit`: commands to
//!   a device (input: `update`, `env_update`, ...) and its reports (output: `state`, `log`);
//! - node topics `{domain}/{node}` and `{domain}/{node}/pepeunit`: a node's values. The
//!   `/pepeunit` suffix is there exactly when the node's topic name ends with it. Bridges carry
//!   node topics of the Output side's instance.
//!
//! Uuids have one spelling in topics (lowercase, hyphenated): `Uuid::parse_str` also takes upper
//! case, braces and `urn:uuid:`, which would give one unit many topic names (each with its own
//! throttle, cache entry and ACL answer).

use std::fmt;

use uuid::Uuid;

use super::BackendTopicCommand;

/// The last level of every unit base topic and of node topics that have data pipes.
pub const SUFFIX: &str = "pepeunit";

/// Topics of a schema are at most this long (API.md §6); MQTT's own limit is 65,535 bytes.
pub const MAX_TOPIC_NAME_LEN: usize = 65_434;

/// A uuid in the one spelling topics use.
pub fn parse_topic_uuid(s: &str) -> Option<Uuid> {
    let u = Uuid::parse_str(s).ok()?;
    (s.len() == 36 && u.hyphenated().to_string() == s).then_some(u)
}

/// Topic names of a schema: `[A-Za-z0-9/_-]`, non-empty, under 65,435 characters.
pub fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty()
        && topic.len() <= MAX_TOPIC_NAME_LEN
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'_' || b == b'-')
}

/// Whether a topic is a filter (has `+` or `#` levels) rather than a topic messages go to.
pub fn is_filter(topic: &str) -> bool {
    topic.split('/').any(|level| level == "+" || level == "#")
}

/// Which of a unit's base topics: what the device is told, or what it reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Base {
    Input,
    Output,
}

impl Base {
    pub fn as_str(self) -> &'static str {
        match self {
            Base::Input => "input_base_topic",
            Base::Output => "output_base_topic",
        }
    }

    pub fn parse(s: &str) -> Option<Base> {
        match s {
            "input_base_topic" => Some(Base::Input),
            "output_base_topic" => Some(Base::Output),
            _ => None,
        }
    }
}

/// A topic's levels sorted into the product's kinds, before any uuid is checked. The broker's
/// ACL decides on shapes, because filters (`+`, `#`) have no uuid to parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape<'a> {
    /// Five levels ending in `pepeunit`.
    UnitBase {
        domain: &'a str,
        base: &'a str,
        unit: &'a str,
        name: &'a str,
    },
    /// Two levels, or three ending in `pepeunit`.
    Node {
        domain: &'a str,
        node: &'a str,
        pepeunit: bool,
    },
    Other,
}

impl<'a> Shape<'a> {
    pub fn of(topic: &'a str) -> Shape<'a> {
        let mut levels = [""; 6];
        let mut n = 0;
        for level in topic.split('/') {
            if n == levels.len() {
                return Shape::Other;
            }
            levels[n] = level;
            n += 1;
        }
        match &levels[..n] {
            [domain, base, unit, name, SUFFIX] => Shape::UnitBase {
                domain,
                base,
                unit,
                name,
            },
            [domain, node] => Shape::Node {
                domain,
                node,
                pepeunit: false,
            },
            [domain, node, SUFFIX] => Shape::Node {
                domain,
                node,
                pepeunit: true,
            },
            _ => Shape::Other,
        }
    }

    pub fn domain(&self) -> Option<&'a str> {
        match *self {
            Shape::UnitBase { domain, .. } | Shape::Node { domain, .. } => Some(domain),
            Shape::Other => None,
        }
    }
}

/// A concrete topic of the product, borrowing its text. Formats back to exactly what it parsed
/// from (`Display`), and every producer of topics builds one, so spelling lives here only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic<'a> {
    UnitBase {
        domain: &'a str,
        base: Base,
        unit: Uuid,
        name: &'a str,
    },
    Node {
        domain: &'a str,
        node: Uuid,
        pepeunit: bool,
    },
}

/// Why a text is not a topic of the product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicError {
    /// Neither five levels ending in `pepeunit` nor `{domain}/{node}[/pepeunit]`.
    Shape,
    /// Five levels whose second is neither `input_base_topic` nor `output_base_topic`.
    Base,
    /// A unit or node level that is not a uuid in the one spelling.
    Uuid,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::Shape => "not a unit base topic or a node topic",
            TopicError::Base => "not input_base_topic or output_base_topic",
            TopicError::Uuid => "not a lowercase hyphenated uuid",
        })
    }
}

impl<'a> Topic<'a> {
    pub fn parse(topic: &'a str) -> Result<Topic<'a>, TopicError> {
        match Shape::of(topic) {
            Shape::UnitBase {
                domain,
                base,
                unit,
                name,
            } => Ok(Topic::UnitBase {
                domain,
                base: Base::parse(base).ok_or(TopicError::Base)?,
                unit: parse_topic_uuid(unit).ok_or(TopicError::Uuid)?,
                name,
            }),
            Shape::Node {
                domain,
                node,
                pepeunit,
            } => Ok(Topic::Node {
                domain,
                node: parse_topic_uuid(node).ok_or(TopicError::Uuid)?,
                pepeunit,
            }),
            Shape::Other => Err(TopicError::Shape),
        }
    }

    pub fn domain(&self) -> &'a str {
        match *self {
            Topic::UnitBase { domain, .. } | Topic::Node { domain, .. } => domain,
        }
    }

    /// `{domain}/{base}/{unit}/{name}/pepeunit`.
    pub fn unit_base(domain: &'a str, base: Base, unit: Uuid, name: &'a str) -> Topic<'a> {
        Topic::UnitBase {
            domain,
            base,
            unit,
            name,
        }
    }

    /// Where a command to a unit travels: `{domain}/input_base_topic/{unit}/{command}/pepeunit`.
    pub fn command(domain: &'a str, unit: Uuid, command: BackendTopicCommand) -> Topic<'a> {
        Topic::unit_base(domain, Base::Input, unit, command.topic_name())
    }

    /// Where a unit reports its state.
    pub fn state(domain: &'a str, unit: Uuid) -> Topic<'a> {
        Topic::unit_base(domain, Base::Output, unit, "state")
    }

    /// Where a unit sends its log lines.
    pub fn log(domain: &'a str, unit: Uuid) -> Topic<'a> {
        Topic::unit_base(domain, Base::Output, unit, "log")
    }

    /// A node's topic: with the `/pepeunit` suffix exactly when its topic name ends with it.
    pub fn node(domain: &'a str, node: Uuid, topic_name: &str) -> Topic<'a> {
        Topic::Node {
            domain,
            node,
            pepeunit: topic_name.ends_with("/pepeunit"),
        }
    }

    /// The unit whose log topic this is.
    pub fn log_unit(&self) -> Option<Uuid> {
        match *self {
            Topic::UnitBase {
                base: Base::Output,
                unit,
                name: "log",
                ..
            } => Some(unit),
            _ => None,
        }
    }
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::UnitBase {
                domain,
                base,
                unit,
                name,
            } => write!(f, "{domain}/{}/{unit}/{name}/{SUFFIX}", base.as_str()),
            Topic::Node {
                domain,
                node,
                pepeunit: true,
            } => write!(f, "{domain}/{node}/{SUFFIX}"),
            Topic::Node {
                domain,
                node,
                pepeunit: false,
            } => write!(f, "{domain}/{node}"),
        }
    }
}

/// A base topic of `schema.json` from a name of `schema_example.json`, which carries its own
/// suffix (`update/pepeunit`): `{domain}/{base}/{unit}/{name}`, as upstream writes it.
pub fn schema_base_topic(domain: &str, base: Base, unit: Uuid, name: &str) -> String {
    format!("{domain}/{}/{unit}/{name}", base.as_str())
}

/// Every unit's log topic of this domain.
pub fn log_filter(domain: &str) -> String {
    format!("{domain}/{}/+/log/{SUFFIX}", Base::Output.as_str())
}

/// The backend's two subscriptions: every unit base topic and every node topic with the
/// `/pepeunit` suffix of this instance's domain.
pub fn core_filters(domain: &str) -> [String; 2] {
    [
        format!("{domain}/+/+/+/{SUFFIX}"),
        format!("{domain}/+/{SUFFIX}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "0193a5c4-7e2b-7c3d-9f00-1234567890ab";

    #[test]
    fn topic_uuids_have_one_spelling() {
        assert_eq!(parse_topic_uuid(U).unwrap().to_string(), U);
        for other in [
            "0193A5C4-7E2B-7C3D-9F00-1234567890AB",
            "0193a5c47e2b7c3d9f001234567890ab",
            "{0193a5c4-7e2b-7c3d-9f00-1234567890ab}",
            "urn:uuid:0193a5c4-7e2b-7c3d-9f00-1234567890ab",
            "not a uuid",
        ] {
            assert!(parse_topic_uuid(other).is_none(), "{other}");
        }
    }

    #[test]
    fn every_kind_formats_and_parses_back() {
        let u = parse_topic_uuid(U).unwrap();
        let cases = [
            (
                Topic::command("d.io", u, BackendTopicCommand::EnvUpdate),
                format!("d.io/input_base_topic/{U}/env_update/pepeunit"),
            ),
            (
                Topic::state("d.io", u),
                format!("d.io/output_base_topic/{U}/state/pepeunit"),
            ),
            (
                Topic::log("d.io", u),
                format!("d.io/output_base_topic/{U}/log/pepeunit"),
            ),
            (
                Topic::node("d.io", u, "temp/pepeunit"),
                format!("d.io/{U}/pepeunit"),
            ),
            (Topic::node("d.io", u, "temp"), format!("d.io/{U}")),
        ];
        for (topic, text) in cases {
            assert_eq!(topic.to_string(), text);
            assert_eq!(Topic::parse(&text), Ok(topic), "{text}");
        }
        assert_eq!(Topic::log("d.io", u).log_unit(), Some(u));
        assert_eq!(Topic::state("d.io", u).log_unit(), None);
    }

    #[test]
    fn garbage_is_refused_with_its_reason() {
        let upper = U.to_uppercase();
        for (text, err) in [
            ("", TopicError::Shape),
            ("d.io", TopicError::Shape),
            ("d.io/a/b/c/d/e/f/g", TopicError::Shape),
            (&*format!("d.io/{U}/other"), TopicError::Shape),
            (&*format!("d.io/{U}/log/pepeunit"), TopicError::Shape),
            (
                &*format!("d.io/sideways_topic/{U}/log/pepeunit"),
                TopicError::Base,
            ),
            (
                &*format!("d.io/output_base_topic/{upper}/log/pepeunit"),
                TopicError::Uuid,
            ),
            (&*format!("d.io/{upper}"), TopicError::Uuid),
            ("d.io/+/pepeunit", TopicError::Uuid),
        ] {
            assert_eq!(Topic::parse(text), Err(err), "{text:?}");
        }
    }

    #[test]
    fn filters_and_shapes() {
        assert!(is_filter("d.io/+/pepeunit"));
        assert!(is_filter("d.io/#"));
        assert!(!is_filter("d.io/a+b"));
        for filter in core_filters("d.io") {
            assert!(is_filter(&filter));
            assert_eq!(Shape::of(&filter).domain(), Some("d.io"));
        }
        assert_eq!(Shape::of("a/b/c/d"), Shape::Other);
    }

    #[test]
    fn topic_names_follow_the_schema_rule() {
        assert!(is_valid_topic_name("temp/pepeunit"));
        assert!(!is_valid_topic_name(""));
        assert!(!is_valid_topic_name("temp+"));
        assert!(!is_valid_topic_name(&"a".repeat(65_435)));
        assert!(is_valid_topic_name(&"a".repeat(65_434)));
    }
}
