//! Call streams over QUIC that send their header frame and part of a body
//! and then neither finish nor go away: each is answered `408` once the
//! mediator's deadline has passed, instead of holding its task and its
//! bytes for as long as the connection lives, so rounds of them leave the
//! hub's memory where the first round left it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mediator_transport_quic::pinned_client_config;
use serde_json::{json, Value};

use crate::support::{
    as_strs, echo_node, free_port, quic_line, register_node, rss_kib_of, serve_args, token_for,
    Process,
};

/// The mediator's deadline for a request (`--deadline-ms`).
const DEADLINE: Duration = Duration::from_millis(2_000);
/// How late past the deadline an answer may come on a loaded 2-core box.
const SLACK: Duration = Duration::from_millis(2_500);
/// Streams held half-open at once: just under the listener's 64 per
/// connection.
const STREAMS: usize = 60;
/// Rounds of them, one after the other.
const ROUNDS: usize = 4;
/// The part of a body each stream sends before it falls silent.
const PART: usize = 256 * 1024;
/// How much the hub's memory may grow from the end of the first round to
/// the end of the last: far below the bytes the later rounds sent
/// (`(ROUNDS - 1) * STREAMS * PART`, 45 MiB).
const GROWTH_KIB: u64 = 16 * 1024;

/// A header frame: 4-byte big-endian length, then the JSON.
fn frame(value: &Value) -> Vec<u8> {
    let json = serde_json::to_vec(value).unwrap();
    let mut bytes = u32::try_from(json.len()).unwrap().to_be_bytes().to_vec();
    bytes.extend_from_slice(&json);
    bytes
}

async fn read_frame(recv: &mut quinn::RecvStream) -> Result<Value, String> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix)
        .await
        .map_err(|e| format!("no header frame: {e}"))?;
    let mut json = vec![0u8; u32::from_be_bytes(prefix) as usize];
    recv.read_exact(&mut json)
        .await
        .map_err(|e| format!("a broken header frame: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("not JSON: {e}"))
}

/// Opens one call stream to `target`, sends its header frame and [`PART`]
/// bytes of body without finishing, and waits for the answer's header
/// frame; the answer and how long it took from the stream's opening.
async fn half_open_call(
    connection: &quinn::Connection,
    target: &str,
) -> Result<(Value, Duration), String> {
    // A stream of the previous round may still hold its slot for a moment.
    let (mut send, mut recv) = tokio::time::timeout(DEADLINE + SLACK, connection.open_bi())
        .await
        .map_err(|_| "no stream slot came free".to_owned())?
        .map_err(|e| format!("no stream: {e}"))?;
    let started = Instant::now();
    let head = json!({ "method": "POST", "path": "/upload", "target": target });
    // On a busy machine the deadline may pass while the part is still on
    // its way, and the hub then stops the stream: the answer is what
    // matters, not whether every byte could be written.
    let answer = tokio::time::timeout(DEADLINE + SLACK, async {
        if send.write_all(&frame(&head)).await.is_ok() {
            let _ = send.write_all(&vec![b'x'; PART]).await;
        }
        // No `finish`: the body never ends, and the stream stays open.
        read_frame(&mut recv).await
    })
    .await
    .map_err(|_| {
        format!(
            "no answer {:?} after the stream was opened (the deadline is {DEADLINE:?})",
            DEADLINE + SLACK
        )
    })??;
    let took = started.elapsed();
    // The stream is done with either way.
    let _ = send.reset(quinn::VarInt::from_u32(0));
    Ok((answer, took))
}

#[tokio::test(flavor = "multi_thread")]
async fn half_open_quic_streams_are_answered_408_and_hold_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let deadline_ms = DEADLINE.as_millis().to_string();
    let port = free_port();
    let mut args = serve_args(port, "memory");
    args.extend(
        [
            "--quic-listen",
            "127.0.0.1:0",
            "--deadline-ms",
            &deadline_ms,
        ]
        .map(ToOwned::to_owned),
    );
    let hub = Process::start(dir.path(), &as_strs(&args), "QUIC listening");
    let (quic, pin) = quic_line(&hub);
    let quic: SocketAddr = quic.parse().expect("the QUIC address");
    let api = SocketAddr::from(([127, 0, 0, 1], port));
    let (node, _) = echo_node(Duration::ZERO).await;
    register_node(api, dir.path(), "sink/n", node).await;

    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(pinned_client_config(&pin).unwrap());
    let connection = endpoint
        .connect(quic, "localhost")
        .unwrap()
        .await
        .expect("a QUIC connection to the hub");
    // A caller-only hello.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    let hello = json!({ "token": token_for(dir.path(), "app/caller") });
    send.write_all(&frame(&hello)).await.unwrap();
    let welcome = read_frame(&mut recv).await.unwrap();
    assert_eq!(welcome["status"], 200, "hello refused: {welcome}");

    let idle = hub.rss_kib();
    let mut after_first = 0;
    for round in 1..=ROUNDS {
        let calls: Vec<_> = (0..STREAMS)
            .map(|_| {
                let connection = connection.clone();
                tokio::spawn(async move { half_open_call(&connection, "sink/n").await })
            })
            .collect();
        let mut slowest = Duration::ZERO;
        for call in calls {
            let (answer, took) = call
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: a half-open stream: {e}"));
            assert_eq!(
                answer["status"], 408,
                "round {round}: a half-open stream was answered {answer}"
            );
            slowest = slowest.max(took);
        }
        let rss = rss_kib_of(hub.pid()).expect("the hub is running");
        eprintln!(
            "round {round}: {STREAMS} half-open streams answered 408, the slowest after \
             {slowest:?}; RSS {} MiB (idle {} MiB)",
            rss / 1024,
            idle / 1024
        );
        if round == 1 {
            after_first = rss;
        }
    }
    let last = rss_kib_of(hub.pid()).expect("the hub is running");
    assert!(
        last < after_first + GROWTH_KIB,
        "RSS grew from {} MiB after the first round to {} MiB after round {ROUNDS}",
        after_first / 1024,
        last / 1024
    );
    // The connection is still good for a whole call.
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&frame(
        &json!({ "method": "POST", "path": "/whole", "target": "sink/n" }),
    ))
    .await
    .unwrap();
    send.write_all(b"whole").await.unwrap();
    send.finish().unwrap();
    let answer = read_frame(&mut recv).await.unwrap();
    assert_eq!(answer["status"], 200, "{answer}");
    connection.close(quinn::VarInt::from_u32(0), b"done");
    endpoint.wait_idle().await;
}
