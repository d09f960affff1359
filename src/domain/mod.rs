//! The product's vocabulary: the enums of the wire contract (API.md §1), naming rules and time.
//!
//! Wire strings are exactly the upstream ones; each enum parses from and prints to them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod chart;
pub mod dashboard;
pub mod load;
pub mod oidc;
pub mod payload;
pub mod throttle;
pub mod topic;

pub use topic::{is_valid_topic_name, parse_topic_uuid, Topic};

/// Declares a string enum whose variants are written on the wire exactly as named.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => stringify!($variant)),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $(stringify!($variant) => Ok($name::$variant),)+
                    _ => Err(format!(
                        "{:?} is not a valid {}: expected one of {}",
                        s,
                        stringify!($name),
                        [$(stringify!($variant)),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

// after the macro: the module uses it
pub mod datapipe;

wire_enum!(
    /// Who may see a Repo, Unit or UnitNode. Ordered from least to most strict.
    VisibilityLevel { Public, Internal, Private }
);
wire_enum!(UserRole { User, Admin });
wire_enum!(UserStatus {
    Unverified,
    Verified,
    Blocked
});
wire_enum!(
    /// The `type` claim of a token.
    AgentType { Bot, User, Unit, Backend, Grafana, GrafanaUnitNode }
);
wire_enum!(UnitNodeType { Output, Input });
wire_enum!(UnitFirmwareUpdateStatus {
    RequestSent,
    Error,
    Success
});
wire_enum!(BackendTopicCommand {
    Update,
    EnvUpdate,
    SchemaUpdate,
    LogSync,
    Reset
});

impl BackendTopicCommand {
    /// The input base topic name the command travels on (`{name}/pepeunit` in schema files).
    pub fn topic_name(self) -> &'static str {
        match self {
            BackendTopicCommand::Update => "update",
            BackendTopicCommand::EnvUpdate => "env_update",
            BackendTopicCommand::SchemaUpdate => "schema_update",
            BackendTopicCommand::LogSync => "log_sync",
            BackendTopicCommand::Reset => "reset",
        }
    }
}
wire_enum!(GitPlatform { Gitlab, Github });
wire_enum!(
    /// Which end of an MQTT bridge this instance holds: `Input` (the Input node; it issued the
    /// credential) or `Output` (the Output node; it carries the messages to the peer).
    BridgeRole { Input, Output }
);
wire_enum!(
    /// `Pending`: the Input side has not heard back yet (or, on the Output side, the carrier has
    /// not reached the peer's broker yet); `Active`: agreed (Input), carrying (Output); `Error`:
    /// the carrier cannot reach the peer's broker or is refused (see `last_error`).
    BridgeState { Pending, Active, Error }
);
wire_enum!(
    /// Which end of a Unit move this instance holds.
    MoveRole { Outgoing, Incoming }
);
wire_enum!(
    /// Outgoing: `Requested` (the target prepares the device's env), `CommandsSent` (the device
    /// was told to fetch it and restart), `Done`, `Cancelled`. Incoming: `Imported` (the Unit
    /// waits for its device), `Arrived` (the device reported here), `Cancelled`.
    MoveState {
        Requested,
        CommandsSent,
        Done,
        Cancelled,
        Imported,
        Arrived
    }
);
wire_enum!(RepositoryRegistryStatus {
    Updated,
    Processing,
    Error
});
wire_enum!(CredentialStatus {
    Valid,
    NotVerified,
    Error
});
wire_enum!(PermissionEntities {
    User,
    Unit,
    Repo,
    UnitNode
});
wire_enum!(LogLevel {
    Debug,
    Info,
    Warning,
    Error,
    Critical
});

impl LogLevel {
    /// Severity order: Debug 0 < Info < Warning < Error < Critical 4.
    pub fn rank(self) -> usize {
        self as usize
    }
}

impl VisibilityLevel {
    /// Public < Internal < Private.
    pub fn strictness(self) -> u8 {
        match self {
            VisibilityLevel::Public => 0,
            VisibilityLevel::Internal => 1,
            VisibilityLevel::Private => 2,
        }
    }
}

/// `asc` / `desc` of the `order_by_*` query parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    Asc,
    Desc,
}

impl Order {
    pub fn sql(self) -> &'static str {
        match self {
            Order::Asc => "ASC",
            Order::Desc => "DESC",
        }
    }
}

/// Names of users, repos and units: `^[A-Za-z0-9_.-]{4,20}$`.
pub fn is_valid_name(name: &str) -> bool {
    (4..=20).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Passwords: `^[\x21-\x7E]{8,100}$`.
pub fn is_valid_password(password: &str) -> bool {
    (8..=100).contains(&password.len()) && password.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// Naive UTC timestamps, stored and sent as `2025-01-25T07:39:24.312206`.
pub fn now() -> String {
    format_time(chrono::Utc::now().naive_utc())
}

pub fn format_time(t: chrono::NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// Parses a time as `now` writes it (fraction optional). Years are 0001 to 9999: chrono's `%Y`
/// also takes signs and more digits, and a time near chrono's own limits overflowed (a panic)
/// when a range was computed from it.
pub fn parse_time(s: &str) -> Option<chrono::NaiveDateTime> {
    use chrono::Datelike;
    chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .filter(|t| (1..=9999).contains(&t.year()))
}

/// A JSON string as Python's `json.dumps` (with `ensure_ascii`) writes it: what upstream
/// stores (`releases_data`, `data_pipe_yml`) compares byte for byte.
pub fn push_py_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn names_follow_the_upstream_pattern() {
        assert!(is_valid_name("unit_01.a-b"));
        assert!(!is_valid_name("abc"));
        assert!(!is_valid_name("a".repeat(21).as_str()));
        assert!(!is_valid_name("name with space"));
        assert!(!is_valid_name("юникод1"));
    }

    #[test]
    fn enums_round_trip_and_reject_unknown() {
        for v in VisibilityLevel::ALL {
            assert_eq!(VisibilityLevel::from_str(v.as_str()).unwrap(), *v);
        }
        assert!(VisibilityLevel::from_str("public").is_err());
        assert_eq!(
            serde_json::to_string(&LogLevel::Warning).unwrap(),
            "\"Warning\""
        );
    }

    #[test]
    fn time_format_round_trips() {
        let s = now();
        assert_eq!(s.len(), 26);
        assert_eq!(format_time(parse_time(&s).unwrap()), s);
        assert!(parse_time("0001-01-01T00:00:00").is_some());
        assert!(parse_time("9999-12-31T23:59:59.999999").is_some());
        for bad in [
            "-262143-01-01T00:00:00",
            "+10000-01-01T00:00:00",
            "0000-01-01T00:00:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
