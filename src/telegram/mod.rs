//! Telegram (SPEC §5), a front door: the Bot API client, one-time codes that link a chat to an
//! account, the bot itself ([`bot`]), and the delivery of alerts: [`Telegram`] implements the
//! service layer's `ChatBot` port (link codes, unit alerts, webhook updates), and
//! [`run_admin_alerts`] forwards crash alerts to the admins.
//!
//! The Bot API is reached through teloxide's `Bot` (requests and types only; the update loop
//! and command handling are ours, in [`bot`]). `PU_TELEGRAM_API_URL` points it elsewhere than
//! `https://api.telegram.org`: a self-hosted Bot API server, or the fake the tests run.

pub mod bot;
pub mod texts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use teloxide::prelude::*;
use teloxide::types::{ChatId, InputFile, ParseMode};
use teloxide::RequestError;
use uuid::Uuid;

use crate::config::Config;
use crate::error::{AppError, AppResult};
use crate::service::alerts::AlertMessage;
use crate::service::ports::{ChatBot, ChatUser};
use crate::service::Instance;

/// How long a link code from `GET /users/generate_verification_link/` stays valid.
pub const LINK_CODE_TTL: Duration = Duration::from_secs(300);
/// Codes alive at once (a flood of requests cannot grow the map further).
const MAX_LINK_CODES: usize = 10_000;
/// Telegram's limit on a message's text.
pub const MAX_MESSAGE_CHARS: usize = 4096;
/// Telegram's limit on a photo's caption.
pub const MAX_CAPTION_CHARS: usize = 1024;
/// Attempts per message when Telegram asks to wait or cannot be reached.
const SEND_ATTEMPTS: u32 = 4;
/// Longest `retry_after` honoured; longer waits fail the message.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The languages the bot speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Ru,
}

