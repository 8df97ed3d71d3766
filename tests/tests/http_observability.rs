//! `/metrics` and the dashboard at `/`, on the service in process; the
//! listener's counting checked once over a socket.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use mediator_tests::harness::*;

/// Every line of a Prometheus text exposition, checked: comments are HELP or
/// TYPE lines, samples are `name{labels} value` with a number for value,
/// and every sample's family has both a HELP and a TYPE line before it.
/// Returns the samples, keyed by `name{labels}`.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut helped = Vec::new();
    let mut typed = Vec::new();
    let mut samples = HashMap::new();
    assert!(text.ends_with('\n'), "the exposition ends with a newline");
    for line in text.lines() {
        assert!(!line.is_empty(), "no blank lines:\n{text}");
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let keyword = words.next().expect("keyword");
            let name = words.next().expect("metric name");
            let rest = words.next().expect("help text or type");
            assert!(valid_name(name), "bad name in {line:?}");
            match keyword {
                "HELP" => helped.push(name.to_owned()),
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "histogram"].contains(&rest),
                        "bad type in {line:?}"
                    );
                    typed.push(name.to_owned());
                }
                other => panic!("unexpected comment {other:?} in {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels close");
                for label in labels.split(',') {
                    let (key, quoted) = label.split_once('=').expect("label=value");
                    assert!(valid_name(key), "bad label name in {line:?}");
                    assert!(
                        quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                        "label value not quoted in {line:?}"
                    );
                }
                name
            }
            None => series,
        };
        assert!(valid_name(name), "bad name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|family| typed.iter().any(|t| t == family))
            .unwrap_or(name);
        assert!(
            helped.iter().any(|h| h == family) && typed.iter().any(|t| t == family),
            "no HELP/TYPE before {line:?}"
        );
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

async fn scrape(hub: &Hub) -> (Answer, HashMap<String, f64>) {
    let answer = hub.call("GET", "/metrics", &[], "").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let samples = parse_exposition(&answer.text());
    (answer, samples)
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from {samples:#?}"))
}

#[tokio::test]
async fn metrics_count_routes_latencies_and_deliveries() {
    let hub = Hub::in_process();
    let api = EchoNode::start("api").await;
    let live = EchoNode::start("live").await;
    let dead = dead_url().await;
    hub.register("users/api", &api.url).await;
    hub.register("cache/live", &live.url).await;
    hub.register("cache/dead", &dead).await;
    let admin = hub.admin_token();

    let unicast = hub.call_as("POST", "/one/users/api/x", &admin, "{}").await;
    assert_eq!(unicast.status, 200, "{}", unicast.text());
    let broadcast = hub.call_as("POST", "/many/cache/x", &admin, "{}").await;
    assert_eq!(broadcast.status, 200, "{}", broadcast.text());
    assert_eq!(
        broadcast.header("x-mediator-summary"),
        Some("asked=2; answered=1; failed=1; timed_out=0")
    );
    let unknown = hub
        .call_as("POST", "/one/nobody/here/x", &admin, "{}")
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    let (answer, samples) = scrape(&hub).await;
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let requests = |route: &str, status: u16| {
        format!(
            "mediator_requests_total{{transport=\"http\",route=\"{route}\",status=\"{status}\"}}"
        )
    };
    assert_eq!(value(&samples, &requests("register", 200)), 3.0);
    assert_eq!(value(&samples, &requests("one", 200)), 1.0);
    assert_eq!(value(&samples, &requests("one", 404)), 1.0);
    assert_eq!(value(&samples, &requests("many", 200)), 1.0);
    let request_series: Vec<_> = samples
        .keys()
        .filter(|k| k.starts_with("mediator_requests_total"))
        .collect();
    assert_eq!(request_series.len(), 4, "{request_series:?}");

    let count = |route: &str| {
        format!("mediator_request_duration_seconds_count{{transport=\"http\",route=\"{route}\"}}")
    };
    let inf = |route: &str| {
        format!("mediator_request_duration_seconds_bucket{{transport=\"http\",route=\"{route}\",le=\"+Inf\"}}")
    };
    for (route, n) in [
        ("register", 3.0),
        ("one", 2.0),
        ("many", 1.0),
        ("any", 0.0),
        ("admin", 0.0),
        ("other", 0.0),
    ] {
        assert_eq!(value(&samples, &count(route)), n, "{route}");
        assert_eq!(value(&samples, &inf(route)), n, "{route}");
    }
    // Buckets are cumulative and the sum is a duration.
    let mut last = 0.0;
    for le in [
        "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
        "10", "+Inf",
    ] {
        let bucket = value(
            &samples,
            &format!("mediator_request_duration_seconds_bucket{{transport=\"http\",route=\"one\",le=\"{le}\"}}"),
        );
        assert!(bucket >= last, "le={le}");
        last = bucket;
    }
    let sum = value(
        &samples,
        "mediator_request_duration_seconds_sum{transport=\"http\",route=\"one\"}",
    );
    assert!(sum > 0.0 && sum < 10.0, "{sum}");

    let delivery = |group: &str, outcome: &str| {
        format!("mediator_deliveries_total{{group=\"{group}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(value(&samples, &delivery("users", "ok")), 1.0);
    assert_eq!(value(&samples, &delivery("users", "unreachable")), 0.0);
    assert_eq!(value(&samples, &delivery("cache", "ok")), 1.0);
    assert_eq!(value(&samples, &delivery("cache", "unreachable")), 1.0);
    assert_eq!(value(&samples, &delivery("cache", "failed")), 0.0);
    assert_eq!(value(&samples, &delivery("cache", "timed_out")), 0.0);
    assert!(
        !samples.keys().any(|k| k.contains("group=\"nobody\"")),
        "an unknown target has no delivery series"
    );
    let latency = |group: &str, what: &str| {
        format!("mediator_delivery_duration_seconds_{what}{{group=\"{group}\"}}")
    };
    assert_eq!(value(&samples, &latency("users", "count")), 1.0);
    assert_eq!(value(&samples, &latency("cache", "count")), 2.0);
    assert_eq!(
        value(
            &samples,
            "mediator_delivery_duration_seconds_bucket{group=\"cache\",le=\"+Inf\"}"
        ),
        2.0
    );
    assert!(value(&samples, &latency("users", "sum")) > 0.0);
    assert_eq!(value(&samples, "mediator_nodes"), 3.0);

    // The first scrape is counted once it has been answered.
    let (_, samples) = scrape(&hub).await;
    assert_eq!(value(&samples, &requests("other", 200)), 1.0);
    assert_eq!(value(&samples, &count("other")), 1.0);
    assert_eq!(value(&samples, &requests("one", 200)), 1.0);
}

#[tokio::test]
async fn metrics_need_no_token_and_start_empty_in_process_and_on_the_wire() {
    for hub in [Hub::in_process(), Hub::start().await] {
        let (answer, samples) = scrape(&hub).await;
        assert_eq!(
            answer.header("cache-control"),
            Some("no-cache, no-store, must-revalidate")
        );
        assert_eq!(value(&samples, "mediator_nodes"), 0.0);
        assert!(!samples
            .keys()
            .any(|k| k.starts_with("mediator_requests_total")));
        assert!(!samples
            .keys()
            .any(|k| k.starts_with("mediator_deliveries_total")
                || k.starts_with("mediator_delivery_duration")));
        let text = answer.text();
        // A labelled family with no series yet is left out: requests show
        // from the first one answered.
        assert!(!text.contains("# TYPE mediator_requests_total"), "{text}");
        for family in [
            "mediator_request_duration_seconds histogram",
            "mediator_deliveries_total counter",
            "mediator_delivery_duration_seconds histogram",
            "mediator_nodes gauge",
        ] {
            assert!(text.contains(&format!("# TYPE {family}\n")), "{family}");
        }
        // Whoever answers (the service, or the listener built on it)
        // counts into the service's counters.
        let (_, samples) = scrape(&hub).await;
        assert_eq!(
            value(
                &samples,
                "mediator_requests_total{transport=\"http\",route=\"other\",status=\"200\"}"
            ),
            1.0
        );
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[tokio::test]
async fn the_console_shows_a_browser_its_sign_in_page() {
    // The original's habit, so that the secret under another user name is
    // refused as a wrong login too.
    let hub = Hub::config().secret_as_password().in_process();
    for (headers, problem) in [
        (vec![], None),
        (
            vec![("authorization", basic("admin", "wrong"))],
            Some("wrong user or password"),
        ),
        (
            vec![("authorization", basic("root", SECRET))],
            Some("wrong user or password"),
        ),
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = hub.console_call("GET", "/", &headers, "").await;
        assert_eq!(answer.status, 401, "{}", answer.text());
        assert_eq!(
            answer.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        // A page to sign in on, not a Basic challenge that leaves a
        // headless browser with a blank page.
        let html = answer.text();
        assert!(
            html.contains(r#"<form method="post" action="console/sign-in">"#),
            "{html}"
        );
        assert!(answer.header_all("www-authenticate").is_empty());
        match problem {
            Some(problem) => assert!(html.contains(problem), "{html}"),
            None => assert!(!html.contains("role=\"alert\""), "{html}"),
        }
    }
}

#[tokio::test]
async fn the_console_lists_the_nodes_for_an_admin() {
    // The original's habit: the secret is the admin password.
    let hub = Hub::config().secret_as_password().in_process();
    let api = EchoNode::start("api").await;
    hub.register("users/api", &api.url).await;
    hub.register("users/", &api.url).await;

    let answer = hub
        .console_call(
            "GET",
            "/",
            &[("authorization", &basic("admin", SECRET))],
            "",
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = answer.text();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    // The first state rides in the page, as data the script reads.
    let start = html
        .find(r#"<script type="application/json" id="initial-state">"#)
        .expect("the initial state");
    let state = &html[start..];
    let state =
        &state[state.find('>').expect("tag end") + 1..state.find("</script>").expect("end")];
    let state: serde_json::Value = serde_json::from_str(state).expect("JSON");
    let keys: Vec<&str> = state["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["users/api", "users/"]);
    assert_eq!(state["nodes"][0]["endpoint"], api.url.as_str());
    assert_eq!(state["nodes"][0]["health"], "unknown");
    // Self-contained: scripts and styles only from the mediator itself.
    for external in [r#"src="http"#, r#"href="http"#, "src=\"//", "href=\"//"] {
        assert!(!html.contains(external), "{external} in {html}");
    }
    let csp = answer.header("content-security-policy").expect("a CSP");
    assert!(
        csp.starts_with("default-src 'none'; script-src 'self'"),
        "{csp}"
    );

    // An admin token works too; a node's token does not.
    let bearer = |token: String| format!("Bearer {token}");
    let admin = bearer(hub.admin_token());
    let answer = hub
        .console_call("GET", "/", &[("authorization", &admin)], "")
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let node = bearer(hub.token_for("users/api"));
    let answer = hub
        .console_call("GET", "/", &[("authorization", &node)], "")
        .await;
    assert_error(&answer, 403, "forbidden", "caller");

    // Console requests count under the admin route.
    let (_, samples) = scrape(&hub).await;
    assert_eq!(
        value(
            &samples,
            "mediator_requests_total{transport=\"http\",route=\"admin\",status=\"200\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "mediator_requests_total{transport=\"http\",route=\"admin\",status=\"403\"}"
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_access_is_configurable_and_group_names_shown_only_when_allowed() {
    use mediator_transport_http::MetricsAccess;

    async fn with_a_delivery(access: MetricsAccess) -> (Hub, EchoNode) {
        let hub = Hub::config().metrics_access(access).start().await;
        let node = EchoNode::start("secret").await;
        hub.register("payroll/api", &node.url).await;
        let caller = hub.token_for("users/api");
        let answer = hub.call_as("POST", "/one/payroll/api/x", &caller, "").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        (hub, node)
    }

    let (open, _node) = with_a_delivery(MetricsAccess::Open).await;
    let answer = open.call("GET", "/metrics", &[], "").await;
    assert!(answer.text().contains("group=\"payroll\""));

    let (hidden, _node) = with_a_delivery(MetricsAccess::OpenWithoutGroups).await;
    let answer = hidden.call("GET", "/metrics", &[], "").await;
    assert_eq!(answer.status, 200);
    parse_exposition(&answer.text());
    assert!(!answer.text().contains("payroll"), "{}", answer.text());
    assert!(answer.text().contains("mediator_nodes 1"));
    let answer = hidden
        .call_as("GET", "/metrics", &hidden.admin_token(), "")
        .await;
    assert!(answer.text().contains("group=\"payroll\""));

    let (closed, _node) = with_a_delivery(MetricsAccess::Admin).await;
    let answer = closed.call("GET", "/metrics", &[], "").await;
    assert_error(&answer, 401, "unauthorized", "caller");
    let node_token = closed.token_for("users/api");
    let answer = closed.call_as("GET", "/metrics", &node_token, "").await;
    assert_error(&answer, 403, "forbidden", "caller");
    let answer = closed
        .call_as("GET", "/metrics", &closed.admin_token(), "")
        .await;
    assert_eq!(answer.status, 200);
    assert!(answer.text().contains("group=\"payroll\""));
    // The probes stay open to everyone.
    let health = closed.call("GET", "/healthz", &[], "").await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn store_evictions_in_flight_build_and_process_series_move_with_real_traffic() {
    let hub = Hub::config()
        .clock(mediator_core::ManualClock::starting_now())
        .registry(DownRegistry(mediator_core::MemoryRegistry::new()))
        .start()
        .await;
    let (_, before) = scrape(&hub).await;
    let version = format!(
        "mediator_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(value(&before, &version), 1.0);
    assert!(value(&before, "process_resident_memory_bytes") > 1e6);
    assert!(value(&before, "process_open_fds") >= 3.0);
    assert!(value(&before, "process_cpu_seconds_total") >= 0.0);
    assert_eq!(value(&before, "mediator_evictions_total"), 0.0);
    assert_eq!(value(&before, "mediator_deliveries_in_flight"), 0.0);
    let calls = |op: &str| format!("mediator_store_calls_total{{op=\"{op}\"}}");
    let errors = |op: &str| format!("mediator_store_errors_total{{op=\"{op}\"}}");
    let took = |op: &str| format!("mediator_store_call_duration_seconds_count{{op=\"{op}\"}}");

    let api = EchoNode::start("api").await;
    hub.register_expired("users/gone", &api.url).await;
    // The hub's maintenance may sweep first; either way it is one eviction.
    hub.mediator.sweep().await.expect("sweep");
    hub.register("users/api", &api.url).await;
    let ready = hub.call("GET", "/readyz", &[], "").await;
    assert_eq!(ready.status, 503, "{}", ready.text());

    // A delivery held by the node is in flight until it answers.
    let caller = hub.token_for("users/caller");
    let url = hub.url("/one/users/api/slow/500/x");
    let held = tokio::spawn(async move { post_status(&url, &caller).await });
    let started = std::time::Instant::now();
    while api.count() == 0 {
        assert!(!held.is_finished(), "{:?}", held.await);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let (_, during) = scrape(&hub).await;
    assert_eq!(value(&during, "mediator_deliveries_in_flight"), 1.0);
    assert_eq!(held.await.expect("the held call"), 200);

    let (_, after) = scrape(&hub).await;
    assert_eq!(value(&after, "mediator_deliveries_in_flight"), 0.0);
    assert_eq!(value(&after, "mediator_evictions_total"), 1.0);
    assert_eq!(
        value(&after, &calls("upsert")) - value(&before, &calls("upsert")),
        2.0
    );
    assert_eq!(
        value(&after, &took("upsert")) - value(&before, &took("upsert")),
        2.0
    );
    assert!(value(&after, &calls("evict_expired")) > value(&before, &calls("evict_expired")));
    assert_eq!(value(&after, &errors("upsert")), 0.0);
    assert_eq!(
        value(&after, &errors("ping")) - value(&before, &errors("ping")),
        1.0
    );
    assert!(
        value(&after, "process_cpu_seconds_total") >= value(&before, "process_cpu_seconds_total")
    );
}

/// Posts `{}` to `url` with a bearer token over a fresh connection and
/// returns the status.
async fn post_status(url: &str, token: &str) -> u16 {
    use http_body_util::{BodyExt, Full};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = http::Request::post(url)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(bytes::Bytes::from_static(b"{}")))
        .expect("a valid request");
    let response = client.request(request).await.expect("an answer");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}
