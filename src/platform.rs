//! Release metadata from the hosting platforms of registries (API.md §5.2, sync step 4).
//!
//! GitHub: `GET {PU_GITHUB_API_URL}/repos/{owner}/{repo}/releases`, assets as `name` and
//! `browser_download_url`. GitLab: `GET {scheme}://{host}/api/v4/projects/{encoded path}/releases`
//! on the registry's own host, sources as `format` and `url`, then links as `name` and `url`.
//!
//! The result is stored as `releases_data`, a JSON string `{"<tag>":[["<asset>","<url>"],...]}`
//! written exactly as upstream's `json.dumps` writes it (see [`releases_data`]).
//!
//! Every request has a timeout, a cap on the answer's size and follows redirects only within the
//! same origin (credentials travel in headers and must not leak to another host). Errors never
//! carry credentials: URLs are built without them and validated not to embed any.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, USER_AGENT};
use serde::Deserialize;

use crate::domain::{push_py_json_string, GitPlatform};
use crate::git::GitCredentials;

/// Longest a whole release request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest the connection may take to establish.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read; a longer one is an error rather than a truncated list.
pub const MAX_RESPONSE_BYTES: usize = 5 * 1024 * 1024;
/// Most releases kept (the platforms list them newest first).
pub const MAX_RELEASES: usize = 100;
/// Redirects followed within the same origin.
const MAX_REDIRECTS: usize = 5;

/// One release: its tag and its assets as (name, download URL), in the platform's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub tag: String,
    pub assets: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The registry URL cannot name a project of the platform.
    #[error("the repository URL {0}")]
    BadUrl(String),
    #[error("release request failed: {0}")]
    Request(String),
    #[error("release API answered HTTP {0}")]
    Status(u16),
    #[error("release API answer is larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("release API answer is not a release list: {0}")]
    Invalid(String),
    /// The API's host is a local address (see `crate::net`).
    #[error("release API refused: {0}")]
    Refused(String),
}

/// The parts of an `http(s)://authority/path` registry URL.
#[derive(Debug, PartialEq, Eq)]
pub struct RepoUrl {
    pub scheme: String,
    /// `host[:port]`
    pub authority: String,
    /// Path segments, the last one without `.git`.
    pub segments: Vec<String>,
}

/// Splits a registry URL into scheme, authority and path segments (trailing `.git` removed).
pub fn parse_repo_url(url: &str) -> Result<RepoUrl, PlatformError> {
    let bad = |why: &str| Err(PlatformError::BadUrl(why.to_string()));
    let (scheme, rest) = match url.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s, rest),
        _ => return bad("is not an http(s) URL"),
    };
    if rest.contains(['?', '#']) {
        return bad("has a query or fragment");
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() || authority.contains('@') {
        return bad("has no valid host");
    }
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    let segments: Vec<String> = path.split('/').map(str::to_string).collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('%'))
    {
        return bad("has an empty, relative or escaped path segment");
    }
    Ok(RepoUrl {
        scheme: scheme.to_string(),
        authority: authority.to_string(),
        segments,
    })
}

