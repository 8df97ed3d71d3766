//! Malformed and oversize requests on every route: each is answered with a
//! clear 4xx, at once, and the process keeps serving.

use std::time::Duration;

use base64::Engine;
use mediator_core::{Claims, Timestamp, TokenMinter};

use crate::support::{echo_node, healthy, raw};
use crate::Hub;

/// The body limit the hub runs with, small so that oversize bodies are cheap.
const MAX_BODY: usize = 64 * 1024;

/// How long any answer may take: far above a loopback round trip, far
/// below a hang.
const PATIENCE: Duration = Duration::from_secs(5);

/// Probes and `/metrics` never read a body: one of unannounced length is
/// ignored, whatever its size, and they answer as usual (never a 5xx).
const ANY_ANSWER: u16 = 1;

/// An HTTP/1.1 request: `head_lines` verbatim after the host, then `body`
/// (with its `content-length` unless `head_lines` frames the body).
fn request(method: &str, path: &str, head_lines: &[String], body: &[u8]) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    for line in head_lines {
        text.push_str(line);
        text.push_str("\r\n");
    }
    let framed = head_lines.iter().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("content-length") || line.starts_with("transfer-encoding")
    });
    if !framed && !body.is_empty() {
        text.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The same request without `connection: close`, so that whatever follows
/// it on the connection would be read as a request of its own.
fn keep_alive(request: Vec<u8>) -> Vec<u8> {
    const CLOSE: &[u8] = b"connection: close\r\n";
    let at = request
        .windows(CLOSE.len())
        .position(|w| w == CLOSE)
        .expect("built with connection: close");
    [&request[..at], &request[at + CLOSE.len()..]].concat()
}

fn bearer(token: &str) -> Vec<String> {
    vec![
        format!("authorization: Bearer {token}"),
        "content-type: application/json".to_owned(),
    ]
}

/// `body` in chunks of 16 KiB, chunked transfer coding.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in body.chunks(16 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A token with `{"alg":"none"}` and no signature, claiming to be `sub`.
fn unsigned_token(sub: &str) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = Timestamp::now().as_secs();
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64.encode(
        serde_json::json!({"sub": sub, "iat": now, "exp": now + 600})
            .to_string()
            .as_bytes(),
    );
    format!("{header}.{claims}.")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_malformed_and_oversize_requests_with_a_clear_4xx() {
    let max_body = MAX_BODY.to_string();
    let console = std::net::SocketAddr::from(([127, 0, 0, 1], crate::support::free_port()));
    let console_listen = console.to_string();
    let hub = Hub::start(
        "memory",
        &["--max-body", &max_body, "--console-listen", &console_listen],
    );
    let (node, seen) = echo_node(Duration::ZERO).await;
    assert_eq!(hub.register("app/echo", node).await.0, 200);

    let caller = hub.token("app/caller");
    let admin = hub.admin_token();
    let foreign = TokenMinter::hs256("another secret, of at least 32 bytes, not the hub's")
        .mint(&Claims::node(
            &"app/caller".parse().unwrap(),
            Timestamp::now(),
            Duration::from_secs(600),
        ))
        .unwrap();
    let now = Timestamp::now().as_secs();
    let expired = TokenMinter::hs256(crate::support::secret_of(hub.dir.path()))
        .mint(&Claims {
            sub: Some("app/caller".into()),
            exp: now - 3600,
            iat: now - 7200,
            nbf: None,
            scope: None,
        })
        .unwrap();
    let unsigned = unsigned_token("app/caller");
    let oversize = vec![b'x'; MAX_BODY * 3];
    let registration = |group: &str, name: &str, url: &str| {
        serde_json::json!({"group": group, "name": name, "url": url, "ttl": 60})
            .to_string()
            .into_bytes()
    };

    // (what, request, the one status expected, or 0 for any 4xx, or
    // ANY_ANSWER for routes that never read a body and answer as usual)
    let mut cases: Vec<(String, Vec<u8>, u16)> = vec![
        // Malformed JSON and bad names.
        (
            "register: malformed JSON".into(),
            request(
                "POST",
                "/register",
                &bearer(&hub.token("app/new")),
                b"{\"group\": ",
            ),
            400,
        ),
        (
            "register: JSON of the wrong shape".into(),
            request(
                "POST",
                "/register",
                &bearer(&hub.token("app/new")),
                b"[1,2,3]",
            ),
            400,
        ),
        (
            "register: bad group name".into(),
            request(
                "POST",
                "/register",
                &bearer(&hub.token("app/new")),
                &registration("bad group!", "new", "http://127.0.0.1:9"),
            ),
            0,
        ),
        (
            "register: 51-character name".into(),
            request(
                "POST",
                "/register",
                &bearer(&hub.token("app/new")),
                &registration("app", &"n".repeat(51), "http://127.0.0.1:9"),
            ),
            0,
        ),
        (
            "register: bad url".into(),
            request(
                "POST",
                "/register",
                &bearer(&hub.token("app/new")),
                &registration("app", "new", "http://%%%"),
            ),
            400,
        ),
        (
            "register: port out of range".into(),
            request(
                "POST",
                "/register",
                &bearer(&hub.token("app/new")),
                &registration("app", "new", "http://127.0.0.1:99999"),
            ),
            400,
        ),
        (
            "register: as another node".into(),
            request(
                "POST",
                "/register",
                &bearer(&caller),
                &registration("app", "echo", "http://127.0.0.1:9"),
            ),
            403,
        ),
        (
            "register: no token".into(),
            request(
                "POST",
                "/register",
                &[],
                &registration("app", "new", "http://127.0.0.1:9"),
            ),
            401,
        ),
        (
            "renew: malformed JSON".into(),
            request("POST", "/renew", &bearer(&caller), b"{{{"),
            0,
        ),
        (
            "renew: not registered".into(),
            request(
                "POST",
                "/renew",
                &bearer(&caller),
                br#"{"group":"app","name":"caller"}"#,
            ),
            404,
        ),
        (
            "renew: no key".into(),
            request("POST", "/renew", &bearer(&caller), b"{}"),
            400,
        ),
        // Wrong, expired and unsigned tokens, on every route that asks for one.
        (
            "one: token signed with another secret".into(),
            request("POST", "/one/app/echo/x", &bearer(&foreign), b"hi"),
            401,
        ),
        (
            "one: expired token".into(),
            request("POST", "/one/app/echo/x", &bearer(&expired), b"hi"),
            401,
        ),
        (
            "one: alg none token".into(),
            request("POST", "/one/app/echo/x", &bearer(&unsigned), b"hi"),
            401,
        ),
        (
            "one: garbage token".into(),
            request("POST", "/one/app/echo/x", &bearer("not.a.token"), b"hi"),
            401,
        ),
        (
            "many: alg none token".into(),
            request("POST", "/many/app/x", &bearer(&unsigned), b"hi"),
            401,
        ),
        (
            "any: expired token".into(),
            request("POST", "/any/app/x", &bearer(&expired), b"hi"),
            401,
        ),
        (
            "renew: alg none token".into(),
            request("POST", "/renew", &bearer(&unsigned), b"{}"),
            401,
        ),
        (
            "remove: token signed with another secret".into(),
            request("POST", "/remove/1", &bearer(&foreign), b""),
            401,
        ),
        (
            "admin: alg none token".into(),
            request("GET", "/admin/clusters", &bearer(&unsigned), b""),
            401,
        ),
        (
            "admin: a node's token".into(),
            request("GET", "/admin/clusters", &bearer(&caller), b""),
            403,
        ),
        (
            "admin: x-jwt query expired".into(),
            request("GET", &format!("/admin/clusters?x-jwt={expired}"), &[], b""),
            401,
        ),
        (
            "the API serves no console".into(),
            request("GET", "/", &[], b""),
            404,
        ),
        (
            "console dashboard: no login".into(),
            request("GET", "/", &[], b""),
            401,
        ),
        (
            "console dashboard: wrong password".into(),
            request(
                "GET",
                "/",
                &["authorization: Basic YWRtaW46bm9wZQ==".into()],
                b"",
            ),
            401,
        ),
        (
            "console dashboard: Basic that is not base64".into(),
            request("GET", "/", &["authorization: Basic %%%%".into()], b""),
            401,
        ),
        (
            "console dashboard: a node's token".into(),
            request("GET", "/", &bearer(&caller), b""),
            403,
        ),
        (
            "token: wrong password".into(),
            request(
                "POST",
                "/token",
                &["authorization: Basic YWRtaW46d3Jvbmc=".into()],
                b"",
            ),
            401,
        ),
        // Unknown targets and bad paths.
        (
            "one: unknown node".into(),
            request("POST", "/one/app/nobody/x", &bearer(&caller), b"hi"),
            404,
        ),
        (
            "one: unknown group".into(),
            request("POST", "/one/nowhere/nobody/x", &bearer(&caller), b"hi"),
            404,
        ),
        (
            "many: unknown group".into(),
            request("POST", "/many/nowhere/x", &bearer(&caller), b"hi"),
            0,
        ),
        (
            "any: unknown group".into(),
            request("POST", "/any/nowhere/x", &bearer(&caller), b"hi"),
            0,
        ),
        (
            "one: bad group name".into(),
            request("POST", "/one/bad.group/x/y", &bearer(&caller), b"hi"),
            400,
        ),
        (
            "one: bad percent-encoding".into(),
            request("POST", "/one/%ZZ/echo/x", &bearer(&caller), b"hi"),
            400,
        ),
        (
            "one: percent-encoded invalid UTF-8".into(),
            request("POST", "/one/app/%FF%FE/x", &bearer(&caller), b"hi"),
            400,
        ),
        (
            "one: encoded NUL".into(),
            request("POST", "/one/app%00/echo/x", &bearer(&caller), b"hi"),
            400,
        ),
        (
            "many: encoded slash in the group".into(),
            request("POST", "/many/app%2Fecho/x", &bearer(&caller), b"hi"),
            400,
        ),
        (
            "one: no group".into(),
            request("POST", "/one/", &bearer(&caller), b"hi"),
            0,
        ),
        (
            "any: truncated escape".into(),
            request("POST", "/any/app%/x", &bearer(&caller), b"hi"),
            400,
        ),
        (
            "remove: not a number".into(),
            request("POST", "/remove/abc", &bearer(&caller), b""),
            0,
        ),
        (
            "remove: bad escape".into(),
            request("POST", "/remove/%", &bearer(&caller), b""),
            0,
        ),
        (
            "admin: id not a number".into(),
            request("GET", "/admin/cluster/abc", &bearer(&admin), b""),
            400,
        ),
        (
            "admin: unknown id".into(),
            request("GET", "/admin/cluster/999999", &bearer(&admin), b""),
            400,
        ),
        (
            "admin: bad group".into(),
            request("GET", "/admin/clusters/..%2F..", &bearer(&admin), b""),
            400,
        ),
        (
            "admin: limit not a number".into(),
            request("GET", "/admin/clusters?limit=lots", &bearer(&admin), b""),
            400,
        ),
        (
            "admin: bad query escape".into(),
            request("GET", "/admin/clusters?after=%G1", &bearer(&admin), b""),
            400,
        ),
        (
            "no such route".into(),
            request("GET", "/nope/../../etc/passwd", &[], b""),
            404,
        ),
        (
            "query x-jwt bad escape".into(),
            request("GET", "/admin/clusters?x-jwt=%ZZ", &[], b""),
            0,
        ),
        // Oversize headers, on the probes too.
        (
            "healthz: one header of 600 KiB".into(),
            request(
                "GET",
                "/healthz",
                &[format!("x-big: {}", "a".repeat(600 * 1024))],
                b"",
            ),
            0,
        ),
        (
            "readyz: 200 headers".into(),
            request(
                "GET",
                "/readyz",
                &(0..200).map(|i| format!("x-h{i}: v")).collect::<Vec<_>>(),
                b"",
            ),
            0,
        ),
        (
            "metrics: one header of 600 KiB".into(),
            request(
                "GET",
                "/metrics",
                &[format!("x-big: {}", "a".repeat(600 * 1024))],
                b"",
            ),
            0,
        ),
        (
            "ping: a request line of 600 KiB".into(),
            request(
                "GET",
                &format!("/ping?{}", "q".repeat(600 * 1024)),
                &[],
                b"",
            ),
            0,
        ),
        // Smuggling attempts.
        (
            "one: content-length and chunked".into(),
            {
                let smuggled = b"0\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n";
                let mut lines = bearer(&caller);
                lines.push(format!("content-length: {}", smuggled.len()));
                lines.push("transfer-encoding: chunked".into());
                // Read as RFC 9112 (section 6.1) says: the chunked framing wins,
                // content-length is dropped, the connection is closed after the
                // answer. The smuggled request must never be answered.
                keep_alive(request("POST", "/one/app/echo/x", &lines, smuggled))
            },
            ANY_ANSWER,
        ),
        (
            "register: two content-lengths".into(),
            {
                let mut lines = bearer(&hub.token("app/new"));
                lines.push("content-length: 2".into());
                lines.push("content-length: 40".into());
                keep_alive(request(
                    "POST",
                    "/register",
                    &lines,
                    b"{}GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
                ))
            },
            400,
        ),
        (
            "many: chunked, then identity".into(),
            {
                let mut lines = bearer(&caller);
                lines.push("transfer-encoding: chunked, identity".into());
                keep_alive(request(
                    "POST",
                    "/many/app/x",
                    &lines,
                    b"2\r\nhi\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
                ))
            },
            400,
        ),
        (
            "any: space before the colon".into(),
            {
                let mut lines = bearer(&caller);
                lines.push("transfer-encoding : chunked".into());
                request("POST", "/any/app/x", &lines, b"2\r\nhi\r\n0\r\n\r\n")
            },
            400,
        ),
        (
            "renew: negative content-length".into(),
            {
                let mut lines = bearer(&caller);
                lines.push("content-length: -1".into());
                request("POST", "/renew", &lines, b"{}")
            },
            400,
        ),
        (
            "one: bad chunk size".into(),
            {
                let mut lines = bearer(&caller);
                lines.push("transfer-encoding: chunked".into());
                request("POST", "/one/app/echo/x", &lines, b"zz\r\nhi\r\n0\r\n\r\n")
            },
            400,
        ),
        (
            "a space in the request target".into(),
            request("GET", "/healthz /x", &[], b""),
            400,
        ),
    ];
    // Bodies over the limit, announced and chunked, on every route that takes one.
    for path in [
        "/register",
        "/renew",
        "/remove/1",
        "/one/app/echo/x",
        "/many/app/x",
        "/any/app/x",
        "/admin/clusters",
        "/token",
        "/ping",
        "/metrics",
        "/healthz",
        "/",
    ] {
        cases.push((
            format!("{path}: content-length over the limit"),
            request("POST", path, &bearer(&caller), &oversize),
            413,
        ));
        let mut lines = bearer(&caller);
        lines.push("transfer-encoding: chunked".into());
        let reads_no_body = ["/ping", "/metrics", "/healthz"].contains(&path);
        cases.push((
            format!("{path}: chunked body over the limit"),
            request("POST", path, &lines, &chunked(&oversize)),
            if reads_no_body { ANY_ANSWER } else { 0 },
        ));
    }

    let mut wrong = Vec::new();
    for (what, bytes, expected) in cases {
        // The console's cases go to the console's own listener.
        let addr = if what.starts_with("console ") {
            console
        } else {
            hub.addr
        };
        match raw(addr, bytes, PATIENCE).await {
            Ok(answer) => {
                let fits = if expected == 0 {
                    (400..500).contains(&answer.status)
                } else if expected == ANY_ANSWER {
                    answer.status < 500
                } else {
                    answer.status == expected
                };
                if !fits || answer.responses != 1 {
                    wrong.push(format!(
                        "{what}: {} ({} responses) {}",
                        answer.status,
                        answer.responses,
                        answer.text().chars().take(200).collect::<String>()
                    ));
                }
            }
            Err(e) => wrong.push(format!("{what}: {e}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "answers that were not the clear 4xx expected:\n{}",
        wrong.join("\n")
    );
    // Only the one smuggling attempt that is read per its chunked framing
    // (an empty body) reaches the node.
    assert_eq!(
        *seen.lock().unwrap(),
        1,
        "a refused request reached the node"
    );

    let mut hub = hub;
    assert!(hub.process.alive(), "the mediator died");
    assert!(
        healthy(hub.addr, PATIENCE).await,
        "/healthz stopped answering"
    );
}
