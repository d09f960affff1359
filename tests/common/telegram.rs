//! A local fake of the Telegram Bot API (https://core.telegram.org/bots/api), reached through
//! `PU_TELEGRAM_API_URL`: `POST /bot<token>/<method>` with a JSON body, answered with the real
//! envelope (`{"ok":true,"result":...}` or `{"ok":false,"error_code":N,"description":...}`).
//! Implements what the server uses: getMe, getUpdates (long polling over a queue the test
//! fills), sendMessage (recorded; HTML checked the way Telegram does: unknown tags or bare
//! `&`/`<` are "can't parse entities"), sendPhoto (a multipart upload in field `photo` or
//! the part `photo=attach://<name>` names,
//! recorded with its bytes; refused as Telegram refuses: no photo, a file that is not an
//! image, a caption over 1024 characters or with bad HTML), setWebhook, deleteWebhook,
//! setMyCommands (recorded per `language_code`; refused as Telegram refuses a command that is
//! not 1-32 of `a-z0-9_`, a description that is not 1-256 characters, or over 100 commands);
//! it can answer 429 with `retry_after` to exercise flood control.
#![allow(dead_code)]

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::Notify;

pub const TOKEN: &str = "123456:TEST-token_abc";
pub const BOT_USERNAME: &str = "pepeunit_test_bot";
const BOT_ID: i64 = 123_456;

/// A message the server sent.
#[derive(Clone, Debug)]
pub struct Sent {
    pub chat_id: i64,
    pub text: String,
    pub parse_mode: Option<String>,
}

/// A photo the server sent (`sendPhoto`).
#[derive(Clone, Debug)]
pub struct SentPhoto {
    pub chat_id: i64,
    pub caption: Option<String>,
    pub parse_mode: Option<String>,
    pub file_name: Option<String>,
    pub bytes: Vec<u8>,
}

#[derive(Default)]
struct Fake {
    photos: Mutex<Vec<SentPhoto>>,
    updates: Mutex<Vec<Value>>,
    next_update: AtomicI64,
    new_update: Notify,
    sent: Mutex<Vec<Sent>>,
    new_sent: Notify,
    webhook: Mutex<Option<(String, String)>>,
    /// sendMessage calls to refuse with 429 before accepting again.
    floods: AtomicU32,
    calls: Mutex<Vec<String>>,
    /// setMyCommands: language code ("" for the default) to `(command, description)`s.
    menus: Mutex<std::collections::HashMap<String, Vec<(String, String)>>>,
}

