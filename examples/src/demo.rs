//! The demo formation: the passive, sender and standalone nodes, each with a
//! small page where a person sees what the node received and sends a
//! message through the mediator to another node.
//!
//! - **passive** only answers: its page lists what it received.
//! - **sender** only calls: its page has a form to send a message.
//! - **standalone** does both.
//! - **quic** is attached over QUIC (it dials out, as a node behind NAT
//!   would): it answers, and a message sent to its path `/relay` makes it
//!   call `demo/passive` in turn, so an HTTP node and an attached node call
//!   each other both ways.
//!
//! A message is the JSON `{"text": "..."}`, sealed end to end with the demo's
//! node key; a node answers `{"received": "...", "by": "group/name"}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming as HyperIncoming;
use mediator_core::node::ClientError;
use mediator_core::Target;
use mediator_core::{KeyRing, NodeKey, Timestamp, TokenMinter};
use mediator_transport_http::client::Incoming;
use mediator_transport_http::{HttpError, NodeClient};
use mediator_transport_quic::QuicNodeClient;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

use crate::CliError;

/// The demo group every demo node registers in.
pub const DEMO_GROUP: &str = "demo";

/// What a demo node does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Only answers.
    Passive,
    /// Only calls.
    Sender,
    /// Answers and calls.
    Standalone,
}

impl Role {
    /// The node's name in the demo group.
    pub fn name(self) -> &'static str {
        match self {
            Role::Passive => "passive",
            Role::Sender => "sender",
            Role::Standalone => "standalone",
        }
    }

    fn answers(self) -> bool {
        self != Role::Sender
    }

    fn calls(self) -> bool {
        self != Role::Passive
    }
}

/// One message a node received, as its page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Received {
    /// When it arrived (RFC 3339).
    pub at: String,
    /// Who sent it, as the mediator vouched (`None`: unverified sender).
    pub from: Option<String>,
    /// How it was addressed (`g/n`, `g/*`, `g/?`).
    pub target: String,
    /// The path it was sent to.
    pub path: String,
    /// The message text.
    pub text: String,
}

/// The message body demo nodes exchange.
#[derive(Debug, Serialize, Deserialize)]
struct Message {
    text: String,
}

/// A running demo node: its client and the address of its page.
pub struct DemoNode {
    /// What it does.
    pub role: Role,
    /// Its page, for a browser.
    pub page: SocketAddr,
    /// The node client.
    pub client: NodeClient,
    page_task: tokio::task::JoinHandle<()>,
}

impl DemoNode {
    /// Stops the page and deregisters the node.
    pub async fn shutdown(self) -> Result<(), CliError> {
        self.page_task.abort();
        self.client.shutdown().await?;
        Ok(())
    }
}

/// Starts one demo node against the mediator at `mediator_url`, its page on
/// `page_addr` (port 0 for any free port); `also_at` names the other
/// mediators of its formation, where it registers again when `mediator_url`
/// stops answering.
pub async fn start_node(
    role: Role,
    mediator_url: &str,
    also_at: &[String],
    minter: TokenMinter,
    keys: KeyRing,
    page_addr: SocketAddr,
) -> Result<DemoNode, CliError> {
    let inbox: Arc<Mutex<Vec<Received>>> = Arc::default();
    let mut builder = NodeClient::builder(mediator_url)
        .identity(DEMO_GROUP, Some(role.name()))
        .token_minter(minter)
        .keys(keys);
    for other in also_at {
        builder = builder.also_at(other.as_str());
    }
    let client = if role.answers() {
        let me = NodeKey::named(DEMO_GROUP, role.name())?;
        let inbox = Arc::clone(&inbox);
        builder
            .callback("http://127.0.0.1:0")
            .start(move |request: Incoming| {
                let inbox = Arc::clone(&inbox);
                let me = me.clone();
                async move { answer(&inbox, &me, request) }
            })
            .await?
    } else {
        builder.connect().await?
    };
    let listener = TcpListener::bind(page_addr)
        .await
        .map_err(|e| CliError::Bind {
            what: format!(
                "the demo/{} page; --pages-from picks other ports",
                role.name()
            ),
            addr: page_addr,
            reason: crate::exit::explain_bind(&e, "--pages-from"),
        })?;
    let page = listener.local_addr().map_err(|source| CliError::Io {
        path: "page address".into(),
        source,
    })?;
    let state = Arc::new(PageState {
        role,
        client: client.clone(),
        inbox,
    });
    let page_task = tokio::spawn(serve_page(listener, state));
    Ok(DemoNode {
        role,
        page,
        client,
        page_task,
    })
}

/// The name of the demo node attached over QUIC.
pub const QUIC_NODE: &str = "quic";

/// The demo node attached over QUIC; it has no page (send to it from the
/// other nodes' pages).
pub struct QuicDemoNode {
    /// The node client, attached.
    pub client: QuicNodeClient,
    /// What it received.
    pub inbox: Arc<Mutex<Vec<Received>>>,
}