impl Lang {
    /// From a Telegram `language_code` (`ru`, `ru-RU`) or a stored choice; English otherwise.
    pub fn from_code(code: Option<&str>) -> Lang {
        match code {
            Some(c)
                if c.eq_ignore_ascii_case("ru") || c.to_ascii_lowercase().starts_with("ru-") =>
            {
                Lang::Ru
            }
            _ => Lang::En,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelegramError {
    #[error("Telegram answered: {0}")]
    Api(String),
    #[error("Telegram cannot be reached: {0}")]
    Network(String),
    #[error("Telegram asks to wait {0:?}, longer than we hold a message")]
    Flood(Duration),
}

/// The Bot API client and the link codes; cheap to clone.
#[derive(Clone)]
pub struct Telegram {
    bot: Bot,
    username: Arc<Mutex<Option<String>>>,
    codes: Arc<Mutex<HashMap<String, (Uuid, Instant)>>>,
    webhook_secret: String,
    /// Update ids handled from the webhook (Telegram redelivers when an answer is slow).
    seen_updates: Arc<Mutex<std::collections::VecDeque<u32>>>,
}

impl Telegram {
    /// None when no bot token is configured.
    pub fn new(config: &Config) -> Option<Telegram> {
        let token = config.telegram_bot_token.as_ref()?;
        // the config checked the URL; teloxide joins `bot<token>/<method>` onto it
        let url = reqwest::Url::parse(&format!("{}/", config.telegram_api_url))
            .expect("PU_TELEGRAM_API_URL was validated");
        Some(Telegram {
            bot: Bot::new(token.clone()).set_api_url(url),
            username: Arc::default(),
            codes: Arc::default(),
            webhook_secret: crate::crypto::derived_secret(
                &config.secret_key,
                b"pepeunit telegram webhook v1",
            ),
            seen_updates: Arc::default(),
        })
    }

    pub fn bot(&self) -> &Bot {
        &self.bot
    }

    /// What Telegram sends in `X-Telegram-Bot-Api-Secret-Token` with every webhook update.
    pub fn webhook_secret(&self) -> &str {
        &self.webhook_secret
    }

    /// True the first time an update id arrives over the webhook (the last 1000 are kept).
    pub fn first_update(&self, id: u32) -> bool {
        let mut seen = self.seen_updates.lock().expect("seen updates");
        if seen.contains(&id) {
            return false;
        }
        if seen.len() == 1000 {
            seen.pop_front();
        }
        seen.push_back(id);
        true
    }

    /// The bot's @username if already known (never waits for Telegram).
    pub fn cached_username(&self) -> Option<String> {
        self.username.lock().expect("username").clone()
    }

    /// The bot's @username, asked from Telegram once (`getMe`).
    pub async fn username(&self) -> Result<String, TelegramError> {
        if let Some(name) = self.username.lock().expect("username").clone() {
            return Ok(name);
        }
        let me = self.bot.get_me().await.map_err(map_error)?;
        let name =
            me.user.username.clone().ok_or_else(|| {
                TelegramError::Api("getMe returned a bot without a username".into())
            })?;
        *self.username.lock().expect("username") = Some(name.clone());
        Ok(name)
    }

    /// A new one-time code linking a chat to `user`; valid [`LINK_CODE_TTL`].
    pub fn new_link_code(&self, user: Uuid) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";
        let mut rng = rand::thread_rng();
        let code: String = (0..8)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        let now = Instant::now();
        let mut codes = self.codes.lock().expect("codes");
        codes.retain(|_, (_, at)| now.duration_since(*at) < LINK_CODE_TTL);
        if codes.len() >= MAX_LINK_CODES {
            // a flood: the oldest code makes room
            if let Some(oldest) = codes
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(c, _)| c.clone())
            {
                codes.remove(&oldest);
            }
        }
        // one live code per user: a new link replaces the previous one
        codes.retain(|_, (u, _)| *u != user);
        codes.insert(code.clone(), (user, now));
        code
    }

    /// The user of a code not yet used nor expired; the code is spent.
    pub fn take_link_code(&self, code: &str) -> Option<Uuid> {
        let (user, at) = self.codes.lock().expect("codes").remove(code)?;
        (at.elapsed() < LINK_CODE_TTL).then_some(user)
    }

    /// Sends an HTML message (callers escape what they did not write), cut to Telegram's
    /// limit; waits out flood control and retries network failures a few times.
    pub async fn send(&self, chat: i64, html: &str) -> Result<(), TelegramError> {
        let text = truncate(html, MAX_MESSAGE_CHARS);
        retrying(|| {
            self.bot
                .send_message(ChatId(chat), text.clone())
                .parse_mode(ParseMode::Html)
                .send()
        })
        .await
    }

    /// Sends a PNG image (`sendPhoto`, uploaded as multipart/form-data) with an HTML caption
    /// cut to Telegram's caption limit; retried as [`Telegram::send`].
    pub async fn send_photo(
        &self,
        chat: i64,
        png: Vec<u8>,
        caption_html: &str,
    ) -> Result<(), TelegramError> {
        let caption = truncate(caption_html, MAX_CAPTION_CHARS);
        let png = bytes::Bytes::from(png);
        retrying(|| {
            self.bot
                .send_photo(
                    ChatId(chat),
                    InputFile::memory(png.clone()).file_name("chart.png"),
                )
                .caption(caption.clone())
                .parse_mode(ParseMode::Html)
                .send()
        })
        .await
    }
}

/// Runs one Bot API call until it succeeds: waits out flood control (`retry_after` up to
/// [`MAX_RETRY_AFTER`]) and retries network failures with a doubling pause, at most
/// [`SEND_ATTEMPTS`] times in all.
async fn retrying<T, F, Fut>(mut call: F) -> Result<(), TelegramError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RequestError>>,
{
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        let error = match call().await {
            Ok(_) => return Ok(()),
            Err(RequestError::RetryAfter(s)) if s.duration() <= MAX_RETRY_AFTER => {
                if attempt >= SEND_ATTEMPTS {
                    return Err(TelegramError::Flood(s.duration()));
                }
                tokio::time::sleep(s.duration()).await;
                attempt += 1;
                continue;
            }
            Err(e) => map_error(e),
        };
        match error {
            TelegramError::Network(_) if attempt < SEND_ATTEMPTS => {
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
            e => return Err(e),
        }
    }
}

fn map_error(e: RequestError) -> TelegramError {
    match e {
        RequestError::Network(e) => TelegramError::Network(e.to_string()),
        RequestError::RetryAfter(s) => TelegramError::Flood(s.duration()),
        other => TelegramError::Api(other.to_string()),
    }
}

/// The service layer's chat bot port: link codes and alert delivery, rendered in the
/// recipient's language here.
#[async_trait::async_trait]
impl ChatBot for Telegram {
    fn cached_username(&self) -> Option<String> {
        Telegram::cached_username(self)
    }

    async fn username(&self) -> Result<String, String> {
        Telegram::username(self).await.map_err(|e| e.to_string())
    }

    fn new_link_code(&self, user: Uuid) -> String {
        Telegram::new_link_code(self, user)
    }

    async fn send_alert(
        &self,
        to: &ChatUser,
        unit_name: &str,
        alert: &AlertMessage,
    ) -> Result<(), String> {
        let lang = Lang::from_code(to.language.as_deref());
        let text = texts::alert(lang, unit_name, alert);
        self.send(to.chat, &text).await.map_err(|e| e.to_string())
    }

