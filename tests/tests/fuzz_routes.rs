//! A fuzzer over the HTTP routes, in process: generated methods, paths
//! (the API's route shapes with random segments, escapes and queries),
//! headers (credentials good and bad, deadlines, framing) and bodies
//! (JSON of the right and wrong shapes, raw bytes, bodies past the limit)
//! go to a [`MediatorService`](mediator_transport_http::MediatorService)
//! with a live node registered. No request may panic it or be answered
//! `500`; a 5xx is allowed only where a node is at fault (a node the
//! fuzzer registered at a dead address: 502, 504, or 503 when its group
//! has no reachable node left).
//!
//! The same cases go over real sockets to the listener too, whose
//! HTTP/1.1 pass-through takes the calls it can.
//!
//! `MEDIATOR_FUZZ_CASES` sets the number of cases (default 3,000, a few
//! seconds); `MEDIATOR_FUZZ_SEED` replays a run. The long run:
//! `MEDIATOR_FUZZ_CASES=100000 cargo nextest run -p mediator-tests --all-features -E 'test(fuzz)'`.

use std::time::Instant;

use base64::Engine;
use bytes::Bytes;
use mediator_core::{Claims, Timestamp};
use mediator_tests::harness::{call_service, mint, EchoNode, Hub, SECRET};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

/// The body limit of the hub under test, small so that oversize bodies are cheap.
const MAX_BODY: usize = 4096;

/// One generated request.
#[derive(Debug, Clone)]
struct Case {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// The credentials a request may carry: the first four valid, then bad ones.
fn credentials() -> Vec<String> {
    let now = Timestamp::now();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let node = |key: &str| {
        mint(&Claims::node(
            &key.parse().expect("a node key"),
            now,
            std::time::Duration::from_secs(3600),
        ))
    };
    let expired = mint(&Claims {
        sub: Some("fz/caller".into()),
        exp: now.as_secs() - 3600,
        iat: now.as_secs() - 7200,
        nbf: None,
        scope: None,
    });
    let unsigned = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(format!(
            r#"{{"sub":"fz/caller","exp":{}}}"#,
            now.as_secs() + 600
        ))
    );
    let basic = |login: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(login)
        )
    };
    vec![
        format!("Bearer {}", node("fz/caller")),
        format!("Bearer {}", node("fz/new")),
        format!("Bearer {}", node("fz/echo")),
        format!(
            "Bearer {}",
            mint(&Claims::admin(now, std::time::Duration::from_secs(3600)))
        ),
        format!("Bearer {expired}"),
        format!("Bearer {unsigned}"),
        "Bearer not.a.token".into(),
        "Bearer".into(),
        basic(&format!("admin:{SECRET}")),
        basic("admin:wrong"),
        "Basic %%%".into(),
        "Digest whatever".into(),
    ]
}

/// A path segment: a known name, random URL characters, or escapes good and bad.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["fz", "echo", "new", "caller", "nobody", "1", "0", "", "..", "*", "?"])
            .prop_map(str::to_owned),
        3 => "[A-Za-z0-9_.~!$&'()*+,;=:@-]{0,12}",
        2 => "(%[0-9A-Fa-f]{2}){1,4}",
        1 => "%[G-Zg-z%]{0,2}",
        1 => "[a-z]{0,3}(%2[Ff]|%00|%FF|%C0%AF)[a-z]{0,3}",
        1 => "[a-z0-9]{40,70}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    let pair = (
        prop::sample::select(vec![
            "limit", "limit", "after", "after", "x-jwt", "group", "q", "",
        ]),
        prop_oneof!["[0-9]{0,6}", "-[0-9]{1,3}", "[A-Za-z%0-9]{0,10}"],
    )
        .prop_map(|(k, v)| format!("{k}={v}"));
    prop::option::of(prop::collection::vec(pair, 0..3))
        .prop_map(|pairs| pairs.map_or_else(String::new, |p| format!("?{}", p.join("&"))))
}

