//! A body past the limit gets its 413 in real clients' hands, every time:
//! Python's `http.client` and Node's `fetch` send the whole body before
//! they read, and see a reset instead of the answer if the mediator closes
//! while they are still sending.

use std::time::Duration;

use mediator_tests::harness::*;
use tokio::process::Command;

/// The mediator's limit in these tests.
const LIMIT: usize = 1 << 20;
/// What each client sends: just past the limit.
const SENT: usize = LIMIT + 1024;
/// How often each client tries; every try must read 413.
const TRIES: usize = 5;

const PYTHON: &str = r#"
import http.client, os, sys, urllib.parse
url = urllib.parse.urlparse(os.environ["MEDIATOR_URL"])
body = b"x" * int(os.environ["SENT"])
seen = []
for _ in range(int(os.environ["TRIES"])):
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.request("POST", "/register", body=body, headers={"content-type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        seen.append(str(answer.status))
    except Exception as e:
        seen.append(type(e).__name__)
    finally:
        conn.close()
print(",".join(seen))
"#;

const NODE: &str = r#"
(async () => {
  const seen = [];
  const body = Buffer.alloc(Number(process.env.SENT), 120);
  for (let i = 0; i < Number(process.env.TRIES); i++) {
    try {
      const answer = await fetch(process.env.MEDIATOR_URL + "/register", {
        method: "POST", body, headers: { "content-type": "application/json" },
      });
      await answer.text();
      seen.push(String(answer.status));
    } catch (e) {
      seen.push(e.cause && e.cause.code ? e.cause.code : e.name);
    }
  }
  console.log(seen.join(","));
})();
"#;

async fn run(program: &str, args: &[&str], hub: &Hub) -> String {
    let mut command = Command::new(program);
    command
        .args(args)
        .env("MEDIATOR_URL", &hub.base)
        .env("SENT", SENT.to_string())
        .env("TRIES", TRIES.to_string())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("{program} finished in time"))
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        output.status.success(),
        "{program}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn all_413() -> String {
    ["413"; TRIES].join(",")
}

#[tokio::test]
async fn python_http_client_reads_the_413_every_time() {
    let hub = Hub::config().max_body(LIMIT).start().await;
    assert_eq!(run("python3", &["-c", PYTHON], &hub).await, all_413());
}

#[tokio::test]
async fn node_fetch_reads_the_413_every_time() {
    let hub = Hub::config().max_body(LIMIT).start().await;
    assert_eq!(run("node", &["-e", NODE], &hub).await, all_413());
}
