//! Everything the bot says, in English and Russian. Messages are Telegram HTML: every value
//! that comes from users or devices goes through [`escape`].

use super::{clip, escape, Lang};
use crate::domain::LogLevel;
use crate::service::alerts::AlertMessage;
use crate::service::dashboards::Dashboard;
use crate::service::registries::RepositoryRegistry;
use crate::service::repos::{Repo, RepoVersions};
use crate::service::unit_logs::UnitLog;
use crate::service::units::Unit;

/// Most UTF-16 units of one device log line in a list (`/unit`, `/logs`, an alert's "last").
const LINE_CLIP: usize = 300;
/// Most UTF-16 units of the line an alert is about (messages hold at most 4096).
const ALERT_CLIP: usize = 2000;

fn t(lang: Lang, en: &'static str, ru: &'static str) -> &'static str {
    match lang {
        Lang::En => en,
        Lang::Ru => ru,
    }
}

pub fn help(lang: Lang) -> String {
    t(
        lang,
        "<b>Pepeunit bot</b>\n\
         /units [page] - your units\n\
         /unit [my] [page] - units you may see, online or not (my: yours only)\n\
         /unit NAME - state, version and last logs of your unit\n\
         /repo [my] [page] - repos you may see; /repo NAME shows one, /repo TEXT finds\n\
         /registry [my] [page] - the repository registry; /registry TEXT finds by URL\n\
         /dashboard [page] - your Grafana dashboards; /dashboard TEXT finds\n\
         /logs NAME [LEVEL] [N] - last N log lines at LEVEL or above\n\
         /send NAME COMMAND - send Update, EnvUpdate, SchemaUpdate, LogSync or Reset\n\
         /alerts NAME LEVEL - alert from LEVEL (Debug..Critical)\n\
         /mute NAME [HOURS] - mute the unit's alerts (default 24 h)\n\
         /unmute NAME - alerts again\n\
         /chart UNIT/TOPIC|NODE_UUID [PERIOD] - chart of a node's data pipe (PERIOD 1h, 24h, 7d; default 24h)\n\
         /info - this instance\n\
         /help - this list\n\
         /lang en|ru - language\n\
         /start CODE - link this chat to your account (code from the web app)",
        "<b>Бот Pepeunit</b>\n\
         /units [страница] - ваши юниты\n\
         /unit [my] [страница] - доступные вам юниты, в сети или нет (my: только ваши)\n\
         /unit ИМЯ - состояние, версия и последние логи вашего юнита\n\
         /repo [my] [страница] - доступные вам репозитории; /repo ИМЯ - один, /repo ТЕКСТ - поиск\n\
         /registry [my] [страница] - реестр репозиториев; /registry ТЕКСТ - поиск по URL\n\
         /dashboard [страница] - ваши дашборды Grafana; /dashboard ТЕКСТ - поиск\n\
         /logs ИМЯ [УРОВЕНЬ] [N] - последние N строк лога с уровнем не ниже УРОВНЯ\n\
         /send ИМЯ КОМАНДА - отправить Update, EnvUpdate, SchemaUpdate, LogSync или Reset\n\
         /alerts ИМЯ УРОВЕНЬ - оповещать начиная с УРОВНЯ (Debug..Critical)\n\
         /mute ИМЯ [ЧАСЫ] - выключить оповещения юнита (по умолчанию 24 ч)\n\
         /unmute ИМЯ - снова оповещать\n\
         /chart ЮНИТ/ТОПИК|UUID_НОДЫ [ПЕРИОД] - график данных пайплайна ноды (ПЕРИОД 1h, 24h, 7d; по умолчанию 24h)\n\
         /info - об этом инстансе\n\
         /help - этот список\n\
         /lang en|ru - язык\n\
         /start КОД - привязать этот чат к аккаунту (код из веб-приложения)",
    )
    .to_string()
}

pub fn need_link(lang: Lang) -> String {
    t(
        lang,
        "This chat is not linked to a Pepeunit account yet. In Pepeunit, ask for a Telegram link (GET /users/generate_verification_link/) and open it, or send /start CODE.",
        "Этот чат ещё не привязан к аккаунту Pepeunit. Получите в Pepeunit ссылку для Telegram (GET /users/generate_verification_link/) и откройте её или отправьте /start КОД.",
    )
    .to_string()
}

