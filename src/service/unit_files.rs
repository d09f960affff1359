//! The files a unit's firmware is built around: `env_example.json` and `schema_example.json`
//! read from its repo, and the generated `env.json` and `schema.json` (API.md §6).

use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::registries::git_error;
use super::repos::TargetVersion;
use super::Instance;
use crate::crypto;
use crate::domain::topic::{self, Base, Topic};
use crate::domain::{self, UnitNodeType};
use crate::error::{AppError, AppResult};
use crate::store::repos::Repo;
use crate::store::units::Unit;
use crate::store::{self};

/// Keys the instance generates; a repo's `env_example.json` cannot claim them.
pub const GENERATED_ENV_KEYS: &[&str] = &[
    "PU_DOMAIN",
    "PU_HTTP_TYPE",
    "PU_APP_PREFIX",
    "PU_API_ACTUAL_PREFIX",
    "PU_MQTT_HOST",
    "PU_MQTT_PORT",
    "PU_MQTT_PING_INTERVAL",
    "PU_MQTT_KEEPALIVE",
    "PU_AUTH_TOKEN",
    "PU_SECRET_KEY",
    "PU_ENCRYPT_KEY",
    "PU_STATE_SEND_INTERVAL",
    "PU_MIN_LOG_LEVEL",
    "PU_MAX_LOG_LENGTH",
    "PU_COMMIT_VERSION",
];

const MAX_REPO_FILE: usize = 1_000_000;

/// `schema_example.json`: the four topic lists a firmware declares.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SchemaExample {
    pub input_base_topic: Vec<String>,
    pub output_base_topic: Vec<String>,
    pub input_topic: Vec<String>,
    pub output_topic: Vec<String>,
}

/// Env keys owned by the instance (where it is, how to reach its broker, the device's
/// token); "update env from the instance" and imports rewrite them, developer keys and the
/// device's `PU_SECRET_KEY`/`PU_ENCRYPT_KEY` stay.
pub const INSTANCE_ENV_KEYS: &[&str] = &[
    "PU_DOMAIN",
    "PU_HTTP_TYPE",
    "PU_APP_PREFIX",
    "PU_API_ACTUAL_PREFIX",
    "PU_MQTT_HOST",
    "PU_MQTT_PORT",
    "PU_MQTT_PING_INTERVAL",
    "PU_MQTT_KEEPALIVE",
    "PU_AUTH_TOKEN",
];

pub fn parse_schema_example(bytes: &[u8]) -> AppResult<SchemaExample> {
    let bad = |m: String| AppError::unit(format!("schema_example.json is invalid: {m}"));
    if bytes.len() > MAX_REPO_FILE {
        return Err(bad("the file is too large".into()));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| bad("expected an object".into()))?;
    for key in [
        "input_base_topic",
        "output_base_topic",
        "input_topic",
        "output_topic",
    ] {
        if !obj.contains_key(key) {
            return Err(bad(format!("missing key {key}")));
        }
    }
    for (key, v) in obj {
        let list = v
            .as_array()
            .ok_or_else(|| bad(format!("{key} must be a list of topic names")))?;
        for t in list {
            let t = t
                .as_str()
                .ok_or_else(|| bad(format!("{key} must contain only strings")))?;
            if !domain::is_valid_topic_name(t) {
                return Err(bad(format!(
                    "topic {t:?} may contain only A-Z a-z 0-9 / _ - and must be shorter than 65435 characters"
                )));
            }
        }
    }
    let schema: SchemaExample = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    for (key, list) in [
        ("input_topic", &schema.input_topic),
        ("output_topic", &schema.output_topic),
    ] {
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = list.iter().find(|t| !seen.insert(*t)) {
            return Err(bad(format!("{key} lists {dup:?} twice")));
        }
    }
    Ok(schema)
}

