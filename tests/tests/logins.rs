//! The operator's logins and the tokens minted with them: the backoff per
//! address that no refused login clears, the bounded password checks that
//! never run on the request threads nor where no Basic login is taken,
//! minted tokens that never outlive their minter, and sign-ins refused
//! when another site sends them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mediator_core::policy::{Authenticate, Credentials};
use mediator_core::{
    AuthError, Authenticator, Claims, Identity, Mediator, MemoryRegistry, Timestamp,
};
use mediator_tests::harness::{
    assert_error, call_service, eventually, key, mint, original_token, request, send, Answer, Hub,
    SECRET,
};
use mediator_transport_http::{HttpListener, MediatorService};
use serde_json::Value;
use tokio::sync::oneshot;

/// The operator password of the hubs here.
const PASSWORD: &str = "the operator's password";

/// What the login gate lets through at once: checks running, and waiting.
const HASHERS: usize = 2;
const WAITING: usize = 16;

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn form(field: &str, value: &str) -> String {
    let value: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    format!("{field}={value}")
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

/// A service served on a loopback port of its own until dropped.
struct Served {
    base: String,
    _stop: oneshot::Sender<()>,
}

impl Served {
    async fn start(service: MediatorService) -> Served {
        let listener = HttpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(listener.serve_with_shutdown(service, async move {
            let _ = stopped.await;
        }));
        Served { base, _stop: stop }
    }

    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        send(request(
            method,
            &format!("{}{path}", self.base),
            headers,
            body.to_owned(),
        ))
        .await
    }
}

/// A hub on loopback whose Basic login checks [`PASSWORD`], with its
/// console on a listener of its own.
async fn hub_with_console() -> Hub {
    let hash = mediator_core::PasswordHash::generate(PASSWORD).expect("a hash");
    Hub::config()
        .operator_password(hash)
        .console()
        .start()
        .await
}

#[tokio::test]
async fn a_refused_sign_in_never_clears_the_login_backoff() {
    let hub = hub_with_console().await;
    let node = hub.token_for("users/api");
    // Wrong passwords between sign-ins with a node's valid token: each
    // one refused, none clearing the count.
    for round in 0..5 {
        let (body, status) = if round % 2 == 0 {
            (form("password", "guess"), 401)
        } else {
            (form("token", &node), 403)
        };
        let answer = hub
            .console_call("POST", "/console/sign-in", &[FORM], body)
            .await;
        assert_eq!(answer.status, status, "{round}: {}", answer.text());
    }
    let answer = hub
        .console_call(
            "POST",
            "/console/sign-in",
            &[FORM],
            form("password", PASSWORD),
        )
        .await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert!(answer.header("retry-after").is_some());
    assert!(answer.header("set-cookie").is_none());

    // The Basic login's guesses count the same, however many node tokens
    // sign in between them.
    let hub = hub_with_console().await;
    let node = hub.token_for("users/api");
    let wrong = basic("admin", "guess");
    for round in 0..5 {
        let answer = if round % 2 == 0 {
            hub.call("GET", "/admin/clusters", &[("authorization", &wrong)], "")
                .await
        } else {
            hub.console_call("POST", "/console/sign-in", &[FORM], form("token", &node))
                .await
        };
        assert!(
            [401, 403].contains(&answer.status),
            "{round}: {}",
            answer.text()
        );
    }
    let right = basic("admin", PASSWORD);
    let answer = hub
        .call("GET", "/admin/clusters", &[("authorization", &right)], "")
        .await;
    assert_error(&answer, 429, "throttled", "caller");
}

/// An `Authenticate` policy that counts the Basic logins it checks, and
/// holds each one until the test opens its gate.
#[derive(Clone)]
struct CountingPolicy(Arc<Counts>);