pub struct FakeTelegram {
    /// The value for `PU_TELEGRAM_API_URL`.
    pub url: String,
    fake: Arc<Fake>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeTelegram {
    pub async fn start() -> FakeTelegram {
        let fake = Arc::new(Fake {
            next_update: AtomicI64::new(1000),
            ..Fake::default()
        });
        let app = Router::new()
            .route("/{bot}/{method}", post(method))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeTelegram {
            url: format!("http://{addr}"),
            fake,
            task,
        }
    }

    /// The server settings that point a test instance here.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("PU_TELEGRAM_BOT_TOKEN", TOKEN.to_string()),
            ("PU_TELEGRAM_API_URL", self.url.clone()),
        ]
    }

    /// A private text message from user `chat` (a private chat's id is the user's id).
    pub fn update(&self, chat: i64, text: &str, language: &str) -> Value {
        let id = self.fake.next_update.fetch_add(1, Ordering::SeqCst);
        json!({
            "update_id": id,
            "message": {
                "message_id": id,
                "date": 1_764_000_000,
                "chat": {"id": chat, "type": "private", "first_name": "Tester"},
                "from": {"id": chat, "is_bot": false, "first_name": "Tester", "language_code": language},
                "text": text,
            }
        })
    }

    /// Queues a message for getUpdates.
    pub fn say(&self, chat: i64, text: &str, language: &str) {
        let u = self.update(chat, text, language);
        self.fake.updates.lock().unwrap().push(u);
        self.fake.new_update.notify_waiters();
    }

    /// Answer the next `n` sendMessage calls with 429 (retry after 1 s).
    pub fn flood(&self, n: u32) {
        self.fake.floods.store(n, Ordering::SeqCst);
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.fake.sent.lock().unwrap().clone()
    }

    pub fn sent_to(&self, chat: i64) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.chat_id == chat)
            .collect()
    }

    pub fn photos_to(&self, chat: i64) -> Vec<SentPhoto> {
        self.fake
            .photos
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.chat_id == chat)
            .cloned()
            .collect()
    }

    /// Waits (bounded) for the `n`th photo (from 1) sent to `chat`.
    pub async fn wait_for_photo(&self, chat: i64, n: usize, wait: Duration) -> SentPhoto {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.fake.new_sent.notified();
            if let Some(p) = self.photos_to(chat).into_iter().nth(n - 1) {
                return p;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no photo {n} to {chat}; messages: {:#?}",
                    self.sent_to(chat)
                );
            }
        }
    }

    /// Says `text` in `chat` and waits (bounded) for the next message to that chat: the bot
    /// answers one update at a time, in order, so it is the answer.
    pub async fn reply(&self, chat: i64, text: &str, language: &str, wait: Duration) -> Sent {
        let before = self.sent_to(chat).len();
        self.say(chat, text, language);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.fake.new_sent.notified();
            if let Some(s) = self.sent_to(chat).into_iter().nth(before) {
                return s;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("no answer to {text:?} in {chat}");
            }
        }
    }

    pub fn webhook(&self) -> Option<(String, String)> {
        self.fake.webhook.lock().unwrap().clone()
    }

    /// The command menu last set for a language code ("" for the default one).
    pub fn menu(&self, language_code: &str) -> Option<Vec<(String, String)>> {
        self.fake.menus.lock().unwrap().get(language_code).cloned()
    }

    pub fn calls(&self) -> Vec<String> {
        self.fake.calls.lock().unwrap().clone()
    }

    /// Waits (bounded) for a message to `chat` whose text contains `needle`, among those
    /// after the first `skip` messages to that chat.
    pub async fn wait_for(&self, chat: i64, needle: &str, wait: Duration) -> Sent {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.fake.new_sent.notified();
            if let Some(s) = self
                .sent_to(chat)
                .into_iter()
                .find(|s| s.text.contains(needle))
            {
                return s;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no message to {chat} containing {needle:?}; sent: {:#?}",
                    self.sent_to(chat)
                );
            }
        }
    }
}

/// A test instance whose bot talks to `tg`, with `extra` settings.
pub async fn start_instance(
    tg: &FakeTelegram,
    backend: super::Backend,
    extra: &[(&str, &str)],
) -> super::TestInstance {
    let env = tg.env();
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.extend_from_slice(extra);
    super::TestInstance::start_with(backend, &vars).await
}

/// Links `chat` to the user of `token` through the bot, as a person would: a link from the
/// REST API, `/start <code>` in the chat, and the bot's confirmation.
pub async fn link(
    inst: &super::TestInstance,
    tg: &FakeTelegram,
    token: &str,
    chat: i64,
    lang: &str,
) {
    let (s, link) = inst
        .get("/users/generate_verification_link/", Some(token))
        .await;
    assert_eq!(s.as_u16(), 200, "{link}");
    let link = link.as_str().unwrap().to_string();
    let prefix = format!("https://t.me/{BOT_USERNAME}?start=");
    let code = link.strip_prefix(&prefix).expect(&link);
    assert_eq!(code.len(), 8, "{link}");
    tg.say(chat, &format!("/start {code}"), lang);
    let needle = if lang == "ru" {
        "Чат привязан к"
    } else {
        "Linked to"
    };
    tg.wait_for(chat, needle, Duration::from_secs(15)).await;
}

fn ok(result: Value) -> Json<Value> {
    Json(json!({"ok": true, "result": result}))
}

fn err(code: u16, description: &str) -> Json<Value> {
    Json(json!({"ok": false, "error_code": code, "description": description}))
}

