//! A node that answers with a redirect to a third party: clients that
//! follow redirects (Node's `fetch`, python-requests) would send the
//! caller's `x-jwt` header there. The hub answers `502 node_redirect`
//! instead, with no `Location`, so the third party hears nothing.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::answering_node;
use crate::Hub;

/// Every redirect status a client follows by itself.
const REDIRECTS: [u16; 5] = [301, 302, 303, 307, 308];

/// Node.js: for each URL and method, one request with the token in
/// `x-jwt`, redirects followed (the default); prints what each ended with,
/// as one JSON array.
const NODE_CLIENT: &str = r"
const [token, ...urls] = process.argv.slice(1);
(async () => {
  const seen = [];
  for (const url of urls) {
    for (const method of ['GET', 'POST']) {
      const init = { method, headers: { 'x-jwt': token } };
      if (method === 'POST') { init.body = 'a body'; init.headers['content-type'] = 'text/plain'; }
      try {
        const r = await fetch(url, init);
        const body = await r.text();
        seen.push({ asked: url, method, status: r.status, url: r.url, redirected: r.redirected,
          location: r.headers.get('location'), body });
      } catch (e) {
        seen.push({ asked: url, method, error: String(e && e.cause || e) });
      }
    }
  }
  console.log(JSON.stringify(seen));
})();
";

/// python-requests: the same requests, redirects followed (the default).
const PYTHON_CLIENT: &str = r"
import json, sys, requests
token, urls = sys.argv[1], sys.argv[2:]
seen = []
for url in urls:
    for method in ['GET', 'POST']:
        data = b'a body' if method == 'POST' else None
        try:
            r = requests.request(method, url, headers={'x-jwt': token}, data=data, timeout=10)
            seen.append({'asked': url, 'method': method, 'status': r.status_code, 'url': r.url,
                'redirected': bool(r.history), 'location': r.headers.get('location'),
                'body': r.text})
        except Exception as e:
            seen.append({'asked': url, 'method': method, 'error': repr(e)})
print(json.dumps(seen))
";

/// A listener that takes every connection, keeps whatever arrives on it
/// (anything at all is a leak) and answers `200 stolen`, so that a client
/// led there ends its request as if nothing were wrong.
async fn thief() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heard: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&heard);
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            let sink = Arc::clone(&sink);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await
                    {
                        Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
                        _ => break,
                    }
                }
                sink.lock().unwrap().push(format!(
                    "from {peer}: {}",
                    String::from_utf8_lossy(&request)
                ));
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nconnection: close\r\n\r\nstolen",
                    )
                    .await;
            });
        }
    });
    (addr, heard)
}

/// Runs `program` with the script and its arguments; the JSON it printed.
fn client(program: &str, flag: &str, script: &str, args: &[&str]) -> Value {
    let out = Command::new(program)
        .arg(flag)
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "{program} printed no JSON ({e}): {stdout}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn python_has_requests() -> bool {
    Command::new("python3")
        .args(["-c", "import requests"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nodes_redirect_never_leads_a_client_to_send_its_token_elsewhere() {
    let hub = Hub::start("memory", &[]);
    let (thief, heard) = thief().await;
    // `/to/CODE` answers CODE with the thief as the Location.
    let node = answering_node(move |parts, _| {
        let code = parts
            .uri
            .path()
            .rsplit('/')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(302);
        Response::builder()
            .status(code)
            .header("location", format!("http://{thief}/stolen/{code}"))
            .body(Full::new(Bytes::from_static(b"moved")))
            .unwrap()
    })
    .await;
    let (status, body) = hub.register("evil/n", node).await;
    assert_eq!(status, 200, "{body}");
    let token = hub.token("app/caller");

    let mut clients = vec![("node", "-e", NODE_CLIENT)];
    if python_has_requests() {
        clients.push(("python3", "-c", PYTHON_CLIENT));
    } else {
        eprintln!("python3 has no requests module: only Node's fetch is tried");
    }
    let urls: Vec<String> = REDIRECTS
        .iter()
        .map(|code| hub.url(&format!("/one/evil/n/to/{code}")))
        .collect();
    let mut args = vec![token.as_str()];
    args.extend(urls.iter().map(String::as_str));
    for (program, flag, script) in &clients {
        let seen = client(program, flag, script, &args);
        let stolen = heard.lock().unwrap().clone();
        assert!(
            stolen.is_empty(),
            "{program} followed the node's redirects and sent their target {} request(s){}: \
             {stolen:#?}",
            stolen.len(),
            if stolen.iter().any(|r| r.contains(&token)) {
                ", carrying the caller's token"
            } else {
                ""
            }
        );
        let seen = seen.as_array().expect("an array of outcomes");
        assert_eq!(seen.len(), 2 * REDIRECTS.len(), "{seen:?}");
        for seen in seen {
            let what = format!("{program} {} {}", seen["method"], seen["asked"]);
            assert_eq!(seen["status"], 502, "{what}: {seen}");
            assert_eq!(seen["redirected"], false, "{what}: {seen}");
            assert_eq!(seen["url"], seen["asked"], "{what}: {seen}");
            assert!(
                seen["location"].is_null(),
                "{what} relayed a Location: {seen}"
            );
            let error: Value = serde_json::from_str(seen["body"].as_str().unwrap_or(""))
                .unwrap_or_else(|e| panic!("{what}: not a JSON error ({e}): {seen}"));
            assert_eq!(error["kind"], "node_redirect", "{what}: {error}");
            assert_eq!(error["fault"], "node", "{what}: {error}");
            assert!(
                error["error"].as_str().unwrap_or("").contains("evil/n"),
                "{what}: the error does not name the node: {error}"
            );
        }
    }
    // A connection, even one that sent nothing yet, would be a leak.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heard = heard.lock().unwrap().clone();
    assert!(
        heard.is_empty(),
        "the redirect target was reached {} times: {heard:#?}",
        heard.len()
    );
}
