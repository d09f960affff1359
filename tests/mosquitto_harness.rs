//! The mosquitto harness of `tests/common/mosquitto.rs`: a broker per test that speaks MQTT
//! on its port and is gone once dropped.

mod common;

use std::time::Duration;

use common::mosquitto::Mosquitto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// MQTT 3.1.1 CONNECT: clean session, keep-alive 60 s, client id "t".
const CONNECT: [u8; 15] = [
    0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 1, b't',
];

#[tokio::test]
async fn mosquitto_accepts_mqtt_and_stops_when_dropped() {
    let Some(broker) = Mosquitto::start().await else {
        eprintln!("skipped: PU_TEST_MOSQUITTO not set");
        return;
    };
    let port = broker.port;
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{port}"));

    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(&CONNECT).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut connack))
        .await
        .expect("CONNACK in time")
        .unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0], "{}", broker.log_text());
    drop(stream);

    // a second broker runs beside the first, on its own port
    let other = Mosquitto::start().await.unwrap();
    assert_ne!(other.port, port);

    drop(broker);
    let mut refused = false;
    for _ in 0..500 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the broker still listens after being dropped");
    TcpStream::connect(("127.0.0.1", other.port))
        .await
        .expect("the other broker is untouched");
}