pub fn linked(lang: Lang, login: &str) -> String {
    format!(
        "{} <b>{}</b>. {}",
        t(lang, "Linked to", "Чат привязан к"),
        escape(login),
        t(lang, "Send /help for commands.", "Команды: /help.")
    )
}

pub fn bad_code(lang: Lang) -> String {
    t(
        lang,
        "This code is unknown, used or expired: ask Pepeunit for a new link.",
        "Код неизвестен, уже использован или истёк: получите в Pepeunit новую ссылку.",
    )
    .to_string()
}

pub fn blocked(lang: Lang) -> String {
    t(
        lang,
        "Your account is blocked.",
        "Ваш аккаунт заблокирован.",
    )
    .to_string()
}

pub fn unknown_command(lang: Lang) -> String {
    t(
        lang,
        "Unknown command. /help lists them.",
        "Неизвестная команда. Список: /help.",
    )
    .to_string()
}

pub fn usage(lang: Lang, syntax: &str) -> String {
    format!("{} {}", t(lang, "Usage:", "Формат:"), escape(syntax))
}

pub fn no_unit(lang: Lang, name: &str) -> String {
    format!(
        "{} <b>{}</b>",
        t(lang, "You have no unit named", "У вас нет юнита с именем"),
        escape(name)
    )
}

pub fn failed(lang: Lang, detail: &str) -> String {
    format!("{} {}", t(lang, "Failed:", "Ошибка:"), escape(detail))
}

pub fn lang_set(lang: Lang) -> String {
    t(lang, "I will write in English.", "Буду писать по-русски.").to_string()
}

fn online(lang: Lang, unit: &Unit, stale_after_secs: i64) -> &'static str {
    let fresh = unit.unit_state.is_some()
        && crate::domain::parse_time(&unit.last_update_datetime)
            .map(|at| (chrono::Utc::now().naive_utc() - at).num_seconds() <= stale_after_secs)
            .unwrap_or(false);
    if fresh {
        t(lang, "online", "в сети")
    } else {
        t(lang, "offline", "не в сети")
    }
}

pub fn units(lang: Lang, units: &[Unit], page: i64, pages: i64, stale_after_secs: i64) -> String {
    if units.is_empty() {
        return t(lang, "You have no units.", "У вас нет юнитов.").to_string();
    }
    let mut out = format!(
        "<b>{}</b> ({} {page}/{pages})\n",
        t(lang, "Your units", "Ваши юниты"),
        t(lang, "page", "стр.")
    );
    for u in units {
        out.push_str(&unit_line(lang, u, stale_after_secs, false));
    }
    out
}

/// One unit in a list: name, (visibility,) online or not, the version it reported.
fn unit_line(lang: Lang, u: &Unit, stale_after_secs: i64, visibility: bool) -> String {
    let visibility = if visibility {
        format!("{}, ", u.visibility_level.as_str())
    } else {
        String::new()
    };
    format!(
        "• <b>{}</b> - {visibility}{}, {} {}\n",
        escape(&u.name),
        online(lang, u, stale_after_secs),
        t(lang, "version", "версия"),
        escape(short_commit(u.current_commit_version.as_deref())),
    )
}

/// The first 12 characters of a version the device reported (any text, not always a hash).
fn short_commit(c: Option<&str>) -> &str {
    match c {
        Some(c) => c.char_indices().nth(12).map_or(c, |(i, _)| &c[..i]),
        None => "-",
    }
}

pub fn unit(lang: Lang, u: &Unit, logs: &[UnitLog], stale_after_secs: i64) -> String {
    let mut out = format!(
        "<b>{}</b> - {}\n{}: {}\n{}: {}\n{}: {}\n{}: {}",
        escape(&u.name),
        online(lang, u, stale_after_secs),
        t(lang, "Version", "Версия"),
        escape(short_commit(u.current_commit_version.as_deref())),
        t(lang, "Firmware update", "Обновление прошивки"),
        u.firmware_update_status.map(|s| s.as_str()).unwrap_or("-"),
        t(lang, "Last state", "Последнее состояние"),
        escape(&u.last_update_datetime),
        t(lang, "Alerts from", "Оповещения с уровня"),
        u.alert_log_level.as_str(),
    );
    if let Some(until) = &u.alerts_muted_until {
        out.push_str(&format!(
            ", {} {}",
            t(lang, "muted until", "выключены до"),
            escape(until)
        ));
    }
    if let Some(state) = &u.unit_state {
        let mut facts = Vec::new();
        if let Some(m) = state.millis {
            facts.push(format!("uptime {:.0} s", m / 1000.0));
        }
        if let Some(m) = state.mem_free {
            facts.push(format!("mem_free {m:.0}"));
        }
        if let Some(f) = state.freq {
            facts.push(format!("freq {f:.0}"));
        }
        if !facts.is_empty() {
            out.push_str(&format!("\n{}", escape(&facts.join(", "))));
        }
    }
    out.push('\n');
    out.push_str(&log_lines(lang, logs));
    out
}