fn path() -> impl Strategy<Value = String> {
    let route = prop::sample::select(vec![
        "/register",
        "/renew",
        "/remove",
        "/one",
        "/many",
        "/any",
        "/admin/clusters",
        "/admin/cluster",
        "/token",
        "/ping",
        "/readyz",
        "/healthz",
        "/metrics",
        "",
        "/nope",
    ]);
    let segments = prop_oneof![
        2 => prop::collection::vec(segment(), 0..2),
        2 => prop::collection::vec(segment(), 2..3),
        1 => prop::collection::vec(segment(), 3..5),
    ];
    (route, segments, query(), prop::bool::weighted(0.2)).prop_map(
        |(route, segments, query, trailing)| {
            let mut path = route.to_owned();
            for segment in segments {
                path.push('/');
                path.push_str(&segment);
            }
            if trailing || path.is_empty() {
                path.push('/');
            }
            path + &query
        },
    )
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
            .prop_map(str::to_owned),
        1 => "[A-Z]{1,10}",
    ]
}

/// The authorization header, most often a valid one so that requests get
/// past authentication to the routes' own parsing.
fn authorization(credentials: Vec<String>) -> impl Strategy<Value = Option<String>> {
    let valid = credentials[..4].to_vec();
    prop_oneof![
        1 => Just(None),
        4 => prop::sample::select(valid).prop_map(Some),
        2 => prop::sample::select(credentials).prop_map(Some),
    ]
}

fn headers(credentials: Vec<String>) -> impl Strategy<Value = Vec<(String, String)>> {
    let header = prop_oneof![
        1 => prop::sample::select(credentials.clone())
            .prop_map(|c| ("x-jwt".to_owned(), c.trim_start_matches("Bearer ").to_owned())),
        1 => prop::sample::select(vec!["application/json", "text/plain", "application/x-www-form-urlencoded", "", "*/*"])
            .prop_map(|v| ("content-type".to_owned(), v.to_owned())),
        1 => "[0-9]{0,16}".prop_map(|v| ("x-mediator-deadline".to_owned(), v)),
        1 => "-?[0-9]{0,8}".prop_map(|v| ("x-mediator-timeout-ms".to_owned(), v)),
        1 => "[0-9]{0,12}".prop_map(|v| ("content-length".to_owned(), v)),
        1 => prop::sample::select(vec!["chunked", "gzip", "identity", "chunked, gzip"])
            .prop_map(|v| ("transfer-encoding".to_owned(), v.to_owned())),
        1 => prop::sample::select(vec!["100-continue", "nothing"])
            .prop_map(|v| ("expect".to_owned(), v.to_owned())),
        2 => ("(x-mediator-|x_mediator_|x-)[a-z_-]{1,10}", "[ -~]{0,40}"),
    ];
    (
        authorization(credentials),
        prop::collection::vec(header, 0..4),
    )
        .prop_map(|(authorization, mut headers)| {
            if let Some(value) = authorization {
                headers.insert(0, ("authorization".to_owned(), value));
            }
            headers
        })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        prop::sample::select(vec!["fz", "new", "echo", "caller"]).prop_map(str::to_owned),
        "[A-Za-z0-9_ .-]{0,55}",
    ];
    let url = prop_oneof![
        Just("http://127.0.0.1:9".to_owned()),
        Just("http://169.254.169.254/".to_owned()),
        Just("http://%%%".to_owned()),
        Just("ftp://127.0.0.1:21".to_owned()),
        "https?://[a-z0-9.:\\[\\]]{0,30}(/[a-z]{0,5})?",
    ];
    let registration = (
        name.clone(),
        name.clone(),
        url,
        prop::option::of(-5i64..100_000),
    )
        .prop_map(|(group, name, url, ttl)| {
            serde_json::json!({"group": group, "name": name, "url": url, "ttl": ttl})
                .to_string()
                .into_bytes()
        });
    let original =
        (name.clone(), name, "[a-z0-9.]{0,20}", any::<i32>()).prop_map(|(c, n, d, p)| {
            serde_json::json!({"cluster": c, "node": n, "domain": d, "port": p})
                .to_string()
                .into_bytes()
        });
    prop_oneof![
        3 => Just(Vec::new()),
        3 => registration,
        1 => original,
        2 => prop::collection::vec(any::<u8>(), 0..256),
        1 => "[{}\\[\\]\":,0-9a-z ]{0,64}".prop_map(String::into_bytes),
        1 => (MAX_BODY + 1..MAX_BODY * 2).prop_map(|n| vec![b'x'; n]),
    ]
}

