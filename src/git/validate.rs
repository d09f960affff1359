//! Validation of every user-supplied value that ends up on a git command line.
//!
//! The rules are deliberately stricter than git's own: anything that passes here can be put on
//! argv without being mistaken for an option, a revision expression or a pathspec magic.

use super::GitError;

/// Longest remote URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// Longest branch or tag name accepted.
pub const MAX_REF_LEN: usize = 255;
/// Longest in-repository path accepted.
pub const MAX_PATH_LEN: usize = 4096;

/// Checks that `url` is an `http://` or `https://` URL with a host, without whitespace, control
/// characters or credentials, and at most [`MAX_URL_LEN`] bytes long.
///
/// The error never repeats the URL itself: it may carry a secret.
pub fn validate_remote_url(url: &str) -> Result<(), GitError> {
    let deny = |why: &str| Err(GitError::UrlNotAllowed(why.to_string()));
    if url.is_empty() {
        return deny("the URL is empty");
    }
    if url.len() > MAX_URL_LEN {
        return deny("the URL is too long");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return deny("the URL contains whitespace or control characters");
    }
    // Schemes are matched case-sensitively, as git itself does when it picks a transport.
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else {
        return deny("only http:// and https:// URLs are allowed");
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return deny("credentials must not be embedded in the URL");
    }
    // Strip the port: `[v6]:port` or `host:port`.
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, "")) => (h, ""),
            Some((h, port)) => match port.strip_prefix(':') {
                Some(port) => (h, port),
                None => return deny("the URL has no valid host"),
            },
            None => return deny("the URL has no valid host"),
        }
    } else {
        authority.split_once(':').unwrap_or((authority, ""))
    };
    if !(port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())) {
        return deny("the URL has an invalid port");
    }
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'))
    {
        return deny("the URL has no valid host");
    }
    if url.contains('\\') {
        return deny("the URL contains a backslash");
    }
    Ok(())
}

/// A commit id: 4 to 64 hex digits (an abbreviation or a full SHA-1/SHA-256 name). Returned
/// lower-cased.
pub fn validate_commit(commit: &str) -> Result<String, GitError> {
    if (4..=64).contains(&commit.len()) && commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(commit.to_ascii_lowercase())
    } else {
        Err(GitError::InvalidArgument(
            "a commit must be 4 to 64 hexadecimal digits".into(),
        ))
    }
}

/// A branch name (the part after `refs/heads/`).
pub fn validate_branch(branch: &str) -> Result<(), GitError> {
    validate_ref_name(branch)
        .map_err(|why| GitError::InvalidArgument(format!("invalid branch name: {why}")))
}

/// A tag name (the part after `refs/tags/`).
pub fn validate_tag(tag: &str) -> Result<(), GitError> {
    validate_ref_name(tag)
        .map_err(|why| GitError::InvalidArgument(format!("invalid tag name: {why}")))
}

/// `git check-ref-format --branch`-like rules, done in Rust and a little stricter.
fn validate_ref_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_REF_LEN {
        return Err("it is too long");
    }
    if name.starts_with('-') {
        return Err("it starts with '-'");
    }
    if name == "@" || name == "HEAD" {
        return Err("it is reserved");
    }
    if name.contains("..") {
        return Err("it contains '..'");
    }
    if name.contains("@{") {
        return Err("it contains '@{'");
    }
    if name.chars().any(|c| {
        c.is_control() || c.is_whitespace() || matches!(c, ':' | '~' | '^' | '?' | '*' | '[' | '\\')
    }) {
        return Err("it contains a forbidden character");
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') {
        return Err("it starts or ends with '/' or ends with '.'");
    }
    for component in name.split('/') {
        if component.is_empty() {
            return Err("it contains '//'");
        }
        if component.starts_with('.') {
            return Err("a component starts with '.'");
        }
        if component.ends_with(".lock") {
            return Err("a component ends with '.lock'");
        }
    }
    Ok(())
}

/// A path inside a commit's tree: relative, no `..`, no control characters. Empty and `.`
/// components are dropped; the normalized path is returned.
pub fn validate_path(path: &str) -> Result<String, GitError> {
    let bad = |why: &str| Err(GitError::InvalidArgument(format!("invalid path: {why}")));
    if path.len() > MAX_PATH_LEN {
        return bad("it is too long");
    }
    if path.starts_with('/') {
        return bad("it must be relative");
    }
    if path.chars().any(|c| c.is_control()) {
        return bad("it contains control characters");
    }
    let mut parts = Vec::new();
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return bad("it contains '..'"),
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return bad("it is empty");
    }
    Ok(parts.join("/"))
}
