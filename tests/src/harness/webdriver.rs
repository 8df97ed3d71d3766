//! A real headless Chromium, driven over the W3C WebDriver protocol by
//! Debian's `chromedriver`, for the console's browser tests.
//!
//! The client is a thin one of our own over the hyper client the harness
//! already uses: the tests need a dozen commands (navigate, find, click,
//! type, read text, run a script, screenshot, cookies, window size), each
//! one JSON request, so a WebDriver crate would bring a second HTTP stack
//! and its TLS features into the build for nothing the tests use.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

/// Where `chromium` and `chromedriver` are installed (Debian's packages).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// See [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key under which WebDriver names an element in its answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long a wait for something on the page may last before the test
/// fails: pages on loopback settle in milliseconds.
pub const PAGE_PATIENCE: Duration = Duration::from_secs(10);

/// A failed WebDriver command: its error code and message.
#[derive(Debug)]
pub struct WebDriverError {
    /// The protocol's error code (`no such element`, ...), or `transport`.
    pub error: String,
    /// What the driver said.
    pub message: String,
}

impl std::fmt::Display for WebDriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

impl std::error::Error for WebDriverError {}

/// An element of the page, as the driver names it.
#[derive(Debug, Clone)]
pub struct Element(String);

/// One headless Chromium behind its own `chromedriver` on a free loopback
/// port; both end when it is dropped (or at [`quit`](Self::quit)).
pub struct Browser {
    client: Client<HttpConnector, Full<Bytes>>,
    session: String,
    driver: Child,
}

impl Browser {
    /// Starts `chromedriver` on a free port and a headless Chromium with a
    /// window of `width` × `height` CSS pixels.
    pub async fn start(width: u32, height: u32) -> Browser {
        // Asking the kernel for a free port, then handing it over, leaves a
        // short window for another process to take it; chromedriver would
        // then fail to start, and the test says so.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {CHROMEDRIVER} ({e}); apt-get install chromium-driver")
            });
        let client = Client::builder(TokioExecutor::new()).build_http();
        let base = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(status) = raw(&client, "GET", &format!("{base}/status"), None).await {
                if status["value"]["ready"] == true {
                    break;
                }
            }
            assert!(
                started.elapsed() < PAGE_PATIENCE,
                "chromedriver did not come up on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--no-first-run",
                    "--disable-extensions", "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let created = raw(
            &client,
            "POST",
            &format!("{base}/session"),
            Some(capabilities),
        )
        .await
        .unwrap_or_else(|e| panic!("no browser session: {e}"));
        let id = created["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        let browser = Browser {
            client,
            session: format!("{base}/session/{id}"),
            driver,
        };
        // The window's inner size is what pages lay out in.
        browser.resize(width, height).await;
        browser
    }

    async fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let url = format!("{}{path}", self.session);
        raw(&self.client, method, &url, body)
            .await
            .map(|v| v["value"].clone())
    }

    async fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.command(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(json!({ "url": url }))).await;
    }

    /// Sets the inner size of the window (the viewport) in CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        // The outer window is larger than the viewport by the browser's own
        // frame; measure it and make up the difference.
        self.must(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
        let inner = self
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await;
        let (w, h) = (
            inner[0].as_u64().unwrap_or(u64::from(width)),
            inner[1].as_u64().unwrap_or(u64::from(height)),
        );
        let fix = |want: u32, have: u64| u64::from(want) * 2 - have.min(u64::from(want) * 2);
        if (w, h) != (u64::from(width), u64::from(height)) {
            self.must(
                "POST",
                "/window/rect",
                Some(json!({ "width": fix(width, w), "height": fix(height, h) })),
            )
            .await;
        }
    }

    /// The page's current URL.
    pub async fn url(&self) -> String {
        self.must("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching the CSS `selector`, if any.
    pub async fn find(&self, selector: &str) -> Option<Element> {
        let found = self
            .command(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": selector })),
            )
            .await
            .ok()?;
        found[ELEMENT].as_str().map(|id| Element(id.to_owned()))
    }

    /// Waits (at most [`PAGE_PATIENCE`]) for an element matching
    /// `selector`; fails the test, with a screenshot named `name`, when
    /// none appears.
    pub async fn wait_for(&self, selector: &str) -> Element {
        let started = Instant::now();
        loop {
            if let Some(element) = self.find(selector).await {
                return element;
            }
            if started.elapsed() > PAGE_PATIENCE {
                self.screenshot("timed-out").await;
                panic!(
                    "no element {selector:?} on {} after {PAGE_PATIENCE:?}",
                    self.url().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (at most [`PAGE_PATIENCE`]) until `script` (the body of a
    /// function) returns `true` on the page.
    pub async fn wait_until(&self, what: &str, script: &str) {
        let started = Instant::now();
        loop {
            if self.execute(script, vec![]).await == Value::Bool(true) {
                return;
            }
            if started.elapsed() > PAGE_PATIENCE {
                self.screenshot("timed-out").await;
                panic!("{what}: not so after {PAGE_PATIENCE:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks `element` as a user would (scrolled into view, on its
    /// centre).
    pub async fn click(&self, element: &Element) {
        self.must(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await;
    }

    /// Types `text` into `element` after clearing it.
    pub async fn fill(&self, element: &Element, text: &str) {
        self.must(
            "POST",
            &format!("/element/{}/clear", element.0),
            Some(json!({})),
        )
        .await;
        self.must(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Presses keys (WebDriver key codes such as `\u{E004}` for Tab,
    /// `\u{E007}` for Enter) on whatever has the focus.
    pub async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                let key = c.to_string();
                [
                    json!({ "type": "keyDown", "value": key }),
                    json!({ "type": "keyUp", "value": key }),
                ]
            })
            .collect();
        self.must(
            "POST",
            "/actions",
            Some(json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] })),
        )
        .await;
        self.must("DELETE", "/actions", None).await;
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> String {
        self.must("GET", &format!("/element/{}/text", element.0), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs `script` (the body of a function, given `args`) in the page and
    /// returns what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Every cookie the browser holds for the page.
    pub async fn cookies(&self) -> Vec<Value> {
        self.must("GET", "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Saves a PNG of the viewport as `target/console-screenshots/NAME.png`
    /// and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.must("GET", "/screenshot", None).await;
        let png = STANDARD
            .decode(png.as_str().unwrap_or_default())
            .expect("a base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).expect("the screenshot folder");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("the screenshot");
        path
    }

    /// Ends the browser session and the driver.
    pub async fn quit(mut self) {
        let _ = self.command("DELETE", "", None).await;
        let _ = self.driver.kill().await;
    }
}

/// `target/console-screenshots`, in the build's target folder.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("console-screenshots")
}

async fn raw(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Value, WebDriverError> {
    let transport = |message: String| WebDriverError {
        error: "transport".into(),
        message,
    };
    let bytes = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(bytes))
        .map_err(|e| transport(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(60), client.request(request))
        .await
        .map_err(|_| transport(format!("{method} {url} took over a minute")))?
        .map_err(|e| transport(e.to_string()))?;
    let ok = response.status().is_success();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| transport(e.to_string()))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&body).map_err(|e| transport(e.to_string()))?;
    if ok {
        Ok(value)
    } else {
        Err(WebDriverError {
            error: value["value"]["error"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned(),
            message: value["value"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
    }
}