    async fn receive_webhook(
        &self,
        instance: &Instance,
        secret_token: &[u8],
        body: &[u8],
    ) -> AppResult<()> {
        if !crate::crypto::constant_time_eq(secret_token, self.webhook_secret().as_bytes()) {
            return Err(AppError::no_access("Bad Telegram secret token"));
        }
        let update: teloxide::types::Update = serde_json::from_slice(body)
            .map_err(|e| AppError::json(format!("not a Telegram Update: {e}")))?;
        if self.first_update(update.id.0) {
            let (instance, telegram) = (instance.clone(), self.clone());
            tokio::spawn(async move {
                bot::handle_update(&instance, &telegram, update).await;
            });
        }
        Ok(())
    }
}

/// Sends a message to every admin (not Blocked) with a linked chat, each in their language;
/// returns how many received it.
pub async fn notify_admins(
    instance: &Instance,
    telegram: &Telegram,
    text: impl Fn(Lang) -> String,
) -> usize {
    let admins = match instance.admin_chats().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "admins with Telegram not read");
            return 0;
        }
    };
    let mut sent = 0;
    for admin in admins {
        let lang = Lang::from_code(admin.language.as_deref());
        match telegram.send(admin.chat, &text(lang)).await {
            Ok(()) => sent += 1,
            Err(e) => tracing::warn!(admin = %admin.user, error = %e, "admin alert not sent"),
        }
    }
    sent
}

/// Forwards the node's crash alerts (SPEC §6) to every admin with a linked chat until `stop`.
/// Without a bot the alerts stay in `GET /metrics/node`'s error tracker only.
pub async fn run_admin_alerts(
    instance: Instance,
    telegram: Telegram,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut alerts = instance.node.admin_alerts();
    loop {
        let alert = tokio::select! {
            a = alerts.recv() => a,
            _ = stop.changed() => return,
        };
        match alert {
            Ok(alert) => {
                notify_admins(&instance, &telegram, |lang| {
                    texts::crash(lang, &alert.text, alert.count)
                })
                .await;
            }
            Err(RecvError::Lagged(n)) => {
                notify_admins(&instance, &telegram, |lang| texts::crash_lagged(lang, n)).await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// Escapes text for Telegram's HTML parse mode.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

/// Length as Telegram counts it (UTF-16 code units).
fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// At most `max` UTF-16 units (Telegram's measure); a cut text ends with an ellipsis. HTML
/// tags the cut would break are avoided by cutting only texts we build from escaped parts
/// line by line (see texts.rs), where each device text was [`clip`]ped first.
pub fn truncate(text: &str, max: usize) -> String {
    if utf16_len(text) <= max {
        return text.to_string();
    }
    // cut at a line end so no tag or entity is split
    let mut out = String::new();
    let mut len = 0;
    for line in text.split_inclusive('\n') {
        let n = utf16_len(line);
        if len + n > max - 1 {
            break;
        }
        out.push_str(line);
        len += n;
    }
    out.push('…');
    out
}

/// A device's text cut to at most `max` UTF-16 units (with an ellipsis), before escaping: one
/// long log line must not push the rest of a message out.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if utf16_len(text) <= max {
        return text.into();
    }
    let mut len = 0;
    let end = text
        .char_indices()
        .find(|(_, c)| {
            len += c.len_utf16();
            len > max - 1
        })
        .map_or(text.len(), |(i, _)| i);
    format!("{}…", &text[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_from_telegram_codes() {
        assert_eq!(Lang::from_code(Some("ru")), Lang::Ru);
        assert_eq!(Lang::from_code(Some("ru-RU")), Lang::Ru);
        assert_eq!(Lang::from_code(Some("RU")), Lang::Ru);
        assert_eq!(Lang::from_code(Some("rue")), Lang::En);
        assert_eq!(Lang::from_code(Some("en-GB")), Lang::En);
        assert_eq!(Lang::from_code(None), Lang::En);
    }

    #[test]
    fn escaping_and_truncation() {
        assert_eq!(escape("<b>&"), "&lt;b&gt;&amp;");
        let long = "line\n".repeat(2000);
        let cut = truncate(&long, 4096);
        assert!(cut.chars().count() <= 4096);
        assert!(cut.ends_with("line\n…"));
        assert_eq!(truncate("short", 10), "short");
        // emoji are two UTF-16 units, as Telegram counts them
        let emoji = "😀\n".repeat(2000);
        assert!(utf16_len(&truncate(&emoji, 4096)) <= 4096);
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("ab😀cd", 4), "ab…");
        let accents = "é".repeat(10);
        assert_eq!(clip(&accents, 20), accents.as_str());
        let smileys = "😀".repeat(3000);
        let clipped = clip(&smileys, 1000);
        assert!(utf16_len(&clipped) <= 1000, "{}", utf16_len(&clipped));
    }

    #[test]
    fn link_codes_are_one_time_and_one_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_vars([
            ("PU_DATA_DIR".to_string(), dir.path().display().to_string()),
            ("PU_TELEGRAM_BOT_TOKEN".to_string(), "1:abc".to_string()),
        ])
        .unwrap();
        let t = Telegram::new(&config).unwrap();
        let user = Uuid::new_v4();
        let first = t.new_link_code(user);
        let second = t.new_link_code(user);
        assert_eq!(second.len(), 8);
        assert!(
            t.take_link_code(&first).is_none(),
            "replaced by the newer code"
        );
        assert_eq!(t.take_link_code(&second), Some(user));
        assert!(t.take_link_code(&second).is_none(), "spent");
    }
}