impl QuicDemoNode {
    /// Closes its connection, which detaches it at once.
    pub async fn shutdown(self) {
        self.client.shutdown().await;
    }
}

/// Attaches `demo/quic` to the QUIC listener at `addr`, whose certificate
/// has the SHA-256 fingerprint `pin`.
pub async fn start_quic_node(
    addr: SocketAddr,
    pin: &str,
    minter: TokenMinter,
    keys: KeyRing,
) -> Result<QuicDemoNode, CliError> {
    let me = NodeKey::named(DEMO_GROUP, QUIC_NODE)?;
    let inbox: Arc<Mutex<Vec<Received>>> = Arc::default();
    // The handler relays through the node's own client, which exists only
    // once the attachment succeeded.
    let own: Arc<OnceLock<QuicNodeClient>> = Arc::default();
    let handler = {
        let (inbox, own, me) = (Arc::clone(&inbox), Arc::clone(&own), me.clone());
        move |request: Incoming| {
            let (inbox, own, me) = (Arc::clone(&inbox), Arc::clone(&own), me.clone());
            async move {
                let relay = request.path == "/relay";
                let body = request.body.clone();
                let answered = answer(&inbox, &me, request)?;
                if !relay {
                    return Ok(answered);
                }
                let client = own.get().cloned().ok_or_else(|| {
                    mediator_core::Error::refused(503, "starting", "still attaching")
                })?;
                let passive = NodeKey::named(DEMO_GROUP, Role::Passive.name())?;
                let then = client.call(passive, "/message", body).await?;
                let then: serde_json::Value = serde_json::from_slice(&then)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&then).into());
                let reply: serde_json::Value = serde_json::from_slice(&answered)
                    .unwrap_or_else(|_| String::from_utf8_lossy(&answered).into());
                let relayed = serde_json::json!({ "reply": reply, "relayed_to": "demo/passive", "then": then });
                Ok(Bytes::from(relayed.to_string()))
            }
        }
    };
    let client = QuicNodeClient::builder(addr)
        .pin(pin)
        .node_key(me)
        .token_minter(minter)
        .keys(keys)
        .start(handler)
        .await?;
    let _ = own.set(client.clone());
    Ok(QuicDemoNode { client, inbox })
}

/// Records a message and answers it.
fn answer(
    inbox: &Mutex<Vec<Received>>,
    me: &NodeKey,
    request: Incoming,
) -> Result<Bytes, mediator_core::Error> {
    let message: Message = serde_json::from_slice(&request.body).map_err(|e| {
        mediator_core::Error::refused(
            400,
            "invalid",
            format!("a demo message is {{\"text\": \"...\"}}: {e}"),
        )
    })?;
    let received = Received {
        at: Timestamp::now().to_rfc3339(),
        from: request.from.map(|k| k.to_string()),
        target: request.target.to_string(),
        path: request.path,
        text: message.text.clone(),
    };
    // A poisoned inbox only means a page request panicked mid-read; the
    // list itself is always whole, so keep using it.
    let mut inbox = inbox.lock().unwrap_or_else(|p| p.into_inner());
    inbox.push(received);
    let excess = inbox.len().saturating_sub(100);
    inbox.drain(..excess);
    let reply = serde_json::json!({ "received": message.text, "by": me.to_string() });
    Ok(Bytes::from(reply.to_string()))
}

struct PageState {
    role: Role,
    client: NodeClient,
    inbox: Arc<Mutex<Vec<Received>>>,
}

async fn serve_page(listener: TcpListener, state: Arc<PageState>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: pause rather than spin.
                tracing::warn!(error = %e, "demo page cannot accept; retrying shortly");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(page(&state, request).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(error = %e, "demo page connection ended");
            }
        });
    }
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", value.to_string())
}

/// What the page's form posts.
#[derive(Deserialize)]
struct SendForm {
    to: String,
    path: Option<String>,
    text: String,
}

async fn page(state: &PageState, request: Request<HyperIncoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/") => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            page_html(state.role),
        ),
        (&Method::GET, "/messages") => {
            let inbox = state
                .inbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            json(
                StatusCode::OK,
                &serde_json::json!({ "node": format!("{DEMO_GROUP}/{}", state.role.name()), "received": inbox }),
            )
        }
        (&Method::POST, "/send") if state.role.calls() => {
            let body = match Limited::new(request.into_body(), 64 * 1024).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) => {
                    return json(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &serde_json::json!({ "error": e.to_string() }),
                    )
                }
            };
            let form: SendForm = match serde_json::from_slice(&body) {
                Ok(form) => form,
                Err(e) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({ "error": format!("expected {{to, path?, text}}: {e}") }),
                    )
                }
            };
            match send(&state.client, &form).await {
                Ok(value) => json(StatusCode::OK, &value),
                Err(e) => json(
                    send_failure_status(&e),
                    &serde_json::json!({ "error": e.to_string() }),
                ),
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({ "error": "no such page" }),
        ),
    }
}

