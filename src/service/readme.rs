//! The README generator: a Unit developer's machine-readable `pepeunit.toml` becomes the
//! human-readable `readme.md` every Unit repository is expected to carry
//! (`POST /units/convert_toml_to_md`).
//!
//! The layout is upstream's: a `# name` title and a `Parameter | Implementation` table from
//! `[general]`, then, each only when present, `## Video`, one `##` section per `[images]` key,
//! `## Models`, `## Files`, `## Physical IO`, `## Env variable assignment`,
//! `## Assignment of Device Topics`, `## Work algorithm` and `## Installation`. Sections this
//! generator does not know are ignored, as upstream does.
//!
//! Validation is stricter than rendering needs so that a mistake is reported, not silently
//! dropped: the file must be UTF-8 TOML of at most [`MAX_TOML_CHARS`] characters, have a
//! `[general]` table with a `name`, keep the lengths below, use one value type per array (the
//! rule of the TOML dialect upstream parses with, which its docs spell out), and give each known
//! section values of the documented shape. Every failure is a 422 `Readme Generation Error`.

use toml::{Table, Value};

use crate::domain::AgentType;
use crate::error::{AppError, AppResult};
use crate::service::{Agent, Instance};

/// The largest accepted `pepeunit.toml`, in characters (API.md: `≤10,000 chars`).
pub const MAX_TOML_CHARS: usize = 10_000;
/// `general.name` is the README title: a short name, not a sentence.
pub const MAX_NAME_CHARS: usize = 50;
/// Any other text value of `[general]` (`description` is meant to be 1-5 sentences).
pub const MAX_GENERAL_TEXT_CHARS: usize = 1_000;
/// Items of one `[general]` list (`hardware`, `firmware`, `stack`, `authors`).
pub const MAX_GENERAL_ITEMS: usize = 20;

impl Instance {
    /// `POST /units/convert_toml_to_md`: any User may render a `pepeunit.toml`.
    pub fn convert_toml_to_md(&self, agent: &Agent, file: &[u8]) -> AppResult<String> {
        agent.require(&[AgentType::User])?;
        toml_to_markdown(file)
    }
}

