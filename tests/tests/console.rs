//! The operator's console, in a real headless Chromium driven over
//! WebDriver against a mediator on loopback, and its HTTP API directly.
//!
//! Every browser test saves screenshots under
//! `target/console-screenshots/`. They need Debian's `chromium` and
//! `chromium-driver` (`.ci/run` installs them).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use mediator_core::node::open_reply;
use mediator_core::{Credentials, KeyRing, NodeKey, SealKey, Target};
use mediator_tests::harness::webdriver::Browser;
use mediator_tests::harness::{eventually, key, Hub};
use mediator_transport_http::client::Incoming;
use mediator_transport_http::{ClientError, MediatorService, NodeClient};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DESKTOP: (u32, u32) = (1280, 900);
/// The operator password the console signs in with.
const PASSWORD: &str = "operator pw for the console";
const PHONE: (u32, u32) = (390, 844);

/// A mediator on loopback whose Basic admin login checks [`PASSWORD`].
async fn console_hub() -> Hub {
    let hash = mediator_core::PasswordHash::generate(PASSWORD).expect("a hash");
    Hub::config()
        .operator_password(hash)
        .console()
        .start()
        .await
}

/// A desktop-sized browser, signed in to `hub`'s console.
async fn signed_in(hub: &Hub) -> Browser {
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    sign_in(&browser, hub).await;
    browser
}

/// Signs in with the operator password and waits for the node table.
async fn sign_in(browser: &Browser, hub: &Hub) {
    browser.goto(&hub.console_url("/")).await;
    let password = browser.wait_for("#password").await;
    browser.fill(&password, PASSWORD).await;
    browser.keys("\u{E007}").await;
    browser.wait_for("#node-table").await;
    // The script has read its session (and its anti-forgery token).
    browser
        .wait_until(
            "the session is read",
            "return document.getElementById('who').textContent.includes('signed in');",
        )
        .await;
}

/// The health a row of the node table shows.
fn health_selector(key: &str, health: &str) -> String {
    format!("tr[data-key=\"{key}\"] [data-health=\"{health}\"]")
}

/// A node that answers `hello <payload>` and remembers who each request
/// said it came from.
async fn greeter(
    hub: &Hub,
    key_text: &str,
    seal: &SealKey,
) -> (NodeClient, Arc<Mutex<Vec<Option<NodeKey>>>>) {
    let senders = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&senders);
    let own = key_text.to_owned();
    let node = hub
        .node(key_text)
        .keys(KeyRing::new(seal.clone()))
        .start(move |request: Incoming| {
            let seen = Arc::clone(&seen);
            let own = own.clone();
            async move {
                seen.lock().unwrap().push(request.from.clone());
                Ok(Bytes::from(format!(
                    "hello {} from {own}",
                    String::from_utf8_lossy(&request.body)
                )))
            }
        })
        .await
        .expect("the node starts");
    (node, senders)
}

/// A listener that answers every connection with bytes that are not
/// HTTP: the node is reached, and fails.
async fn broken_node() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(b"this is not HTTP\r\n\r\n").await;
            });
        }
    });
    url
}

/// The kind of error the mediator answered a client with.
fn kind_of(error: &ClientError) -> &str {
    match error {
        ClientError::Mediator { kind, .. } => kind,
        other => panic!("not the mediator's answer: {other}"),
    }
}