/// 400 when the form itself was wrong (a target or path that does not
/// parse, refused before anything was sent), 502 for whatever lies beyond
/// the page: the mediator and the nodes.
fn send_failure_status(error: &CliError) -> StatusCode {
    match error {
        CliError::Core(mediator_core::Error::Invalid { .. })
        | CliError::Http(HttpError::Core(mediator_core::Error::Invalid { .. }))
        | CliError::Client(ClientError::Core(mediator_core::Error::Invalid { .. })) => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Sends a demo message to `form.to` (`g/n`, `g/*` or `g/?`) and describes the outcome.
async fn send(client: &NodeClient, form: &SendForm) -> Result<serde_json::Value, CliError> {
    let target: Target = form.to.trim().parse()?;
    let path = form
        .path
        .clone()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/message".to_owned());
    let body = serde_json::json!({ "text": form.text }).to_string();
    let value = |bytes: &Bytes| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into())
    };
    Ok(match target {
        Target::One(key) => {
            let reply = client.call(key, &path, body).await?;
            serde_json::json!({ "replies": [{ "then": value(&reply) }] })
        }
        Target::Any(group) => {
            let (node, reply) = client.any(&group, &path, body).await?;
            serde_json::json!({ "replies": [{ "node": node.to_string(), "then": value(&reply) }] })
        }
        Target::All(group) => {
            let all = client.broadcast(&group, &path, body).await?;
            let replies: Vec<serde_json::Value> = all
                .replies
                .iter()
                .map(|r| match &r.result {
                    Ok(reply) => {
                        serde_json::json!({ "node": r.node.to_string(), "then": value(reply) })
                    }
                    Err(e) => {
                        serde_json::json!({ "node": r.node.to_string(), "catch": e.to_string() })
                    }
                })
                .collect();
            serde_json::json!({ "replies": replies, "summary": all.summary })
        }
    })
}

/// The console's stylesheet: the demo's pages look like the mediator's own.
const STYLE: &str = include_str!("../../transport-http/src/server/console/assets/console.css");

fn page_html(role: Role) -> String {
    let name = role.name();
    let what = match (role.calls(), role.answers()) {
        (true, true) => "This node sends messages through the mediator and answers them.",
        (true, false) => "This node only calls: nothing can reach it.",
        _ => "This node only answers; send it something from the sender or standalone page.",
    };
    let form = if role.calls() {
        r#"<section class="panel" aria-labelledby="send-title">
<h2 id="send-title">Send a message through the mediator</h2>
<form id="send">
<label for="to">To</label><input id="to" name="to" value="demo/passive" spellcheck="false">
<label for="path">Path</label><input id="path" name="path" value="/message" spellcheck="false">
<label for="text">Text</label><input id="text" name="text" value="hello">
<button type="submit">Send</button></form>
<p class="note">Targets: <code>demo/passive</code> (one node), <code>demo/*</code> (every node of the group),
<code>demo/?</code> (any one node), <code>demo/quic</code> (the node attached over QUIC; at the path
<code>/relay</code> it calls <code>demo/passive</code> over HTTP in turn and returns both replies).</p>
<div class="result"><pre id="result"></pre></div>
</section>"#
    } else {
        ""
    };
    let inbox = if role.answers() {
        r#"<section class="panel" aria-labelledby="inbox-title">
<h2 id="inbox-title">Received</h2>
<div class="table-wrap"><table><thead><tr><th scope="col">At</th><th scope="col">From</th><th scope="col">Target</th><th scope="col">Path</th><th scope="col">Text</th></tr></thead>
<tbody id="inbox"><tr class="empty"><td colspan="5">Nothing yet.</td></tr></tbody></table></div>
</section>"#
    } else {
        ""
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>demo/{name}</title>
<style>{STYLE}
#result:empty {{ display: none; }}</style></head>
<body><header class="top"><h1>demo/{name}</h1><p class="meta">{what}</p></header>
<main>{form}{inbox}</main>
<script>
const send = document.getElementById('send');
if (send) send.addEventListener('submit', async (e) => {{
  e.preventDefault();
  const data = Object.fromEntries(new FormData(send));
  const r = await fetch('/send', {{method: 'POST', headers: {{'content-type': 'application/json'}}, body: JSON.stringify(data)}});
  document.getElementById('result').textContent = JSON.stringify(await r.json(), null, 2);
}});
async function refresh() {{
  const body = document.getElementById('inbox');
  if (!body) return;
  const r = await fetch('/messages');
  const {{received}} = await r.json();
  if (!received.length) return;
  body.replaceChildren(...received.reverse().map(m => {{
    const tr = document.createElement('tr');
    for (const v of [m.at, m.from ?? '(unverified)', m.target, m.path, m.text]) {{
      const td = document.createElement('td'); td.textContent = v; tr.appendChild(td);
    }}
    return tr;
  }}));
}}
refresh(); setInterval(refresh, 1000);
</script></body></html>"#
    )
}