pub fn logs(lang: Lang, unit_name: &str, logs: &[UnitLog]) -> String {
    format!("<b>{}</b>\n{}", escape(unit_name), log_lines(lang, logs))
}

fn log_lines(lang: Lang, logs: &[UnitLog]) -> String {
    if logs.is_empty() {
        return t(lang, "No log lines.", "Строк лога нет.").to_string();
    }
    let mut out = String::new();
    // newest last, as in a terminal
    for l in logs.iter().rev() {
        out.push_str(&format!(
            "<code>{}</code> {} {}\n",
            escape(l.create_datetime.get(11..19).unwrap_or(&l.create_datetime)),
            level_mark(l.level),
            escape(&clip(&l.text, LINE_CLIP))
        ));
    }
    out
}

fn level_mark(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "⚪ Debug",
        LogLevel::Info => "🔵 Info",
        LogLevel::Warning => "🟡 Warning",
        LogLevel::Error => "🔴 Error",
        LogLevel::Critical => "🟣 Critical",
    }
}

pub fn command_sent(lang: Lang, command: &str, unit: &str, published: bool) -> String {
    if published {
        format!(
            "{} <b>{}</b> → <b>{}</b>",
            t(lang, "Sent", "Отправлено"),
            escape(command),
            escape(unit)
        )
    } else {
        format!(
            "<b>{}</b>: {} {}",
            escape(unit),
            t(
                lang,
                "its schema has no topic for",
                "в его схеме нет топика для"
            ),
            escape(command)
        )
    }
}

pub fn muted(lang: Lang, unit: &str, until: Option<&str>) -> String {
    match until {
        Some(until) => format!(
            "{} <b>{}</b> {} {} UTC",
            t(lang, "Alerts of", "Оповещения"),
            escape(unit),
            t(lang, "muted until", "выключены до"),
            escape(until.get(..16).unwrap_or(until))
        ),
        None => format!(
            "{} <b>{}</b> {}",
            t(lang, "Alerts of", "Оповещения"),
            escape(unit),
            t(lang, "are on", "включены")
        ),
    }
}

pub fn alert_level(lang: Lang, unit: &str, level: LogLevel) -> String {
    format!(
        "<b>{}</b>: {} {}",
        escape(unit),
        t(lang, "alerts from", "оповещения с уровня"),
        level.as_str()
    )
}

/// The axis texts of a chart: time (UTC) and value.
pub fn chart_axes(lang: Lang) -> (&'static str, &'static str) {
    (
        t(lang, "Time, UTC", "Время, UTC"),
        t(lang, "Value", "Значение"),
    )
}

fn node_name(unit: &str, topic: &str) -> String {
    format!("<b>{}/{}</b>", escape(unit), escape(topic))
}

/// A chart's caption.
pub fn chart_caption(lang: Lang, unit: &str, topic: &str, period: &str, points: usize) -> String {
    format!(
        "{} - {} {}, {points} {}",
        node_name(unit, topic),
        t(lang, "last", "за последние"),
        escape(period),
        t(lang, "values", "значений"),
    )
}

pub fn no_node(lang: Lang, name: &str) -> String {
    format!(
        "{} <b>{}</b>. {}",
        t(
            lang,
            "You have no node you may read named",
            "У вас нет доступной ноды"
        ),
        escape(name),
        t(
            lang,
            "Name it UNIT/TOPIC (e.g. my_unit/temp/pepeunit) or by its uuid.",
            "Укажите её как ЮНИТ/ТОПИК (например, my_unit/temp/pepeunit) или по uuid."
        )
    )
}

pub fn chart_no_pipe(lang: Lang, unit: &str, topic: &str) -> String {
    format!(
        "{}: {}",
        node_name(unit, topic),
        t(
            lang,
            "no data to chart: its data pipe is off or has no config.",
            "нет данных для графика: пайплайн данных выключен или не настроен."
        )
    )
}