/// A file uploaded in a multipart call: its field, file name and bytes.
struct Upload {
    field: String,
    file_name: Option<String>,
    bytes: Vec<u8>,
}

/// The parameters of a call: a JSON body, or multipart form fields (teloxide sends methods
/// that may carry files, such as setWebhook and sendPhoto, as multipart), as Telegram accepts
/// both. Parts with a file name are uploads.
async fn params(req: axum::extract::Request) -> Result<(Value, Vec<Upload>), String> {
    use axum::extract::FromRequest;
    let multipart = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if multipart {
        let mut form = axum::extract::Multipart::from_request(req, &())
            .await
            .map_err(|e| e.to_string())?;
        let mut out = serde_json::Map::new();
        let mut uploads = Vec::new();
        while let Some(field) = form.next_field().await.map_err(|e| e.to_string())? {
            let name = field.name().unwrap_or_default().to_string();
            if let Some(file_name) = field.file_name().map(str::to_string) {
                let bytes = field.bytes().await.map_err(|e| e.to_string())?.to_vec();
                uploads.push(Upload {
                    field: name,
                    file_name: Some(file_name),
                    bytes,
                });
                continue;
            }
            let text = field.text().await.map_err(|e| e.to_string())?;
            out.insert(name, Value::String(text));
        }
        return Ok((Value::Object(out), uploads));
    }
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .map_err(|e| e.to_string())?;
    if bytes.is_empty() {
        return Ok((json!({}), Vec::new()));
    }
    Ok((
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?,
        Vec::new(),
    ))
}

/// A chat id as Telegram reads it: a JSON number, or a form field's digits.
fn chat_id(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// Width and height of a PNG or JPEG Telegram could process; `None` for anything else.
fn image_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.get(12..16) == Some(b"IHDR") {
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        return Some((be(16), be(20)));
    }
    None
}

/// `sendPhoto` with an uploaded file, checked as Telegram checks it.
fn send_photo(
    fake: &Fake,
    body: &Value,
    uploads: Vec<Upload>,
) -> (axum::http::StatusCode, Json<Value>) {
    use axum::http::StatusCode as S;
    let Some(chat_id) = chat_id(&body["chat_id"]) else {
        return (S::BAD_REQUEST, err(400, "Bad Request: chat_id is empty"));
    };
    // the file is the part named `photo`, or the part a `photo=attach://<name>` field names
    // (as teloxide sends it)
    let field = match body["photo"]
        .as_str()
        .and_then(|p| p.strip_prefix("attach://"))
    {
        Some(name) => name.to_string(),
        None => "photo".to_string(),
    };
    let Some(photo) = uploads.into_iter().find(|u| u.field == field) else {
        let description = if body["photo"].is_string() && field == "photo" {
            // a file_id or URL: this fake holds no files and fetches nothing
            "Bad Request: wrong remote file identifier specified"
        } else {
            "Bad Request: there is no photo in the request"
        };
        return (S::BAD_REQUEST, err(400, description));
    };
    if photo.bytes.len() > 10 << 20 {
        return (
            S::BAD_REQUEST,
            err(400, "Bad Request: PHOTO_INVALID_DIMENSIONS"),
        );
    }
    let Some((w, h)) = image_size(&photo.bytes) else {
        return (
            S::BAD_REQUEST,
            err(400, "Bad Request: IMAGE_PROCESS_FAILED"),
        );
    };
    // Telegram: width + height at most 10000, a ratio of at most 20
    if w == 0 || h == 0 || w + h > 10_000 || w.max(h) / w.min(h) > 20 {
        return (
            S::BAD_REQUEST,
            err(400, "Bad Request: PHOTO_INVALID_DIMENSIONS"),
        );
    }
    let caption = body["caption"].as_str().map(str::to_string);
    let parse_mode = body["parse_mode"].as_str().map(str::to_string);
    if let Some(c) = &caption {
        if c.chars().count() > 1024 {
            return (
                S::BAD_REQUEST,
                err(400, "Bad Request: message caption is too long"),
            );
        }
        if parse_mode.as_deref() == Some("HTML") {
            if let Err(e) = check_html(c) {
                return (
                    S::BAD_REQUEST,
                    err(400, &format!("Bad Request: can't parse entities: {e}")),
                );
            }
        }
    }
    let message_id = {
        let mut photos = fake.photos.lock().unwrap();
        photos.push(SentPhoto {
            chat_id,
            caption: caption.clone(),
            parse_mode,
            file_name: photo.file_name,
            bytes: photo.bytes,
        });
        1_000_000 + photos.len() as i64
    };
    fake.new_sent.notify_waiters();
    let mut message = json!({
        "message_id": message_id,
        "date": 1_764_000_000,
        "chat": {"id": chat_id, "type": "private", "first_name": "Tester"},
        "from": {"id": BOT_ID, "is_bot": true, "first_name": "Pepeunit test", "username": BOT_USERNAME},
        "photo": [{
            "file_id": format!("photo{message_id}"), "file_unique_id": format!("u{message_id}"),
            "width": w, "height": h,
        }],
    });
    if let Some(c) = caption {
        message["caption"] = json!(c);
    }
    (S::OK, ok(message))
}