fn case(credentials: Vec<String>) -> impl Strategy<Value = Case> {
    (method(), path(), headers(credentials), body()).prop_map(|(method, path, headers, body)| {
        Case {
            method,
            path,
            headers,
            body,
        }
    })
}

/// Cases aimed at the calls the pass-through takes: `/one/fz/echo/...`
/// and `/any/fz/...` with the same generated headers and bodies.
fn call_case(credentials: Vec<String>) -> impl Strategy<Value = Case> {
    let path = (
        prop::sample::select(vec!["/one/fz/echo", "/any/fz", "/one/fz/fz"]),
        prop::collection::vec(segment(), 0..3),
        query(),
    )
        .prop_map(|(route, segments, query)| {
            let mut path = route.to_owned();
            for segment in segments {
                path.push('/');
                path.push_str(&segment);
            }
            path.push_str(&query);
            path
        });
    (method(), path, headers(credentials), body()).prop_map(|(method, path, headers, body)| Case {
        method,
        path,
        headers,
        body,
    })
}

fn cases_from_env() -> u32 {
    std::env::var("MEDIATOR_FUZZ_CASES")
        .ok()
        .map(|n| n.parse().expect("MEDIATOR_FUZZ_CASES is a number"))
        .unwrap_or(3_000)
}

/// A runner over `MEDIATOR_FUZZ_CASES` cases from `MEDIATOR_FUZZ_SEED`
/// (random when unset), and the seed.
fn runner() -> (TestRunner, u32, u64) {
    let cases = cases_from_env();
    let seed: u64 = std::env::var("MEDIATOR_FUZZ_SEED")
        .ok()
        .map(|s| s.parse().expect("MEDIATOR_FUZZ_SEED is a number"))
        .unwrap_or_else(rand::random);
    println!("fuzzing {cases} cases, MEDIATOR_FUZZ_SEED={seed}");
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    (runner, cases, seed)
}

/// The one rule of every answer: no `500`, and a 5xx only where a node is
/// at fault (a node the fuzzer registered at a dead address fails with
/// 502 or 504, or leaves its group with no reachable node: 503).
fn no_hub_fault(case: &Case, status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    if status >= 500 {
        let error = serde_json::from_slice::<serde_json::Value>(body).unwrap_or_default();
        let node_fault = error["fault"] == "node" || error["kind"] == "no_node_available";
        prop_assert!(
            status != 500 && node_fault,
            "{} {} answered {}: {}",
            case.method,
            case.path,
            status,
            String::from_utf8_lossy(body)
        );
    }
    Ok(())
}

#[test]
fn fuzz_http_routes_never_panic_nor_answer_500() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (hub, _echo) = runtime.block_on(async {
        let hub = Hub::config().max_body(MAX_BODY).in_process();
        let echo = EchoNode::start("echo").await;
        hub.register("fz/echo", &echo.url).await;
        (hub, echo)
    });
    let (mut runner, cases, seed) = runner();
    let started = Instant::now();
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let outcome = runner.run(&case(credentials()), |case| {
        let mut request = http::Request::builder()
            .method(case.method.as_str())
            .uri(&case.path);
        for (name, value) in &case.headers {
            request = request.header(name, value);
        }
        // Strings the http crate itself refuses never reach a server.
        let Ok(request) = request.body(http_body_util::Full::new(Bytes::from(case.body.clone())))
        else {
            return Ok(());
        };
        let answer = runtime.block_on(call_service(&hub.service, request));
        *statuses.borrow_mut().entry(answer.status).or_default() += 1;
        no_hub_fault(&case, answer.status, &answer.body)
    });
    println!(
        "{cases} cases in {:?}; statuses: {:?}",
        started.elapsed(),
        statuses.borrow()
    );
    if let Err(e) = outcome {
        panic!("{e}\nreplay with MEDIATOR_FUZZ_SEED={seed}");
    }
}