/// `env_example.json`: a flat object of names to default strings, numbers or booleans.
pub fn parse_env_example(bytes: &[u8]) -> AppResult<Map<String, Value>> {
    let bad = |m: String| AppError::unit(format!("env_example.json is invalid: {m}"));
    if bytes.len() > MAX_REPO_FILE {
        return Err(bad("the file is too large".into()));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(bad("expected an object".into()));
    };
    for (k, v) in &map {
        if !(v.is_string() || v.is_number() || v.is_boolean() || v.is_null()) {
            return Err(bad(format!("{k} must be a string, a number or a boolean")));
        }
    }
    Ok(map)
}

/// Pretty JSON with 4-space indent, as written into archives.
pub fn to_json_4(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(value, &mut ser).expect("JSON values serialize");
    out
}

impl Instance {
    /// The version a unit should run: its repo's target, or its own pinned commit.
    pub async fn unit_target_version(&self, unit: &Unit, repo: &Repo) -> AppResult<TargetVersion> {
        if unit.is_auto_update_from_repo_unit {
            return self.repo_target_version(repo).await;
        }
        let commit = unit.repo_commit.clone().ok_or_else(|| {
            AppError::unit("Unit updated manually requires branch and commit to be filled out")
        })?;
        let tag = self
            .git
            .tags_of(repo.repository_registry_uuid, &commit)
            .await
            .map_err(git_error)?
            .into_iter()
            .next();
        Ok(TargetVersion { commit, tag })
    }

