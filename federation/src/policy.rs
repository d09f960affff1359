//! Domain lists: which instances may federate with us, and which git hosts repository
//! registries may be created from. A list is in deny mode (everything but the listed domains)
//! or allow mode (only the listed domains); a listed domain also covers its subdomains.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The two lists an instance keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    /// Instances we federate with.
    Federation,
    /// Hosts repository registries may be cloned from.
    GitHosts,
}

impl ListKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ListKind::Federation => "federation",
            ListKind::GitHosts => "git_hosts",
        }
    }
}

impl FromStr for ListKind {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        match s {
            "federation" => Ok(ListKind::Federation),
            "git_hosts" => Ok(ListKind::GitHosts),
            _ => Err(PolicyError::UnknownList(s.to_string())),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListMode {
    /// Everything except the listed domains (the default).
    #[default]
    Deny,
    /// Only the listed domains.
    Allow,
}

impl ListMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ListMode::Deny => "deny",
            ListMode::Allow => "allow",
        }
    }
}

impl FromStr for ListMode {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        match s {
            "deny" => Ok(ListMode::Deny),
            "allow" => Ok(ListMode::Allow),
            _ => Err(PolicyError::UnknownMode(s.to_string())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown list {0:?}: expected federation or git_hosts")]
    UnknownList(String),
    #[error("unknown mode {0:?}: expected deny or allow")]
    UnknownMode(String),
    #[error("invalid domain {0:?}: expected host or host:port (letters, digits, '-', '.')")]
    InvalidDomain(String),
    #[error("CSV line {line}: {message}")]
    Csv { line: usize, message: String },
}

/// A list with its mode. `domains` are normalised (see [`normalize_domain`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainList {
    pub mode: ListMode,
    pub domains: Vec<String>,
}

impl DomainList {
    /// Whether `domain` (`host` or `host:port`, any case) may be used under this list.
    pub fn permits(&self, domain: &str) -> bool {
        let listed = self.domains.iter().any(|rule| matches_rule(rule, domain));
        match self.mode {
            ListMode::Deny => !listed,
            ListMode::Allow => listed,
        }
    }
}

/// `rule` covers `domain` when the hosts are equal or `domain` is a subdomain of the rule's
/// host; a rule with a port only covers that port, a rule without one covers every port.
pub fn matches_rule(rule: &str, domain: &str) -> bool {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let (rule_host, rule_port) = split_port(rule);
    let (host, port) = split_port(&domain);
    let host = host.trim_end_matches('.');
    if rule_port.is_some() && rule_port != port {
        return false;
    }
    host == rule_host
        || (host.len() > rule_host.len()
            && host.ends_with(rule_host)
            && host.as_bytes()[host.len() - rule_host.len() - 1] == b'.')
}

fn split_port(domain: &str) -> (&str, Option<&str>) {
    match domain.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port))
        }
        _ => (domain, None),
    }
}

/// Lowercases and checks a `host[:port]` entered by an admin or found in a CSV file. A URL is
/// accepted and reduced to its host and port; wildcards (`*.example.com`) mean the same as the
/// bare domain, which already covers subdomains.
pub fn normalize_domain(input: &str) -> Result<String, PolicyError> {
    let bad = || PolicyError::InvalidDomain(input.chars().take(100).collect());
    let mut s = input.trim().to_ascii_lowercase();
    if let Some(pos) = s.find("://") {
        s = s[pos + 3..].to_string();
    }
    if let Some(pos) = s.find(['/', '?', '#']) {
        s.truncate(pos);
    }
    if let Some(pos) = s.rfind('@') {
        s = s[pos + 1..].to_string();
    }
    let s = s.strip_prefix("*.").unwrap_or(&s).trim_end_matches('.');
    // default ports are how URLs name hosts without a port
    let s = s
        .strip_suffix(":443")
        .or_else(|| s.strip_suffix(":80"))
        .unwrap_or(s)
        .trim_end_matches('.');
    let (host, port) = split_port(s);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !host_ok || !port_ok || s.matches(':').count() > 1 {
        return Err(bad());
    }
    Ok(s.to_string())
}

/// Reads a CSV list: one domain per line in the first column; a header line `domain`, blank
/// lines and `#` comments are skipped. All-or-nothing: the first bad line is the error.
pub fn parse_csv(text: &str) -> Result<Vec<String>, PolicyError> {
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line
            .split(',')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if i == 0 && first.eq_ignore_ascii_case("domain") {
            continue;
        }
        let domain = normalize_domain(first).map_err(|e| PolicyError::Csv {
            line: i + 1,
            message: e.to_string(),
        })?;
        if !out.contains(&domain) {
            out.push(domain);
        }
    }
    Ok(out)
}

/// Writes a list as CSV with a `domain` header.
pub fn to_csv(domains: &[String]) -> String {
    let mut out = String::from("domain\n");
    for d in domains {
        out.push_str(d);
        out.push('\n');
    }
    out
}

impl fmt::Display for ListKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(mode: ListMode, domains: &[&str]) -> DomainList {
        DomainList {
            mode,
            domains: domains.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn deny_mode_blocks_listed_domains_and_subdomains() {
        let l = list(ListMode::Deny, &["bad.example", "localhost:7000"]);
        assert!(!l.permits("bad.example"));
        assert!(!l.permits("BAD.example."));
        assert!(!l.permits("a.b.bad.example"));
        assert!(!l.permits("bad.example:8443"));
        assert!(l.permits("notbad.example"));
        assert!(l.permits("good.example"));
        assert!(!l.permits("localhost:7000"));
        assert!(l.permits("localhost:7001"));
    }

    #[test]
    fn allow_mode_admits_only_listed() {
        let l = list(ListMode::Allow, &["friends.example"]);
        assert!(l.permits("friends.example"));
        assert!(l.permits("iot.friends.example:443"));
        assert!(!l.permits("stranger.example"));
        assert!(!list(ListMode::Allow, &[]).permits("any.example"));
    }

    #[test]
    fn normalize_accepts_urls_and_wildcards_and_refuses_garbage() {
        assert_eq!(normalize_domain(" Example.COM ").unwrap(), "example.com");
        assert_eq!(
            normalize_domain("https://user:pw@git.example.com:8443/a/b.git").unwrap(),
            "git.example.com:8443"
        );
        assert_eq!(normalize_domain("*.example.com").unwrap(), "example.com");
        assert_eq!(
            normalize_domain("https://bad.example:443/").unwrap(),
            "bad.example"
        );
        assert_eq!(normalize_domain("bad.example.:80").unwrap(), "bad.example");
        for bad in [
            "",
            "exa mple.com",
            "-a.com",
            "a..com",
            "a.com:0",
            "a.com:99999",
            "a:b:c",
            "ü.com",
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv_round_trip_and_line_numbers() {
        let text =
            "domain\na.example\n\n# comment\nb.example:8080,extra\n\"c.example\"\na.example\n";
        let parsed = parse_csv(text).unwrap();
        assert_eq!(parsed, ["a.example", "b.example:8080", "c.example"]);
        assert_eq!(parse_csv(&to_csv(&parsed)).unwrap(), parsed);
        let err = parse_csv("domain\nok.example\nnot a domain\n").unwrap_err();
        assert_eq!(
            err,
            PolicyError::Csv {
                line: 3,
                message: PolicyError::InvalidDomain("not a domain".into()).to_string()
            }
        );
    }
}
