//! A formation of three `mediator serve` processes on one MariaDB database,
//! run as an operator runs it: every node reaches every node through every
//! instance; an instance killed with SIGKILL costs its callers clear 503s,
//! never a hang, and the node attached to it moves to another instance; an
//! instance cut off from MySQL keeps routing from memory, refuses
//! registrations with 503 and catches up once the store is back.
//!
//! `MEDIATOR_TEST_MYSQL_URL` names the server (default
//! `mysql://root@127.0.0.1:3306/test`) and `MEDIATOR_SKIP_MYSQL=1` skips
//! these tests; each works in a database of its own and drops it.

#![cfg(unix)]

mod support;

#[path = "../../store-mysql/tests/support/mod.rs"]
mod mysql;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::{bin, free_port, quic_line, Process};

/// The most any one command may take: one that takes longer hangs.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long a refusal may take: a dead peer refuses its connection at once
/// on loopback, and the link gives up on a silent one after a second.
const PROMPT: Duration = Duration::from_secs(3);

/// How long a node attached to a killed instance may take to attach again
/// elsewhere. A killed process sends no close: the node notices the loss
/// at its connection's idle timeout (10 s after the last packet it heard;
/// it sends a keep-alive every 3 s), then dials the next mediator it knows
/// first. The rest is the machine's own slowness under a loaded test run.
const REATTACH: Duration = Duration::from_secs(20);

/// How often an instance renews its lease in the store (a third of its
/// 6 s lease).
const HEARTBEAT: Duration = Duration::from_secs(2);

/// The instances' ids, in the order they start.
const IDS: [&str; 3] = ["hub-a", "hub-b", "hub-c"];

/// What a finished `mediator` command did.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    out: String,
    err: String,
    took: Duration,
}

impl Ran {
    fn said(&self) -> String {
        format!(
            "exit {:?} after {:?}\nstdout: {}\nstderr: {}",
            self.code, self.took, self.out, self.err
        )
    }
}

/// A child process killed when dropped, also when the test panics.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `mediator args…` in `dir` with no mediator settings from the
/// environment; fails the test if it has not exited within `limit`.
fn mediator(dir: &Path, args: &[&str], limit: Duration) -> Ran {
    let started = Instant::now();
    let mut child = Reaped(
        Command::new(bin())
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .env_remove("MEDIATOR_SECRET")
            .env_remove("MEDIATOR_SECRET_FILE")
            .env_remove("MEDIATOR_CONFIG")
            .env_remove("MEDIATOR_URL")
            .env_remove("MEDIATOR_QUIC")
            .env_remove("MEDIATOR_QUIC_PIN")
            .env_remove("MEDIATOR_NODE_KEY")
            .env_remove("MEDIATOR_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the mediator binary runs"),
    );
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.0.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.0.stderr.take().expect("piped stderr")));
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("the child's status") {
            break status;
        }
        if started.elapsed() > limit {
            drop(child);
            panic!(
                "mediator {args:?} did not finish within {limit:?}: it hung; stderr: {}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ran {
        code: status.code(),
        out: out.join().unwrap_or_default().trim().to_owned(),
        err: err.join().unwrap_or_default().trim().to_owned(),
        took: started.elapsed(),
    }
}

/// One `mediator serve` of the formation.
struct Hub {
    id: &'static str,
    url: String,
    quic: String,
    pin: String,
    process: Process,
}

/// Three instances on one store, the nodes started at them, and the folder
/// they all run in (its `mediator.secret` is the formation's secret).
/// Fields drop in order: the nodes, then the instances, then the folder.
struct Formation {
    nodes: Vec<Process>,
    hubs: Vec<Hub>,
    key: String,
    dir: tempfile::TempDir,
}

