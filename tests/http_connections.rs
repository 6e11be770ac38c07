//! Connection handling over raw sockets: HTTP/2 connections that send nothing, or too little,
//! are closed and give their slot back; the HTTP/2 stream limit is advertised; and connections
//! still open when the shutdown grace period ends are closed; the operator routes can have a
//! port of their own.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{TestModel, assert_problem, spawn_app, spawn_app_with, transaction};
use infergate::Config;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const HEADERS: u8 = 0x1;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The HPACK block of `GET <path>` on `http://test`, without Huffman coding.
fn get_headers(path: &str) -> Vec<u8> {
    // :method GET and :scheme http are static-table entries 2 and 6; :path and :authority
    // are literals with indexed names (4 and 1).
    let mut block = vec![0x82, 0x86, 0x44, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x41, 4]);
    block.extend_from_slice(b"test");
    block
}

/// A connection that has sent the HTTP/2 client preface and an empty SETTINGS frame.
async fn h2_client(app: &common::TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await.unwrap();
    stream
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Reads the next frame; `None` when the server closed the connection.
async fn read_frame(stream: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// Reads frames until the server closes the connection, and returns their kinds; fails the
/// test if it is still open after `within`.
async fn frames_until_closed(stream: &mut TcpStream, within: Duration, what: &str) -> Vec<u8> {
    let read_all = async {
        let mut kinds = Vec::new();
        while let Some(frame) = read_frame(stream).await {
            kinds.push(frame.kind);
        }
        kinds
    };
    tokio::time::timeout(within, read_all)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {within:?}"))
}

#[tokio::test]
async fn h2_connections_that_send_no_request_are_closed_and_free_their_slots() {
    let mut config = Config::default();
    config.http.max_connections = 2;
    config.http.header_read_timeout_ms = 300;
    let mut app = spawn_app(config).await;
    // The harness's client keeps its readiness check's connection; a new client lets it go.
    app.client = reqwest::Client::new();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    // One sends the preface and SETTINGS, then nothing; the other starts a request's header
    // block (HEADERS without END_HEADERS) and never finishes it.
    let mut silent = h2_client(&app).await;
    let mut slow = h2_client(&app).await;
    slow.write_all(&frame(HEADERS, END_STREAM, 1, &get_headers("/health/live")))
        .await
        .unwrap();

    let within = Duration::from_secs(5);
    let silent_frames = frames_until_closed(&mut silent, within, "the silent connection").await;
    let slow_frames = frames_until_closed(&mut slow, within, "the slow connection").await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
    assert!(
        silent_frames.contains(&GOAWAY),
        "the silent connection is told to go away: {silent_frames:?}"
    );
    assert!(!slow_frames.contains(&HEADERS), "no request was answered");

    // Their slots are free again: a normal client is served.
    let response = tokio::time::timeout(Duration::from_secs(2), app.get("/health/live"))
        .await
        .expect("a new client is served once the idle connections are closed");
    assert_eq!(response.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_h2_connection_left_idle_after_a_request_is_closed() {
    let mut config = Config::default();
    config.http.idle_timeout_ms = 400;
    let app = spawn_app(config).await;
    let mut client = h2_client(&app).await;
    client
        .write_all(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            1,
            &get_headers("/health/live"),
        ))
        .await
        .unwrap();
    // The answer: a HEADERS frame on stream 1 whose first field is `:status: 200` (static
    // table entry 8).
    let answered = async {
        loop {
            let frame = read_frame(&mut client)
                .await
                .expect("the request is answered");
            if frame.kind == HEADERS && frame.stream == 1 {
                return frame.payload;
            }
        }
    };
    let block = tokio::time::timeout(Duration::from_secs(5), answered)
        .await
        .expect("the request is answered");
    assert_eq!(block.first(), Some(&0x88), "status 200");

    // The client answers the server's keep-alive PINGs, so what closes the connection is
    // its having no request in progress.
    let idle_since = Instant::now();
    let mut kinds = Vec::new();
    let until_closed = async {
        while let Some(frame) = read_frame(&mut client).await {
            kinds.push(frame.kind);
            if frame.kind == PING && frame.flags & ACK == 0 {
                let pong = self::frame(PING, ACK, 0, &frame.payload);
                if client.write_all(&pong).await.is_err() {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), until_closed)
        .await
        .expect("the idle connection is closed");
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(300),
        "closed after only {idle:?} idle"
    );
    assert!(kinds.contains(&GOAWAY), "told to go away: {kinds:?}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn h2_connections_advertise_the_stream_limit() {
    let mut config = Config::default();
    config.http.max_concurrent_streams = 7;
    let app = spawn_app(config).await;
    let mut client = h2_client(&app).await;
    let settings = tokio::time::timeout(Duration::from_secs(5), read_frame(&mut client))
        .await
        .expect("the server sends its SETTINGS")
        .expect("the server sends its SETTINGS");
    assert_eq!(settings.kind, SETTINGS);
    // Parameters are 6 bytes each: a 16-bit id, a 32-bit value; MAX_CONCURRENT_STREAMS is 3.
    let max_streams = settings
        .payload
        .chunks_exact(6)
        .find(|p| u16::from_be_bytes([p[0], p[1]]) == 3)
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
    assert_eq!(max_streams, Some(7), "SETTINGS_MAX_CONCURRENT_STREAMS");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn connections_still_open_after_the_shutdown_grace_are_closed() {
    let gate = Arc::new(Semaphore::new(0));
    let model = Arc::new(TestModel {
        gate: Some(Arc::clone(&gate)),
        ..TestModel::labelled("grace")
    });
    let mut config = Config::default();
    config.http.shutdown_grace_ms = 500;
    // One model call at a time: the second request's row waits in the queue.
    config.batching.max_concurrent_batches = 1;
    let mut app = spawn_app_with(config, Arc::clone(&model) as _).await;

    let score = |id: &'static str| {
        let client = app.client.clone();
        let url = app.url("/v1/transactions/score");
        tokio::spawn(async move {
            client
                .post(url)
                .json(&transaction(id, json!({})))
                .send()
                .await
        })
    };
    // One request is in a model call that never returns, another is queued behind it...
    let in_model = score("tx-in-model");
    for _ in 0..200 {
        if model.calls() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(model.calls(), 1, "the first request reached the model");
    let queued = score("tx-queued");
    // ...and a client is halfway through its headers.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"POST /v1/transactions/score HTTP/1.1\r\nhost: test\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let stopping = app.begin_stop();
    let limit = Duration::from_millis(500 + 1_000);
    tokio::time::timeout(limit, stopping)
        .await
        .unwrap_or_else(|_| panic!("serve did not return within {limit:?} of the shutdown"))
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "serve returned after {took:?}, before the grace ended"
    );

    for request in [in_model, queued] {
        let response = request.await.unwrap().expect("an answer, not a reset");
        assert_problem(response, 503, "shutting_down").await;
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_millis(500), slow.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the half-sent request's connection is closed");
    assert_eq!(model.calls(), 1, "the queued row never reached the model");
}

/// `/metrics` names callers: with `admin_bind` it leaves the public port for the operator one,
/// which has its own connection slots, so a flood of connections on the public port does not
/// lock out the scrape (before, `/metrics` was on the public port only).
#[tokio::test]
async fn admin_bind_takes_the_operator_routes_to_a_port_of_their_own() {
    let mut config = Config {
        admin_bind: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    // One slot for the test client's pooled connection, one for the held connection below.
    config.http.max_connections = 2;
    let gateway = infergate::Gateway::build(&config).await.unwrap();
    let (app, admin) = common::serve_with_admin(gateway, true).await;
    let admin = admin.unwrap();

    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_problem(response, 404, "not_found").await;
    let fresh = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    let score = app
        .client
        .post(app.url("/v1/transactions/score"))
        .json(&transaction("tx-admin", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(score.status(), 200);

    // The public port's last slot is taken (and held: nothing is sent on it).
    let _held = TcpStream::connect(app.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for path in ["/metrics", "/health/ready", "/health/live"] {
        let response = tokio::time::timeout(
            Duration::from_secs(5),
            fresh().get(format!("http://{admin}{path}")).send(),
        )
        .await
        .expect("the operator port answers while the public one is full")
        .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        if path == "/metrics" {
            let text = response.text().await.unwrap();
            assert!(text.contains("infergate_http_requests_total"), "{text}");
        }
    }
    let response = fresh()
        .get(format!("http://{admin}/v1/transactions/score"))
        .send()
        .await
        .unwrap();
    assert_problem(response, 404, "not_found").await;
    drop(_held);
    app.stop().await.unwrap();
}