pub fn chart_empty(lang: Lang, unit: &str, topic: &str, period: &str) -> String {
    format!(
        "{}: {} {}.",
        node_name(unit, topic),
        t(
            lang,
            "no numeric values in the last",
            "нет числовых значений за последние"
        ),
        escape(period)
    )
}

pub fn chart_last_value(
    lang: Lang,
    unit: &str,
    topic: &str,
    state: Option<&str>,
    at: &str,
) -> String {
    format!(
        "{}: {}\n{}: <code>{}</code> ({} UTC)",
        node_name(unit, topic),
        t(
            lang,
            "its data pipe keeps the last value only, nothing to chart",
            "пайплайн данных хранит только последнее значение, графика нет"
        ),
        t(lang, "Value", "Значение"),
        escape(&clip(state.unwrap_or("-"), LINE_CLIP)),
        escape(at.get(..19).unwrap_or(at)),
    )
}

pub struct InstanceInfo<'a> {
    pub name: &'a str,
    pub domain: &'a str,
    pub version: &'a str,
    pub users: i64,
    pub registries: i64,
    pub repos: i64,
    pub units: i64,
    pub unit_nodes: i64,
    pub edges: i64,
    pub linked_as: Option<&'a str>,
}

pub fn info(lang: Lang, i: &InstanceInfo<'_>) -> String {
    let mut out = format!(
        "<b>{}</b>\n{}: {}\n{}: {}\n{}: {}, {}: {}, {}: {}, {}: {}, {}: {}, {}: {}",
        escape(i.name),
        t(lang, "Domain", "Домен"),
        escape(i.domain),
        t(lang, "Version", "Версия"),
        escape(i.version),
        t(lang, "users", "пользователей"),
        i.users,
        t(lang, "registry entries", "записей реестра"),
        i.registries,
        t(lang, "repos", "репозиториев"),
        i.repos,
        t(lang, "units", "юнитов"),
        i.units,
        t(lang, "unit nodes", "нод"),
        i.unit_nodes,
        t(lang, "links", "связей"),
        i.edges,
    );
    if let Some(login) = i.linked_as {
        out.push_str(&format!(
            "\n{} <b>{}</b>",
            t(lang, "This chat is linked to", "Чат привязан к"),
            escape(login)
        ));
    }
    out
}

/// Where a list answer stands: the command that shows it, whose entries, the search text, the
/// page and how many there are.
pub struct ListPage<'a> {
    pub command: &'a str,
    pub mine: bool,
    pub search: Option<&'a str>,
    pub page: i64,
    pub pages: i64,
    pub total: i64,
}

/// A list answer: title, one line per entry, where it stands, and how to ask for the next page
/// (the bot pages with arguments: `/repo 2`, `/repo my 3`).
fn listing(lang: Lang, title: &str, lines: &[String], at: &ListPage<'_>) -> String {
    let mut out = format!("<b>{title}</b>");
    if at.mine {
        out.push_str(t(lang, " (yours)", " (ваши)"));
    }
    if let Some(search) = at.search {
        out.push_str(&format!(" - «{}»", escape(search)));
    }
    if lines.is_empty() {
        out.push('\n');
        if at.total > 0 {
            out.push_str(&format!(
                "{} {} {}",
                t(lang, "There are only", "Всего страниц:"),
                at.pages,
                t(lang, "page(s).", "")
            ));
            return out.trim_end().to_string();
        }
        out.push_str(match at.search {
            Some(_) => t(lang, "Nothing matches.", "Ничего не найдено."),
            None => t(lang, "Nothing here yet.", "Пока пусто."),
        });
        return out;
    }
    out.push_str(&format!(
        " - {} {}, {} {}/{}\n",
        at.total,
        t(lang, "in all", "всего"),
        t(lang, "page", "стр."),
        at.page,
        at.pages
    ));
    for line in lines {
        out.push_str(line);
    }
    if at.page < at.pages {
        let next = match at.search {
            Some(search) => format!("{} {}", at.command, escape(search)),
            None if at.mine => format!("{} my {}", at.command, at.page + 1),
            None => format!("{} {}", at.command, at.page + 1),
        };
        out.push_str(&match at.search {
            Some(_) => format!(
                "{} {}",
                t(
                    lang,
                    "More match than one page shows; narrow the search:",
                    "Найдено больше, чем помещается; уточните поиск:"
                ),
                next
            ),
            None => format!("{} {next}", t(lang, "Next page:", "Следующая страница:")),
        });
    }
    out
}

