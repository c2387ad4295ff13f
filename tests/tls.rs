//! TLS on the one port: native gRPC over h2 (ALPN), gRPC-Web and HTTP over HTTP/1.1 and
//! `wss://` for the legacy shim; mTLS; and certificate reload that keeps open streams.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::*;
use futures::SinkExt;
use mlua_swarm_grpc::config::{Config, Storage};
use mlua_swarm_grpc::pb::v1 as pb;
use prost::Message as _;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;

fn tls_config(pki: &Pki, mtls: bool) -> Config {
    Config {
        storage: Storage::Ephemeral,
        tls: Some(pki.files(mtls)),
        ..Config::default()
    }
}

/// RunTask of the seed Blueprint `main`.
async fn run_main(ts: &TestServer) -> pb::Task {
    ts.tasks()
        .run_task(stored("main", None, json!({"input": "x"})))
        .await
        .expect("run main")
        .into_inner()
        .task
        .expect("task")
}

/// A raw handshake offering `alpn`: the server's leaf certificate and the chosen protocol.
async fn handshake(
    addr: SocketAddr,
    pki: &Pki,
    alpn: &[&[u8]],
) -> (CertificateDer<'static>, Option<Vec<u8>>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let connector = tokio_rustls::TlsConnector::from(pki.rustls(None, alpn));
    let tls = tokio::time::timeout(
        Duration::from_secs(10),
        connector.connect(ServerName::from(addr.ip()), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    let conn = tls.get_ref().1;
    let leaf = conn.peer_certificates().expect("server certificate")[0].clone();
    (leaf, conn.alpn_protocol().map(<[u8]>::to_vec))
}

/// Health/Check over a fresh TLS connection with `tls`; any failure as text.
async fn check_with(addr: SocketAddr, tls: ClientTlsConfig) -> Result<(), String> {
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    tonic_health::pb::health_client::HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| format!("check: {e:?}"))
}

fn https(pki: &Pki) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca.pem.as_bytes()).expect("ca"))
        .build()
        .expect("https client")
}

/// A gRPC-Web call (HTTP/1.1, binary framing): the data messages and the trailer text.
async fn grpc_web(
    http: &reqwest::Client,
    url: String,
    msg: &impl prost::Message,
) -> (Vec<Vec<u8>>, String) {
    let body = msg.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    let resp = http
        .post(url)
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .body(framed)
        .send()
        .await
        .expect("grpc-web over https");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let bytes = resp.bytes().await.expect("body");
    let (mut data, mut trailers, mut rest) = (Vec::new(), String::new(), &bytes[..]);
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let chunk = &rest[5..5 + len];
        if rest[0] & 0x80 != 0 {
            trailers.push_str(&String::from_utf8_lossy(chunk));
        } else {
            data.push(chunk.to_vec());
        }
        rest = &rest[5 + len..];
    }
    (data, trailers)
}

#[tokio::test]
async fn grpc_grpc_web_http_and_wss_share_the_tls_port() {
    let pki = Pki::new("tls-doors");
    let ts = TestServer::with_tls(tls_config(&pki, false), pki.tonic(None)).await;
    let addr = ts.server.addr;
    assert!(ts.server.tls);
    assert!(ts.url().starts_with("https://"));

    // Native gRPC: the harness already saw Health SERVING over TLS; a TaskService RPC runs.
    assert_eq!(run_main(&ts).await.state(), pb::TaskState::Completed);
    // ALPN offers h2 for gRPC and http/1.1 for the rest.
    assert_eq!(
        handshake(addr, &pki, &[b"h2"]).await.1.as_deref(),
        Some(&b"h2"[..])
    );
    let (leaf, alpn) = handshake(addr, &pki, &[b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(leaf, pki.server.der);

    // gRPC-Web and the HTTP routes over HTTPS (HTTP/1.1).
    let http = https(&pki);
    let (data, trailers) = grpc_web(
        &http,
        format!("{}/mlua_swarm.v1.TaskService/RunTask", ts.url()),
        &stored("main", None, json!({"input": "x"})),
    )
    .await;
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let ran = pb::RunTaskResponse::decode(data[0].as_slice()).expect("decode");
    assert_eq!(ran.task.expect("task").state(), pb::TaskState::Completed);
    let (data, _) = grpc_web(
        &http,
        format!("{}/mlua_swarm.v1.BlueprintService/ListBlueprints", ts.url()),
        &pb::ListBlueprintsRequest {},
    )
    .await;
    let list = pb::ListBlueprintsResponse::decode(data[0].as_slice()).expect("decode");
    assert!(list.blueprints.iter().any(|b| b.id == "main"));
    let healthz = http
        .get(format!("{}/healthz", ts.url()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(healthz.text().await.expect("text"), "ok");
    // Plaintext to the TLS port gets nothing.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // wss:// for the legacy WebSocket shim.
    let (sid, token) = legacy_login(&http, &ts.url(), &["main-ai"]).await;
    let mut req = format!("wss://{addr}/v1/operators/{sid}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("h"),
    );
    let connector = Connector::Rustls(pki.rustls(None, &[b"http/1.1"]));
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector))
            .await
            .expect("wss connect");
    let answer = json!({"type": "answer", "req_id": "x", "value": 1});
    ws.send(Message::Text(answer.to_string().into()))
        .await
        .expect("send");
    let first = common::next_json(&mut ws).await;
    assert_eq!(first["code"], "unknown_req", "{first}");
    ts.stop().await;
}

#[tokio::test]
async fn mtls_admits_clients_of_the_ca_and_refuses_the_rest() {
    let pki = Pki::new("tls-mtls");
    let ts = TestServer::with_tls(tls_config(&pki, true), pki.tonic(Some(&pki.client))).await;
    let addr = ts.server.addr;
    assert_eq!(run_main(&ts).await.state(), pb::TaskState::Completed);
    assert_eq!(check_with(addr, pki.tonic(Some(&pki.client))).await, Ok(()));

    let no_cert = check_with(addr, pki.tonic(None)).await;
    let refused =
        |r: &Result<(), String>, alert: &str| r.as_ref().is_err_and(|e| e.contains(alert));
    assert!(refused(&no_cert, "CertificateRequired"), "{no_cert:?}");
    let stranger = check_with(addr, pki.tonic(Some(&pki.stranger))).await;
    assert!(refused(&stranger, "UnknownCA"), "{stranger:?}");
    // HTTP/1.1 doors too: no certificate, no answer.
    assert!(https(&pki)
        .get(format!("{}/healthz", ts.url()))
        .send()
        .await
        .is_err());
    ts.stop().await;
}

/// Log lines of `mlua_swarm_grpc::tls`, captured for the whole test binary.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn get() -> &'static Logs {
        static LOGS: OnceLock<Logs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "mlua_swarm_grpc::tls=info",
                ))
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            logs
        })
    }

    /// How many lines contain every one of `needles`.
    fn count(&self, needles: &[&str]) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().expect("logs")).to_string();
        text.lines()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Polls until more than `seen` lines contain every one of `needles` (bounded).
    async fn wait_beyond(&self, seen: usize, needles: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.count(needles) <= seen {
            assert!(Instant::now() < deadline, "no log line with {needles:?}");
            tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
        }
    }
}