/// Validates the raw bytes of a `pepeunit.toml` and renders its `readme.md`.
pub fn toml_to_markdown(file: &[u8]) -> AppResult<String> {
    let text =
        std::str::from_utf8(file).map_err(|_| AppError::readme("The file is not UTF-8 text"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let chars = text.chars().count();
    if chars > MAX_TOML_CHARS {
        return Err(AppError::readme(format!(
            "The file is {chars} characters long, although only <= {MAX_TOML_CHARS} is allowed"
        )));
    }
    let doc: Table = text.parse().map_err(|e: toml::de::Error| {
        AppError::readme(format!(
            "Invalid TOML{}: {}",
            position(text, &e),
            e.message()
        ))
    })?;
    for (key, value) in &doc {
        check_homogeneous(key, value)?;
    }
    Readme::new(&doc)?.render()
}

/// ` at line L, column C` of a parse error, when the parser knows where it failed.
fn position(text: &str, err: &toml::de::Error) -> String {
    let Some(span) = err.span() else {
        return String::new();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    format!(" at line {line}, column {column}")
}

/// Every array holds one type of value, recursively.
fn check_homogeneous(path: &str, value: &Value) -> AppResult<()> {
    match value {
        Value::Array(items) => {
            if let Some(first) = items.first() {
                if let Some(other) = items.iter().find(|v| v.type_str() != first.type_str()) {
                    return Err(AppError::readme(format!(
                        "{path} mixes {} and {} items: all items of a list must have one type",
                        first.type_str(),
                        other.type_str()
                    )));
                }
            }
            for (i, item) in items.iter().enumerate() {
                check_homogeneous(&format!("{path}[{i}]"), item)?;
            }
        }
        Value::Table(table) => {
            for (key, item) in table {
                check_homogeneous(&format!("{path}.{key}"), item)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The known sections of one document, checked to be tables.
struct Readme<'a> {
    general: &'a Table,
    video: Option<&'a Table>,
    images: Option<&'a Table>,
    models: Option<&'a Table>,
    files: Option<&'a Table>,
    physical_io: Option<&'a Table>,
    env_description: Option<&'a Table>,
    topic_assignment: Option<&'a Table>,
    work_algorithm: Option<&'a Table>,
    installation: Option<&'a Table>,
    lines: Vec<String>,
}

fn section<'a>(doc: &'a Table, name: &str) -> AppResult<Option<&'a Table>> {
    match doc.get(name) {
        None => Ok(None),
        Some(Value::Table(t)) => Ok(Some(t)),
        Some(other) => Err(AppError::readme(format!(
            "[{name}] must be a table, not {}",
            other.type_str()
        ))),
    }
}

impl<'a> Readme<'a> {
    fn new(doc: &'a Table) -> AppResult<Self> {
        let general = section(doc, "general")?
            .ok_or_else(|| AppError::readme("The [general] section is required"))?;
        Ok(Readme {
            general,
            video: section(doc, "video")?,
            images: section(doc, "images")?,
            models: section(doc, "models")?,
            files: section(doc, "files")?,
            physical_io: section(doc, "physical_io")?,
            env_description: section(doc, "env_description")?,
            topic_assignment: section(doc, "topic_assignment")?,
            work_algorithm: section(doc, "work_algorithm")?,
            installation: section(doc, "installation")?,
            lines: Vec::new(),
        })
    }

    fn render(mut self) -> AppResult<String> {
        self.general_section()?;
        self.video_section()?;
        self.images_section()?;
        self.models_section()?;
        self.files_section()?;
        let tables = [
            (self.physical_io, "physical_io", "Physical IO", "Key"),
            (
                self.env_description,
                "env_description",
                "Env variable assignment",
                "Variable",
            ),
            (
                self.topic_assignment,
                "topic_assignment",
                "Assignment of Device Topics",
                "Topic",
            ),
        ];
        for (table, name, heading, column) in tables {
            if let Some(table) = table {
                self.description_table(table, name, heading, column)?;
            }
        }
        self.steps_section(self.work_algorithm, "work_algorithm", "Work algorithm")?;
        self.steps_section(self.installation, "installation", "Installation")?;
        let text = self.lines.join("\n");
        Ok(format!("{}\n", text.trim_end()))
    }

    fn push(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    fn heading(&mut self, title: &str) {
        self.push(format!("## {title}"));
        self.push("");
    }

    /// `# name`, then one `Parameter | Implementation` row per other key, in file order.
    fn general_section(&mut self) -> AppResult<()> {
        let name = match self.general.get("name") {
            Some(Value::String(s)) if !s.trim().is_empty() => inline(s),
            _ => {
                return Err(AppError::readme(
                    "general.name is required and must be a non-empty string",
                ))
            }
        };
        check_length("general.name", &name, MAX_NAME_CHARS)?;
        self.push(format!("# {name}"));
        self.push("");

        let mut rows = Vec::new();
        for (key, value) in self.general {
            if key == "name" {
                continue;
            }
            let path = format!("general.{key}");
            if let Some(text) = general_value(&path, key, value)? {
                rows.push(format!("{} | {}", general_label(key), cell(&text)));
            }
        }
        if !rows.is_empty() {
            self.push("Parameter | Implementation");
            self.push("-- | --");
            self.lines.extend(rows);
            self.push("");
        }
        Ok(())
    }

    /// `## Video` with one clickable preview per entry: `name = {preview = "...", link = "..."}`.
    fn video_section(&mut self) -> AppResult<()> {
        let Some(video) = self.video.filter(|t| !t.is_empty()) else {
            return Ok(());
        };
        let mut entries = Vec::new();
        for (key, value) in video {
            let path = format!("video.{key}");
            let Value::Table(entry) = value else {
                return Err(AppError::readme(format!(
                    "{path} must be a table like {{preview = \"<image url>\", link = \"<video url>\"}}"
                )));
            };
            let preview = required_text(entry, &path, "preview")?;
            let link = required_text(entry, &path, "link")?;
            entries.push(format!("[![{}]({preview})]({link})", inline(key)));
        }
        self.heading("Video");
        for entry in entries {
            self.push(entry);
            self.push("");
        }
        Ok(())
    }

    /// One section per key (`schema` becomes `## Schema`; a key starting with `#` is kept as
    /// the heading itself), holding its centred image or images.
    fn images_section(&mut self) -> AppResult<()> {
        let Some(images) = self.images else {
            return Ok(());
        };
        for (title, value) in images {
            let path = format!("images.{title}");
            let urls = match value {
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| text_value(&format!("{path}[{i}]"), v))
                    .collect::<AppResult<Vec<_>>>()?,
                other => vec![text_value(&path, other)?],
            };
            let title = inline(title);
            if title.is_empty() {
                continue;
            }
            let heading = if title.starts_with('#') {
                title
            } else {
                format!("## {}", capitalize(&title))
            };
            self.push(heading);
            self.push("");
            for url in urls {
                self.push(format!(
                    "<div align=\"center\"><img align=\"center\" src=\"{url}\"></div>"
                ));
            }
            self.push("");
        }
        Ok(())
    }

    /// `## Models`: a `Version | Description | Link` table from lists of
    /// `{version = "...", description = "...", link = "..."}`.
    fn models_section(&mut self) -> AppResult<()> {
        let Some(models) = self.models else {
            return Ok(());
        };
        let mut rows = Vec::new();
        for (key, value) in models {
            let path = format!("models.{key}");
            let Value::Array(items) = value else {
                return Err(AppError::readme(format!(
                    "{path} must be a list of {{version, description, link}} tables"
                )));
            };
            for (i, item) in items.iter().enumerate() {
                let path = format!("{path}[{i}]");
                let Value::Table(model) = item else {
                    return Err(AppError::readme(format!(
                        "{path} must be a table like {{version = \"v1\", description = \"...\", link = \"<url>\"}}"
                    )));
                };
                let version = optional_text(model, &path, "version")?;
                let description = optional_text(model, &path, "description")?;
                let link = optional_text(model, &path, "link")?;
                let link = if link.is_empty() {
                    String::new()
                } else {
                    format!("[link]({link})")
                };
                rows.push(format!(
                    "{} | {} | {}",
                    cell(&version),
                    cell(&description),
                    cell(&link)
                ));
            }
        }
        if !rows.is_empty() {
            self.heading("Models");
            self.push("Version | Description | Link");
            self.push("-- | -- | --");
            self.lines.extend(rows);
            self.push("");
        }
        Ok(())
    }

    /// `## Files`: a numbered list of `"title" = "url"` links (a blank title shows the url).
    fn files_section(&mut self) -> AppResult<()> {
        let Some(files) = self.files else {
            return Ok(());
        };
        let mut items = Vec::new();
        for (name, value) in files {
            let url = text_value(&format!("files.{name}"), value)?;
            if url.is_empty() {
                continue;
            }
            let name = inline(name);
            let name = if name.is_empty() { url.clone() } else { name };
            items.push(format!("{}. [{name}]({url})", items.len() + 1));
        }
        if !items.is_empty() {
            self.heading("Files");
            self.lines.extend(items);
            self.push("");
        }
        Ok(())
    }

    /// A two-column table: the key in backticks, then its description.
    fn description_table(
        &mut self,
        table: &Table,
        name: &str,
        heading: &str,
        column: &str,
    ) -> AppResult<()> {
        if table.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::new();
        for (key, value) in table {
            let description = text_value(&format!("{name}.{key}"), value)?;
            rows.push(format!("`{}` | {}", cell(key), cell(&description)));
        }
        self.heading(heading);
        self.push(format!("{column} | Description"));
        self.push("-- | --");
        self.lines.extend(rows);
        self.push("");
        Ok(())
    }

    /// A numbered list from the section's `steps = [...]`.
    fn steps_section(&mut self, table: Option<&Table>, name: &str, heading: &str) -> AppResult<()> {
        let Some(steps) = table.and_then(|t| t.get("steps")) else {
            return Ok(());
        };
        let path = format!("{name}.steps");
        let Value::Array(steps) = steps else {
            return Err(AppError::readme(format!(
                "{path} must be a list of strings"
            )));
        };
        if steps.is_empty() {
            return Ok(());
        }
        let steps = steps
            .iter()
            .enumerate()
            .map(|(i, v)| text_value(&format!("{path}[{i}]"), v))
            .collect::<AppResult<Vec<_>>>()?;
        self.heading(heading);
        for (i, step) in steps.iter().enumerate() {
            self.push(format!("{}. {step}", i + 1));
        }
        self.push("");
        Ok(())
    }
}

/// Row label of a `[general]` key; unknown keys are shown as written.
fn general_label(key: &str) -> &str {
    match key {
        "description" => "Description",
        "language" => "Lang",
        "hardware" => "Hardware",
        "firmware" => "Firmware",
        "stack" => "Stack",
        "version" => "Version",
        "license" => "License",
        "authors" => "Authors",
        other => other,
    }
}

/// The table cell of one `[general]` value, or None for an empty value (its row is left out).
fn general_value(path: &str, key: &str, value: &Value) -> AppResult<Option<String>> {
    if let Value::Array(items) = value {
        if items.len() > MAX_GENERAL_ITEMS {
            return Err(AppError::readme(format!(
                "{path} has {} items, although only <= {MAX_GENERAL_ITEMS} are allowed",
                items.len()
            )));
        }
    }
    let text = match (key, value) {
        ("hardware" | "firmware" | "stack", Value::Array(items)) => link_list(path, items)?,
        ("hardware" | "firmware" | "stack", _) => {
            return Err(AppError::readme(format!(
                "{path} must be a list of strings or of {{name, link}} tables"
            )))
        }
        ("authors", Value::Array(items)) => authors(path, items)?,
        ("authors", _) => {
            return Err(AppError::readme(format!(
                "{path} must be a list of {{name, email}} tables"
            )))
        }
        ("language", Value::String(s)) => {
            let s = inline(s);
            check_length(path, &s, MAX_GENERAL_TEXT_CHARS)?;
            if s.is_empty() {
                String::new()
            } else {
                format!("`{s}`")
            }
        }
        ("language", _) => return Err(AppError::readme(format!("{path} must be a string"))),
        (_, Value::Array(items)) => link_list(path, items)?,
        (_, other) => {
            let s = text_value(path, other)?;
            check_length(path, &s, MAX_GENERAL_TEXT_CHARS)?;
            s
        }
    };
    Ok((!text.is_empty()).then_some(text))
}

/// `` `esp32`, `ds18b20` `` for strings, `[name](link)` for `{name, link}` tables.
fn link_list(path: &str, items: &[Value]) -> AppResult<String> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let text = match item {
            Value::Table(t) => {
                let name = optional_text(t, &path, "name")?;
                let link = optional_text(t, &path, "link")?;
                match (name.is_empty(), link.is_empty()) {
                    (false, false) => format!("[{name}]({link})"),
                    (true, false) => format!("[{link}]({link})"),
                    (false, true) => name,
                    (true, true) => {
                        return Err(AppError::readme(format!("{path} needs a name or a link")))
                    }
                }
            }
            other => format!("`{}`", text_value(&path, other)?),
        };
        check_length(&path, &text, MAX_GENERAL_TEXT_CHARS)?;
        out.push(text);
    }
    Ok(out.join(", "))
}

/// `Name <email>` per author.
fn authors(path: &str, items: &[Value]) -> AppResult<String> {
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let Value::Table(t) = item else {
            return Err(AppError::readme(format!(
                "{path} must be a table like {{name = \"...\", email = \"...\"}}"
            )));
        };
        let name = optional_text(t, &path, "name")?;
        let email = optional_text(t, &path, "email")?;
        let text = match (name.is_empty(), email.is_empty()) {
            (false, false) => format!("{name} <{email}>"),
            (false, true) => name,
            (true, false) => format!("<{email}>"),
            (true, true) => continue,
        };
        check_length(&path, &text, MAX_GENERAL_TEXT_CHARS)?;
        out.push(text);
    }
    Ok(out.join(", "))
}

/// A required non-empty text field of an inline table.
fn required_text(table: &Table, path: &str, key: &str) -> AppResult<String> {
    let text = optional_text(table, path, key)?;
    if text.is_empty() {
        return Err(AppError::readme(format!("{path}.{key} is required")));
    }
    Ok(text)
}

/// A text field of an inline table, `""` when absent.
fn optional_text(table: &Table, path: &str, key: &str) -> AppResult<String> {
    match table.get(key) {
        None => Ok(String::new()),
        Some(v) => text_value(&format!("{path}.{key}"), v),
    }
}

/// A scalar as one line of text; lists and tables are refused.
fn text_value(path: &str, value: &Value) -> AppResult<String> {
    Ok(match value {
        Value::String(s) => inline(s),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) if f.is_finite() && f.fract() == 0.0 => format!("{f:.1}"),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => d.to_string(),
        Value::Array(_) | Value::Table(_) => {
            return Err(AppError::readme(format!(
                "{path} must be a text value, not {}",
                value.type_str()
            )))
        }
    })
}