fn public_or_private(lang: Lang, public: bool) -> &'static str {
    if public {
        t(lang, "public", "публичный")
    } else {
        t(lang, "private", "приватный")
    }
}

/// A registry's URL without the scheme and `.git` (what upstream's bot shows).
fn short_url(url: &str) -> &str {
    let url = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    url.strip_suffix(".git").unwrap_or(url)
}

fn sync_status(lang: Lang, r: &RepositoryRegistry) -> &'static str {
    r.sync_status
        .map(|s| s.as_str())
        .unwrap_or(t(lang, "not synced", "не синхронизирован"))
}

/// `/registry`: registry entries, one line each.
pub fn registries(lang: Lang, items: &[RepositoryRegistry], at: &ListPage<'_>) -> String {
    let lines: Vec<String> = items
        .iter()
        .map(|r| {
            format!(
                "• {} <code>{}</code> - {}, {}\n",
                r.platform.as_str(),
                escape(short_url(&r.repository_url)),
                public_or_private(lang, r.is_public_repository),
                sync_status(lang, r),
            )
        })
        .collect();
    listing(
        lang,
        t(lang, "Repository registry", "Реестр репозиториев"),
        &lines,
        at,
    )
}

/// Bytes for people: `512 B`, `1.5 KB`, `20.0 MB`.
fn byte_size(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut value = n.max(0) as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// One registry entry in full; `credentials` is the caller's own credential status for a
/// private one (`None`: none stored or not asked).
pub fn registry(lang: Lang, r: &RepositoryRegistry, credentials: Option<&str>) -> String {
    let mut out = format!(
        "<b>{}</b> <code>{}</code>\n{}: {}\n{}: {}",
        t(lang, "Registry", "Реестр"),
        escape(short_url(&r.repository_url)),
        t(lang, "Platform", "Платформа"),
        r.platform.as_str(),
        t(lang, "Repository", "Репозиторий"),
        public_or_private(lang, r.is_public_repository),
    );
    out.push_str(&format!(
        "\n{}: {}",
        t(lang, "Sync", "Синхронизация"),
        sync_status(lang, r)
    ));
    if let Some(at) = &r.sync_last_datetime {
        out.push_str(&format!(", {} UTC", escape(at.get(..19).unwrap_or(at))));
    }
    if let Some(e) = &r.sync_error {
        out.push_str(&format!(
            "\n{}: {}",
            t(lang, "Sync error", "Ошибка синхронизации"),
            escape(&clip(e, LINE_CLIP))
        ));
    }
    // the first branches by name; a mirror may hold hundreds
    let mut branches: Vec<String> = r.branches.iter().take(10).map(|b| escape(b)).collect();
    if r.branches.len() > branches.len() {
        branches.push("…".to_string());
    }
    out.push_str(&format!(
        "\n{}: {}\n{} ({}): {}",
        t(lang, "Local size", "Размер копии"),
        byte_size(r.local_repository_size),
        t(lang, "Branches", "Ветки"),
        r.branches.len(),
        branches.join(", "),
    ));
    if !r.is_public_repository {
        out.push_str(&format!(
            "\n{}: {}",
            t(lang, "Your credentials", "Ваши учётные данные"),
            credentials.unwrap_or(t(lang, "none", "нет"))
        ));
    }
    out
}

/// `/repo`: repos, one line each.
pub fn repos(lang: Lang, items: &[Repo], at: &ListPage<'_>) -> String {
    let lines: Vec<String> = items
        .iter()
        .map(|r| {
            format!(
                "• <b>{}</b> - {}\n",
                escape(&r.name),
                r.visibility_level.as_str()
            )
        })
        .collect();
    listing(lang, t(lang, "Repos", "Репозитории"), &lines, at)
}

fn yes_no(lang: Lang, v: bool) -> &'static str {
    if v {
        t(lang, "yes", "да")
    } else {
        t(lang, "no", "нет")
    }
}

