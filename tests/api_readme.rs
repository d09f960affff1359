//! `POST /units/convert_toml_to_md`: a `pepeunit.toml` upload becomes the Unit's `readme.md`.

mod common;

use axum::http::StatusCode;
use serde_json::Value;

use common::{assert_detail, Backend, TestInstance};

/// The upstream docs' example `pepeunit.toml` (docs/en/developer/files/struct-pepeunit-toml.md).
const EXAMPLE: &str = r#"[general]
name = "Fan Regulator ds18b20"
description = "Regulates fan speed depending on temperature. Publishes current temperature and `16bit` duty cycle. Allows turning the fan on for `N` seconds on command at any duty cycle"
language = "Micropython"
hardware = ["esp32", "esp32c3", "esp32s3", "ds18b20", "4pin fan", "4.7kOhm resistor", "wires"]
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
video = {preview = "https://media.example.com/video/base64_streaming_prev.jpg", link = "https://video.example.com/watch?v=r1CpkXD_MJY"}

[images]
schema = "https://media.example.com/schema/schema_fan_4pin_unit.png"

[models]
models = [
  {version = "v0", description = "Example model", link = "https://media.example.com/model/v3/stl/capsule_insert.stl"},
  {version = "v0", description = "Example model", link = "https://media.example.com/model/v3/stl/capsule_panel.stl"}
]

[files]
"Delta `4Pin PWM` fan documentation" = "https://www.delta-fan.com/products/ffb1212eh.html"
"Noctua `4Pin PWM` fan documentation" = "https://www.noctua.at/en/products/nf-f12-industrialppc-3000-pwm/specifications"

[physical_io]
"client.settings.PIN_FAN" = "Duty cycle control for the fan"
"client.settings.PIN_DS18B20" = "Digital temperature value from the `ds18b20` sensor"

[env_description]
PIN_FAN = "`Pin` number responsible for the fan control signal"
PIN_FAN_PWM_FREQUENCY = "`PWM` signal frequency in hertz"
PIN_DS18B20 = "`Pin` number responsible for reading data from the `ds18b20` sensor"
REGULATOR_TEMP_MIN = "Temperature in °C below which duty cycle will be `REGULATOR_DUTY_MIN`"
PUC_WIFI_SSID = "`WiFi` network name"
PUC_WIFI_PASS = "`WiFi` network password"


[topic_assignment]
"set_fan_state/pepeunit" = "Accepts a `json` value – `{\"sleep\": 15, \"duty\": 65535}`, where `sleep` is the number of seconds the fan will run at `16 bit` duty cycle `duty`"
"current_fan_speed_percentage/pepeunit" = "Current duty cycle as text, e.g. `8192`"
"current_temp/pepeunit" = "Current temperature as text, e.g. `27.5`"

[work_algorithm]
steps = [
  "Connect to `WiFi`",
  "Connect to the `MQTT` Broker",
  "Initialize `ds18b20` sensor and `PWM`",
  "Start the main loop"
]

[installation]
steps = [
  "Flash the `Micropython` image specified in `firmware` onto the `esp32`, as described in the [guide](https://micropython.org/download/ESP32_GENERIC/)",
  "Create a `Unit` in `Pepeunit`",
  "Start the device by pressing the `reset` button"
]
"#;

const BOUNDARY: &str = "pepeunit-readme-test-boundary";