/// The same cases over real sockets to the listener, whose HTTP/1.1
/// pass-through takes the calls it can (the rest go to hyper's server
/// with the bytes it read): the same rule holds, and the listener keeps
/// serving.
#[test]
fn fuzz_the_listeners_pass_through_never_panics_nor_answers_500() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (hub, _echo) = runtime.block_on(async {
        let hub = Hub::config().max_body(MAX_BODY).start().await;
        let echo = EchoNode::start("echo").await;
        hub.register("fz/echo", &echo.url).await;
        (hub, echo)
    });
    let (mut runner, cases, seed) = runner();
    let started = Instant::now();
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let cases_of_both = prop_oneof![case(credentials()), call_case(credentials())];
    let outcome = runner.run(&cases_of_both, |case| {
        let mut request = http::Request::builder()
            .method(case.method.as_str())
            .uri(&case.path);
        for (name, value) in &case.headers {
            request = request.header(name, value);
        }
        // What the http crate refuses is no request a client sends.
        let Ok(request) = request.body(()) else {
            return Ok(());
        };
        let bytes = wire(&request, &case.body);
        let head_only = request.method() == http::Method::HEAD;
        // A connection the pass-through handed to hyper stays there: each
        // case on a new one, so that every call is offered to it.
        let answer = runtime.block_on(exchange(&hub, &mut None, &bytes, head_only));
        let Some((status, body)) = answer else {
            // Closed without an answer: only a head the server refused
            // outright may be, and the listener must serve the next.
            return Ok(());
        };
        *statuses.borrow_mut().entry(status).or_default() += 1;
        if head_only {
            // No body tells whose fault a 5xx is.
            prop_assert!(status != 500, "{} {} answered 500", case.method, case.path);
            return Ok(());
        }
        no_hub_fault(&case, status, &body)
    });
    println!(
        "{cases} cases in {:?} over the listener; statuses: {:?}",
        started.elapsed(),
        statuses.borrow()
    );
    if let Err(e) = outcome {
        panic!("{e}\nreplay with MEDIATOR_FUZZ_SEED={seed}");
    }
    let (answered, _) = hub.mediator.transport_stats().pass_through();
    assert!(answered > 0, "no call took the pass-through");
    let health = runtime.block_on(hub.call("GET", "/healthz", &[], ""));
    assert_eq!(health.status, 200);
}

/// A request as HTTP/1.1 writes it, framed by its body's length.
fn wire(request: &http::Request<()>, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{} {} HTTP/1.1\r\nhost: fuzz\r\n",
        request.method(),
        request.uri()
    )
    .into_bytes();
    for (name, value) in request.headers() {
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

/// Sends `bytes` on the kept connection (a new one when there is none),
/// keeps it when it stays open, and reads one answer (`head_only`: to a `HEAD`,
/// which has no body whatever its length says): its status and body, or
/// `None` when the connection closed first.
async fn exchange(
    hub: &Hub,
    kept: &mut Option<tokio::net::TcpStream>,
    bytes: &[u8],
    head_only: bool,
) -> Option<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = match kept.take() {
        Some(tcp) => tcp,
        None => tokio::net::TcpStream::connect(hub.socket())
            .await
            .expect("the listener accepts"),
    };
    if tcp.write_all(bytes).await.is_err() {
        return None;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = response.parse(&buf) else {
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(3), tcp.read(&mut chunk))
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "no answer nor close within 3 s to {:?}",
                            String::from_utf8_lossy(bytes)
                        )
                    });
            match read {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
            continue;
        };
        let status = response.code.unwrap_or(0);
        let mut close = false;
        let mut length = 0usize;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
            }
            if header.name.eq_ignore_ascii_case("connection")
                && header.value.eq_ignore_ascii_case(b"close")
            {
                close = true;
            }
        }
        if head_only {
            length = 0;
        }
        if status < 200 {
            // `100 Continue` before the answer.
            buf.drain(..head);
            continue;
        }
        while buf.len() < head + length {
            match tcp.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return Some((status, buf[head..].to_vec())),
            }
        }
        if !close {
            *kept = Some(tcp);
        }
        return Some((status, buf[head..head + length].to_vec()));
    }
}