/// One repo: its settings, the registry it views (when the caller may see it) and how its
/// units spread over versions.
pub fn repo(
    lang: Lang,
    r: &Repo,
    registry_url: Option<&str>,
    versions: Option<&RepoVersions>,
) -> String {
    let mut out = format!(
        "<b>{}</b> - {}",
        escape(&r.name),
        r.visibility_level.as_str()
    );
    if let Some(url) = registry_url {
        out.push_str(&format!(
            "\n{}: <code>{}</code>",
            t(lang, "Registry", "Реестр"),
            escape(short_url(url))
        ));
    }
    out.push_str(&format!(
        "\n{}: {}\n{}: {}, {}: {}, {}: {}",
        t(lang, "Branch", "Ветка"),
        escape(r.default_branch.as_deref().unwrap_or("-")),
        t(lang, "auto-update", "автообновление"),
        yes_no(lang, r.is_auto_update_repo),
        t(lang, "tags only", "только теги"),
        yes_no(lang, r.is_only_tag_update),
        t(lang, "compiled", "компилируемый"),
        yes_no(lang, r.is_compilable_repo),
    ));
    if let Some(v) = versions {
        out.push_str(&format!(
            "\n{}: {}",
            t(lang, "Units", "Юнитов"),
            v.unit_count
        ));
        for version in &v.versions {
            let name = match (&version.tag, &version.commit) {
                (Some(tag), _) => tag.as_str(),
                (None, Some(commit)) => short_commit(Some(commit)),
                (None, None) => t(lang, "no version reported", "версия не сообщена"),
            };
            out.push_str(&format!("\n  {} - {}", escape(name), version.unit_count));
        }
    }
    out
}

/// `/unit` without a name: units the caller may see, one line each.
pub fn visible_units(
    lang: Lang,
    items: &[Unit],
    at: &ListPage<'_>,
    stale_after_secs: i64,
) -> String {
    let lines: Vec<String> = items
        .iter()
        .map(|u| unit_line(lang, u, stale_after_secs, true))
        .collect();
    listing(lang, t(lang, "Units", "Юниты"), &lines, at)
}

/// `/dashboard`: the caller's dashboards, with Grafana's link once synced.
pub fn dashboards(lang: Lang, items: &[Dashboard], at: &ListPage<'_>) -> String {
    let lines: Vec<String> = items
        .iter()
        .map(|d| {
            let state = match (&d.sync_status, &d.dashboard_url) {
                (Some(status), Some(url)) => format!("{}: {}", escape(status), escape(url)),
                (Some(status), None) => escape(status),
                (None, _) => t(lang, "not synced yet", "ещё не синхронизирован").to_string(),
            };
            format!("• <b>{}</b> - {state}\n", escape(&d.name))
        })
        .collect();
    listing(lang, t(lang, "Dashboards", "Дашборды"), &lines, at)
}

pub fn dashboards_off(lang: Lang) -> String {
    t(
        lang,
        "Grafana dashboards are turned off on this instance.",
        "Дашборды Grafana на этом инстансе выключены.",
    )
    .to_string()
}

/// Said under what an unlinked chat sees.
pub fn guest_note(lang: Lang) -> String {
    t(
        lang,
        "Public entries only. Link this chat to your account (/start CODE) to see yours.",
        "Только публичные записи. Привяжите чат к аккаунту (/start КОД), чтобы видеть свои.",
    )
    .to_string()
}

pub fn no_repo(lang: Lang, name: &str) -> String {
    format!(
        "{} <b>{}</b>",
        t(
            lang,
            "There is no repo you may see named or matching",
            "Нет доступного вам репозитория с именем или текстом"
        ),
        escape(name)
    )
}

/// The commands Telegram's menu offers (`setMyCommands`): command, English, Russian.
const MENU: &[(&str, &str, &str)] = &[
    (
        "start",
        "Start; link with a code",
        "Начать; привязать по коду",
    ),
    ("help", "All commands", "Все команды"),
    ("registry", "Repository registry", "Реестр репозиториев"),
    ("repo", "Repos", "Репозитории"),
    (
        "unit",
        "Units you may see, or one of yours",
        "Доступные юниты или ваш юнит",
    ),
    ("units", "Your units", "Ваши юниты"),
    (
        "dashboard",
        "Your Grafana dashboards",
        "Ваши дашборды Grafana",
    ),
    (
        "logs",
        "A unit's last log lines",
        "Последние строки лога юнита",
    ),
    (
        "send",
        "Send a command to a unit",
        "Отправить команду юниту",
    ),
    (
        "alerts",
        "Alert level of a unit",
        "Уровень оповещений юнита",
    ),
    ("mute", "Mute a unit's alerts", "Выключить оповещения юнита"),
    ("unmute", "Alerts again", "Снова оповещать"),
    ("chart", "Chart of a node's data", "График данных ноды"),
    ("info", "This instance", "Об этом инстансе"),
    ("lang", "Language: en or ru", "Язык: en или ru"),
];