#[tokio::test]
async fn without_a_session_the_browser_gets_the_sign_in_page_and_the_api_refuses() {
    let hub = console_hub().await;
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.goto(&hub.console_url("/")).await;
    let form = browser.wait_for("form[action=\"console/sign-in\"]").await;
    assert!(browser.text(&form).await.contains("Operator password"));
    let title = browser.wait_for("h1").await;
    assert_eq!(browser.text(&title).await, "Mediator");
    browser.screenshot("01-sign-in").await;

    // A wrong password is refused on the page, not with a blank one.
    let password = browser.wait_for("#password").await;
    browser.fill(&password, "not the password").await;
    browser
        .click(&browser.wait_for("button[type=submit]").await)
        .await;
    let problem = browser.wait_for("p.problem").await;
    assert_eq!(browser.text(&problem).await, "wrong password");
    assert!(browser.cookies().await.is_empty(), "no session cookie");
    // Styled, and its form still works from where the refusal was served.
    assert_eq!(
        browser
            .execute("return getComputedStyle(document.body).display;", vec![])
            .await,
        "flex"
    );
    browser.screenshot("02-sign-in-refused").await;

    // The API refuses without a session, for reads and for actions.
    for (method, path) in [
        ("GET", "/console/api/state"),
        ("GET", "/console/api/session"),
        ("GET", "/console/api/nodes/1"),
        ("POST", "/console/api/send"),
        ("POST", "/console/api/token"),
        ("POST", "/console/api/nodes/1/deregister"),
        ("POST", "/console/sign-out"),
    ] {
        let answer = hub.console_call(method, path, &[], "{}").await;
        assert_eq!(answer.status, 401, "{method} {path}: {}", answer.text());
        assert_eq!(answer.json()["kind"], "unauthorized");
    }

    let password = browser.wait_for("#password").await;
    browser.fill(&password, PASSWORD).await;
    browser
        .click(&browser.wait_for("button[type=submit]").await)
        .await;
    browser.wait_for("#node-table").await;
    browser.quit().await;
}

