//! The mediator's HTTP API: [`MediatorService`] answers every route below
//! for a [`Mediator`] as a tower service, and [`HttpListener`] serves it
//! over HTTP/1.1 and HTTP/2 on one port, optionally over TLS
//! ([`TlsConfig`]).
//!
//! # Serving it
//!
//! [`HttpListener`] is the whole server: accept loop, TLS, timeouts for
//! slow clients, graceful drain. To put the API inside a server of your own
//! (an axum app beside your routes, a hyper server with your own TLS or
//! middleware), mount [`MediatorService`] instead: it sees the path after
//! whatever prefix your router strips (see its docs), and logs the peer's
//! address when the request carries a [`RemoteAddr`] extension. What the
//! listener adds is then yours to provide: the connection limits and
//! timeouts of your server, and shutdown.
//!
//! # Routes
//!
//! The original's routes with their shapes and statuses, and ours beside
//! them. Every JSON reply carries `content-type: application/json`,
//! `cache-control: no-cache, no-store, must-revalidate` and
//! `access-control-allow-origin: *`; every error is
//! `{"error": "<message>", "kind": "<kind>", "fault": "caller|hub|node"}`.
//!
//! | route | who | answer |
//! |---|---|---|
//! | `POST /register` | the node itself | `{"entity": row, "errors": {}}`; original dialect `{"cluster","node","domain","port"}` refused with `200 {"entity": <body>, "errors": {field: message}}`, ours `{"group","name","url","ttl","meta"}` with `400` |
//! | `POST /renew` | the node itself | `{"lease_until", "ttl"}`; `404` when not registered |
//! | `ANY /remove/:id?` | the node itself | `{"affected": n}`; `409` without id or key; another node's id answers `{"affected": 0}` like an unknown one |
//! | `ANY /one/:group/:name?/*path` | any caller | the node's reply + `x-mediator-node` (`/one/g//p`: the unnamed node) |
//! | `ANY /any/:group/*path` | any caller | the reply of one live node, the least busy |
//! | `ANY /many/:group/*path` | any caller | `[{"then"…}|{"then_base64"…}|{"catch"…}]` + `x-mediator-summary` |
//! | `ANY /admin/clusters/:group?` | admin | `{"list": [row…]}` by id, at most 500 rows unless `?limit=` (≤ 1000) says otherwise; `"next": id` when more follow, passed back as `?after=id` |
//! | `ANY /admin/cluster/:id` | admin | `{"entity": row}`; `400` when unknown |
//! | `ANY /token` | Basic admin login (`admin:<operator password>`) | `{"token", "verified": true, "exp"}` (admin, 9 h) |
//! | `ANY /ping`, `GET /readyz` | anyone | `{"ok": true, "store": "up"}`; `503` when the store is down |
//! | `GET /healthz` | anyone | `{"ok": true}` while the process runs |
//! | `GET /metrics` | anyone | Prometheus text (`text/plain; version=0.0.4`): `mediator_requests_total{transport,route,status}`, `mediator_request_duration_seconds{transport,route}` (histogram, 1 ms … 10 s), `mediator_deliveries_total{group,outcome}`, `mediator_delivery_duration_seconds{group}` (histogram), `mediator_nodes`, `mediator_attached_nodes{transport}` |
//! | `GET /`, `/console/*` | admin (a console session, an admin token, or the Basic admin login) | only on the console's own service ([`MediatorService::console`]; `404` on the API's): the operator's console (see below); without credentials, the sign-in page with `401`; `403` for a node |
//!
//! Credentials are read from `Authorization: Bearer`, the `x-jwt` header,
//! the `x-jwt` query parameter, then the `x-jwt` field of a JSON body; an
//! `Authorization: Basic` login is checked by the mediator's
//! [`Authenticate`](mediator_core::policy::Authenticate) policy (by default
//! `admin:<operator password>` acts as the operator; the original's
//! `admin:<secret>` only where the authenticator allows the secret as the
//! password), and only where a Basic login is taken: `/token`,
//! `/admin/*`, and the console's page and reads. Elsewhere (probes,
//! `/metrics`, the nodes' routes, the console's actions) it is set aside
//! unread, as if not sent. It is checked off the request threads, two at a
//! time with 16 more waiting (past that `503 overloaded` with
//! `Retry-After`), and every refused login counts in its address's backoff
//! (`429` with `Retry-After` after five). `/token`'s `exp` is cut short to
//! the login's own expiry, if the policy gives it one, and each token
//! minted writes an audit line (target `mediator::audit`).
//! A missing or bad one is `401` with `WWW-Authenticate: Bearer
//! realm="mediator"`. Credentials are checked from the request's head
//! before any of its body is read: a bad one is refused at once, and a
//! request whose head carries none has its body read only up to 64 KiB, to
//! find a token there (past it: `401`, with nothing buffered). Every body
//! held in memory counts against the mediator's
//! [`BodyBudget`](mediator_core::budget::BodyBudget), all requests and
//! transports together: past it, `503 overloaded` with `Retry-After`.
//! A body above [`Limits::max_body`](mediator_core::Limits)
//! is refused with `413` and the JSON error (kind `too_large`): on every
//! route when its size is announced (`Content-Length`, or the size an
//! in-process body reports), and on the routes that read a body as soon as
//! more than the limit has arrived. A body that has not arrived within
//! [`Limits::deadline`](mediator_core::Limits) is refused with `408`. A caller may
//! shorten the delivery deadline with `x-mediator-deadline` (ms since the
//! epoch) or `x-mediator-timeout-ms`.
//!
//! # The console
//!
//! The console is a service of its own, [`MediatorService::console`], to
//! be served on a listener of its own: a node's reply is relayed on the
//! API's origin, so the console must live on another for no node's page,
//! script or cookie to ever act as the console. Replies relayed from nodes
//! are served with `content-security-policy: sandbox`,
//! `x-content-type-options: nosniff` and `referrer-policy: no-referrer`,
//! without the node's cookies, CORS, HSTS or reporting headers; a node's
//! redirect is answered `502 node_redirect` (clients that follow it would
//! send the caller's credentials there), an informational or out-of-range
//! status `502 node_failed`.
//!
//! `GET /` serves the operator's console: a sign-in page, sessions in a
//! strict cookie with an anti-forgery token for every action, a live list
//! of the nodes with their health and traffic, per-group charts, and
//! actions (deregister, mint a token, send a test request sealed in the
//! browser). Its routes under `/console/` and who may use them are listed
//! in the `console` module's source; its pages and script are compiled
//! into the binary. Mounted under a prefix, open it as `prefix/` (with the
//! slash), since its links are relative.
//!
//! # Metrics
//!
//! Requests are counted by each [`MediatorService`], shared by its clones
//! (a listener makes one): by route (`one`, `any`, `many`, `register`,
//! `renew`, `remove`, `admin` — which includes the console —, `token`,
//! and `other` for probes, `/metrics` and unknown paths) and status, with
//! their latency from arrival to answer, under `transport="http"`. The
//! calls other transports answer (the QUIC listener's, under
//! `transport="quic"`, routes `one`, `any`, `many` and `other` for a call
//! refused before its target was read) are counted in the core's
//! [`TransportStats`](mediator_core::request_log::TransportStats) and
//! rendered in the same families; `mediator_attached_nodes{transport}` is
//! the number of nodes attached to this instance over a live connection.
//!
//! Deliveries are not counted here: the core's router records each one
//! (one per node asked, an any-of-group retry included) in the mediator's
//! [`DeliveryStats`](mediator_core::record::DeliveryStats), whatever
//! transport carried the request, and `/metrics` renders them: outcome
//! (`ok`, `failed`, `unreachable`, `timed_out`) and latency per target
//! group. A target that is unknown, or a group with no live node, reached
//! no node and counts only under its route's status. At most 1,000 groups
//! get their own series; later ones count under `group="~other"`.
//! `mediator_nodes` is the size of the routing table.
//!
//! # Background work
//!
//! The listener only answers requests. Expiring leases and refreshing the
//! routing table from a shared store is the job of
//! [`Mediator::spawn_maintenance`], which whoever composes the mediator
//! starts once, whatever transports serve it.
//!
//! [`Mediator`]: mediator_core::Mediator
//! [`Mediator::spawn_maintenance`]: mediator_core::Mediator::spawn_maintenance

#[cfg(feature = "console")]
mod console;
mod credentials;
mod entity;
mod listener;
mod metrics;
mod pass;
mod reply;
pub mod request_log;
mod routes;
mod service;
mod throttle;
mod tls;

pub use listener::HttpListener;
pub use metrics::MetricsAccess;
pub use service::{MediatorService, RemoteAddr, ResponseBody, ResponseFuture};
pub use tls::TlsConfig;