/// A `multipart/form-data` body with one file field.
fn form(field: &str, content: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"pepeunit.toml\"\r\nContent-Type: application/toml\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Posts a raw body; returns status, content-type and the body as text.
async fn post_raw(
    inst: &TestInstance,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, String, String) {
    let mut req = inst
        .http
        .post(inst.url(path))
        .header("content-type", content_type)
        .body(body);
    if let Some(t) = token {
        req = req.header("x-auth-token", t);
    }
    let resp = req.send().await.expect("request sent");
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

async fn convert(
    inst: &TestInstance,
    token: Option<&str>,
    content: &[u8],
) -> (StatusCode, String, String) {
    post_raw(
        inst,
        "/units/convert_toml_to_md",
        token,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        form("file", content),
    )
    .await
}

/// An error answer as the `(status, json)` pair `assert_detail` reads.
fn json(answer: (StatusCode, String, String)) -> (StatusCode, Value) {
    let value = serde_json::from_str(&answer.2).unwrap_or(Value::String(answer.2.clone()));
    (answer.0, value)
}

async fn converts_pepeunit_toml(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, token) = inst.user("readme1").await;

    let (status, ctype, md) = convert(&inst, Some(&token), EXAMPLE.as_bytes()).await;
    assert_eq!(status, 200, "{md}");
    assert_eq!(ctype, "text/markdown; charset=utf-8");
    assert!(md.starts_with("# Fan Regulator ds18b20\n\nParameter | Implementation\n-- | --\nDescription | Regulates fan speed"), "{md}");
    for part in [
        "Lang | `Micropython`\n",
        "Hardware | `esp32`, `esp32c3`, `esp32s3`, `ds18b20`, `4pin fan`, `4.7kOhm resistor`, `wires`\n",
        "Firmware | [RELEASE-1.1.1](https://git.example.com/pepeunit_micropython_client/-/releases/1.1.1)\n",
        "Authors | Ivan Serebrennikov <admin@example.com>\n\n## Video\n\n",
        "[![video](https://media.example.com/video/base64_streaming_prev.jpg)](https://video.example.com/watch?v=r1CpkXD_MJY)\n",
        "## Schema\n\n<div align=\"center\"><img align=\"center\" src=\"https://media.example.com/schema/schema_fan_4pin_unit.png\"></div>\n",
        "## Models\n\nVersion | Description | Link\n-- | -- | --\nv0 | Example model | [link](https://media.example.com/model/v3/stl/capsule_insert.stl)\n",
        "## Files\n\n1. [Delta `4Pin PWM` fan documentation](https://www.delta-fan.com/products/ffb1212eh.html)\n2. [Noctua",
        "## Physical IO\n\nKey | Description\n-- | --\n`client.settings.PIN_FAN` | Duty cycle control for the fan\n",
        "## Env variable assignment\n\nVariable | Description\n-- | --\n`PIN_FAN` | `Pin` number",
        "`REGULATOR_TEMP_MIN` | Temperature in °C below which",
        "## Assignment of Device Topics\n\nTopic | Description\n-- | --\n`set_fan_state/pepeunit` | Accepts a `json` value – `{\"sleep\": 15, \"duty\": 65535}`",
        "## Work algorithm\n\n1. Connect to `WiFi`\n2. Connect to the `MQTT` Broker\n",
        "## Installation\n\n1. Flash the `Micropython` image",
    ] {
        assert!(md.contains(part), "missing {part:?} in\n{md}");
    }
    assert!(
        md.ends_with("3. Start the device by pressing the `reset` button\n"),
        "{md}"
    );
    // sections keep upstream's order
    let order = [
        "## Video",
        "## Schema",
        "## Models",
        "## Files",
        "## Physical IO",
        "## Env variable assignment",
        "## Assignment of Device Topics",
        "## Work algorithm",
        "## Installation",
    ];
    let positions: Vec<usize> = order.iter().map(|h| md.find(h).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{md}");

    // the trailing-slash form is the same route
    let (status, _, again) = post_raw(
        &inst,
        "/units/convert_toml_to_md/",
        Some(&token),
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        form("file", EXAMPLE.as_bytes()),
    )
    .await;
    assert_eq!((status, again), (StatusCode::OK, md));

    // documented as a multipart upload with a binary `file`
    let (_, doc) = inst.get("/openapi.json", None).await;
    let op = &doc["paths"]["/units/convert_toml_to_md"]["post"];
    let form = &op["requestBody"]["content"]["multipart/form-data"]["schema"];
    assert!(form.to_string().contains("TomlUpload"), "{op}");
    assert!(
        op["responses"]["200"]["content"]["text/markdown"].is_object(),
        "{op}"
    );
    inst.stop().await;
}

async fn refuses_bad_uploads(backend: Backend) {
    let inst = TestInstance::start(backend).await;
    let (_, token) = inst.user("readme2").await;
    let token = Some(token.as_str());

    // only a User: the anonymous Bot is refused
    let bot = json(convert(&inst, None, EXAMPLE.as_bytes()).await);
    assert_detail(&bot, 403, "403: 1: No Access: AgentBot access not allowed");

    // no `file` field, or no multipart body at all
    let (status, _, body) = post_raw(
        &inst,
        "/units/convert_toml_to_md",
        token,
        &format!("multipart/form-data; boundary={BOUNDARY}"),
        form("data", EXAMPLE.as_bytes()),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        detail["detail"][0]["loc"],
        serde_json::json!(["body", "file"])
    );
    assert_eq!(detail["detail"][0]["msg"], "Field required");
    let (status, _, body) = post_raw(
        &inst,
        "/units/convert_toml_to_md",
        token,
        "application/json",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("\"loc\":[\"body\",\"file\"]"), "{body}");

    // content the generator refuses: 422 code 16
    let cases: [(&[u8], &str); 5] = [
        (b"[general]\nname = \"\xff\"\n", "not UTF-8"),
        (
            b"[general]\ndescription = \"unterminated\n",
            "422: 16: Readme Generation Error: Invalid TOML at line 2",
        ),
        (
            b"[files]\na = \"https://x/a\"\n",
            "The [general] section is required",
        ),
        (
            b"[general]\nname = \"WiFi Temp Sensor ds18b20 wery wery long name, is soo bad\"\n",
            "general.name is 56 characters long",
        ),
        (
            b"[general]\nname = \"N\"\nhardware = [\"esp32\", {name = \"Ivan\"}]\n",
            "general.hardware mixes string and table items",
        ),
    ];
    for (content, needle) in cases {
        assert_detail(&json(convert(&inst, token, content).await), 422, needle);
    }

    // over 10,000 characters, and an upload far beyond the body limit
    let mut long = String::from("[general]\nname = \"N\"\n");
    while long.chars().count() <= 10_000 {
        long.push_str("# padding padding padding padding padding\n");
    }
    assert_detail(
        &json(convert(&inst, token, long.as_bytes()).await),
        422,
        "422: 16: Readme Generation Error: The file is 10",
    );
    let huge = "#".repeat(512 * 1024);
    assert_detail(
        &json(convert(&inst, token, huge.as_bytes()).await),
        422,
        "422: 16: Readme Generation Error: The upload is larger than 65536 bytes",
    );

    // the server is still fine afterwards
    let (status, _, md) = convert(&inst, token, b"[general]\nname = \"Ok\"\n").await;
    assert_eq!((status, md.as_str()), (StatusCode::OK, "# Ok\n"));
    inst.stop().await;
}

both_backends!(converts_pepeunit_toml, refuses_bad_uploads);