#[derive(Default)]
struct Counts {
    checked: AtomicUsize,
    running: AtomicUsize,
    most: AtomicUsize,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Counts {
    fn open(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.opened.notify_all();
    }
}

impl Authenticate for CountingPolicy {
    fn authenticate(
        &self,
        credentials: &Credentials<'_>,
        now: Timestamp,
    ) -> Result<Identity, AuthError> {
        match credentials {
            Credentials::Bearer(token) => Authenticator::hs256(SECRET).authenticate(token, now),
            Credentials::Basic { user, password } => {
                let counts = &self.0;
                counts.checked.fetch_add(1, Ordering::SeqCst);
                let running = counts.running.fetch_add(1, Ordering::SeqCst) + 1;
                counts.most.fetch_max(running, Ordering::SeqCst);
                // A slow hash, as long as the test wants (10 s at most, so
                // that a broken test ends).
                let open = counts.open.lock().unwrap();
                let _open = counts
                    .opened
                    .wait_timeout_while(open, Duration::from_secs(10), |open| !*open)
                    .unwrap();
                counts.running.fetch_sub(1, Ordering::SeqCst);
                if *user == "admin" && *password == PASSWORD {
                    Ok(Identity::internal())
                } else {
                    Err(AuthError::Refused("wrong user or password".into()))
                }
            }
            _ => Err(AuthError::Refused("unknown credentials".into())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_logins_are_checked_only_where_taken_and_never_on_the_request_threads() {
    let counts = Arc::new(Counts::default());
    counts.open(true);
    let mediator = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticate(CountingPolicy(Arc::clone(&counts)))
        .build()
        .expect("a mediator");
    let service = MediatorService::new(mediator);
    let api = Served::start(service.clone()).await;
    let console = Served::start(service.console()).await;
    let right = basic("admin", PASSWORD);
    let with_basic = [("authorization", right.as_str())];

    // Probes, metrics, the nodes' routes, the console's assets and
    // actions never look at a Basic login, however many carry one.
    for _ in 0..20 {
        for path in ["/healthz", "/readyz", "/ping", "/metrics"] {
            let answer = api.call("GET", path, &with_basic, "").await;
            assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        }
        assert_eq!(
            counts.checked.load(Ordering::SeqCst),
            0,
            "a probe checked it"
        );
        for (method, path) in [("POST", "/one/users/api/x"), ("POST", "/register")] {
            let answer = api.call(method, path, &with_basic, "{}").await;
            assert_error(&answer, 401, "unauthorized", "caller");
            assert!(
                answer.text().contains("accepted only by"),
                "{}",
                answer.text()
            );
        }
        let answer = console
            .call("GET", "/console/console.css", &with_basic, "")
            .await;
        assert_eq!(answer.status, 200);
        let answer = console
            .call(
                "POST",
                "/console/api/token",
                &with_basic,
                r#"{"admin":true}"#,
            )
            .await;
        assert!([401, 403].contains(&answer.status), "{}", answer.text());
    }
    assert_eq!(counts.checked.load(Ordering::SeqCst), 0);
    // The routes that take one check it, once per request.
    let answer = api.call("GET", "/admin/clusters", &with_basic, "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = console
        .call("GET", "/console/api/session", &with_basic, "")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(counts.checked.load(Ordering::SeqCst), 2);

    // Checks that take long hold no request thread: with every hasher
    // busy and the queue full, the next logins are refused at once and
    // every other request is answered.
    counts.open(false);
    let done = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let base = api.base.clone();
    let logins: Vec<_> = (0..HASHERS + WAITING + 6)
        .map(|_| {
            let (done, base, right) = (Arc::clone(&done), base.clone(), right.clone());
            tokio::spawn(async move {
                let answer = send(request(
                    "GET",
                    &format!("{base}/admin/clusters"),
                    &[("authorization", &right)],
                    "",
                ))
                .await;
                done.lock().unwrap().push(answer);
            })
        })
        .collect();
    eventually("every hasher is busy", || {
        counts.running.load(Ordering::SeqCst) == HASHERS
    })
    .await;
    eventually("the logins past the queue are refused", || {
        done.lock().unwrap().len() >= 6
    })
    .await;
    for answer in done.lock().unwrap().iter() {
        assert_error(answer, 503, "overloaded", "hub");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    let admin = format!(
        "Bearer {}",
        mint(&Claims::admin(Timestamp::now(), Duration::from_secs(60)))
    );
    for (path, auth) in [("/healthz", &right), ("/admin/clusters", &admin)] {
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            api.call("GET", path, &[("authorization", auth)], ""),
        )
        .await
        .unwrap_or_else(|_| panic!("{path} waited on the password checks"));
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    }
    assert_eq!(counts.running.load(Ordering::SeqCst), HASHERS);

    counts.open(true);
    for login in logins {
        login.await.expect("the login's task");
    }
    let done = done.lock().unwrap();
    let ok = done.iter().filter(|a| a.status == 200).count();
    assert_eq!(ok, HASHERS + WAITING, "every login let in is answered");
    assert_eq!(counts.most.load(Ordering::SeqCst), HASHERS);
    assert_eq!(counts.checked.load(Ordering::SeqCst), 2 + HASHERS + WAITING);
}

/// The session cookie and anti-forgery token of a sign-in with `field`.
async fn session(console: &MediatorService, field: &str, value: &str) -> (String, String) {
    let answer = call_service(
        console,
        request("POST", "/console/sign-in", &[FORM], form(field, value)),
    )
    .await;
    assert_eq!(answer.status, 303, "{}", answer.text());
    let cookie = answer
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a cookie")
        .to_owned();
    let answer = call_service(
        console,
        request("GET", "/console/api/session", &[("cookie", &cookie)], ""),
    )
    .await;
    let csrf = answer.json()["csrf"].as_str().expect("csrf").to_owned();
    (cookie, csrf)
}

async fn mint_in_console(
    console: &MediatorService,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    call_service(
        console,
        request("POST", "/console/api/token", headers, body.to_owned()),
    )
    .await
}

#[tokio::test]
async fn minted_tokens_never_outlive_the_credential_that_minted_them() {
    let hub = Hub::config().secret_as_password().in_process();
    let console = hub.service.console();
    let now = hub.now();
    let month = r#"{"admin":true,"ttl_s":2592000}"#;
    let check = |answer: &Answer, exp: i64, capped: bool| {
        assert_eq!(answer.status, 200, "{}", answer.text());
        let body: Value = answer.json();
        assert_eq!(body["exp"], exp, "{body}");
        assert_eq!(body["capped"], capped, "{body}");
        let token = body["token"].as_str().expect("a token");
        let identity = hub
            .mediator
            .authenticate(&Credentials::Bearer(token))
            .expect("the minted token is valid");
        assert_eq!(identity.expires.as_secs(), exp);
    };

    // A session opened with a one-minute admin token mints nothing that
    // lasts longer, admin or node.
    let short = mint(
        &Claims::node(&key("ops/console"), now, Duration::from_secs(60))
            .with_scope(vec!["admin".into()]),
    );
    let ends = (now + Duration::from_secs(60)).as_secs();
    let (cookie, csrf) = session(&console, "token", &short).await;
    let with = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    check(&mint_in_console(&console, &with, month).await, ends, true);
    let node = r#"{"node":"users/new","ttl_s":2592000}"#;
    check(&mint_in_console(&console, &with, node).await, ends, true);
    // Within the credential's life the ttl asked for holds.
    let answer = mint_in_console(&console, &with, r#"{"admin":true,"ttl_s":30}"#).await;
    check(&answer, (now + Duration::from_secs(30)).as_secs(), false);

    // The same token as a bearer: its own expiry.
    let bearer = format!("Bearer {short}");
    let answer = mint_in_console(&console, &[("authorization", &bearer)], month).await;
    check(&answer, ends, true);

    // A password session: the session's own end, 12 hours on.
    let (cookie, csrf) = session(&console, "password", SECRET).await;
    let with = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let answer = mint_in_console(&console, &with, month).await;
    let exp = answer.json()["exp"].as_i64().expect("exp");
    let twelve_hours = (now + Duration::from_secs(12 * 3600)).as_secs();
    assert!((twelve_hours..=twelve_hours + 5).contains(&exp), "{exp}");
    check(&answer, exp, true);

    // Only a verified admin mints: not a node, not a token naming no one.
    let node = format!("Bearer {}", hub.token_for("users/api"));
    let answer = mint_in_console(&console, &[("authorization", &node)], month).await;
    assert!([401, 403].contains(&answer.status), "{}", answer.text());
    assert!(answer.json()["token"].is_null());
    let hub = Hub::config().tokens_without_sub().in_process();
    let bare = format!("Bearer {}", original_token());
    let answer = mint_in_console(&hub.service.console(), &[("authorization", &bare)], month).await;
    assert_error(&answer, 403, "forbidden", "caller");
    assert!(
        answer.text().contains("verified admin"),
        "{}",
        answer.text()
    );
}

#[tokio::test]
async fn a_sign_in_sent_from_another_site_is_refused() {
    let hub = Hub::config().secret_as_password().in_process();
    let console = hub.service.console();
    let secure = hub.service.console().secure_cookies(true);
    let host = ("host", "console.example:8080");
    let password = form("password", SECRET);
    for (service, url, headers, status) in [
        // Scripts and older browsers send no Origin.
        (&console, "/console/sign-in", vec![host], 303),
        (&console, "/console/sign-in", vec![], 303),
        (
            &console,
            "/console/sign-in",
            vec![host, ("origin", "http://console.example:8080")],
            303,
        ),
        (
            &console,
            "/console/sign-in",
            vec![
                host,
                ("origin", "http://CONSOLE.example:8080"),
                ("sec-fetch-site", "same-origin"),
            ],
            303,
        ),
        (
            &console,
            "/console/sign-in",
            vec![
                ("host", "console.example"),
                ("origin", "http://console.example:80"),
            ],
            303,
        ),
        // Over HTTP/2 the address is the request's own.
        (
            &console,
            "http://console.example:8080/console/sign-in",
            vec![("origin", "http://console.example:8080")],
            303,
        ),
        (
            &secure,
            "/console/sign-in",
            vec![host, ("origin", "https://console.example:8080")],
            303,
        ),
        // Another site, a sandboxed frame, another port or scheme.
        (
            &console,
            "/console/sign-in",
            vec![host, ("origin", "https://attacker.example")],
            403,
        ),
        (
            &console,
            "/console/sign-in",
            vec![host, ("origin", "null")],
            403,
        ),
        (
            &console,
            "/console/sign-in",
            vec![host, ("origin", "http://console.example:8081")],
            403,
        ),
        (
            &console,
            "/console/sign-in",
            vec![host, ("origin", "https://console.example:8080")],
            403,
        ),
        (
            &secure,
            "/console/sign-in",
            vec![host, ("origin", "http://console.example:8080")],
            403,
        ),
        (
            &console,
            "/console/sign-in",
            vec![("origin", "http://console.example:8080")],
            403,
        ),
        (
            &console,
            "/console/sign-in",
            vec![host, ("sec-fetch-site", "cross-site")],
            403,
        ),
    ] {
        let mut headers = headers;
        headers.push(FORM);
        let answer = call_service(service, request("POST", url, &headers, password.clone())).await;
        assert_eq!(answer.status, status, "{headers:?}: {}", answer.text());
        if status == 403 {
            assert!(answer.header("set-cookie").is_none());
            let page = answer.text();
            assert!(
                page.contains("sign in from the console&#39;s own page"),
                "{page}"
            );
        }
    }
}
