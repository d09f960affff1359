//! Upstream's bot commands (issue 19 part 5) against the local fake of the Bot API
//! (tests/common/telegram.rs): `/registry`, `/repo`, `/unit`, `/dashboard`, `/info`, `/help`,
//! `/start` with and without a code, for linked and unlinked chats, in English and Russian,
//! with garbage arguments, paging, and other users' private entries kept out of sight; and the
//! command menu set with `setMyCommands`.

mod common;

use std::time::Duration;

use common::fixtures::{add_units, registry_repo_unit, FirmwareRepo};
use common::telegram::{link, start_instance, FakeTelegram, Sent};
use common::{Backend, TestInstance};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);
const OWNER_CHAT: i64 = 6_660_001;
const GUEST_CHAT: i64 = 6_660_777;

async fn start(backend: Backend, tg: &FakeTelegram, extra: &[(&str, &str)]) -> TestInstance {
    start_instance(tg, backend, extra).await
}

/// The answer to `text` in `chat`.
async fn ask(tg: &FakeTelegram, chat: i64, text: &str, lang: &str) -> String {
    let Sent { text: answer, .. } = tg.reply(chat, text, lang, WAIT).await;
    answer
}

fn has(answer: &str, wanted: &[&str], unwanted: &[&str]) {
    for w in wanted {
        assert!(answer.contains(w), "{w:?} missing from:\n{answer}");
    }
    for u in unwanted {
        assert!(!answer.contains(u), "{u:?} must not be in:\n{answer}");
    }
}

/// A firmware URL as the bot shows it (`127.0.0.1:PORT/firmware`), unique to its registry.
fn host_of(firmware: &FirmwareRepo) -> String {
    let url = firmware.url();
    url.trim_start_matches("http://")
        .trim_end_matches(".git")
        .to_string()
}