#[tokio::test]
async fn a_new_certificate_reaches_new_handshakes_while_open_streams_stay_up() {
    let logs = Logs::get();
    let pki = Pki::new("tls-reload");
    let mut config = tls_config(&pki, false);
    config.operator.ping_interval = Duration::from_secs(1);
    let ts = TestServer::with_tls(config, pki.tonic(None)).await;
    let addr = ts.server.addr;
    assert_eq!(handshake(addr, &pki, &[b"h2"]).await.0, pki.server.der);
    let mut op = Op::join(&ts, &["remote"]).await;

    // Swap in serial 2: new handshakes get it soon.
    let renewed = pki.ca.server(2);
    pki.write_leaf("server", &renewed);
    let deadline = Instant::now() + Duration::from_secs(15);
    while handshake(addr, &pki, &[b"h2"]).await.0 != renewed.der {
        assert!(
            Instant::now() < deadline,
            "the new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
    }
    // The stream opened under serial 1 still flows both ways, and so does its connection.
    let ping = loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), op.rx.message())
            .await
            .expect("a frame within 10s")
            .expect("stream still open")
            .expect("a frame");
        if let Some(S::Ping(p)) = frame.body {
            break p;
        }
    };
    op.send(C::Pong(pb::Pong { nonce: ping.nonce })).await;
    assert_eq!(run_main(&ts).await.state(), pb::TaskState::Completed);

    // A garbage certificate, then a key of another certificate: logged, serial 2 stays.
    let cert = pki.path("server.pem").display().to_string();
    let key = pki.path("server.key").display().to_string();
    pki.write("server.pem", "garbage");
    logs.wait_beyond(0, &["WARN", &format!("{cert}: no CERTIFICATE block")])
        .await;
    assert_eq!(handshake(addr, &pki, &[b"h2"]).await.0, renewed.der);
    pki.write("server.pem", &renewed.cert_pem);
    pki.write("server.key", &pki.client.key_pem);
    logs.wait_beyond(
        0,
        &["WARN", &format!("{key}: does not fit the certificate")],
    )
    .await;
    assert_eq!(handshake(addr, &pki, &[b"h2"]).await.0, renewed.der);

    // Restored: reloaded; then SIGHUP alone reloads again.
    let reloaded = ["certificate reloaded", cert.as_str()];
    let before = logs.count(&reloaded);
    pki.write("server.key", &renewed.key_pem);
    logs.wait_beyond(before, &reloaded).await;
    let before = logs.count(&reloaded);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    logs.wait_beyond(before, &reloaded).await;
    assert_eq!(handshake(addr, &pki, &[b"h2"]).await.0, renewed.der);
    ts.stop().await;
}

/// Shutdown drains served connections, but a client that opened TCP and never began its
/// handshake has nothing to drain: it does not hold the server for the drain window (nor for
/// the 10 s handshake timeout).
#[tokio::test]
async fn shutdown_does_not_wait_for_a_handshake_never_begun() {
    let pki = Pki::new("tls-silent");
    let config = Config {
        drain: Duration::from_secs(30),
        ..tls_config(&pki, false)
    };
    let ts = TestServer::with_tls(config, pki.tonic(None)).await;
    let addr = ts.server.addr;
    let _silent = tokio::net::TcpStream::connect(addr)
        .await
        .expect("tcp connect");
    // Accepted in order: once a later connection is served, the silent one is in handshake.
    assert_eq!(check_with(addr, pki.tonic(None)).await, Ok(()));
    let started = Instant::now();
    ts.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_sdk_operator_serves_a_task_over_tls() {
    let pki = Pki::new("tls-sdk");
    let ts = TestServer::with_tls(tls_config(&pki, false), pki.tonic(None)).await;
    let op = Serving::start_tls(&ts, &["remote"], "over tls", pki.tonic(None)).await;
    let t = ts
        .run(inline(fixture("operator.json"), json!({"input": "x"})))
        .await;
    assert_eq!(t.state(), pb::TaskState::Completed, "{}", t.error);
    assert_eq!(from_value(t.final_ctx)["output"], "over tls");
    op.stop().await;
    ts.stop().await;
}