#[tokio::test]
async fn a_signed_in_operator_sees_new_nodes_appear_without_a_reload() {
    let hub = console_hub().await;
    let browser = signed_in(&hub).await;

    // The session cookie: HttpOnly, SameSite=Strict, not Secure over HTTP.
    let cookies = browser.cookies().await;
    let session = cookies
        .iter()
        .find(|c| c["name"] == "mediator_session")
        .expect("the session cookie");
    assert_eq!(session["httpOnly"], true);
    assert_eq!(session["sameSite"], "Strict");
    assert_eq!(session["secure"], false);
    assert_eq!(session["value"].as_str().expect("a value").len(), 43);
    assert!(
        browser
            .execute("return document.cookie;", vec![])
            .await
            .as_str()
            .is_some_and(|c| !c.contains("mediator_session")),
        "scripts cannot read the session cookie"
    );
    browser.wait_for("tr.empty").await;

    // Proof that nothing reloads the page: a mark set now stays.
    browser
        .execute("window.notReloaded = true; return true;", vec![])
        .await;
    let seal = SealKey::generate();
    let (api, _) = greeter(&hub, "users/api", &seal).await;
    let (worker, _) = greeter(&hub, "billing/worker-1", &seal).await;
    browser.wait_for("tr[data-key=\"users/api\"]").await;
    browser.wait_for("tr[data-key=\"billing/worker-1\"]").await;
    assert_eq!(
        browser
            .execute("return window.notReloaded === true;", vec![])
            .await,
        true
    );
    let row = browser.wait_for("tr[data-key=\"users/api\"]").await;
    let text = browser.text(&row).await;
    assert!(
        text.contains("users") && text.contains("api") && text.contains("http"),
        "{text}"
    );
    assert!(text.contains("unknown"), "no delivery yet: {text}");
    browser
        .wait_until(
            "the page says when it was updated",
            "return /updated \\d/.test(document.getElementById('updated').textContent);",
        )
        .await;
    browser.screenshot("03-live-nodes").await;

    // Filters: by name, then by group.
    browser
        .fill(&browser.wait_for("#filter-name").await, "work")
        .await;
    browser
        .wait_until(
            "only the worker is listed",
            "return document.querySelectorAll('#node-rows tr[data-key]').length === 1 \
             && !!document.querySelector('tr[data-key=\"billing/worker-1\"]');",
        )
        .await;
    browser
        .fill(&browser.wait_for("#filter-name").await, "")
        .await;
    browser
        .execute(
            "const s = document.getElementById('filter-group'); s.value = 'users'; \
             s.dispatchEvent(new Event('change')); return true;",
            vec![],
        )
        .await;
    browser
        .wait_until(
            "only the users group is listed",
            "return document.querySelectorAll('#node-rows tr[data-key]').length === 1 \
             && !!document.querySelector('tr[data-key=\"users/api\"]');",
        )
        .await;
    browser.screenshot("04-filtered").await;

    // The keyboard: the first Tab lands on the skip link, visibly.
    browser.goto(&hub.console_url("/")).await;
    browser.wait_for("#node-table").await;
    browser.keys("\u{E004}").await;
    let focus = browser
        .execute(
            "const e = document.activeElement; \
             return [e.className, getComputedStyle(e).outlineStyle];",
            vec![],
        )
        .await;
    assert_eq!(focus, serde_json::json!(["skip", "solid"]));

    // On a phone-sized window, each node is a card with labelled fields
    // and nothing overflows sideways.
    browser
        .execute("document.activeElement.blur(); return true;", vec![])
        .await;
    browser.resize(PHONE.0, PHONE.1).await;
    browser.wait_for("tr[data-key=\"users/api\"]").await;
    assert_eq!(
        browser
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                vec![]
            )
            .await,
        true,
        "no sideways scrolling on a phone"
    );
    browser.screenshot("05-phone").await;
    browser.quit().await;
    api.shutdown().await.unwrap();
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_turns_unreachable_when_a_node_dies_and_failing_when_it_breaks() {
    let hub = console_hub().await;
    let seal = SealKey::generate();
    let (api, _) = greeter(&hub, "users/api", &seal).await;
    hub.register("users/broken", &broken_node().await).await;
    let caller = hub
        .client("billing/worker-1")
        .keys(KeyRing::new(seal.clone()))
        .connect()
        .await
        .unwrap();
    let browser = signed_in(&hub).await;

    let reply = caller.call(key("users/api"), "/hi", "ada").await.unwrap();
    assert_eq!(reply, "hello ada from users/api");
    browser.wait_for(&health_selector("users/api", "ok")).await;

    // The node's process goes away without deregistering: its listener is
    // gone, so the next delivery cannot reach it.
    drop(api);
    eventually("the node's listener is closed", || {
        std::net::TcpStream::connect_timeout(
            &hub.mediator
                .routes()
                .get(&key("users/api"))
                .and_then(|n| n.endpoint.url().map(str::to_owned))
                .and_then(|u| u.trim_start_matches("http://").parse().ok())
                .expect("a socket address"),
            Duration::from_millis(200),
        )
        .is_err()
    })
    .await;
    let refused = caller
        .call(key("users/api"), "/hi", "again")
        .await
        .unwrap_err();
    assert_eq!(kind_of(&refused), "node_unreachable", "{refused}");
    let failed = caller
        .call(key("users/broken"), "/hi", "x")
        .await
        .unwrap_err();
    assert_eq!(kind_of(&failed), "node_failed", "{failed}");

    browser
        .wait_for(&health_selector("users/api", "unreachable"))
        .await;
    browser
        .wait_for(&health_selector("users/broken", "failing"))
        .await;
    // Two deliveries, one of them an error; nothing in flight.
    let counts = browser
        .execute(
            "const r = document.querySelector('tr[data-key=\"users/api\"]'); \
             return [7, 8, 9].map((i) => r.children[i].textContent);",
            vec![],
        )
        .await;
    assert_eq!(counts, serde_json::json!(["0", "2", "1"]));
    browser
        .wait_for(".chart-group[data-group=\"users\"] .chart.rps path.line")
        .await;
    browser
        .wait_for(".chart-group[data-group=\"users\"] .chart.err path.line")
        .await;
    // Each chart reads at a glance: a value scale beside it (the error
    // rate's from 0 to 100 %), the last 15 minutes along it, and the one
    // step that had errors drawn as a level, not a lone dot.
    let axes = browser
        .execute(
            "const c = document.querySelector('.chart-group[data-group=\"users\"] .chart.err'); \
             return [[...c.querySelectorAll('.yaxis span')].map((s) => s.textContent), \
                     [...c.querySelectorAll('.xaxis span')].map((s) => s.textContent), \
                     c.querySelector('path.line').getAttribute('d').split('L').length];",
            vec![],
        )
        .await;
    assert_eq!(
        axes[0],
        serde_json::json!(["100 %", "50 %", "0 %"]),
        "{axes}"
    );
    assert_eq!(
        axes[1],
        serde_json::json!(["−15 min", "−10 min", "−5 min", "now"]),
        "{axes}"
    );
    assert!(axes[2].as_u64().unwrap_or(0) >= 2, "{axes}");
    browser.screenshot("06-health").await;

    // The node's own page.
    let link = browser
        .wait_for("a[aria-label=\"Details of users/api\"]")
        .await;
    browser.click(&link).await;
    browser.wait_for("#details:not([hidden]) dl.facts").await;
    let details = browser.text(&browser.wait_for("#details").await).await;
    assert!(details.contains("users/api"), "{details}");
    assert!(details.contains("unreachable, ok"), "{details}");
    assert!(details.contains("2 / 1"), "{details}");
    browser.screenshot("07-node-details").await;
    browser.quit().await;
}