async fn upstream_commands(backend: Backend) {
    let tg = FakeTelegram::start().await;
    let inst = start(
        backend,
        &tg,
        &[
            ("PU_FF_GRAFANA_INTEGRATION_ENABLE", "true"),
            ("PU_GRAFANA_ADMIN_USER", "admin"),
            ("PU_GRAFANA_ADMIN_PASSWORD", "secret"),
        ],
    )
    .await;
    let (_, _admin) = inst.user("admin1").await;
    let (_, owner) = inst.user("owner1").await;
    let (_, other) = inst.user("other1").await;
    let fw_owner = FirmwareRepo::create().await;
    let (_, owner_repo, _) =
        registry_repo_unit(&inst, &owner, &fw_owner, "greenhouse", "Private").await;
    let fw_secret = FirmwareRepo::create().await;
    registry_repo_unit(&inst, &other, &fw_secret, "secret", "Private").await;
    let fw_shared = FirmwareRepo::create().await;
    registry_repo_unit(&inst, &other, &fw_shared, "shared", "Public").await;
    let fw_inside = FirmwareRepo::create().await;
    registry_repo_unit(&inst, &other, &fw_inside, "inside", "Internal").await;

    // the menu, in both languages
    let deadline = tokio::time::Instant::now() + WAIT;
    while tg.menu("ru").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no setMyCommands");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (code, unit_description) in [
        ("", "Units you may see, or one of yours"),
        ("ru", "Доступные юниты или ваш юнит"),
    ] {
        let menu = tg.menu(code).unwrap();
        let names: Vec<&str> = menu.iter().map(|(c, _)| c.as_str()).collect();
        for upstream in [
            "start",
            "help",
            "registry",
            "repo",
            "unit",
            "dashboard",
            "info",
        ] {
            assert!(names.contains(&upstream), "{upstream} not in {names:?}");
        }
        assert!(
            menu.contains(&("unit".to_string(), unit_description.to_string())),
            "{menu:?}"
        );
    }

    // an unlinked chat: help with how to link, and what anyone may see
    has(
        &ask(&tg, GUEST_CHAT, "/start", "en").await,
        &["/registry", "/repo", "/dashboard", "not linked"],
        &[],
    );
    has(
        &ask(&tg, GUEST_CHAT, "/repo", "en").await,
        &["<b>Repos</b>", "shared_repo", "Public entries only"],
        &["secret_repo", "inside_repo", "greenhouse_repo"],
    );
    has(
        &ask(&tg, GUEST_CHAT, "/unit", "en").await,
        &["shared_unit</b> - Public, offline", "1 in all"],
        &["secret_unit", "inside_unit", "greenhouse_unit"],
    );
    has(
        &ask(&tg, GUEST_CHAT, "/repo inside_repo", "en").await,
        &["no repo you may see", "Public entries only"],
        &["Branch"],
    );
    has(
        &ask(&tg, GUEST_CHAT, "/registry", "en").await,
        &["Repository registry", "4 in all", "Gitlab <code>127.0.0.1"],
        &[],
    );
    for needs_account in ["/unit my", "/unit greenhouse_unit", "/dashboard"] {
        has(
            &ask(&tg, GUEST_CHAT, needs_account, "en").await,
            &["not linked"],
            &["greenhouse"],
        );
    }
    has(
        &ask(&tg, GUEST_CHAT, "/info", "en").await,
        &[
            "users: 3",
            "registry entries: 4",
            "repos: 4",
            "units: 4",
            "unit nodes:",
        ],
        &["linked to"],
    );

    // a linked user sees Public, Internal and their own; never another user's Private
    link(&inst, &tg, &owner, OWNER_CHAT, "en").await;
    has(
        &ask(&tg, OWNER_CHAT, "/repo", "en").await,
        &[
            "greenhouse_repo</b> - Private",
            "shared_repo</b> - Public",
            "inside_repo</b> - Internal",
            "3 in all",
        ],
        &["secret_repo", "Public entries only"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/repo my", "en").await,
        &["Repos</b> (yours)", "greenhouse_repo", "1 in all"],
        &["shared_repo", "inside_repo"],
    );
    for hidden in ["/repo secret_repo", "/repo secret"] {
        has(
            &ask(&tg, OWNER_CHAT, hidden, "en").await,
            &["no repo you may see"],
            &["Branch", "Private"],
        );
    }
    let repo = ask(&tg, OWNER_CHAT, "/repo greenhouse_repo", "en").await;
    has(
        &repo,
        &[
            "<b>greenhouse_repo</b> - Private",
            &format!("Registry: <code>{}</code>", host_of(&fw_owner)),
            "Branch: main",
            "auto-update: yes, tags only: yes, compiled: no",
            "Units: 1",
            "no version reported - 1",
        ],
        &[],
    );
    // a search with one match shows it; another user's Internal repo by name too
    has(
        &ask(&tg, OWNER_CHAT, "/repo greenhouse", "en").await,
        &["<b>greenhouse_repo</b> - Private", "Units: 1"],
        &[],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/repo inside_repo", "en").await,
        &["<b>inside_repo</b> - Internal", "Units: 1"],
        &[],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/unit", "en").await,
        &[
            "greenhouse_unit</b> - Private, offline",
            "shared_unit</b> - Public",
            "inside_unit</b> - Internal",
            "3 in all",
        ],
        &["secret_unit"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/unit secret_unit", "en").await,
        &["You have no unit named <b>secret_unit</b>"],
        &[],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/unit greenhouse_unit", "en").await,
        &["Firmware update", "No log lines"],
        &[],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/registry my", "en").await,
        &[
            "Repository registry</b> (yours)",
            "1 in all",
            &host_of(&fw_owner),
        ],
        &[&host_of(&fw_shared)],
    );
    has(
        &ask(
            &tg,
            OWNER_CHAT,
            &format!("/registry {}", host_of(&fw_shared)),
            "en",
        )
        .await,
        &[
            &format!("<code>{}</code>", host_of(&fw_shared)),
            "Platform: Gitlab",
            "Repository: public",
            "Sync: Updated,",
            "Branches (2): ",
            "main",
        ],
        &["Your credentials"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/registry nosuchhost", "en").await,
        &["Nothing matches"],
        &[],
    );

    // garbage arguments are answered with the usage
    for (garbage, usage) in [
        ("/unit 0", "Usage: /unit [my] [page] | /unit NAME"),
        ("/unit my everything", "Usage: /unit"),
        ("/unit a b", "Usage: /unit"),
        ("/repo -2", "Usage: /repo [my] [page] | /repo NAME"),
        ("/repo my 1 2", "Usage: /repo"),
        ("/registry 99999999999999999999", "Usage: /registry"),
        ("/dashboard 0", "Usage: /dashboard [page] | /dashboard TEXT"),
        ("/units -1", "Usage: /units [page]"),
    ] {
        has(&ask(&tg, OWNER_CHAT, garbage, "en").await, &[usage], &[]);
    }

    // paging: 10 a page, the next page named
    let more: Vec<String> = (1..=10).map(|i| format!("bed_{i:02}")).collect();
    add_units(&inst, &owner, &owner_repo, more).await;
    has(
        &ask(&tg, OWNER_CHAT, "/unit", "en").await,
        &["13 in all, page 1/2", "bed_01", "Next page: /unit 2"],
        &["shared_unit"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/unit 2", "en").await,
        &["page 2/2", "shared_unit"],
        &["bed_01", "Next page"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/unit my", "en").await,
        &["11 in all, page 1/2", "Next page: /unit my 2"],
        &["shared_unit", "inside_unit"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/unit my 2", "en").await,
        &["page 2/2", "greenhouse_unit"],
        &["bed_01", "Next page"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/unit 3", "en").await,
        &["There are only 2 page(s)"],
        &["bed_01"],
    );

    // dashboards: the caller's own only
    has(
        &ask(&tg, OWNER_CHAT, "/dashboard", "en").await,
        &["<b>Dashboards</b>", "Nothing here yet"],
        &[],
    );
    for (token, name) in [
        (&owner, "Greenhouse air"),
        (&owner, "Garage door"),
        (&other, "Their secret"),
    ] {
        let (s, d) = inst
            .post(
                "/grafana/create_dashboard",
                Some(token),
                json!({"name": name}),
            )
            .await;
        assert_eq!(s.as_u16(), 201, "{d}");
    }
    has(
        &ask(&tg, OWNER_CHAT, "/dashboard", "en").await,
        &[
            "<b>Greenhouse air</b> - not synced yet",
            "<b>Garage door</b>",
            "2 in all",
        ],
        &["Their secret"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/dashboard garage", "en").await,
        &["«garage»", "Garage door", "1 in all"],
        &["Greenhouse air"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/dashboard secret", "en").await,
        &["Nothing matches"],
        &["Their secret"],
    );

    // help and info of a linked chat
    has(
        &ask(&tg, OWNER_CHAT, "/help", "en").await,
        &[
            "/registry [my] [page]",
            "/repo [my] [page]",
            "/unit [my] [page]",
            "/dashboard [page]",
            "/info",
            "/start CODE",
        ],
        &["not linked"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/info", "en").await,
        &["units: 14", "This chat is linked to <b>owner1</b>"],
        &[],
    );

    // Russian
    has(
        &ask(&tg, OWNER_CHAT, "/lang ru", "en").await,
        &["Буду писать по-русски"],
        &[],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/repo", "en").await,
        &["<b>Репозитории</b>", "3 всего, стр. 1/1"],
        &["secret_repo"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/unit my", "en").await,
        &[
            "<b>Юниты</b> (ваши)",
            "не в сети",
            "Следующая страница: /unit my 2",
        ],
        &[],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/registry my", "en").await,
        &["Реестр репозиториев", "публичный"],
        &["приватный"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/dashboard", "en").await,
        &["<b>Дашборды</b>", "ещё не синхронизирован"],
        &["Their secret"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/repo secret_repo", "en").await,
        &["Нет доступного вам репозитория"],
        &[],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/registry 0", "en").await,
        &["Формат: /registry"],
        &[],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/help", "en").await,
        &["/registry [my] [страница]", "/dashboard [страница]"],
        &[],
    );
    has(
        &ask(&tg, GUEST_CHAT, "/unit", "ru").await,
        &["<b>Юниты</b>", "Только публичные записи"],
        &["greenhouse_unit"],
    );
    inst.stop().await;
}

both_backends!(upstream_commands);

/// `/dashboard` on an instance without the Grafana integration says so, politely, in the
/// chat's language; `/start` with a code links, without one it is the help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_off_and_start() {
    let tg = FakeTelegram::start().await;
    let inst = start(Backend::Sqlite, &tg, &[]).await;
    let (_, owner) = inst.user("owner1").await;
    has(
        &ask(&tg, OWNER_CHAT, "/start NOTACODE", "en").await,
        &["unknown, used or expired"],
        &[],
    );
    link(&inst, &tg, &owner, OWNER_CHAT, "en").await;
    has(
        &ask(&tg, OWNER_CHAT, "/start", "en").await,
        &["<b>Pepeunit bot</b>", "/registry"],
        &["not linked"],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/dashboard", "en").await,
        &["Grafana dashboards are turned off on this instance."],
        &[],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/lang ru", "en").await,
        &["по-русски"],
        &[],
    );
    has(
        &ask(&tg, OWNER_CHAT, "/dashboard", "en").await,
        &["Дашборды Grafana на этом инстансе выключены."],
        &[],
    );
    inst.stop().await;
}
