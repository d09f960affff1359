//! The bot: receives updates (long polling, or the webhook `POST /pepeunit/api/v1/bot`) and
//! answers commands. A chat acts as the user it is linked to, through the same service
//! functions as REST, so the bot can do nothing that user could not.

use std::time::Duration;

use teloxide::prelude::*;
use teloxide::types::{BotCommand, Update, UpdateKind};
use tokio::sync::watch;
use uuid::Uuid;

use super::texts::{self, InstanceInfo};
use super::{Lang, Telegram};
use crate::config::TelegramMode;
use crate::domain::{BackendTopicCommand, LogLevel, Order, VisibilityLevel};
use crate::error::{AppError, AppResult};
use crate::service::charts::{parse_chart_period, ChartLabels, NodeChart};
use crate::service::chat::ChatAccount;
use crate::service::dashboards::DashboardFilter;
use crate::service::registries::{RegistryFilter, RepositoryRegistry};
use crate::service::repos::{Repo, RepoFilter};
use crate::service::unit_logs::UnitLog;
use crate::service::unit_logs::UnitLogFilter;
use crate::service::units::UnitNodeInclusion;
use crate::service::units::{Unit, UnitFilter};
use crate::service::users::User;
use crate::service::{Agent, Instance};

/// Seconds one `getUpdates` call waits for news (below teloxide's 17 s client timeout).
const POLL_TIMEOUT_SECS: u32 = 10;
/// Units per `/units` page.
const PAGE: i64 = 10;
/// Most log lines one `/logs` answer shows.
const MAX_LOG_LINES: i64 = 30;