/// The command menu in a language: `(command, description)`.
pub fn command_menu(lang: Lang) -> Vec<(&'static str, &'static str)> {
    MENU.iter()
        .map(|(command, en, ru)| (*command, t(lang, en, ru)))
        .collect()
}

/// An alert: the line that may go out now and what was held back before it, or a summary.
pub fn alert(lang: Lang, unit: &str, msg: &AlertMessage) -> String {
    let mut out = String::new();
    if let Some(line) = &msg.line {
        out.push_str(&format!(
            "{} <b>{}</b>\n{}\n<code>{}</code> UTC",
            level_mark(line.level),
            escape(unit),
            escape(&clip(&line.text, ALERT_CLIP)),
            escape(line.at.get(..19).unwrap_or(&line.at)),
        ));
    }
    let held = &msg.held;
    if held.count > 0 {
        if !out.is_empty() {
            out.push_str("\n\n");
        } else {
            out.push_str(&format!("<b>{}</b>\n", escape(unit)));
        }
        let levels: Vec<String> = LogLevel::ALL
            .iter()
            .filter(|l| held.by_level[l.rank()] > 0)
            .map(|l| format!("{} {}", held.by_level[l.rank()], l.as_str()))
            .collect();
        out.push_str(&format!(
            "{} {} {} {} UTC ({})",
            t(lang, "Held back:", "Сдержано:"),
            held.count,
            t(lang, "more alerts since", "оповещений с"),
            escape(
                held.since
                    .as_deref()
                    .and_then(|s| s.get(..19))
                    .unwrap_or("-")
            ),
            levels.join(", "),
        ));
        if let Some(last) = &held.last {
            out.push_str(&format!(
                "\n{} {} {}",
                t(lang, "Last:", "Последнее:"),
                level_mark(last.level),
                escape(&clip(&last.text, LINE_CLIP))
            ));
        }
    }
    out
}

/// A crash alert for admins (the node's throttled summary text).
pub fn crash(lang: Lang, text: &str, count: u64) -> String {
    format!(
        "⚠️ <b>{}</b> ({} {count})\n{}",
        t(lang, "Pepeunit node problem", "Проблема узла Pepeunit"),
        t(lang, "occurrences:", "случаев:"),
        escape(text)
    )
}

pub fn crash_lagged(lang: Lang, n: u64) -> String {
    format!(
        "⚠️ {} {n}",
        t(
            lang,
            "Crash alerts dropped (too many at once):",
            "Оповещения о сбоях пропущены (слишком много сразу):"
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_menu_command_is_in_the_help() {
        for lang in [Lang::En, Lang::Ru] {
            let help = help(lang);
            for (command, description) in command_menu(lang) {
                assert!(
                    help.contains(&format!("/{command}")),
                    "{command} not in help"
                );
                // Telegram: 1-32 lowercase letters, digits, underscores; description 1-256
                assert!(
                    (1..=32).contains(&command.len())
                        && command
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                );
                assert!((1..=256).contains(&description.chars().count()));
            }
        }
    }

    #[test]
    fn sizes_and_urls_for_people() {
        assert_eq!(byte_size(512), "512 B");
        assert_eq!(byte_size(1536), "1.5 KB");
        assert_eq!(byte_size(20 * 1024 * 1024), "20.0 MB");
        assert_eq!(short_url("https://github.com/a/b.git"), "github.com/a/b");
        assert_eq!(short_url("http://gitlab.local/a/b"), "gitlab.local/a/b");
    }

    #[test]
    fn a_reported_version_is_cut_on_a_character_boundary() {
        assert_eq!(short_commit(None), "-");
        assert_eq!(short_commit(Some("v1.2")), "v1.2");
        assert_eq!(short_commit(Some("0123456789abcdef0123")), "0123456789ab");
        // any text a device reports: byte 12 falls inside the 'é'
        assert_eq!(short_commit(Some("version-1.2éé")), "version-1.2é");
        assert_eq!(short_commit(Some("версия-прошивки")), "версия-проши");
    }
}
