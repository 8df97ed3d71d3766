//! Nodes over HTTP and over QUIC calling each other through one mediator.

mod common;

use bytes::Bytes;
use mediator_core::node::{ClientError, Incoming};
use mediator_core::{Authenticator, Error, Fault, KeyRing, Mediator, MemoryRegistry, SealKey};
use mediator_transport_http::{HttpDelivery, HttpListener, NodeClient};
use mediator_transport_quic::{QuicLimits, QuicListener, ServerTls};

use common::{echo, key, Hub};

async fn both() -> (Hub, String) {
    let mediator = Mediator::builder()
        .registry(MemoryRegistry::new())
        .authenticator(Authenticator::hs256(common::SECRET))
        .deliver(HttpDelivery::default())
        .limits(common::limits())
        .build()
        .expect("mediator");
    let http = HttpListener::bind("127.0.0.1:0").await.expect("http");
    let url = format!("http://{}", http.local_addr());
    tokio::spawn(http.serve(mediator.clone()));
    let tls = ServerTls::self_signed(&["localhost"]).expect("tls");
    let listener = QuicListener::bind_with(
        "127.0.0.1:0".parse().expect("addr"),
        &tls,
        QuicLimits::default(),
    )
    .expect("quic");
    (
        Hub::serve_on(mediator, listener, tls, KeyRing::new(SealKey::generate())),
        url,
    )
}

#[tokio::test]
async fn http_and_quic_nodes_reach_each_other() {
    let (hub, url) = both().await;
    let http_node = |name: &'static str| {
        NodeClient::builder(&url)
            .node_key(key(name))
            .token_minter(hub.minter.clone())
            .keys(hub.keys.clone())
            .callback("http://127.0.0.1:0")
    };
    let web = http_node("web/h")
        .start(|request: Incoming| async move {
            Ok::<_, Error>(Bytes::from(format!(
                "web got {} from {:?}",
                String::from_utf8_lossy(&request.body),
                request.from.map(|k| k.to_string())
            )))
        })
        .await
        .expect("http node");
    let quic = hub.node("users/q", echo("q")).await;

    // HTTP to QUIC and back.
    assert_eq!(
        web.call(key("users/q"), "/", "hi")
            .await
            .expect("http→quic"),
        "q got hi"
    );
    let caller = hub.client("users/q").connect().await.expect("caller");
    assert_eq!(
        caller
            .call(key("web/h"), "/", "yo")
            .await
            .expect("quic→http"),
        "web got yo from Some(\"users/q\")"
    );
    drop(quic);

    // A group mixing both transports, broadcast from either side.
    let _mh = http_node("mix/h").start(echo("mh")).await.expect("mix/h");
    let _mq = hub.node("mix/q", echo("mq")).await;
    let from_quic = caller
        .broadcast("mix", "/", "all")
        .await
        .expect("quic broadcast");
    assert_eq!(
        (from_quic.summary.asked, from_quic.summary.answered),
        (2, 2)
    );
    let mut got: Vec<String> = from_quic
        .successes()
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["mh got all", "mq got all"]);

    let from_http = web
        .broadcast("mix", "/", "all")
        .await
        .expect("http broadcast");
    assert_eq!(
        (from_http.summary.asked, from_http.summary.answered),
        (2, 2)
    );
    assert_eq!(from_http.successes().count(), 2);
}

/// The parts of a failure a caller acts on.
fn seen(error: ClientError) -> (Option<u16>, Option<String>, Option<Fault>, String) {
    let message = match &error {
        ClientError::Node { message, .. } | ClientError::Mediator { message, .. } => {
            message.clone()
        }
        other => panic!("expected an answer, got {other:?}"),
    };
    (
        error.status(),
        error.kind().map(str::to_owned),
        error.fault(),
        message,
    )
}

#[tokio::test]
async fn failures_read_the_same_over_both_transports() {
    let (hub, url) = both().await;
    let refuse = |request: Incoming| async move {
        drop(request);
        Err::<Bytes, _>(Error::refused(409, "conflict", "taken"))
    };
    let http = NodeClient::builder(&url)
        .node_key(key("picky/h"))
        .token_minter(hub.minter.clone())
        .keys(hub.keys.clone())
        .callback("http://127.0.0.1:0")
        .start(refuse)
        .await
        .expect("http node");
    let _quic = hub.node("picky/q", refuse).await;
    let caller = hub.caller("users/c").await;

    for target in ["picky/h", "picky/q"] {
        let over_http = http.call(key(target), "/", "x").await.expect_err("refused");
        let over_quic = caller
            .call(key(target), "/", "x")
            .await
            .expect_err("refused");
        for error in [&over_http, &over_quic] {
            assert!(
                matches!(error, ClientError::Node { node, .. } if node == target),
                "{target}: {error:?}"
            );
        }
        let expected = (
            Some(409),
            Some("conflict".to_owned()),
            Some(Fault::Node),
            "taken".to_owned(),
        );
        assert_eq!(seen(over_http), expected, "{target} over http");
        assert_eq!(seen(over_quic), expected, "{target} over quic");
    }

    // The mediator's own refusal, from its error body or its reply frame;
    // the HTTP listener words it in the original's dialect.
    let over_http = http
        .call(key("nobody/x"), "/", "x")
        .await
        .expect_err("unknown");
    let over_quic = caller
        .call(key("nobody/x"), "/", "x")
        .await
        .expect_err("unknown");
    for (transport, error) in [("http", over_http), ("quic", over_quic)] {
        let (status, kind, fault, _) = seen(error);
        assert_eq!(
            (status, kind.as_deref(), fault),
            (Some(404), Some("unknown_target"), Some(Fault::Caller)),
            "{transport}"
        );
    }
}