impl Formation {
    /// An instance per store URL (the same database, reached directly or
    /// through a proxy), each with a QUIC listener, started one after the
    /// other.
    fn start(stores: &[&str]) -> Formation {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let secret = dir.path().join("mediator.secret");
        let text: String = (0..48)
            .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
            .collect();
        std::fs::write(&secret, text).expect("the secret written");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))
                .expect("the secret made private");
        }
        let key = mediator(dir.path(), &["keygen"], PATIENCE);
        assert_eq!(key.code, Some(0), "{}", key.said());
        let mut formation = Formation {
            nodes: Vec::new(),
            hubs: Vec::new(),
            key: key.out,
            dir,
        };
        for (id, store) in IDS.into_iter().zip(stores) {
            let listen = format!("127.0.0.1:{}", free_port());
            let process = Process::start(
                formation.dir.path(),
                &[
                    "serve",
                    "--listen",
                    &listen,
                    "--quic-listen",
                    "127.0.0.1:0",
                    "--store",
                    store,
                    "--instance-id",
                    id,
                ],
                "QUIC listening",
            );
            let (quic, pin) = quic_line(&process);
            formation.hubs.push(Hub {
                id,
                url: format!("http://{listen}"),
                quic,
                pin,
                process,
            });
        }
        formation
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An echo node called back over HTTP, registered at the first of
    /// `hubs` (and again at the next when that one stops answering).
    fn http_node(&mut self, hubs: &[usize], name: &str) {
        let urls: Vec<&str> = hubs.iter().map(|&h| self.hubs[h].url.as_str()).collect();
        let node = Process::start(
            self.dir.path(),
            &[
                "echo-node",
                "--url",
                &urls.join(","),
                "--as",
                name,
                "--key",
                &self.key,
            ],
            "registered",
        );
        self.nodes.push(node);
    }

    /// An echo node attached over QUIC to the first of `hubs`, pinning each
    /// one's certificate, and attaching again at the next when its own
    /// cannot be reached.
    fn quic_node(&mut self, hubs: &[usize], name: &str) {
        let quic: Vec<&str> = hubs.iter().map(|&h| self.hubs[h].quic.as_str()).collect();
        let pins: Vec<&str> = hubs.iter().map(|&h| self.hubs[h].pin.as_str()).collect();
        let node = Process::start(
            self.dir.path(),
            &[
                "echo-node",
                "--via",
                "quic",
                "--quic",
                &quic.join(","),
                "--pin",
                &pins.join(","),
                "--as",
                name,
                "--key",
                &self.key,
            ],
            "attached",
        );
        self.nodes.push(node);
    }

    /// The arguments of `mediator send` through instance `hub` over HTTP.
    fn send_args(&self, hub: usize, sender: &str, to: &str, data: &str) -> Vec<String> {
        [
            "send",
            "--url",
            &self.hubs[hub].url,
            "--as",
            sender,
            "--to",
            to,
            "--key",
            &self.key,
            "--data",
            data,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// `mediator send` through instance `hub` over HTTP, as `cli/send`.
    fn send(&self, hub: usize, to: &str, data: &str) -> Ran {
        let args = self.send_args(hub, "cli/send", to, data);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        mediator(self.dir(), &args, PATIENCE)
    }

    /// Sends `data` to `to` through `hub` until it comes back echoed, at
    /// most `within`; how long that took. Every attempt is bounded and
    /// must end in a reply or a refusal (exit 2), never a delivery failure.
    fn until_echoed(&self, hub: usize, to: &str, data: &str, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let ran = self.send(hub, to, data);
            if ran.code == Some(0) && ran.out == data {
                return started.elapsed();
            }
            assert_eq!(
                ran.code,
                Some(2),
                "{to} through {}: {}",
                IDS[hub],
                ran.said()
            );
            assert!(
                started.elapsed() < within,
                "{to} never answered through {} within {within:?}; last: {}",
                IDS[hub],
                ran.said()
            );
            // Quick polls at first; a long wait need not spawn hundreds.
            std::thread::sleep(if started.elapsed() < Duration::from_secs(2) {
                Duration::from_millis(50)
            } else {
                Duration::from_millis(250)
            });
        }
    }

    /// `mediator instances --json` through `hub`.
    fn instances(&self, hub: usize) -> Vec<Value> {
        let ran = mediator(
            self.dir(),
            &["instances", "--url", &self.hubs[hub].url, "--json"],
            PATIENCE,
        );
        assert_eq!(ran.code, Some(0), "{}", ran.said());
        serde_json::from_str::<Value>(&ran.out)
            .unwrap_or_else(|e| panic!("instances --json: {e}: {}", ran.out))
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("instances --json is no array: {}", ran.out))
    }

    /// `mediator nodes --json` through `hub`, by node.
    fn nodes(&self, hub: usize) -> Vec<Value> {
        let ran = mediator(
            self.dir(),
            &["nodes", "--url", &self.hubs[hub].url, "--json"],
            PATIENCE,
        );
        assert_eq!(ran.code, Some(0), "{}", ran.said());
        serde_json::from_str::<Value>(&ran.out)
            .unwrap_or_else(|e| panic!("nodes --json: {e}: {}", ran.out))
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("nodes --json is no array: {}", ran.out))
    }
}

