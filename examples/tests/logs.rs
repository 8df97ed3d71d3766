//! The `mediator` binary's request log, read from the file its standard
//! error was written to: JSON lines with the request's ids, caller, target,
//! node, status and duration; plain text without colour codes; and the ids
//! as the caller and the node see them.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mediator_core::context::{is_valid_request_id, is_valid_traceparent};
use mediator_core::{Claims, Timestamp, TokenMinter};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_mediator");
const SECRET: &str = "a secret of at least 32 bytes, for the log tests";
const CALLER_TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A `mediator serve` whose standard error goes to `log` in its directory.
struct Served {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Served {
    fn start(format_args: &[&str], env: &[(&str, &str)], toml: Option<&str>) -> Served {
        let dir = tempfile::tempdir().unwrap();
        if let Some(toml) = toml {
            std::fs::write(dir.path().join("mediator.toml"), toml).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(BIN);
        command
            .args(format_args)
            .args(["serve", "--listen", &listen, "--store", "memory"])
            .current_dir(dir.path())
            .env("MEDIATOR_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .env_remove("MEDIATOR_LOG_FORMAT")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("the mediator binary starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&listen).is_err() {
            assert!(Instant::now() < deadline, "the mediator never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Served {
            child,
            base: format!("http://{listen}"),
            dir,
        }
    }

    /// Stops the process and returns what it logged.
    fn stop(mut self) -> String {
        // A graceful stop, as an operator's: the log's last lines are
        // written out by the buffer's thread before the process ends.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(self.dir.path().join("log")).unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(key: &str) -> String {
    TokenMinter::hs256(SECRET)
        .mint(&Claims::node(
            &key.parse().unwrap(),
            Timestamp::now(),
            Duration::from_secs(600),
        ))
        .unwrap()
}

async fn post(url: &str, token: &str, headers: &[(&str, &str)], body: &str) -> Response<Bytes> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(
            request
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

/// A node that answers `ok` and keeps the head of every request it got.
async fn recording_node() -> (SocketAddr, Arc<Mutex<Vec<HeaderMap>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let heads = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let heads = Arc::clone(&heads);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        heads.lock().unwrap().push(request.headers().clone());
                        async {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"ok"),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_and_traces_reach_the_node_and_the_caller_and_json_lines_say_it_all() {
    let served = Served::start(&["--log-format", "json"], &[], None);
    let (node, heads) = recording_node().await;
    let registration =
        json!({"group": "app", "name": "echo", "url": format!("http://{node}"), "ttl": 600});
    let answer = post(
        &format!("{}/register", served.base),
        &token("app/echo"),
        &[],
        &registration.to_string(),
    )
    .await;
    assert_eq!(answer.status(), 200, "{:?}", answer.body());
    let url = format!("{}/one/app/echo/x", served.base);
    let caller = token("app/caller");

    // A well-formed id is kept; a valid traceparent keeps its trace id and
    // gets the mediator's own parent id.
    let kept = post(
        &url,
        &caller,
        &[("x-request-id", "order-17"), ("traceparent", CALLER_TRACE)],
        "{}",
    )
    .await;
    assert_eq!(kept.status(), 200);
    assert_eq!(header(kept.headers(), "x-request-id"), "order-17");
    // Generated when absent.
    let fresh = post(&url, &caller, &[], "{}").await;
    let fresh_id = header(fresh.headers(), "x-request-id").to_owned();
    assert!(is_valid_request_id(&fresh_id), "{fresh_id}");
    // Replaced when malformed (too long, or with characters outside the set).
    let long = "x".repeat(200);
    let replaced = post(&url, &caller, &[("x-request-id", &long)], "{}").await;
    let replaced_id = header(replaced.headers(), "x-request-id").to_owned();
    assert!(replaced_id != long && is_valid_request_id(&replaced_id));
    let spaced = post(&url, &caller, &[("x-request-id", "two words")], "{}").await;
    assert_ne!(header(spaced.headers(), "x-request-id"), "two words");

    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 4);
    assert_eq!(header(&heads[0], "x-request-id"), "order-17");
    assert_eq!(
        heads[0].get_all("x-request-id").iter().count(),
        1,
        "one id only"
    );
    let passed = header(&heads[0], "traceparent").to_owned();
    assert!(is_valid_traceparent(&passed), "{passed}");
    assert_eq!(&passed[3..35], &CALLER_TRACE[3..35], "same trace");
    assert_ne!(&passed[36..52], &CALLER_TRACE[36..52], "new parent id");
    assert_eq!(header(&heads[1], "x-request-id"), fresh_id);
    assert!(is_valid_traceparent(header(&heads[1], "traceparent")));
    assert_eq!(header(&heads[2], "x-request-id"), replaced_id);

    let log = served.stop();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\n{log}"));
            assert!(value.is_object(), "{line}");
            value
        })
        .collect();
    assert!(!log.contains('\u{1b}'), "no colour codes in a file");
    let request = |id: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "request" && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no request line for {id} in\n{log}"))
            .clone()
    };
    let line = request("order-17");
    assert_eq!(line["level"], "INFO");
    let stamp = line["timestamp"].as_str().unwrap_or_default();
    assert_eq!(stamp.len(), "2026-11-30T15:00:00.123456Z".len(), "{line}");
    assert!(Timestamp::from_rfc3339(stamp).is_some(), "{line}");
    assert_eq!(line["trace_id"], &CALLER_TRACE[3..35]);
    assert_eq!(
        line["span_id"],
        &passed[36..52],
        "the parent id the node got"
    );
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/one/app/echo/x");
    assert_eq!(line["sender"], "app/caller");
    assert_eq!(line["target"], "app/echo");
    assert_eq!(line["node"], "app/echo");
    assert_eq!(line["status"], 200);
    assert!(
        line["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{line}"
    );
    assert!(line["remote"]
        .as_str()
        .is_some_and(|r| r.starts_with("127.0.0.1:")));
    let line = request(&fresh_id);
    assert_eq!(
        line["trace_id"].as_str(),
        Some(&header(&heads[1], "traceparent")[3..35])
    );
    request(&replaced_id);
    let spaced_line = request(header(&heads[3], "x-request-id"));
    assert_eq!(spaced_line["sender"], "app/caller");
    assert!(
        lines.iter().any(|l| l["message"] == "request"
            && l["path"] == "/register"
            && l["sender"] == "app/echo"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn text_logs_in_a_file_carry_no_colour_and_the_format_comes_from_flag_env_or_file() {
    let json_file = Some("log_format = \"json\"\n");
    for (args, env, toml, json) in [
        (vec![], vec![], None, false),
        (vec![], vec![("MEDIATOR_LOG_FORMAT", "json")], None, true),
        (vec![], vec![], json_file, true),
        (vec!["--log-format", "text"], vec![], json_file, false),
    ] {
        let served = Served::start(&args, &env, toml);
        let answer = post(
            &format!("{}/one/nobody/here/x", served.base),
            &token("app/caller"),
            &[("x-request-id", "r-404")],
            "{}",
        )
        .await;
        assert_eq!(answer.status(), 404);
        let log = served.stop();
        assert!(!log.contains('\u{1b}'), "{log}");
        let line = log
            .lines()
            .find(|l| l.contains("r-404"))
            .unwrap_or_else(|| panic!("no request line in\n{log}"));
        if json {
            let value: Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["status"], 404, "{line}");
            assert_eq!(value["target"], "nobody/here", "{line}");
        } else {
            assert!(serde_json::from_str::<Value>(line).is_err(), "{line}");
            // `2026-11-30T15:00:00.123456Z  INFO <module>: request k=v ..`
            let (stamp, rest) = line.split_at("2026-11-30T15:00:00.123456Z".len());
            let written = Timestamp::from_rfc3339(stamp).unwrap_or_else(|| panic!("{line}"));
            assert!(
                written.until(Timestamp::now()) < Duration::from_secs(60),
                "{line}"
            );
            assert!(
                stamp.ends_with('Z') && stamp.as_bytes()[19] == b'.',
                "{line}"
            );
            assert!(
                rest.starts_with("  INFO mediator_transport_http::server::routes: request "),
                "{line}"
            );
            for field in ["request_id=\"r-404\"", "status=404", "target=nobody/here"] {
                assert!(line.contains(field), "{field} in {line}");
            }
        }
    }

    // A bad value in the file is refused, not ignored.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mediator.toml"), "log_format = \"xml\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["keygen"])
        .current_dir(dir.path())
        .env_remove("MEDIATOR_LOG_FORMAT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected text or json"));
}