/// `(owner, repo)` of a GitHub repository URL: exactly two path segments.
pub fn github_owner_repo(url: &str) -> Result<(String, String), PlatformError> {
    let parsed = parse_repo_url(url)?;
    let ok = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    match parsed.segments.as_slice() {
        [owner, repo] if ok(owner) && ok(repo) => Ok((owner.clone(), repo.clone())),
        _ => Err(PlatformError::BadUrl(
            "does not name a GitHub repository as /owner/repo".into(),
        )),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (so `/` becomes `%2F`).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The GitLab releases endpoint of a registry URL: the registry's own scheme and host, the
/// project named by its URL-encoded full path (groups and subgroups included).
pub fn gitlab_releases_url(url: &str) -> Result<String, PlatformError> {
    let parsed = parse_repo_url(url)?;
    if parsed.segments.len() < 2 {
        return Err(PlatformError::BadUrl(
            "does not name a GitLab project as /namespace/project".into(),
        ));
    }
    Ok(format!(
        "{}://{}/api/v4/projects/{}/releases?per_page={MAX_RELEASES}",
        parsed.scheme,
        parsed.authority,
        encode_component(&parsed.segments.join("/"))
    ))
}

/// The GitHub releases endpoint of a registry URL under `api_base` (`PU_GITHUB_API_URL`).
pub fn github_releases_url(api_base: &str, url: &str) -> Result<String, PlatformError> {
    let (owner, repo) = github_owner_repo(url)?;
    Ok(format!(
        "{}/repos/{owner}/{repo}/releases?per_page={MAX_RELEASES}",
        api_base.trim_end_matches('/')
    ))
}

#[derive(Deserialize)]
struct GithubRelease {
    tag_name: String,
    #[serde(default)]
    assets: Vec<GithubAsset>,
}

#[derive(Deserialize)]
struct GithubAsset {
    name: String,
    browser_download_url: String,
}

#[derive(Deserialize)]
struct GitlabRelease {
    tag_name: String,
    #[serde(default)]
    assets: GitlabAssets,
}

#[derive(Deserialize, Default)]
struct GitlabAssets {
    #[serde(default)]
    sources: Vec<GitlabSource>,
    #[serde(default)]
    links: Vec<GitlabLink>,
}

#[derive(Deserialize)]
struct GitlabSource {
    format: String,
    url: String,
}

#[derive(Deserialize)]
struct GitlabLink {
    name: String,
    url: String,
}

/// Releases from a GitHub `GET /repos/{owner}/{repo}/releases` answer.
pub fn parse_github(body: &[u8]) -> Result<Vec<Release>, PlatformError> {
    let list: Vec<GithubRelease> =
        serde_json::from_slice(body).map_err(|e| PlatformError::Invalid(e.to_string()))?;
    Ok(list
        .into_iter()
        .take(MAX_RELEASES)
        .map(|r| Release {
            tag: r.tag_name,
            assets: r
                .assets
                .into_iter()
                .map(|a| (a.name, a.browser_download_url))
                .collect(),
        })
        .collect())
}

/// Releases from a GitLab `GET /projects/{id}/releases` answer: sources (named by their
/// format) first, then links.
pub fn parse_gitlab(body: &[u8]) -> Result<Vec<Release>, PlatformError> {
    let list: Vec<GitlabRelease> =
        serde_json::from_slice(body).map_err(|e| PlatformError::Invalid(e.to_string()))?;
    Ok(list
        .into_iter()
        .take(MAX_RELEASES)
        .map(|r| Release {
            tag: r.tag_name,
            assets: r
                .assets
                .sources
                .into_iter()
                .map(|s| (s.format, s.url))
                .chain(r.assets.links.into_iter().map(|l| (l.name, l.url)))
                .collect(),
        })
        .collect())
}

/// The stored `releases_data` string for `releases`, or None when there are none (as upstream).
///
/// Written like Python's `json.dumps` (`", "` and `": "` separators, non-ASCII as `\uXXXX`), so
/// the stored text matches upstream's byte for byte. A tag listed twice keeps its first place and
/// its last assets, as a Python dict would.
pub fn releases_data(releases: &[Release]) -> Option<String> {
    if releases.is_empty() {
        return None;
    }
    let mut merged: Vec<(&str, &[(String, String)])> = Vec::with_capacity(releases.len());
    for r in releases {
        match merged.iter_mut().find(|(tag, _)| *tag == r.tag) {
            Some(slot) => slot.1 = &r.assets,
            None => merged.push((&r.tag, &r.assets)),
        }
    }
    let mut out = String::from("{");
    for (i, (tag, assets)) in merged.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_py_json_string(&mut out, tag);
        out.push_str(": [");
        for (j, (name, url)) in assets.iter().enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            out.push('[');
            push_py_json_string(&mut out, name);
            out.push_str(", ");
            push_py_json_string(&mut out, url);
            out.push(']');
        }
        out.push(']');
    }
    out.push('}');
    Some(out)
}

fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        format!("timed out after {}s", REQUEST_TIMEOUT.as_secs())
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Unless `allow_local`, the client connects only to checked, non-local addresses
/// (`crate::net`); every request URL must also pass [`crate::net::check_url`].
fn client(allow_local: bool) -> Result<reqwest::Client, PlatformError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("pepeunit/", env!("CARGO_PKG_VERSION"))),
    );
    crate::net::guard_client(reqwest::Client::builder(), allow_local)
        .default_headers(headers)
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let previous = attempt.previous();
            if previous.len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if previous
                .first()
                .is_some_and(|first| first.origin() == attempt.url().origin())
            {
                attempt.follow()
            } else {
                // another host must not receive the credential headers: report the 3xx
                attempt.stop()
            }
        }))
        .build()
        .map_err(|e| PlatformError::Request(describe(&e)))
}

/// Sends `request` and returns the body of a 2xx answer, at most [`MAX_RESPONSE_BYTES`].
async fn fetch(request: reqwest::RequestBuilder) -> Result<Vec<u8>, PlatformError> {
    let mut resp = request.send().await.map_err(|e| {
        // the resolver's refusal names the address class
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            if let Some(refused) = s.downcast_ref::<crate::net::NetError>() {
                return PlatformError::Refused(refused.to_string());
            }
            source = s.source();
        }
        PlatformError::Request(describe(&e))
    })?;
    if !resp.status().is_success() {
        return Err(PlatformError::Status(resp.status().as_u16()));
    }
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(PlatformError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| PlatformError::Request(describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(PlatformError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads the releases of a registry from its platform's API (newest first, at most
/// [`MAX_RELEASES`]). `github_api` is `PU_GITHUB_API_URL`; GitLab is asked on the registry's host.
/// Unless `allow_local` (`PU_ALLOW_LOCAL_NETWORK`), an API on a local address is refused.
pub async fn fetch_releases(
    github_api: &str,
    platform: GitPlatform,
    repository_url: &str,
    credentials: Option<&GitCredentials>,
    allow_local: bool,
) -> Result<Vec<Release>, PlatformError> {
    let http = client(allow_local)?;
    let checked = |url: String| {
        crate::net::check_url(&url, allow_local)
            .map(|()| url)
            .map_err(|e| PlatformError::Refused(e.to_string()))
    };
    match platform {
        GitPlatform::Github => {
            let url = checked(github_releases_url(github_api, repository_url)?)?;
            let mut req = http.get(url).header(ACCEPT, "application/vnd.github+json");
            if let Some(c) = credentials {
                req = req.basic_auth(&c.username, Some(&c.pat_token));
            }
            parse_github(&fetch(req).await?)
        }
        GitPlatform::Gitlab => {
            let url = checked(gitlab_releases_url(repository_url)?)?;
            let mut req = http.get(url).header(ACCEPT, "application/json");
            if let Some(c) = credentials {
                let mut token = HeaderValue::from_str(&c.pat_token).map_err(|_| {
                    PlatformError::Request("the access token is not a valid header value".into())
                })?;
                token.set_sensitive(true);
                req = req.header("PRIVATE-TOKEN", token);
            }
            parse_gitlab(&fetch(req).await?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_owner_and_repo_come_from_the_path() {
        for url in [
            "https://github.com/w7a8n1y4a/pepeunit_backend.git",
            "https://github.com/w7a8n1y4a/pepeunit_backend",
            "https://github.com/w7a8n1y4a/pepeunit_backend.git/",
            "http://127.0.0.1:8080/w7a8n1y4a/pepeunit_backend.git",
        ] {
            assert_eq!(
                github_owner_repo(url).unwrap(),
                ("w7a8n1y4a".to_string(), "pepeunit_backend".to_string()),
                "{url}"
            );
        }
        // only the suffix goes, not a `.git` inside the name
        assert_eq!(
            github_owner_repo("https://github.com/o/my.github.io.git").unwrap(),
            ("o".to_string(), "my.github.io".to_string())
        );
        for url in [
            "https://github.com/only.git",
            "https://github.com/a/b/c.git",
            "https://github.com//b.git",
            "https://github.com/a/../b.git",
            "https://github.com/a/b%2Fc.git",
            "https://github.com/a/b.git?x=1",
            "https://github.com/a/b.git#frag",
            "https://user:pat@github.com/a/b.git",
            "ftp://github.com/a/b.git",
            "github.com/a/b.git",
            "https:///a/b.git",
        ] {
            assert!(github_owner_repo(url).is_err(), "{url}");
        }
    }

    #[test]
    fn github_url_uses_the_configured_base() {
        assert_eq!(
            github_releases_url("https://api.github.com", "https://github.com/o/r.git").unwrap(),
            "https://api.github.com/repos/o/r/releases?per_page=100"
        );
        assert_eq!(
            github_releases_url("http://127.0.0.1:9000/api/", "https://github.com/o/r.git")
                .unwrap(),
            "http://127.0.0.1:9000/api/repos/o/r/releases?per_page=100"
        );
    }

    #[test]
    fn gitlab_project_ids_are_url_encoded_paths() {
        assert_eq!(
            gitlab_releases_url("https://git.pepemoss.com/pepe/pepeunit/units/universal_test_unit.git")
                .unwrap(),
            "https://git.pepemoss.com/api/v4/projects/pepe%2Fpepeunit%2Funits%2Funiversal_test_unit/releases?per_page=100"
        );
        assert_eq!(
            gitlab_releases_url("http://127.0.0.1:4321/group/project.git").unwrap(),
            "http://127.0.0.1:4321/api/v4/projects/group%2Fproject/releases?per_page=100"
        );
        assert_eq!(encode_component("a b+c/d~e.f_g-h"), "a%20b%2Bc%2Fd~e.f_g-h");
        assert_eq!(encode_component("ü"), "%C3%BC");
        for url in [
            "https://gitlab.com/project.git",
            "https://gitlab.com/",
            "https://gitlab.com/g//p.git",
            "https://gitlab.com/g/./p.git",
            "https://gitlab.com/g/p.git?private_token=x",
        ] {
            assert!(gitlab_releases_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn parse_keeps_scheme_authority_and_segments() {
        assert_eq!(
            parse_repo_url("https://host.example:8443/a/b/c.git").unwrap(),
            RepoUrl {
                scheme: "https".into(),
                authority: "host.example:8443".into(),
                segments: vec!["a".into(), "b".into(), "c".into()],
            }
        );
    }

    #[test]
    fn github_answers_give_name_and_download_url() {
        let body = br#"[
          {"id": 2, "tag_name": "v0.2.0", "name": "Release 0.2.0", "draft": false,
           "assets": [
             {"id": 11, "name": "esp32.bin", "content_type": "application/octet-stream", "size": 10,
              "url": "https://api.github.com/repos/o/r/releases/assets/11",
              "browser_download_url": "https://github.com/o/r/releases/download/v0.2.0/esp32.bin"}
           ]},
          {"id": 1, "tag_name": "v0.1.0", "assets": []}
        ]"#;
        assert_eq!(
            parse_github(body).unwrap(),
            vec![
                Release {
                    tag: "v0.2.0".into(),
                    assets: vec![(
                        "esp32.bin".into(),
                        "https://github.com/o/r/releases/download/v0.2.0/esp32.bin".into()
                    )],
                },
                Release {
                    tag: "v0.1.0".into(),
                    assets: vec![],
                },
            ]
        );
        assert!(parse_github(br#"{"message": "Not Found"}"#).is_err());
        assert!(parse_github(b"<html>").is_err());
    }

    #[test]
    fn gitlab_answers_give_sources_then_links() {
        let body = br#"[{"name": "0.2.0", "tag_name": "v0.2.0", "description": "",
          "assets": {"count": 3,
            "sources": [{"format": "zip", "url": "https://gl/g/p/-/archive/v0.2.0/p-v0.2.0.zip"}],
            "links": [{"id": 1, "name": "esp32.bin", "url": "https://gl/esp32.bin",
                       "direct_asset_url": "https://gl/d/esp32.bin", "link_type": "other"}]}}]"#;
        assert_eq!(
            parse_gitlab(body).unwrap(),
            vec![Release {
                tag: "v0.2.0".into(),
                assets: vec![
                    (
                        "zip".into(),
                        "https://gl/g/p/-/archive/v0.2.0/p-v0.2.0.zip".into()
                    ),
                    ("esp32.bin".into(), "https://gl/esp32.bin".into()),
                ],
            }]
        );
    }

    #[test]
    fn at_most_max_releases_are_kept() {
        let many: Vec<serde_json::Value> = (0..MAX_RELEASES + 5)
            .map(|i| serde_json::json!({"tag_name": format!("v{i}"), "assets": []}))
            .collect();
        let body = serde_json::to_vec(&many).unwrap();
        assert_eq!(parse_github(&body).unwrap().len(), MAX_RELEASES);
    }

    #[test]
    fn releases_data_is_written_like_python_json_dumps() {
        assert_eq!(releases_data(&[]), None);
        let releases = vec![
            Release {
                tag: "v0.2.0".into(),
                assets: vec![
                    ("zip".into(), "https://x/a.zip".into()),
                    ("esp32.bin".into(), "https://x/esp32.bin".into()),
                ],
            },
            Release {
                tag: "v0.1.0".into(),
                assets: vec![],
            },
            Release {
                tag: "v0.0.1".into(),
                assets: vec![("quote\"\\ é 🚀\n".into(), "u".into())],
            },
        ];
        let text = releases_data(&releases).unwrap();
        assert_eq!(
            text,
            r#"{"v0.2.0": [["zip", "https://x/a.zip"], ["esp32.bin", "https://x/esp32.bin"]], "v0.1.0": [], "v0.0.1": [["quote\"\\ \u00e9 \ud83d\ude80\n", "u"]]}"#
        );
        // and it is the format the readers parse
        let parsed: std::collections::BTreeMap<String, Vec<(String, String)>> =
            serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["v0.0.1"][0].0, "quote\"\\ é 🚀\n");
        assert_eq!(parsed["v0.2.0"].len(), 2);
    }

    #[tokio::test]
    async fn https_is_supported() {
        // a closed loopback port: the request must fail to connect, not for its scheme
        let err = fetch_releases(
            "https://127.0.0.1:9",
            GitPlatform::Github,
            "https://github.com/o/r.git",
            None,
            true,
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, PlatformError::Request(_)), "{text}");
        assert!(!text.contains("scheme"), "{text}");
    }

    #[tokio::test]
    async fn local_apis_are_refused_unless_allowed() {
        // a listening loopback server: refused before any request reaches it
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for (api, repo, platform) in [
            (
                format!("http://127.0.0.1:{port}"),
                "https://github.com/o/r.git".to_string(),
                GitPlatform::Github,
            ),
            (
                format!("http://localhost:{port}"),
                "https://github.com/o/r.git".to_string(),
                GitPlatform::Github,
            ),
            (
                String::new(),
                format!("http://127.0.0.1:{port}/group/project.git"),
                GitPlatform::Gitlab,
            ),
            (
                String::new(),
                "http://169.254.169.254/group/project.git".to_string(),
                GitPlatform::Gitlab,
            ),
        ] {
            let err = fetch_releases(&api, platform, &repo, None, false)
                .await
                .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, PlatformError::Refused(_)), "{repo}: {text}");
            assert!(
                text.contains("loopback") || text.contains("link-local"),
                "{repo}: {text}"
            );
        }
    }

    #[test]
    fn a_repeated_tag_keeps_its_place_and_last_assets() {
        let r = |tag: &str, asset: &str| Release {
            tag: tag.into(),
            assets: vec![(asset.into(), "u".into())],
        };
        assert_eq!(
            releases_data(&[r("a", "1"), r("b", "2"), r("a", "3")]).unwrap(),
            r#"{"a": [["3", "u"]], "b": [["2", "u"]]}"#
        );
    }
}