/// Trimmed, with line breaks folded into spaces: every value lands on one Markdown line.
fn inline(s: &str) -> String {
    s.split(['\r', '\n'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A table cell: a literal `|` would start a new column.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// Python's `str.capitalize`, which upstream applies to image headings.
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}

fn check_length(path: &str, text: &str, max: usize) -> AppResult<()> {
    let len = text.chars().count();
    if len > max {
        return Err(AppError::readme(format!(
            "{path} is {len} characters long, although only <= {max} is allowed"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Rule;

    /// The upstream docs' example `pepeunit.toml` (docs/en/developer/files/struct-pepeunit-toml.md).
    pub const EXAMPLE: &str = r#"[general]
name = "Fan Regulator ds18b20"
description = "Regulates fan speed depending on temperature. Publishes current temperature and `16bit` duty cycle"
language = "Micropython"
hardware = ["esp32", "esp32c3", "ds18b20", "4pin fan", "4.7kOhm resistor", "wires"]
firmware = [
  {name = "RELEASE-1.1.1", link = "https://git.example.com/pepeunit_micropython_client/-/releases/1.1.1"}
]
stack = ["pepeunit_micropython_client"]
version = "1.1.1"
license = "AGPL v3 License"
authors = [
    {name = "Ivan Serebrennikov", email = "admin@example.com"}
]

[video]
video = {preview = "https://media.example.com/video/prev.jpg", link = "https://video.example.com/watch?v=r1"}

[images]
schema = "https://media.example.com/schema/schema_fan_4pin_unit.png"

[models]
models = [
  {version = "v0", description = "Capsule insert", link = "https://media.example.com/model/capsule_insert.stl"},
  {version = "v0", description = "Capsule panel", link = "https://media.example.com/model/capsule_panel.stl"}
]

[files]
"Delta `4Pin PWM` fan documentation" = "https://www.delta-fan.com/products/ffb1212eh.html"

[physical_io]
"client.settings.PIN_FAN" = "Duty cycle control for the fan"
"client.settings.PIN_DS18B20" = "Digital temperature value from the `ds18b20` sensor"

[env_description]
PIN_FAN = "`Pin` number responsible for the fan control signal"
PUC_WIFI_SSID = "`WiFi` network name"

[topic_assignment]
"set_fan_state/pepeunit" = "Accepts a `json` value – `{\"sleep\": 15, \"duty\": 65535}`"
"current_temp/pepeunit" = "Current temperature as text, e.g. `27.5`"

[work_algorithm]
steps = [
  "Connect to `WiFi`",
  "Connect to the `MQTT` Broker",
]

[installation]
steps = [
  "Flash the `Micropython` image specified in `firmware` onto the `esp32`",
  "Create a `Unit` in `Pepeunit`",
]
"#;

    const EXPECTED: &str = r#"# Fan Regulator ds18b20

Parameter | Implementation
-- | --
Description | Regulates fan speed depending on temperature. Publishes current temperature and `16bit` duty cycle
Lang | `Micropython`
Hardware | `esp32`, `esp32c3`, `ds18b20`, `4pin fan`, `4.7kOhm resistor`, `wires`
Firmware | [RELEASE-1.1.1](https://git.example.com/pepeunit_micropython_client/-/releases/1.1.1)
Stack | `pepeunit_micropython_client`
Version | 1.1.1
License | AGPL v3 License
Authors | Ivan Serebrennikov <admin@example.com>

## Video

[![video](https://media.example.com/video/prev.jpg)](https://video.example.com/watch?v=r1)

## Schema

<div align="center"><img align="center" src="https://media.example.com/schema/schema_fan_4pin_unit.png"></div>

## Models

Version | Description | Link
-- | -- | --
v0 | Capsule insert | [link](https://media.example.com/model/capsule_insert.stl)
v0 | Capsule panel | [link](https://media.example.com/model/capsule_panel.stl)

## Files

1. [Delta `4Pin PWM` fan documentation](https://www.delta-fan.com/products/ffb1212eh.html)

## Physical IO

Key | Description
-- | --
`client.settings.PIN_FAN` | Duty cycle control for the fan
`client.settings.PIN_DS18B20` | Digital temperature value from the `ds18b20` sensor

## Env variable assignment

Variable | Description
-- | --
`PIN_FAN` | `Pin` number responsible for the fan control signal
`PUC_WIFI_SSID` | `WiFi` network name

## Assignment of Device Topics

Topic | Description
-- | --
`set_fan_state/pepeunit` | Accepts a `json` value – `{"sleep": 15, "duty": 65535}`
`current_temp/pepeunit` | Current temperature as text, e.g. `27.5`

## Work algorithm

1. Connect to `WiFi`
2. Connect to the `MQTT` Broker

## Installation

1. Flash the `Micropython` image specified in `firmware` onto the `esp32`
2. Create a `Unit` in `Pepeunit`
"#;

    fn render(text: &str) -> AppResult<String> {
        toml_to_markdown(text.as_bytes())
    }

    fn error(text: &[u8]) -> String {
        let err = toml_to_markdown(text).expect_err("must be refused");
        assert!(
            matches!(
                &err,
                AppError::Invalid {
                    rule: Rule::Readme,
                    ..
                }
            ),
            "{err:?}"
        );
        err.detail()
    }

    #[test]
    fn readme_renders_the_docs_example_in_upstream_layout() {
        assert_eq!(render(EXAMPLE).unwrap(), EXPECTED);
    }

    #[test]
    fn readme_keeps_file_order_and_leaves_out_what_is_missing() {
        let md = render(
            "[general]\nname = \" Only General \"\nversion = \"2\"\nlanguage = \"Go\"\nhardware = []\n\n[files]\n\"\" = \"https://x/a.bin\"\nskipped = \"\"\n",
        )
        .unwrap();
        assert_eq!(
            md,
            "# Only General\n\nParameter | Implementation\n-- | --\nVersion | 2\nLang | `Go`\n\n## Files\n\n1. [https://x/a.bin](https://x/a.bin)\n"
        );
        assert_eq!(render("[general]\nname = \"Bare\"\n").unwrap(), "# Bare\n");
    }

    #[test]
    fn readme_image_headings_lists_and_escaping() {
        let md = render(
            "[general]\nname = \"N\"\n[images]\n\"photo OF unit\" = [\"https://x/1.png\", \"https://x/2.png\"]\n\"### Custom\" = \"https://x/3.png\"\n[physical_io]\n\"PIN\" = \"a | b\"\n",
        )
        .unwrap();
        assert!(md.contains("## Photo of unit\n\n<div align=\"center\"><img align=\"center\" src=\"https://x/1.png\"></div>\n<div align=\"center\"><img align=\"center\" src=\"https://x/2.png\"></div>\n"), "{md}");
        assert!(md.contains("### Custom\n\n<div"), "{md}");
        assert!(md.contains("`PIN` | a \\| b"), "{md}");
    }

    #[test]
    fn readme_general_lists_accept_names_links_and_authors_variants() {
        let md = render(
            "[general]\nname = \"N\"\nfirmware = [{link = \"https://x/f\"}, {name = \"only name\"}]\nauthors = [{email = \"a@x\"}, {name = \"B\"}]\ncount = 3\nratio = 1.0\n",
        )
        .unwrap();
        assert!(
            md.contains("Firmware | [https://x/f](https://x/f), only name\n"),
            "{md}"
        );
        assert!(md.contains("Authors | <a@x>, B\n"), "{md}");
        assert!(md.contains("count | 3\nratio | 1.0\n"), "{md}");
    }

    #[test]
    fn readme_refuses_non_utf8() {
        assert!(error(b"[general]\nname = \"\xff\xfe\"\n").contains("not UTF-8"));
    }

    #[test]
    fn readme_refuses_more_than_10000_characters() {
        let mut text = String::from("[general]\nname = \"N\"\n");
        while text.chars().count() <= MAX_TOML_CHARS {
            text.push_str("# ёёёёёёёёёёёёёёёёёёёёёёёёёёёёёё\n");
        }
        let detail = error(text.as_bytes());
        assert!(detail.contains("only <= 10000 is allowed"), "{detail}");
        // exactly at the limit, counted in characters rather than bytes, is fine
        let mut ok = String::from("[general]\nname = \"N\"\n#");
        while ok.chars().count() < MAX_TOML_CHARS {
            ok.push('ё');
        }
        assert!(ok.len() > MAX_TOML_CHARS);
        render(&ok).unwrap();
    }

    #[test]
    fn readme_refuses_invalid_toml_with_its_position() {
        let detail = error("[general]\ndescription = \"unterminated\n".as_bytes());
        assert!(
            detail.contains("422: 16: Readme Generation Error: Invalid TOML at line 2"),
            "{detail}"
        );
    }

    #[test]
    fn readme_refuses_missing_required_sections() {
        assert!(
            error(b"[files]\na = \"https://x\"\n").contains("The [general] section is required")
        );
        assert!(error(b"[general]\nversion = \"1\"\n").contains("general.name is required"));
        assert!(error(b"[general]\nname = \"  \"\n").contains("general.name is required"));
        assert!(error(b"general = \"x\"\n").contains("[general] must be a table"));
        assert!(
            error(b"[general]\nname = \"N\"\n[work_algorithm]\nsteps = \"one\"\n")
                .contains("work_algorithm.steps must be a list of strings")
        );
        assert!(error(
            b"[general]\nname = \"N\"\n[video]\nvideo = {preview = \"https://x/p.jpg\"}\n"
        )
        .contains("video.video.link is required"));
        assert!(
            error(b"[general]\nname = \"N\"\n[physical_io]\nPIN = [\"a\"]\n")
                .contains("physical_io.PIN must be a text value, not array")
        );
    }

    #[test]
    fn readme_refuses_too_long_general_text_and_too_many_items() {
        // upstream's bad_general_text / bad_general_items cases
        let detail = error(
            "[general]\nname = \"WiFi Temp Sensor ds18b20 wery wery long name, is soo bad\"\n"
                .as_bytes(),
        );
        assert!(
            detail.contains("general.name is 56 characters long"),
            "{detail}"
        );
        let items = vec!["'a'"; 43].join(",");
        let detail = error(format!("[general]\nname = \"N\"\nhardware = [{items},]\n").as_bytes());
        assert!(
            detail.contains("general.hardware has 43 items, although only <= 20"),
            "{detail}"
        );
        let long = "x".repeat(MAX_GENERAL_TEXT_CHARS + 1);
        assert!(
            error(format!("[general]\nname = \"N\"\ndescription = \"{long}\"\n").as_bytes())
                .contains("general.description is 1001 characters long")
        );
    }

    #[test]
    fn readme_refuses_mixed_lists() {
        let detail = error(b"[general]\nname = \"N\"\nhardware = [\"test\", {name = \"Ivan\"}]\n");
        assert!(
            detail.contains("general.hardware mixes string and table items"),
            "{detail}"
        );
    }
}