async fn method(
    State(fake): State<Arc<Fake>>,
    Path((bot, method)): Path<(String, String)>,
    req: axum::extract::Request,
) -> (axum::http::StatusCode, Json<Value>) {
    use axum::http::StatusCode as S;
    if bot != format!("bot{TOKEN}") {
        return (S::UNAUTHORIZED, err(401, "Unauthorized"));
    }
    let (body, uploads) = match params(req).await {
        Ok(v) => v,
        Err(_) => return (S::BAD_REQUEST, err(400, "Bad Request: invalid JSON")),
    };
    let method = method.to_ascii_lowercase();
    fake.calls.lock().unwrap().push(method.clone());
    match method.as_str() {
        "getme" => (
            S::OK,
            ok(json!({
                "id": BOT_ID, "is_bot": true, "first_name": "Pepeunit test",
                "username": BOT_USERNAME, "can_join_groups": false,
                "can_read_all_group_messages": false, "supports_inline_queries": false,
                "can_connect_to_business": false, "has_main_web_app": false,
            })),
        ),
        "getupdates" => {
            if fake.webhook.lock().unwrap().is_some() {
                return (
                    S::CONFLICT,
                    err(409, "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"),
                );
            }
            let offset = body["offset"].as_i64().unwrap_or(0);
            let timeout = body["timeout"].as_u64().unwrap_or(0).min(10);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
            loop {
                let notified = fake.new_update.notified();
                {
                    let mut updates = fake.updates.lock().unwrap();
                    // confirmed updates are forgotten, as Telegram does
                    updates.retain(|u| u["update_id"].as_i64().unwrap() >= offset);
                    if !updates.is_empty() || timeout == 0 {
                        return (S::OK, ok(Value::Array(updates.clone())));
                    }
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return (S::OK, ok(json!([])));
                }
            }
        }
        "sendmessage" => {
            let Some(chat_id) = body["chat_id"].as_i64() else {
                return (S::BAD_REQUEST, err(400, "Bad Request: chat_id is empty"));
            };
            let Some(text) = body["text"].as_str() else {
                return (
                    S::BAD_REQUEST,
                    err(400, "Bad Request: message text is empty"),
                );
            };
            if text.is_empty() || text.chars().count() > 4096 {
                return (S::BAD_REQUEST, err(400, "Bad Request: message is too long"));
            }
            let parse_mode = body["parse_mode"].as_str().map(str::to_string);
            if parse_mode.as_deref() == Some("HTML") {
                if let Err(e) = check_html(text) {
                    return (
                        S::BAD_REQUEST,
                        err(400, &format!("Bad Request: can't parse entities: {e}")),
                    );
                }
            }
            if fake
                .floods
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return (
                    S::TOO_MANY_REQUESTS,
                    Json(json!({
                        "ok": false, "error_code": 429,
                        "description": "Too Many Requests: retry after 1",
                        "parameters": {"retry_after": 1},
                    })),
                );
            }
            let message_id = {
                let mut sent = fake.sent.lock().unwrap();
                sent.push(Sent {
                    chat_id,
                    text: text.to_string(),
                    parse_mode,
                });
                sent.len() as i64
            };
            fake.new_sent.notify_waiters();
            (
                S::OK,
                ok(json!({
                    "message_id": message_id,
                    "date": 1_764_000_000,
                    "chat": {"id": chat_id, "type": "private", "first_name": "Tester"},
                    "from": {"id": BOT_ID, "is_bot": true, "first_name": "Pepeunit test", "username": BOT_USERNAME},
                    "text": text,
                })),
            )
        }
        "sendphoto" => send_photo(&fake, &body, uploads),
        "setmycommands" => set_my_commands(&fake, &body),
        "setwebhook" => {
            let url = body["url"].as_str().unwrap_or_default().to_string();
            if url.is_empty() {
                return (
                    S::BAD_REQUEST,
                    err(400, "Bad Request: bad webhook: URL is empty"),
                );
            }
            let secret = body["secret_token"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            *fake.webhook.lock().unwrap() = Some((url, secret));
            (S::OK, ok(json!(true)))
        }
        "deletewebhook" => {
            *fake.webhook.lock().unwrap() = None;
            (S::OK, ok(json!(true)))
        }
        _ => (S::NOT_FOUND, err(404, "Not Found: method not found")),
    }
}