/// The ids `instances --json` listed.
fn ids(list: &[Value]) -> BTreeSet<String> {
    list.iter()
        .map(|row| row["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The row of instance `id` in `list`.
fn row<'a>(list: &'a [Value], id: &str) -> &'a Value {
    list.iter()
        .find(|row| row["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {list:?}"))
}

/// Runs every `(args, expected stdout)` at once, a few at a time, and fails
/// with every command whose exit code was not 0 or whose output differed.
fn all_answer(dir: &Path, calls: &[(Vec<String>, String)]) {
    let failures: Vec<String> = std::thread::scope(|scope| {
        calls
            .chunks(calls.len().div_ceil(12).max(1))
            .map(|chunk| {
                scope.spawn(move || {
                    let mut failed = Vec::new();
                    for (args, want) in chunk {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let ran = mediator(dir, &args, PATIENCE);
                        if ran.code != Some(0) || ran.out != *want {
                            failed.push(format!("{args:?}: {}", ran.said()));
                        }
                    }
                    failed
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|thread| thread.join().expect("a sending thread"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} calls failed:\n{}",
        failures.len(),
        calls.len(),
        failures.join("\n")
    );
}

/// The six nodes of [`mesh`]: one called back over HTTP and one attached
/// over QUIC at each instance.
const MESH: [&str; 6] = [
    "mesh/http-a",
    "mesh/quic-a",
    "mesh/http-b",
    "mesh/quic-b",
    "mesh/http-c",
    "mesh/quic-c",
];

/// Three instances on `store`, each with the two nodes of [`MESH`] that
/// end in its letter, every one of them routable at every instance.
fn mesh(store: &str) -> Formation {
    let mut formation = Formation::start(&[store, store, store]);
    for (hub, x) in ["a", "b", "c"].into_iter().enumerate() {
        formation.http_node(&[hub], &format!("mesh/http-{x}"));
        formation.quic_node(&[hub], &format!("mesh/quic-{x}"));
    }
    // The last node attached at hub-c: every instance routes to it within
    // the feed's period.
    for (hub, id) in IDS.into_iter().enumerate() {
        let took = formation.until_echoed(hub, "mesh/quic-c", "ready", Duration::from_secs(5));
        assert!(took < Duration::from_secs(2), "{took:?} through {id}");
    }
    formation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_reaches_every_node_through_every_instance() {
    let Some(db) = mysql::TestDb::create().await else {
        return;
    };
    let formation = mesh(&db.url());

    // Through each instance, each node as the sender, to each node: HTTP
    // to attached, attached to HTTP, attached to attached across instances.
    let mut calls = Vec::new();
    for (hub, id) in IDS.into_iter().enumerate() {
        for sender in MESH {
            for to in MESH {
                let data = format!("{id} {sender} > {to}");
                calls.push((formation.send_args(hub, sender, to, &data), data));
            }
        }
    }
    // And in through each QUIC listener, as an attached node.
    for (hub, sender) in ["mesh/quic-a", "mesh/quic-b", "mesh/quic-c"]
        .into_iter()
        .enumerate()
    {
        for to in MESH {
            let data = format!("quic {} {sender} > {to}", IDS[hub]);
            let h = &formation.hubs[hub];
            let args = [
                "send",
                "--via",
                "quic",
                "--quic",
                &h.quic,
                "--pin",
                &h.pin,
                "--as",
                sender,
                "--to",
                to,
                "--key",
                &formation.key,
                "--data",
                &data,
            ];
            calls.push((args.map(str::to_owned).to_vec(), data));
        }
    }
    let started = Instant::now();
    all_answer(formation.dir(), &calls);
    eprintln!("{} calls answered in {:?}", calls.len(), started.elapsed());

    // Each instance lists the three, live, each holding its own QUIC node.
    for hub in 0..3 {
        let list = formation.instances(hub);
        assert_eq!(
            ids(&list),
            IDS.into_iter().map(str::to_owned).collect(),
            "{list:?}"
        );
        for (other, h) in formation.hubs.iter().enumerate() {
            let row = row(&list, h.id);
            assert_eq!(row["live"], true, "{row}");
            assert_eq!(row["peer"], h.url.as_str(), "{row}");
            assert_eq!(row["attached"], 1, "{row}");
            assert_eq!(row["this"], other == hub, "{row}");
        }
    }
    drop(formation);
    drop(db);
}

/// A group call reaching a node attached to another instance is forwarded
/// as `/peer/one/GROUP/NAME` with what the caller addressed (`GROUP/*`,
/// `GROUP/?`) beside it, which the node's sealed payload is bound to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_call_through_every_instance_spans_the_formation() {
    let Some(db) = mysql::TestDb::create().await else {
        return;
    };
    let formation = mesh(&db.url());
    let everyone: BTreeSet<String> = MESH.into_iter().map(str::to_owned).collect();
    for (hub, id) in IDS.into_iter().enumerate() {
        // A broadcast: one summary over all six nodes, each reply the
        // payload sealed for the group.
        let data = format!("to all from {id}");
        let mut args = formation.send_args(hub, "mesh/http-a", "mesh/*", &data);
        args.push("--json".into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ran = mediator(formation.dir(), &args, PATIENCE);
        assert_eq!(ran.code, Some(0), "{}", ran.said());
        let answer: Value = serde_json::from_str(&ran.out).expect("send --json prints JSON");
        assert_eq!(
            answer["summary"],
            json!({"asked": 6, "answered": 6, "failed": 0, "timed_out": 0}),
            "{answer}"
        );
        let replies = answer["replies"].as_array().expect("replies");
        let from: BTreeSet<String> = replies
            .iter()
            .map(|r| r["node"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!((replies.len(), &from), (6, &everyone), "{answer}");
        assert!(replies.iter().all(|r| r["reply"] == data), "{answer}");

        // Any one node: whichever is picked, here or at another instance,
        // opens the payload and answers.
        let mut picked = BTreeSet::new();
        for turn in 0..12 {
            let data = format!("to any from {id} #{turn}");
            let mut args = formation.send_args(hub, "mesh/http-a", "mesh/?", &data);
            args.push("--json".into());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let ran = mediator(formation.dir(), &args, PATIENCE);
            assert_eq!(ran.code, Some(0), "{}", ran.said());
            let answer: Value = serde_json::from_str(&ran.out).expect("send --json prints JSON");
            assert_eq!(answer["reply"], data, "{answer}");
            picked.insert(answer["node"].as_str().unwrap_or_default().to_owned());
        }
        assert!(
            picked.iter().any(|node| !node.ends_with(&id[4..])),
            "every pick through {id} was its own node: {picked:?}"
        );
    }
    drop(formation);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_instance_costs_clear_503s_and_its_node_attaches_elsewhere() {
    let Some(db) = mysql::TestDb::create().await else {
        return;
    };
    let store = db.url();
    let mut formation = Formation::start(&[&store, &store, &store]);
    // Attached to hub-a; the roamer also knows hub-b, the anchored one
    // knows hub-a only. The web node is called back over HTTP.
    formation.quic_node(&[0, 1], "mesh/roamer");
    formation.quic_node(&[0], "mesh/anchored");
    formation.http_node(&[0, 1], "mesh/web");
    for hub in [1, 2] {
        for to in ["mesh/roamer", "mesh/anchored", "mesh/web"] {
            formation.until_echoed(hub, to, "before", Duration::from_secs(5));
        }
    }

    formation.hubs[0].process.signal("KILL");
    let killed = Instant::now();
    let status = formation.hubs[0].process.wait_exit(Duration::from_secs(5));
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );

    // At once: a call for a node attached to the dead instance is refused
    // with 503 naming it, promptly; a node called back over HTTP answers
    // through either survivor.
    for hub in [1, 2] {
        let ran = formation.send(hub, "mesh/anchored", "now?");
        assert_eq!(ran.code, Some(2), "{}", ran.said());
        assert!(
            ran.err.contains("503")
                && ran.err.contains("no_node_available")
                && ran.err.contains("hub-a"),
            "{}",
            ran.said()
        );
        assert!(ran.took < PROMPT, "{}", ran.said());
        let ran = formation.send(hub, "mesh/web", "still here");
        assert_eq!(
            (ran.code, ran.out.as_str()),
            (Some(0), "still here"),
            "{}",
            ran.said()
        );
    }

    // Until its lease runs out every such call is a prompt 503; then the
    // instance is gone from the formation and so is the node attached to it.
    let gone = loop {
        let elapsed = killed.elapsed();
        assert!(
            elapsed < Duration::from_secs(15),
            "hub-a still listed {elapsed:?} after it was killed"
        );
        let listed = [1, 2].map(|hub| ids(&formation.instances(hub)).contains("hub-a"));
        if listed == [false, false] {
            break elapsed;
        }
        for hub in [1, 2] {
            let ran = formation.send(hub, "mesh/anchored", "now?");
            assert_eq!(ran.code, Some(2), "{}", ran.said());
            assert!(ran.took < PROMPT, "{}", ran.said());
            let refused = ran.err.contains("503") && ran.err.contains("hub-a");
            let unknown = ran.err.contains("no node mesh/anchored is registered");
            assert!(refused || unknown, "{}", ran.said());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("hub-a left the formation {gone:?} after it was killed");
    // Its lease was honoured: 6 s from its last heartbeat, at most 2 s old.
    assert!(gone >= Duration::from_secs(3), "{gone:?}");
    // Nothing is routed to it any more: the node it held is unknown.
    for hub in [1, 2] {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let ran = formation.send(hub, "mesh/anchored", "gone?");
            assert_eq!(ran.code, Some(2), "{}", ran.said());
            if ran.err.contains("no node mesh/anchored is registered") {
                break;
            }
            assert!(Instant::now() < deadline, "{}", ran.said());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // The roamer attaches again at hub-b, and answers through both
    // survivors: hub-b holds it, hub-c forwards to hub-b.
    let left = REATTACH.saturating_sub(killed.elapsed());
    formation.until_echoed(1, "mesh/roamer", "moved", left);
    eprintln!(
        "mesh/roamer answered again {:?} after hub-a was killed",
        killed.elapsed()
    );
    let ran = formation.send(2, "mesh/roamer", "via hub-c");
    assert_eq!(
        (ran.code, ran.out.as_str()),
        (Some(0), "via hub-c"),
        "{}",
        ran.said()
    );
    let nodes = formation.nodes(2);
    let roamer = nodes
        .iter()
        .find(|n| n["node"] == "mesh/roamer")
        .unwrap_or_else(|| panic!("no mesh/roamer in {nodes:?}"));
    assert!(
        roamer["url"].as_str().unwrap_or_default().contains("hub-b"),
        "{roamer}"
    );
    let list = formation.instances(2);
    assert_eq!(
        ids(&list),
        ["hub-b", "hub-c"].map(str::to_owned).into_iter().collect(),
        "{list:?}"
    );
    assert_eq!(row(&list, "hub-b")["attached"], 1, "{list:?}");
    assert_eq!(row(&list, "hub-c")["attached"], 0, "{list:?}");
    drop(formation);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_cut_off_from_mysql_routes_from_memory_and_catches_up() {
    let Some(db) = mysql::TestDb::create().await else {
        return;
    };
    let mut proxy = mysql::Proxy::start().await;
    let direct = db.url();
    let proxied = db.url_via(proxy.addr);
    // hub-c reaches the store through the proxy only.
    let mut formation = Formation::start(&[&direct, &direct, &proxied]);
    formation.http_node(&[0], "mesh/early");
    formation.quic_node(&[0], "mesh/attached");
    for to in ["mesh/early", "mesh/attached"] {
        formation.until_echoed(2, to, "before", Duration::from_secs(5));
    }
    let token = mediator(
        formation.dir(),
        &["token", "--node", "mesh/newcomer"],
        PATIENCE,
    );
    assert_eq!(token.code, Some(0), "{}", token.said());
    let register = |hub: &Hub| {
        let url = format!("{}/register", hub.url);
        let token = token.out.clone();
        async move {
            let body = json!({
                "group": "mesh", "name": "newcomer", "url": "http://127.0.0.1:9", "ttl": 60,
            });
            let started = Instant::now();
            let (status, _, body) =
                tokio::time::timeout(PATIENCE, support::post_full(&url, &token, body.to_string()))
                    .await
                    .unwrap_or_else(|_| panic!("POST {url} hung"));
            (
                status,
                String::from_utf8_lossy(&body).into_owned(),
                started.elapsed(),
            )
        }
    };

    proxy.stop().await;
    let cut = Instant::now();

    // Calls through hub-c still route from its table, over a heartbeat
    // period and more (its renewal fails, its feed reads fail): to a node
    // called back over HTTP, and to one attached to hub-a (forwarded over
    // the link).
    let mut calls = 0;
    while cut.elapsed() < HEARTBEAT + Duration::from_millis(500) {
        for to in ["mesh/early", "mesh/attached"] {
            let ran = formation.send(2, to, "from memory");
            assert_eq!(
                (ran.code, ran.out.as_str()),
                (Some(0), "from memory"),
                "{to}, {:?} into the cut: {}",
                cut.elapsed(),
                ran.said()
            );
            calls += 1;
        }
    }
    eprintln!("{calls} calls through hub-c answered from memory");
    // A registration needs the store: a prompt 503, said as the store's.
    let (status, body, took) = register(&formation.hubs[2]).await;
    assert_eq!(status, 503, "{body}");
    let error: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(error["kind"], "store", "{body}");
    assert!(took < PROMPT, "{took:?}");
    // So does an echo node's.
    let ran = mediator(
        formation.dir(),
        &[
            "echo-node",
            "--url",
            &formation.hubs[2].url,
            "--as",
            "mesh/refused",
            "--key",
            &formation.key,
        ],
        PATIENCE,
    );
    assert_eq!(ran.code, Some(2), "{}", ran.said());
    assert!(ran.err.contains("503"), "{}", ran.said());

    // A node registered at hub-a meanwhile is routable at hub-b, not yet
    // at hub-c, which cannot read the feed.
    formation.http_node(&[0], "mesh/late");
    formation.until_echoed(1, "mesh/late", "at b", Duration::from_secs(2));
    let ran = formation.send(2, "mesh/late", "at c?");
    assert_eq!(ran.code, Some(2), "{}", ran.said());
    assert!(
        ran.err.contains("no node mesh/late is registered"),
        "{}",
        ran.said()
    );
    eprintln!("the store was cut off from hub-c for {:?}", cut.elapsed());

    proxy.resume().await;
    let took = formation.until_echoed(2, "mesh/late", "caught up", Duration::from_secs(10));
    eprintln!("hub-c routed to mesh/late {took:?} after the store was back");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // And it registers again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body, _) = register(&formation.hubs[2]).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "still refused: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    formation.http_node(&[2], "mesh/after");
    formation.until_echoed(0, "mesh/after", "from a", Duration::from_secs(2));
    // Its lease was renewed again: the three are live.
    let list = formation.instances(2);
    assert_eq!(
        ids(&list),
        IDS.into_iter().map(str::to_owned).collect(),
        "{list:?}"
    );
    assert!(list.iter().all(|row| row["live"] == true), "{list:?}");
    drop(formation);
    drop(proxy);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_cut_off_longer_than_its_lease_is_retired_and_its_node_registers_again() {
    let Some(db) = mysql::TestDb::create().await else {
        return;
    };
    let mut proxy = mysql::Proxy::start().await;
    let direct = db.url();
    let proxied = db.url_via(proxy.addr);
    let mut formation = Formation::start(&[&direct, &direct, &proxied]);
    formation.quic_node(&[2], "mesh/held");
    formation.until_echoed(0, "mesh/held", "before", Duration::from_secs(5));

    proxy.stop().await;
    let cut = Instant::now();
    // hub-c renews its lease no more: the others retire it, and with it
    // the node attached to it. Through hub-a a call meanwhile is forwarded
    // to hub-c while its lease lasts, then promptly refused; through
    // hub-c, which holds the node's connection, the node answers all along.
    let retired = loop {
        let elapsed = cut.elapsed();
        assert!(
            elapsed < Duration::from_secs(15),
            "hub-c still listed {elapsed:?} into the cut"
        );
        if !ids(&formation.instances(0)).contains("hub-c") {
            break elapsed;
        }
        // Retired between the listing and this call: already unknown.
        let ran = formation.send(0, "mesh/held", "through a");
        let answered = ran.code == Some(0) && ran.out == "through a";
        let refused = ran.code == Some(2)
            && (ran.err.contains("503") || ran.err.contains("no node mesh/held is registered"))
            && ran.took < PROMPT;
        assert!(answered || refused, "{}", ran.said());
        let ran = formation.send(2, "mesh/held", "through c");
        assert_eq!(
            (ran.code, ran.out.as_str()),
            (Some(0), "through c"),
            "{}",
            ran.said()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("hub-c was retired {retired:?} into the cut");
    assert!(retired >= Duration::from_secs(3), "{retired:?}");
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let ran = formation.send(0, "mesh/held", "gone?");
        assert_eq!(ran.code, Some(2), "{}", ran.said());
        assert!(ran.took < PROMPT, "{}", ran.said());
        if ran.err.contains("no node mesh/held is registered") {
            break;
        }
        assert!(Instant::now() < deadline, "{}", ran.said());
        std::thread::sleep(Duration::from_millis(50));
    }
    let ran = formation.send(2, "mesh/held", "still here");
    assert_eq!(
        (ran.code, ran.out.as_str()),
        (Some(0), "still here"),
        "{}",
        ran.said()
    );

    // Back: hub-c announces itself again, and registers the node it still
    // holds at its next renewal (every third of the node's 30 s lease).
    proxy.resume().await;
    let back = Instant::now();
    let took = formation.until_echoed(0, "mesh/held", "again", Duration::from_secs(15));
    eprintln!("mesh/held answered through hub-a {took:?} after the store was back");
    formation.until_echoed(1, "mesh/held", "again", Duration::from_secs(2));
    formation.until_echoed(2, "mesh/held", "again", Duration::from_secs(2));
    let list = formation.instances(0);
    assert!(ids(&list).contains("hub-c"), "{list:?}");
    assert_eq!(row(&list, "hub-c")["attached"], 1, "{list:?}");
    assert_eq!(row(&list, "hub-c")["live"], true, "{list:?}");
    eprintln!("healed {:?} after the store was back", back.elapsed());
    drop(formation);
    drop(proxy);
    drop(db);
}