#[tokio::test]
async fn at_1280_px_an_unreachable_node_with_long_names_fits_and_keeps_its_deregister_button() {
    let hub = console_hub().await;
    let seal = SealKey::generate();
    let (_api, _) = greeter(&hub, "users/api", &seal).await;
    // A node with the longest names there are and a long callback URL, on
    // a port nothing listens on: every delivery to it is unreachable.
    let group = "payments-settlement-and-reconciliation-eu-west-1";
    let long = format!("{group}/ledger-writer-primary-instance-0001-blue-green");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/callbacks/mediator/v1/nodes/ledger-writer-primary-instance-0001",
        closed.local_addr().unwrap()
    );
    drop(closed);
    hub.register(long.as_str(), &url).await;
    let caller = hub
        .client("billing/worker-1")
        .keys(KeyRing::new(seal.clone()))
        .connect()
        .await
        .unwrap();
    for _ in 0..8 {
        let refused = caller.call(key(&long), "/hi", "x").await.unwrap_err();
        assert_eq!(kind_of(&refused), "node_unreachable", "{refused}");
    }
    caller.call(key("users/api"), "/hi", "ada").await.unwrap();

    let browser = signed_in(&hub).await;
    browser
        .wait_for(&health_selector(&long, "unreachable"))
        .await;
    browser.wait_for(&health_selector("users/api", "ok")).await;
    // Neither the page nor the table scrolls sideways, and the row's
    // Deregister button is inside the table's visible box.
    let fit = browser
        .execute(
            "const wrap = document.querySelector('.table-wrap'); \
             const key = arguments[0]; \
             const b = document.querySelector(`tr[data-key=\"${key}\"] button[data-action=deregister]`); \
             const r = b.getBoundingClientRect(), w = wrap.getBoundingClientRect(); \
             return { page: document.documentElement.scrollWidth - window.innerWidth, \
                      table: wrap.scrollWidth - wrap.clientWidth, \
                      button: r.width > 0 && r.left >= w.left && r.right <= w.right \
                              && r.right <= window.innerWidth };",
            vec![Value::String(long.clone())],
        )
        .await;
    browser.screenshot("15-unreachable-at-1280").await;
    assert_eq!(
        fit["page"],
        serde_json::json!(0),
        "the page scrolls sideways: {fit}"
    );
    assert_eq!(
        fit["table"],
        serde_json::json!(0),
        "the table scrolls sideways: {fit}"
    );
    assert_eq!(
        fit["button"],
        serde_json::json!(true),
        "Deregister is cut off: {fit}"
    );
    // The long cells are cut or wrapped, never lost: each keeps its full
    // text for a pointer's tooltip or a screen reader.
    let full = browser
        .execute(
            "const r = document.querySelector(`tr[data-key=\"${arguments[0]}\"]`); \
             return [r.children[0].textContent, r.children[4].querySelector('[title]').title];",
            vec![Value::String(long.clone())],
        )
        .await;
    assert_eq!(full, serde_json::json!([group, url]));
    browser.quit().await;
}

/// Seals `ada` for `target` at `/greet` in the page with `seal`, sends it,
/// and returns what the page shows of the answer.
async fn send_in_page(browser: &Browser, target: &str, seal: &SealKey) -> String {
    for (field, value) in [
        ("#send-target", target),
        ("#send-path", "/greet"),
        ("#send-payload", "ada"),
        ("#send-key", &seal.to_base64()),
    ] {
        browser.fill(&browser.wait_for(field).await, value).await;
    }
    browser
        .execute(
            "document.getElementById('send-result').replaceChildren(); return true;",
            vec![],
        )
        .await;
    browser
        .click(&browser.wait_for("#send-form button[type=submit]").await)
        .await;
    browser
        .wait_for("#send-result .reply, #send-result .problem")
        .await;
    browser
        .execute(
            "window.scrollTo(0, document.body.scrollHeight); return true;",
            vec![],
        )
        .await;
    browser.text(&browser.wait_for("#send-result").await).await
}