/// `setMyCommands` (default scope), checked as Telegram checks it.
fn set_my_commands(fake: &Fake, body: &Value) -> (axum::http::StatusCode, Json<Value>) {
    use axum::http::StatusCode as S;
    // a JSON array, or its text in a form field
    let commands = match &body["commands"] {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        v => v.clone(),
    };
    let Some(commands) = commands.as_array() else {
        return (
            S::BAD_REQUEST,
            err(400, "Bad Request: field \"commands\" must be an Array"),
        );
    };
    if commands.len() > 100 {
        return (
            S::BAD_REQUEST,
            err(400, "Bad Request: BOT_COMMANDS_TOO_MUCH"),
        );
    }
    let mut menu = Vec::new();
    for c in commands {
        let command = c["command"].as_str().unwrap_or_default();
        let description = c["description"].as_str().unwrap_or_default();
        let valid = (1..=32).contains(&command.len())
            && command
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return (S::BAD_REQUEST, err(400, "Bad Request: BOT_COMMAND_INVALID"));
        }
        if !(1..=256).contains(&description.chars().count()) {
            return (
                S::BAD_REQUEST,
                err(400, "Bad Request: BOT_COMMAND_DESCRIPTION_INVALID"),
            );
        }
        menu.push((command.to_string(), description.to_string()));
    }
    let language = body["language_code"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    fake.menus.lock().unwrap().insert(language, menu);
    (S::OK, ok(json!(true)))
}

/// Telegram's HTML subset, strictly: known tags, balanced; `&` only in the four entities.
fn check_html(text: &str) -> Result<(), String> {
    const TAGS: &[&str] = &["b", "i", "u", "s", "code", "pre"];
    let mut open: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(['<', '&']) {
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix('&') {
            let ok = ["lt;", "gt;", "amp;", "quot;"]
                .iter()
                .any(|e| after.starts_with(e));
            if !ok {
                let near: String = tail.chars().take(10).collect();
                return Err(format!("bare & at {near:?}"));
            }
            rest = after;
            continue;
        }
        let end = tail.find('>').ok_or("unclosed <")?;
        let tag = &tail[1..end];
        if let Some(name) = tag.strip_prefix('/') {
            if open.pop().as_deref() != Some(name) {
                return Err(format!("unexpected end tag </{name}>"));
            }
        } else if TAGS.contains(&tag) {
            open.push(tag.to_string());
        } else {
            return Err(format!("unsupported start tag {tag:?}"));
        }
        rest = &tail[end + 1..];
    }
    if let Some(t) = open.pop() {
        return Err(format!("unclosed <{t}>"));
    }
    Ok(())
}