    /// Reads and validates both example files of a repo at a commit.
    pub async fn repo_files(
        &self,
        repo: &Repo,
        commit: &str,
    ) -> AppResult<(Map<String, Value>, SchemaExample)> {
        let registry = repo.repository_registry_uuid;
        let read = |path: &'static str| async move {
            self.git
                .read_file(registry, commit, path)
                .await
                .map_err(git_error)?
                .ok_or_else(|| AppError::unit(format!("{path} is missing in commit {commit}")))
        };
        let env = parse_env_example(&read("env_example.json").await?)?;
        let schema = parse_schema_example(&read("schema_example.json").await?)?;
        Ok((env, schema))
    }

    /// The unit's current token (its generation's; see [`crate::token`]).
    pub fn unit_token(&self, unit: &Unit) -> String {
        self.tokens.unit_token_of(unit.uuid, unit.token_generation)
    }

    pub(crate) fn generated_env(&self, unit: &Unit) -> Map<String, Value> {
        let c = &self.config;
        let mut m = Map::new();
        m.insert("PU_DOMAIN".into(), c.domain.clone().into());
        m.insert("PU_HTTP_TYPE".into(), c.http_type.clone().into());
        m.insert("PU_APP_PREFIX".into(), c.app_prefix.clone().into());
        m.insert("PU_API_ACTUAL_PREFIX".into(), c.api_prefix.clone().into());
        m.insert("PU_MQTT_HOST".into(), c.mqtt_host.clone().into());
        m.insert("PU_MQTT_PORT".into(), c.mqtt_port.into());
        m.insert("PU_MQTT_PING_INTERVAL".into(), c.mqtt_ping_interval.into());
        m.insert("PU_MQTT_KEEPALIVE".into(), c.mqtt_keepalive.into());
        m.insert("PU_AUTH_TOKEN".into(), self.unit_token(unit).into());
        m.insert("PU_SECRET_KEY".into(), crypto::random_b64(32).into());
        m.insert("PU_ENCRYPT_KEY".into(), crypto::random_b64(32).into());
        m.insert(
            "PU_STATE_SEND_INTERVAL".into(),
            c.state_send_interval.into(),
        );
        m.insert("PU_MIN_LOG_LEVEL".into(), c.min_log_level.clone().into());
        m.insert("PU_MAX_LOG_LENGTH".into(), c.max_log_length.into());
        m
    }

    fn stored_env(&self, unit: &Unit) -> AppResult<Map<String, Value>> {
        match &unit.cipher_env {
            None => Ok(Map::new()),
            Some(c) => match serde_json::from_str(&self.cipher.decrypt(c)?) {
                Ok(Value::Object(m)) => Ok(m),
                _ => Err(AppError::internal("stored env is not a JSON object")),
            },
        }
    }

    /// Merges `user > stored > generated > example`, keeps only allowed keys, and checks that
    /// every example key is resolved. `PU_COMMIT_VERSION` is not part of the result.
    pub(crate) fn merge_env(
        &self,
        unit: &Unit,
        example: &Map<String, Value>,
        user: Option<Map<String, Value>>,
    ) -> AppResult<Map<String, Value>> {
        let mut merged = Map::new();
        for layer in [
            example.clone(),
            self.generated_env(unit),
            self.stored_env(unit)?,
            user.unwrap_or_default(),
        ] {
            for (k, v) in layer {
                merged.insert(k, v);
            }
        }
        // always the unit's current token: a stored env may hold one from before a rotation
        // (or an import), and no other token would work
        merged.insert("PU_AUTH_TOKEN".into(), self.unit_token(unit).into());
        let allowed = |k: &str| {
            k != "PU_COMMIT_VERSION" && (GENERATED_ENV_KEYS.contains(&k) || example.contains_key(k))
        };
        merged.retain(|k, _| allowed(k));
        let unresolved: Vec<&String> = example
            .keys()
            .filter(|k| !GENERATED_ENV_KEYS.contains(&k.as_str()))
            .filter(|k| merged.get(*k).is_none_or(Value::is_null))
            .collect();
        if !unresolved.is_empty() {
            return Err(AppError::git_repo(format!(
                "This env file has {unresolved:?} unresolved variable"
            )));
        }
        Ok(merged)
    }

    /// Rewrites the keys of a unit's stored env that say where this instance is and who the
    /// device is ([`INSTANCE_ENV_KEYS`]) from the current configuration, keeping the
    /// developer's keys and the device's own secrets. Nothing to do without a stored env (the
    /// generated values are used anyway). Needs no git.
    pub async fn refresh_stored_env(&self, unit: &Unit) -> AppResult<bool> {
        let Some(cipher) = self.refreshed_env(unit)? else {
            return Ok(false);
        };
        store::units::set_env(self.pool(), unit.uuid, Some(cipher)).await?;
        self.units_cache.invalidate(unit.uuid);
        Ok(true)
    }

    /// The stored env with this instance's keys rewritten, encrypted; None without a stored
    /// env. For [`Self::refresh_stored_env`] and an import's transaction.
    pub(crate) fn refreshed_env(&self, unit: &Unit) -> AppResult<Option<String>> {
        if unit.cipher_env.is_none() {
            return Ok(None);
        }
        let mut env = self.stored_env(unit)?;
        let generated = self.generated_env(unit);
        for key in INSTANCE_ENV_KEYS {
            if let Some(v) = generated.get(*key) {
                env.insert(key.to_string(), v.clone());
            }
        }
        let text = serde_json::to_string(&env).map_err(AppError::internal)?;
        Ok(Some(self.cipher.encrypt(&text)?))
    }

    /// The `env.json` a device downloads (generated values are fresh until an env is saved).
    pub async fn build_unit_env(&self, unit: &Unit) -> AppResult<Map<String, Value>> {
        let repo = self.repo(unit.repo_uuid).await?;
        let version = self.unit_target_version(unit, &repo).await?;
        let (example, _) = self.repo_files(&repo, &version.commit).await?;
        let mut env = self.merge_env(unit, &example, None)?;
        env.insert("PU_COMMIT_VERSION".into(), version.commit.into());
        Ok(env)
    }

    /// Validates and stores a user's env (encrypted).
    pub async fn save_unit_env(&self, unit: &Unit, env_json_string: &str) -> AppResult<()> {
        let user: Map<String, Value> = match serde_json::from_str(env_json_string) {
            Ok(Value::Object(m)) => m,
            _ => return Err(AppError::json("Data env.json is invalid")),
        };
        let repo = self.repo(unit.repo_uuid).await?;
        let version = self.unit_target_version(unit, &repo).await?;
        let (example, _) = self.repo_files(&repo, &version.commit).await?;
        let merged = self.merge_env(unit, &example, Some(user))?;
        let cipher = self
            .cipher
            .encrypt(&serde_json::to_string(&merged).map_err(AppError::internal)?)?;
        store::units::set_env(self.pool(), unit.uuid, Some(cipher)).await?;
        self.units_cache.invalidate(unit.uuid);
        Ok(())
    }

    /// The `schema.json` of a unit: its topics as the broker sees them.
    pub async fn build_unit_schema(&self, unit: &Unit) -> AppResult<Value> {
        let repo = self.repo(unit.repo_uuid).await?;
        let version = self.unit_target_version(unit, &repo).await?;
        let (_, schema) = self.repo_files(&repo, &version.commit).await?;
        let domain = &self.config.domain;
        let base = |base: Base, names: &[String]| -> Map<String, Value> {
            names
                .iter()
                .map(|n| {
                    let topic = topic::schema_base_topic(domain, base, unit.uuid, n);
                    (n.clone(), Value::Array(vec![topic.into()]))
                })
                .collect()
        };
        let mut input_topic = Map::new();
        let mut output_topic = Map::new();
        let bridged = self.bridged_topics(unit.uuid).await?;
        for (node, links) in store::unit_nodes::by_unit_with_links(self.pool(), unit.uuid).await? {
            let own = self.node_topic(node.uuid, &node.topic_name);
            match node.node_type {
                UnitNodeType::Input => {
                    let mut topics = vec![Value::from(own)];
                    for (out, out_topic) in links {
                        topics.push(self.node_topic(out, &out_topic).into());
                    }
                    // bridges from other instances come after local links (SPEC §11)
                    topics.extend(
                        bridged
                            .iter()
                            .filter(|(input, _)| *input == node.uuid)
                            .map(|(_, topic)| Value::from(topic.as_str())),
                    );
                    input_topic.insert(node.topic_name, Value::Array(topics));
                }
                UnitNodeType::Output => {
                    output_topic.insert(node.topic_name, Value::Array(vec![own.into()]));
                }
            }
        }
        let mut out = Map::new();
        out.insert(
            "input_base_topic".into(),
            base(Base::Input, &schema.input_base_topic).into(),
        );
        out.insert(
            "output_base_topic".into(),
            base(Base::Output, &schema.output_base_topic).into(),
        );
        out.insert("input_topic".into(), input_topic.into());
        out.insert("output_topic".into(), output_topic.into());
        Ok(Value::Object(out))
    }

    /// `{domain}/{node_uuid}`, with `/pepeunit` when the topic name ends with it.
    pub fn node_topic(&self, node: Uuid, topic_name: &str) -> String {
        Topic::node(&self.config.domain, node, topic_name).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_example_rules() {
        let ok = br#"{"input_base_topic":["update/pepeunit"],"output_base_topic":["state/pepeunit"],"input_topic":["in/pepeunit"],"output_topic":["out"],"extra":[]}"#;
        assert_eq!(
            parse_schema_example(ok).unwrap().input_topic,
            vec!["in/pepeunit"]
        );
        for bad in [
            &br#"{"input_base_topic":[],"output_base_topic":[],"input_topic":[]}"#[..],
            br#"{"input_base_topic":[],"output_base_topic":[],"input_topic":["a b"],"output_topic":[]}"#,
            br#"{"input_base_topic":[],"output_base_topic":[],"input_topic":[1],"output_topic":[]}"#,
            br#"{"input_base_topic":"x","output_base_topic":[],"input_topic":[],"output_topic":[]}"#,
            br#"{"input_base_topic":[],"output_base_topic":[],"input_topic":["a","a"],"output_topic":[]}"#,
            b"not json",
            b"[]",
        ] {
            assert!(parse_schema_example(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn env_example_is_flat() {
        assert!(parse_env_example(br#"{"A":"x","B":1,"C":true}"#).is_ok());
        assert!(parse_env_example(br#"{"A":{"nested":1}}"#).is_err());
        assert!(parse_env_example(br#"["A"]"#).is_err());
    }

    #[test]
    fn json_is_indented_by_four() {
        let v = serde_json::json!({"a": 1});
        assert_eq!(
            String::from_utf8(to_json_4(&v)).unwrap(),
            "{\n    \"a\": 1\n}"
        );
    }
}