/// Runs until `stop`: long polling, or registering the webhook (updates then arrive over HTTP).
pub async fn run(instance: Instance, telegram: Telegram, mut stop: watch::Receiver<bool>) {
    let mut backoff = Duration::from_secs(1);
    // the bot's name is needed for links; Telegram may be unreachable at start
    loop {
        match telegram.username().await {
            Ok(name) => {
                tracing::info!(bot = %name, mode = ?instance.config.telegram_mode, "Telegram bot ready");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Telegram getMe failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
    set_command_menu(&telegram).await;
    match instance.config.telegram_mode {
        TelegramMode::Webhook => register_webhook(&instance, &telegram, &mut stop).await,
        TelegramMode::Polling => poll(instance, telegram, stop).await,
    }
}

/// The menu Telegram clients show for `/`: English by default, Russian for Russian clients
/// (`setMyCommands` with `language_code`). A refusal is logged; the commands work regardless.
async fn set_command_menu(telegram: &Telegram) {
    for (lang, code) in [(Lang::En, None), (Lang::Ru, Some("ru"))] {
        let commands: Vec<BotCommand> = texts::command_menu(lang)
            .into_iter()
            .map(|(command, description)| BotCommand::new(command, description))
            .collect();
        let mut request = telegram.bot().set_my_commands(commands);
        if let Some(code) = code {
            request = request.language_code(code);
        }
        if let Err(e) = request.await {
            tracing::warn!(error = %e, lang = lang.code(), "setMyCommands failed");
        }
    }
}

async fn register_webhook(
    instance: &Instance,
    telegram: &Telegram,
    stop: &mut watch::Receiver<bool>,
) {
    let c = &instance.config;
    let url = format!("{}{}{}/bot", c.origin(), c.app_prefix, c.api_prefix);
    let Ok(url) = reqwest::Url::parse(&url) else {
        tracing::error!(%url, "the webhook URL is not a URL");
        return;
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        let set = telegram
            .bot()
            .set_webhook(url.clone())
            .secret_token(telegram.webhook_secret().to_string())
            .await;
        match set {
            Ok(_) => {
                tracing::info!(%url, "Telegram webhook registered");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "setWebhook failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
    }
}

async fn poll(instance: Instance, telegram: Telegram, mut stop: watch::Receiver<bool>) {
    // a webhook left from webhook mode makes getUpdates fail
    if let Err(e) = telegram.bot().delete_webhook().await {
        tracing::warn!(error = %e, "deleteWebhook failed");
    }
    let mut offset: i32 = 0;
    let mut backoff = Duration::from_secs(1);
    loop {
        let request = telegram
            .bot()
            .get_updates()
            .offset(offset)
            .timeout(POLL_TIMEOUT_SECS);
        let updates = tokio::select! {
            r = request.send() => r,
            _ = stop.changed() => return,
        };
        match updates {
            Ok(updates) => {
                backoff = Duration::from_secs(1);
                for update in updates {
                    // acknowledged by the next call's offset, handled or not: a command that
                    // fails is answered with the error, never retried in a loop
                    offset = offset.max(update.id.0 as i32 + 1);
                    handle_update(&instance, &telegram, update).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Telegram getUpdates failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// One update from polling or the webhook: text messages are commands; the rest is ignored.
/// A panic while handling it is a crash alert for the admins, and the bot goes on with the
/// next update (one bad update never stops the bot, nor comes back after a restart: it was
/// acknowledged).
pub async fn handle_update(instance: &Instance, telegram: &Telegram, update: Update) {
    use futures_util::FutureExt;
    let handled = std::panic::AssertUnwindSafe(handle_update_inner(instance, telegram, update))
        .catch_unwind()
        .await;
    if let Err(payload) = handled {
        instance
            .node
            .caught_panic("telegram update panicked", &*payload);
    }
}

async fn handle_update_inner(instance: &Instance, telegram: &Telegram, update: Update) {
    let UpdateKind::Message(msg) = update.kind else {
        return;
    };
    let Some(text) = msg.text() else {
        return;
    };
    if !msg.chat.is_private() {
        return; // accounts are personal: groups and channels get nothing
    }
    instance.count_telegram_request();
    let chat = msg.chat.id.0;
    let telegram_lang = msg.from.as_ref().and_then(|u| u.language_code.clone());
    let sent = match answer(instance, telegram, chat, telegram_lang.as_deref(), text).await {
        Reply::Text(text) => telegram.send(chat, &text).await,
        Reply::Photo { png, caption } => telegram.send_photo(chat, png, &caption).await,
    };
    if let Err(e) = sent {
        tracing::warn!(chat, error = %e, "Telegram answer not sent");
    }
}

/// What the bot answers: a message, or a picture with a caption (`/chart`).
enum Reply {
    Text(String),
    Photo { png: Vec<u8>, caption: String },
}

impl From<String> for Reply {
    fn from(text: String) -> Reply {
        Reply::Text(text)
    }
}

/// The reply to one command.
async fn answer(
    instance: &Instance,
    telegram: &Telegram,
    chat: i64,
    telegram_lang: Option<&str>,
    text: &str,
) -> Reply {
    let mut words = text.split_whitespace();
    let command = words.next().unwrap_or("");
    // `/cmd@botname` in a chat with several bots
    let command = command
        .split('@')
        .next()
        .unwrap_or(command)
        .to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    let account = match instance.chat_account(chat).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "telegram chat lookup failed");
            return texts::failed(Lang::from_code(telegram_lang), "internal error").into();
        }
    };
    let lang = Lang::from_code(
        account
            .user()
            .and_then(|u| u.telegram_language.as_deref())
            .or(telegram_lang),
    );
    let linked = account.user().map(|u| u.uuid);
    match (command.as_str(), account) {
        ("/start", _) if !args.is_empty() => {
            start(instance, telegram, chat, telegram_lang, args[0])
                .await
                .into()
        }
        ("/start" | "/help", ChatAccount::Unlinked) => {
            format!("{}\n\n{}", texts::help(lang), texts::need_link(lang)).into()
        }
        ("/start" | "/help", _) => texts::help(lang).into(),
        ("/info", account) => info(instance, lang, account.user()).await.into(),
        ("/lang", _) => {
            let Some(choice) = args.first().filter(|a| matches!(**a, "en" | "ru")) else {
                return texts::usage(lang, "/lang en|ru").into();
            };
            let new = Lang::from_code(Some(choice));
            if let Some(user) = linked {
                if let Err(e) = instance.set_chat_language(user, new.code()).await {
                    return texts::failed(lang, e.message()).into();
                }
            }
            texts::lang_set(new).into()
        }
        // what anyone may see: an unlinked chat browses public entries, as the anonymous agent
        ("/registry" | "/repo" | "/unit", ChatAccount::Unlinked)
            if is_guest_browse(&command, &args) =>
        {
            match browse(instance, &Agent::Bot, lang, &command, &args).await {
                Ok(text) => format!("{text}\n\n{}", texts::guest_note(lang)).into(),
                Err(e) => texts::failed(lang, e.message()).into(),
            }
        }
        (_, ChatAccount::Unlinked) => texts::need_link(lang).into(),
        (_, ChatAccount::Blocked(_)) => texts::blocked(lang).into(),
        ("/chart", ChatAccount::Linked(agent)) => {
            match chart(instance, &agent, lang, &args).await {
                Ok(reply) => reply,
                Err(e) => texts::failed(lang, e.message()).into(),
            }
        }
        (command, ChatAccount::Linked(agent)) => {
            match linked_command(instance, &agent, lang, command, &args).await {
                Ok(text) => text.into(),
                Err(e) => texts::failed(lang, e.message()).into(),
            }
        }
    }
}

async fn start(
    instance: &Instance,
    telegram: &Telegram,
    chat: i64,
    telegram_lang: Option<&str>,
    code: &str,
) -> String {
    let lang = Lang::from_code(telegram_lang);
    let Some(user_uuid) = telegram.take_link_code(code) else {
        return texts::bad_code(lang);
    };
    match instance.link_chat(user_uuid, chat, lang.code()).await {
        Ok(Some(user)) => texts::linked(lang, &user.login),
        Ok(None) => texts::bad_code(lang),
        Err(e) => texts::failed(lang, e.message()),
    }
}

async fn info(instance: &Instance, lang: Lang, user: Option<&User>) -> String {
    let m = match instance.metrics(&Agent::Bot).await {
        Ok(m) => m,
        Err(e) => return texts::failed(lang, e.message()),
    };
    let c = &instance.config;
    texts::info(
        lang,
        &InstanceInfo {
            name: &c.instance_name,
            domain: &c.domain,
            version: env!("CARGO_PKG_VERSION"),
            users: m.user_count,
            registries: m.repository_registry_count,
            repos: m.repo_count,
            units: m.unit_count,
            unit_nodes: m.unit_node_count,
            edges: m.unit_node_edge_count,
            linked_as: user.map(|u| u.login.as_str()),
        },
    )
}

/// Commands of a linked chat.
async fn linked_command(
    instance: &Instance,
    agent: &Agent,
    lang: Lang,
    command: &str,
    args: &[&str],
) -> AppResult<String> {
    // a unit is "online" when its last state is younger than two state intervals
    let stale = instance.config.state_send_interval * 2;
    Ok(match (command, args) {
        ("/units", _) => {
            let page = match args {
                [] => 1,
                [p] => match parse_page(p) {
                    Some(p) => p,
                    None => return Ok(texts::usage(lang, "/units [page]")),
                },
                _ => return Ok(texts::usage(lang, "/units [page]")),
            };
            let filter = UnitFilter {
                order_by_unit_name: Some(Order::Asc),
                offset: (page - 1) * PAGE,
                limit: PAGE,
                ..UnitFilter::default()
            };
            let (count, units) = own_units(instance, agent, filter).await?;
            let pages = ((count + PAGE - 1) / PAGE).max(1);
            texts::units(lang, &units, page, pages, stale)
        }
        ("/registry" | "/repo" | "/dashboard", _) => {
            browse(instance, agent, lang, command, args).await?
        }
        // a page of the units the caller may see, or one of their own by name
        ("/unit", _) => match parse_browse(args) {
            Some(Browse::Page { .. }) => browse(instance, agent, lang, command, args).await?,
            Some(Browse::Text(name)) => match instance.own_unit_by_name(agent, name).await? {
                Some(unit) => {
                    let logs = last_logs(instance, agent, unit.uuid, LogLevel::Debug, 5).await?;
                    texts::unit(lang, &unit, &logs, stale)
                }
                None => texts::no_unit(lang, name),
            },
            None => texts::usage(lang, UNIT_USAGE),
        },
        ("/logs", [name, rest @ ..]) if rest.len() <= 2 => {
            let mut level = LogLevel::Debug;
            let mut n = 10;
            for arg in rest {
                if let Some(l) = parse_level(arg) {
                    level = l;
                } else if let Ok(v) = arg.parse::<i64>() {
                    n = v.clamp(1, MAX_LOG_LINES);
                } else {
                    return Ok(texts::usage(
                        lang,
                        "/logs NAME [Debug|Info|Warning|Error|Critical] [N]",
                    ));
                }
            }
            match instance.own_unit_by_name(agent, name).await? {
                Some(unit) => {
                    let logs = last_logs(instance, agent, unit.uuid, level, n).await?;
                    texts::logs(lang, &unit.name, &logs)
                }
                None => texts::no_unit(lang, name),
            }
        }
        ("/logs", _) => texts::usage(lang, "/logs NAME [Debug|Info|Warning|Error|Critical] [N]"),
        ("/send", [name, command]) => {
            let Some(cmd) = parse_command(command) else {
                return Ok(texts::usage(
                    lang,
                    "/send NAME Update|EnvUpdate|SchemaUpdate|LogSync|Reset",
                ));
            };
            match instance.own_unit_by_name(agent, name).await? {
                Some(unit) => {
                    let published = instance.publish_command(&unit, cmd).await?;
                    texts::command_sent(lang, cmd.as_str(), &unit.name, published)
                }
                None => texts::no_unit(lang, name),
            }
        }
        ("/send", _) => texts::usage(
            lang,
            "/send NAME Update|EnvUpdate|SchemaUpdate|LogSync|Reset",
        ),
        ("/alerts", [name, level]) => {
            let Some(level) = parse_level(level) else {
                return Ok(texts::usage(
                    lang,
                    "/alerts NAME Debug|Info|Warning|Error|Critical",
                ));
            };
            match instance.own_unit_by_name(agent, name).await? {
                Some(unit) => {
                    let update = crate::service::alerts::UnitAlertsUpdate {
                        alert_log_level: Some(level),
                        mute_seconds: None,
                    };
                    let unit = instance.set_unit_alerts(agent, unit.uuid, update).await?;
                    texts::alert_level(lang, &unit.name, unit.alert_log_level)
                }
                None => texts::no_unit(lang, name),
            }
        }
        ("/alerts", _) => texts::usage(lang, "/alerts NAME Debug|Info|Warning|Error|Critical"),
        ("/mute", [name, rest @ ..]) if rest.len() <= 1 => {
            let hours = match rest.first().map(|h| h.parse::<i64>()) {
                None => 24,
                Some(Ok(h)) if (0..=24 * 365).contains(&h) => h,
                Some(_) => return Ok(texts::usage(lang, "/mute NAME [HOURS]")),
            };
            mute(instance, agent, lang, name, hours * 3600).await?
        }
        ("/mute", _) => texts::usage(lang, "/mute NAME [HOURS]"),
        ("/unmute", [name]) => mute(instance, agent, lang, name, 0).await?,
        ("/unmute", _) => texts::usage(lang, "/unmute NAME"),
        _ => texts::unknown_command(lang),
    })
}

/// `/unit`'s arguments, as its usage line shows them.
const UNIT_USAGE: &str = "/unit [my] [page] | /unit NAME";

/// What a browsing command (`/registry`, `/repo`, `/unit`, `/dashboard`) was asked for: a page
/// of all the caller may see (or of their own), or a name or search text.
#[derive(Debug, PartialEq, Eq)]
enum Browse<'a> {
    Page { mine: bool, page: i64 },
    Text(&'a str),
}

/// A page number: 1 up to far beyond any real page count (so `(page - 1) * PAGE` cannot
/// overflow).
fn parse_page(s: &str) -> Option<i64> {
    s.parse::<i64>()
        .ok()
        .filter(|p| (1..=1_000_000).contains(p))
}

/// `[my] [PAGE]` or one word of text; `None` for anything else (said as the usage). A word of
/// digits (or a minus and digits) is always a page, even one out of range: names are never
/// numbers here, and `/repo 0` is a mistake, not a search.
fn parse_browse<'a>(args: &[&'a str]) -> Option<Browse<'a>> {
    let is_my = |s: &str| s.eq_ignore_ascii_case("my");
    let numeric = |s: &str| {
        let digits = s.strip_prefix('-').unwrap_or(s);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    match args {
        [] => Some(Browse::Page {
            mine: false,
            page: 1,
        }),
        [m] if is_my(m) => Some(Browse::Page {
            mine: true,
            page: 1,
        }),
        [m, p] if is_my(m) => parse_page(p).map(|page| Browse::Page { mine: true, page }),
        [p] if numeric(p) => parse_page(p).map(|page| Browse::Page { mine: false, page }),
        [text] => Some(Browse::Text(text)),
        _ => None,
    }
}

/// What an unlinked chat may browse: lists of public entries (not `my`, not one unit by name).
fn is_guest_browse(command: &str, args: &[&str]) -> bool {
    match parse_browse(args) {
        Some(Browse::Page { mine, .. }) => !mine,
        Some(Browse::Text(_)) => command != "/unit",
        None => true, // answered with the usage
    }
}

fn browse_usage(command: &str) -> &'static str {
    match command {
        "/registry" => "/registry [my] [page] | /registry TEXT",
        "/repo" => "/repo [my] [page] | /repo NAME",
        "/dashboard" => "/dashboard [page] | /dashboard TEXT",
        _ => UNIT_USAGE,
    }
}

/// Upstream's browsing commands: `/registry` (registry entries), `/repo` (repos), `/unit`
/// (units, online or not) and `/dashboard` (the caller's dashboards); a page at a time, `my`
/// for the caller's own, or one entry by name (a search when no single entry fits).
async fn browse(
    instance: &Instance,
    agent: &Agent,
    lang: Lang,
    command: &str,
    args: &[&str],
) -> AppResult<String> {
    let Some(what) = parse_browse(args) else {
        return Ok(texts::usage(lang, browse_usage(command)));
    };
    let (mine, page, search) = match what {
        Browse::Page { mine, page } => (mine, page, None),
        Browse::Text(text) => (false, 1, Some(text)),
    };
    if mine && matches!(agent, Agent::Bot) {
        return Ok(texts::need_link(lang));
    }
    let creator_uuid = if mine { agent.uuid() } else { None };
    let offset = (page - 1) * PAGE;
    let at = |total: i64| texts::ListPage {
        command,
        mine,
        search,
        page,
        pages: ((total + PAGE - 1) / PAGE).max(1),
        total,
    };
    Ok(match command {
        "/registry" => {
            let filter = RegistryFilter {
                creator_uuid,
                search_string: search.map(str::to_string),
                order_by_create_date: Some(Order::Asc),
                offset,
                limit: PAGE,
                ..RegistryFilter::default()
            };
            let (total, items) = instance.list_registries(agent, filter).await?;
            match (search, items.as_slice()) {
                (Some(_), [one]) => registry_detail(instance, agent, lang, one).await,
                _ => texts::registries(lang, &items, &at(total)),
            }
        }
        "/repo" => {
            if let Some(name) = search {
                if let Some(repo) = instance.visible_repo_by_name(agent, name).await? {
                    return repo_detail(instance, agent, lang, &repo).await;
                }
            }
            let filter = RepoFilter {
                creator_uuid,
                search_string: search.map(str::to_string),
                order_by_create_date: Some(Order::Asc),
                offset,
                limit: PAGE,
                ..RepoFilter::default()
            };
            let (total, items) = instance
                .list_repos(agent, filter, VisibilityLevel::ALL)
                .await?;
            match (search, items.as_slice()) {
                (Some(name), []) => texts::no_repo(lang, name),
                (Some(_), [one]) => repo_detail(instance, agent, lang, one).await?,
                _ => texts::repos(lang, &items, &at(total)),
            }
        }
        "/dashboard" => {
            let filter = DashboardFilter {
                search_string: search.map(str::to_string),
                order_by_create_date: Some(Order::Asc),
                offset,
                limit: PAGE,
            };
            match instance.list_dashboards(agent, &filter).await {
                Ok((total, mut items)) => {
                    // Grafana answers a path (`/grafana/d/<uid>/<slug>`): a link needs the origin
                    let origin = instance.config.origin();
                    for d in &mut items {
                        if let Some(url) = d.dashboard_url.as_mut().filter(|u| u.starts_with('/')) {
                            *url = format!("{origin}{url}");
                        }
                    }
                    texts::dashboards(lang, &items, &at(total))
                }
                Err(AppError::FeatureDisabled) => texts::dashboards_off(lang),
                Err(e) => return Err(e),
            }
        }
        _ => {
            let filter = UnitFilter {
                creator_uuid,
                order_by_unit_name: Some(Order::Asc),
                offset,
                limit: PAGE,
                ..UnitFilter::default()
            };
            let (total, items) = instance
                .list_units(
                    agent,
                    filter,
                    VisibilityLevel::ALL,
                    UnitNodeInclusion::default(),
                )
                .await?;
            let stale = instance.config.state_send_interval * 2;
            texts::visible_units(lang, &items, &at(total), stale)
        }
    })
}

/// One registry entry, with the caller's credential status when it is private.
async fn registry_detail(
    instance: &Instance,
    agent: &Agent,
    lang: Lang,
    registry: &RepositoryRegistry,
) -> String {
    let credentials = match (registry.is_public_repository, agent) {
        (false, Agent::User(_)) => instance
            .get_registry_credentials(agent, registry.uuid)
            .await
            .ok()
            .flatten()
            .map(|c| c.status.as_str()),
        _ => None,
    };
    texts::registry(lang, registry, credentials)
}

/// One repo: its registry's URL when the caller may see that registry, and its units' versions.
async fn repo_detail(
    instance: &Instance,
    agent: &Agent,
    lang: Lang,
    repo: &Repo,
) -> AppResult<String> {
    let registry = instance
        .get_registry(agent, repo.repository_registry_uuid)
        .await
        .ok();
    let versions = instance.repo_versions(agent, repo.uuid).await?;
    Ok(texts::repo(
        lang,
        repo,
        registry.as_ref().map(|r| r.repository_url.as_str()),
        Some(&versions),
    ))
}

/// `/chart NODE [PERIOD]`: the node's pipeline data as a picture, or why there is none.
async fn chart(instance: &Instance, agent: &Agent, lang: Lang, args: &[&str]) -> AppResult<Reply> {
    const USAGE: &str = "/chart UNIT/TOPIC|NODE_UUID [PERIOD: 1h, 24h, 7d]";
    let (name, period_text) = match args {
        [name] => (*name, "24h"),
        [name, period] => (*name, *period),
        _ => return Ok(texts::usage(lang, USAGE).into()),
    };
    let Ok(period) = parse_chart_period(period_text) else {
        return Ok(texts::usage(lang, USAGE).into());
    };
    let (time, value) = texts::chart_axes(lang);
    let labels = ChartLabels { time, value };
    let chart = match instance.node_chart(agent, name, period, labels).await {
        Err(AppError::NotFound) => return Ok(texts::no_node(lang, name).into()),
        other => other?,
    };
    Ok(match chart {
        NodeChart::Png {
            png,
            unit,
            topic,
            points,
        } => Reply::Photo {
            png,
            caption: texts::chart_caption(lang, &unit, &topic, period_text, points),
        },
        NodeChart::LastValue {
            unit,
            topic,
            state,
            at,
        } => texts::chart_last_value(lang, &unit, &topic, state.as_deref(), &at).into(),
        NodeChart::NoPipe { unit, topic } => texts::chart_no_pipe(lang, &unit, &topic).into(),
        NodeChart::Empty { unit, topic } => {
            texts::chart_empty(lang, &unit, &topic, period_text).into()
        }
    })
}

async fn mute(
    instance: &Instance,
    agent: &Agent,
    lang: Lang,
    name: &str,
    secs: i64,
) -> AppResult<String> {
    let Some(unit) = instance.own_unit_by_name(agent, name).await? else {
        return Ok(texts::no_unit(lang, name));
    };
    let update = crate::service::alerts::UnitAlertsUpdate {
        alert_log_level: None,
        mute_seconds: Some(secs),
    };
    let unit = instance.set_unit_alerts(agent, unit.uuid, update).await?;
    Ok(texts::muted(
        lang,
        &unit.name,
        unit.alerts_muted_until.as_deref(),
    ))
}

/// The caller's own units matching `filter`: `(total, page)`.
async fn own_units(
    instance: &Instance,
    agent: &Agent,
    filter: UnitFilter,
) -> AppResult<(i64, Vec<Unit>)> {
    let filter = UnitFilter {
        creator_uuid: agent.uuid(),
        ..filter
    };
    instance
        .list_units(
            agent,
            filter,
            VisibilityLevel::ALL,
            UnitNodeInclusion::default(),
        )
        .await
}

/// Newest first: the `n` latest lines at `min` or above.
async fn last_logs(
    instance: &Instance,
    agent: &Agent,
    unit: Uuid,
    min: LogLevel,
    n: i64,
) -> AppResult<Vec<UnitLog>> {
    let filter = UnitLogFilter {
        uuid: Some(unit),
        topic: None,
        start_create_datetime: None,
        end_create_datetime: None,
        level: LogLevel::ALL
            .iter()
            .copied()
            .filter(|l| l.rank() >= min.rank())
            .collect(),
        order_by_create_date: Some(Order::Desc),
        offset: Some(0),
        limit: Some(n),
    };
    Ok(instance.unit_log_list(agent, filter).await?.1)
}

fn parse_level(s: &str) -> Option<LogLevel> {
    LogLevel::ALL
        .iter()
        .copied()
        .find(|l| l.as_str().eq_ignore_ascii_case(s))
}

/// `Update`, `update`, `EnvUpdate`, `env_update`...: the commands a user may send.
fn parse_command(s: &str) -> Option<BackendTopicCommand> {
    let folded: String = s
        .chars()
        .filter(|c| *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    [
        BackendTopicCommand::Update,
        BackendTopicCommand::EnvUpdate,
        BackendTopicCommand::SchemaUpdate,
        BackendTopicCommand::LogSync,
        BackendTopicCommand::Reset,
    ]
    .into_iter()
    .find(|c| c.as_str().to_ascii_lowercase() == folded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsing_arguments() {
        use Browse::*;
        assert_eq!(
            parse_browse(&[]),
            Some(Page {
                mine: false,
                page: 1
            })
        );
        assert_eq!(
            parse_browse(&["MY"]),
            Some(Page {
                mine: true,
                page: 1
            })
        );
        assert_eq!(
            parse_browse(&["my", "3"]),
            Some(Page {
                mine: true,
                page: 3
            })
        );
        assert_eq!(
            parse_browse(&["2"]),
            Some(Page {
                mine: false,
                page: 2
            })
        );
        assert_eq!(parse_browse(&["greenhouse"]), Some(Text("greenhouse")));
        for garbage in [
            &["0"][..],
            &["-1"],
            &["99999999999999999999"],
            &["my", "x"],
            &["my", "0"],
            &["a", "b"],
            &["my", "2", "3"],
        ] {
            assert_eq!(parse_browse(garbage), None, "{garbage:?}");
        }
        assert!(is_guest_browse("/unit", &[]));
        assert!(!is_guest_browse("/unit", &["my"]));
        assert!(!is_guest_browse("/unit", &["greenhouse"]));
        assert!(is_guest_browse("/repo", &["greenhouse"]));
    }

    #[test]
    fn commands_and_levels_parse_loosely() {
        assert_eq!(
            parse_command("env_update"),
            Some(BackendTopicCommand::EnvUpdate)
        );
        assert_eq!(parse_command("LogSync"), Some(BackendTopicCommand::LogSync));
        assert_eq!(parse_command("update"), Some(BackendTopicCommand::Update));
        assert_eq!(parse_command("reset"), Some(BackendTopicCommand::Reset));
        assert_eq!(parse_command("explode"), None);
        assert_eq!(parse_level("error"), Some(LogLevel::Error));
        assert_eq!(parse_level("loud"), None);
    }
}