#[tokio::test]
async fn a_test_request_sealed_in_the_browser_is_answered_and_opened_there() {
    let hub = console_hub().await;
    let seal = SealKey::generate();
    let (api, api_saw) = greeter(&hub, "users/api", &seal).await;
    let (db, db_saw) = greeter(&hub, "users/db", &seal).await;
    let browser = signed_in(&hub).await;
    let who = browser.text(&browser.wait_for("#who").await).await;
    // Signed in with the password, the console names no node: requests
    // reach nodes without a sender, and the seal says so.
    assert!(who.contains("without a sender"), "{who}");
    // The payload offered is JSON with a text, what the demo's nodes read.
    let offered = browser
        .execute(
            "return document.getElementById('send-payload').value;",
            vec![],
        )
        .await;
    let offered: Value = serde_json::from_str(offered.as_str().unwrap_or_default())
        .expect("the payload offered is JSON");
    assert_eq!(offered["text"], "hello");

    let one = send_in_page(&browser, "users/api", &seal).await;
    assert!(one.contains("hello ada from users/api"), "{one}");
    assert!(one.contains("status 200 · opened"), "{one}");
    assert_eq!(api_saw.lock().unwrap().as_slice(), [None]);
    browser.screenshot("08-send-one").await;

    let many = send_in_page(&browser, "users/*", &seal).await;
    assert!(
        many.contains("asked 2 · answered 2 · failed 0 · timed out 0"),
        "{many}"
    );
    assert!(many.contains("hello ada from users/api"), "{many}");
    assert!(many.contains("hello ada from users/db"), "{many}");
    browser.screenshot("09-send-many").await;

    let any = send_in_page(&browser, "users/?", &seal).await;
    assert!(any.contains("hello ada from users/"), "{any}");
    assert_eq!(
        api_saw.lock().unwrap().len() + db_saw.lock().unwrap().len(),
        4
    );

    // A wrong key is refused by the node, and the page says it could not
    // open what came back.
    let refused = send_in_page(&browser, "users/api", &SealKey::generate()).await;
    assert!(refused.contains("status 400"), "{refused}");
    assert!(
        refused.contains("refused (a refusal comes unsealed)"),
        "{refused}"
    );
    browser.screenshot("10-send-wrong-key").await;
    browser.quit().await;
    api.shutdown().await.unwrap();
    db.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_admin_mints_a_token_and_deregisters_a_node() {
    let hub = console_hub().await;
    let seal = SealKey::generate();
    let (api, _) = greeter(&hub, "users/api", &seal).await;
    let browser = signed_in(&hub).await;

    browser
        .fill(&browser.wait_for("#mint-node").await, "users/new")
        .await;
    browser
        .fill(&browser.wait_for("#mint-scope").await, "billing")
        .await;
    browser
        .fill(&browser.wait_for("#mint-ttl").await, "600")
        .await;
    browser
        .click(&browser.wait_for("#mint-form button[type=submit]").await)
        .await;
    let token = browser.text(&browser.wait_for("#minted-token").await).await;
    browser
        .execute(
            "window.scrollTo(0, document.body.scrollHeight); return true;",
            vec![],
        )
        .await;
    let identity = hub
        .mediator
        .authenticate(&Credentials::Bearer(&token))
        .expect("the minted token is valid");
    assert_eq!(identity.key, Some(key("users/new")));
    assert_eq!(identity.scope, Some(vec!["billing".to_owned()]));
    assert!(!identity.admin);
    browser.screenshot("11-minted").await;

    // Deregistering takes two presses: the first arms the button.
    let button = browser
        .wait_for("tr[data-key=\"users/api\"] button[data-action=deregister]")
        .await;
    browser.click(&button).await;
    assert_eq!(browser.text(&button).await, "Confirm");
    assert!(hub.knows("users/api"));
    browser.click(&button).await;
    browser
        .wait_until(
            "the node's row is gone",
            "return !document.querySelector('tr[data-key=\"users/api\"]');",
        )
        .await;
    assert!(!hub.knows("users/api"));
    // The page says a running node comes back at its next renewal.
    let said = browser.text(&browser.wait_for("#conn").await).await;
    assert!(
        said.contains("users/api deregistered")
            && said.contains("registers again at its next renewal"),
        "{said}"
    );
    assert!(hub
        .mediator
        .registry()
        .get(&key("users/api"))
        .await
        .unwrap()
        .is_none());
    browser.screenshot("12-deregistered").await;
    browser.quit().await;
    drop(api);
}

#[tokio::test]
async fn signing_out_ends_the_session_on_the_server() {
    let hub = console_hub().await;
    let browser = signed_in(&hub).await;
    let cookie = browser
        .cookies()
        .await
        .into_iter()
        .find(|c| c["name"] == "mediator_session")
        .and_then(|c| c["value"].as_str().map(str::to_owned))
        .expect("the session cookie");
    let header = format!("mediator_session={cookie}");
    let before = hub
        .console_call("GET", "/console/api/state", &[("cookie", &header)], "")
        .await;
    assert_eq!(before.status, 200, "{}", before.text());

    browser.click(&browser.wait_for("#sign-out").await).await;
    browser.wait_for("form[action=\"console/sign-in\"]").await;
    browser.screenshot("13-signed-out").await;
    // The old cookie no longer opens anything, whoever replays it.
    let after = hub
        .console_call("GET", "/console/api/state", &[("cookie", &header)], "")
        .await;
    assert_eq!(after.status, 401, "{}", after.text());
    let page = hub
        .console_call("GET", "/", &[("cookie", &header)], "")
        .await;
    assert_eq!(page.status, 401);
    assert!(page.text().contains("console/sign-in"));
    browser.quit().await;
}

/// Signs in over HTTP; returns the session cookie header and the
/// anti-forgery token.
async fn http_session(hub: &Hub) -> (String, String) {
    let form = format!("password={}", urlencode(PASSWORD));
    let answer = hub
        .console_call(
            "POST",
            "/console/sign-in",
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await;
    assert_eq!(answer.status, 303, "{}", answer.text());
    assert_eq!(answer.header("location"), Some("../"));
    let set = answer.header("set-cookie").expect("a cookie").to_owned();
    let cookie = set.split(';').next().expect("name=value").to_owned();
    let session = hub
        .console_call("GET", "/console/api/session", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(session.status, 200, "{}", session.text());
    let csrf = session.json()["csrf"].as_str().expect("csrf").to_owned();
    (cookie, csrf)
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test]
async fn actions_need_the_sessions_anti_forgery_token_or_a_bearer_token() {
    let hub = console_hub().await;
    let (cookie, csrf) = http_session(&hub).await;
    let body = r#"{"admin":true,"ttl_s":60}"#;
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("admin:{PASSWORD}")
        )
    );
    let admin = format!("Bearer {}", hub.admin_token());
    let node = format!("Bearer {}", hub.token_for("users/api"));
    for (headers, status) in [
        (vec![("cookie", cookie.as_str())], 403),
        (
            vec![("cookie", cookie.as_str()), ("x-csrf-token", "forged")],
            403,
        ),
        (
            vec![("cookie", cookie.as_str()), ("x-csrf-token", &csrf[..42])],
            403,
        ),
        (
            vec![("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())],
            200,
        ),
        // A browser attaches a Basic login by itself: it reads, never
        // acts; an action is refused from its head, the password unchecked.
        (vec![("authorization", basic.as_str())], 403),
        (vec![("authorization", admin.as_str())], 200),
        (vec![("authorization", node.as_str())], 403),
    ] {
        let answer = hub
            .console_call("POST", "/console/api/token", &headers, body)
            .await;
        assert_eq!(answer.status, status, "{headers:?}: {}", answer.text());
    }
    // Reads take the session, a Basic login or an admin token.
    for auth in [
        ("cookie", cookie.as_str()),
        ("authorization", &basic),
        ("authorization", &admin),
    ] {
        let answer = hub
            .console_call("GET", "/console/api/state", &[auth], "")
            .await;
        assert_eq!(answer.status, 200, "{auth:?}: {}", answer.text());
    }
    // Bad input is a clear 400, wrong methods 405, unknown paths 404.
    let with = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    for (method, path, body, status) in [
        ("POST", "/console/api/send", r#"{"target":"users"}"#, 400),
        (
            "POST",
            "/console/api/send",
            r#"{"target":"users/api","body":"%%"}"#,
            400,
        ),
        ("POST", "/console/api/send", "not json", 400),
        (
            "POST",
            "/console/api/send",
            r#"{"target":"nobody/here","body":""}"#,
            404,
        ),
        ("POST", "/console/api/token", r#"{"ttl_s":60}"#, 400),
        ("POST", "/console/api/token", r#"{"node":"a b"}"#, 400),
        (
            "POST",
            "/console/api/token",
            r#"{"admin":true,"ttl_s":99999999}"#,
            400,
        ),
        ("POST", "/console/api/nodes/abc/deregister", "{}", 400),
        ("POST", "/console/api/nodes/999/deregister", "{}", 404),
        ("GET", "/console/api/nodes/999", "", 404),
        ("GET", "/console/api/state?group=bad%20name", "", 400),
        ("DELETE", "/console/api/state", "", 405),
        ("GET", "/console/api/nothing", "", 404),
    ] {
        let answer = hub.console_call(method, path, &with, body).await;
        assert_eq!(
            answer.status,
            status,
            "{method} {path} {body}: {}",
            answer.text()
        );
    }

    // The cookie is strict and short-lived; over TLS it is also Secure.
    let form = format!("password={}", urlencode(PASSWORD));
    let answer = hub
        .console_call(
            "POST",
            "/console/sign-in",
            &[("content-type", "application/x-www-form-urlencoded")],
            form.clone(),
        )
        .await;
    let set = answer.header("set-cookie").expect("a cookie");
    assert!(
        set.ends_with("; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"),
        "{set}"
    );
    let secure = MediatorService::new(hub.mediator.clone())
        .secure_cookies(true)
        .console();
    let request = mediator_tests::harness::request(
        "POST",
        "/console/sign-in",
        &[("content-type", "application/x-www-form-urlencoded")],
        form,
    );
    let answer = mediator_tests::harness::call_service(&secure, request).await;
    assert!(answer
        .header("set-cookie")
        .expect("a cookie")
        .ends_with("; Secure"));
}

#[tokio::test]
async fn failed_sign_ins_count_in_the_login_backoff() {
    let hub = console_hub().await;
    for _ in 0..5 {
        let answer = hub
            .console_call(
                "POST",
                "/console/sign-in",
                &[("content-type", "application/x-www-form-urlencoded")],
                "password=guess",
            )
            .await;
        assert_eq!(answer.status, 401, "{}", answer.text());
        assert!(answer.text().contains("wrong password"));
    }
    let form = format!("password={}", urlencode(PASSWORD));
    let answer = hub
        .console_call(
            "POST",
            "/console/sign-in",
            &[("content-type", "application/x-www-form-urlencoded")],
            form,
        )
        .await;
    assert_eq!(
        answer.status,
        429,
        "even the right password waits: {}",
        answer.text()
    );
    assert!(answer.header("retry-after").is_some());
    assert!(answer.header("set-cookie").is_none());
    // The same count as the Basic login's.
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("admin:{PASSWORD}")
        )
    );
    let answer = hub
        .call("GET", "/admin/clusters", &[("authorization", &basic)], "")
        .await;
    assert_eq!(answer.status, 429);
}

#[tokio::test]
async fn a_console_request_goes_out_as_the_admin_tokens_node_when_it_names_one() {
    let hub = console_hub().await;
    let seal = SealKey::generate();
    let (api, saw) = greeter(&hub, "users/api", &seal).await;
    // An admin token minted for a node: the mediator stamps that node as
    // the sender, so the seal must name it.
    let ops = key("ops/console");
    let token = mediator_tests::harness::mint(
        &mediator_core::Claims::node(&ops, hub.now(), Duration::from_secs(600))
            .with_scope(vec!["admin".into()]),
    );
    let bearer = format!("Bearer {token}");
    let session = hub
        .console_call(
            "GET",
            "/console/api/session",
            &[("authorization", &bearer)],
            "",
        )
        .await;
    assert_eq!(session.json()["sender"], "ops/console");
    let ring = KeyRing::new(seal);
    let target: Target = "users/api".parse().unwrap();
    let sealed =
        mediator_core::node::seal_request(&ring, Some(&ops), &target, "/greet", b"bo").unwrap();
    let body = serde_json::json!({
        "target": "users/api",
        "path": "/greet",
        "body": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, sealed),
    });
    let answer = hub
        .console_call(
            "POST",
            "/console/api/send",
            &[("authorization", &bearer)],
            body.to_string(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer: Value = answer.json();
    assert_eq!(answer["kind"], "one");
    assert_eq!(answer["status"], 200);
    let reply = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        answer["body"].as_str().unwrap(),
    )
    .unwrap();
    let opened = open_reply(&ring, &key("users/api"), Some(&ops), "/greet", &reply).unwrap();
    assert_eq!(opened, b"hello bo from users/api");
    assert_eq!(saw.lock().unwrap().as_slice(), [Some(ops)]);
    api.shutdown().await.unwrap();
}

#[tokio::test]
async fn signed_in_with_a_nodes_admin_token_the_page_seals_as_that_node() {
    let hub = console_hub().await;
    let seal = SealKey::generate();
    let (api, saw) = greeter(&hub, "users/api", &seal).await;
    let ops = key("ops/console");
    let token = mediator_tests::harness::mint(
        &mediator_core::Claims::node(&ops, hub.now(), Duration::from_secs(600))
            .with_scope(vec!["admin".into()]),
    );
    let browser = Browser::start(DESKTOP.0, DESKTOP.1).await;
    browser.goto(&hub.console_url("/")).await;
    browser
        .fill(&browser.wait_for("#token").await, &token)
        .await;
    browser
        .click(&browser.wait_for("button[type=submit]").await)
        .await;
    browser.wait_for("#node-table").await;
    browser
        .wait_until(
            "the page knows its sender",
            "return document.getElementById('who').textContent.includes('as ops/console');",
        )
        .await;
    let shown = send_in_page(&browser, "users/api", &seal).await;
    assert!(shown.contains("hello ada from users/api"), "{shown}");
    assert!(shown.contains("opened"), "{shown}");
    assert_eq!(saw.lock().unwrap().as_slice(), [Some(ops)]);
    browser.screenshot("14-signed-in-with-a-token").await;
    browser.quit().await;
    api.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_console_lists_the_instances_sharing_its_store() {
    use mediator_core::{Endpoint, Identity, MemoryRegistry, Registration};
    let store = Arc::new(MemoryRegistry::new());
    let hash = mediator_core::PasswordHash::generate(PASSWORD).expect("a hash");
    let hub = Hub::config()
        .operator_password(hash)
        .console()
        .registry(Arc::clone(&store))
        .formation("hub-east")
        .limits(|l| l.instance_ttl = Duration::from_secs(1))
        .start()
        .await;
    let other = Hub::config()
        .registry(Arc::clone(&store))
        .formation("hub-west")
        .limits(|l| l.instance_ttl = Duration::from_secs(1))
        .start()
        .await;
    let mine = hub.mediator.spawn_maintenance();
    let theirs = other.mediator.spawn_maintenance();
    for node in ["users/api", "users/cache"] {
        let registration = Registration::new(
            key(node),
            Endpoint::attached("hub-west").expect("an id"),
            Duration::from_secs(60),
        );
        other
            .mediator
            .register(&Identity::internal(), registration)
            .await
            .expect("attach");
    }
    let browser = signed_in(&hub).await;
    let west = browser.wait_for("tr[data-instance=\"hub-west\"]").await;
    browser
        .wait_until(
            "hub-west shows its two attached nodes",
            "return document.querySelector('tr[data-instance=\"hub-west\"] td.num').textContent === '2';",
        )
        .await;
    let text = browser.text(&west).await;
    assert!(
        text.contains("live") && text.contains(&other.base),
        "{text}"
    );
    let east = browser
        .text(&browser.wait_for("tr[data-instance=\"hub-east\"]").await)
        .await;
    assert!(east.contains("this one"), "{east}");
    browser.screenshot("16-instances").await;

    // hub-west stops heartbeating: its lease runs out, it goes from the
    // list, and its nodes with it.
    theirs.abort();
    browser
        .wait_until(
            "hub-west leaves the list",
            "return !document.querySelector('tr[data-instance=\"hub-west\"]');",
        )
        .await;
    eventually("hub-west's nodes are detached", || !hub.knows("users/api")).await;
    browser.screenshot("17-instance-gone").await;
    mine.abort();
    browser.quit().await;
}
