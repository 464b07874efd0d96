//! Subscriptions on both databases, against a receiver on a local port: the handshake moves
//! a Subscription to `active`; each matching committed write arrives once or more (never
//! zero), in commit order, within a second, signed with the Subscription's secret and
//! carrying its headers; a receiver that is down gets retries and the Subscription shows
//! `error`, then everything when it comes back (and `active` again); a node killed with
//! SIGKILL mid-delivery has its notification delivered after a restart; the Backport IG's
//! notification Bundles (`id-only`, `full-resource`); and a Subscription never carries what
//! its owner may not read.

use crate::common::{Backend, Server, fresh_database, start_with_test_principals_and};
use crate::jobs::Node;
use axum::extract::State;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    at: Instant,
    headers: axum::http::HeaderMap,
    body: String,
}

/// A webhook receiver: records every request and answers `status` (after `delay`).
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU16>,
    url: String,
}

impl Receiver {
    async fn start() -> Receiver {
        let r = Receiver {
            got: Arc::default(),
            status: Arc::new(AtomicU16::new(200)),
            delay_ms: Arc::new(AtomicU16::new(0)),
            url: String::new(),
        };
        async fn hook(
            State(r): State<Receiver>,
            headers: axum::http::HeaderMap,
            body: String,
        ) -> axum::http::StatusCode {
            let delay = r.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(u64::from(delay))).await;
            }
            let status = r.status.load(Ordering::SeqCst);
            if status == 200 {
                r.got.lock().unwrap().push(Got {
                    at: Instant::now(),
                    headers,
                    body,
                });
            }
            axum::http::StatusCode::from_u16(status).unwrap()
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(r.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { url, ..r }
    }

    fn events(&self) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.headers["x-healporium-event"] != "handshake")
            .cloned()
            .collect()
    }

    fn handshakes(&self) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.headers["x-healporium-event"] == "handshake")
            .count()
    }
}

async fn wait_for(what: &str, secs: u64, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn subscription(criteria: &str, endpoint: &str, extra: Value) -> Value {
    let mut s = json!({"resourceType": "Subscription", "status": "requested",
        "reason": "test", "criteria": criteria,
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
            "header": ["Authorization: Bearer receiver-token"],
            "extension": [{"url": healporium::interaction::subscription::SECRET_URL,
                "valueString": "a-secret-of-sixteen-or-more"}]}});
    if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    s
}

fn observation(patient: &str, code: &str, category: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")}})
}

/// The node's FHIR base.
fn base(n: &Node) -> String {
    format!("http://127.0.0.1:{}/fhir", n.port)
}

fn client(n: &Node) -> Server {
    Server::at(&base(n))
}

async fn status_of(s: &Server, id: &str) -> Value {
    s.get(&format!("Subscription/{id}"))
        .await
        .expect(200)
        .json()
}

fn verify(g: &Got, secret: &str) {
    let sig = g.headers["x-healporium-signature"].to_str().unwrap();
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|r| r.split(',').next())
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        sig,
        healporium::interaction::notify::signature(secret, t, g.body.as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_hook_delivers_matching_writes_signed_in_order_and_survives_outages() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((url, _dir, _schema)) = fresh_database(backend).await else {
            continue;
        };
        let node = Node::start(&url, "a", &[]);
        let s = client(&node);
        let rx = Receiver::start().await;
        for id in ["p", "q"] {
            s.put(
                &format!("Patient/{id}"),
                &json!({"resourceType": "Patient", "id": id}),
            )
            .await
            .expect(201);
        }
        // a bad criteria or channel is refused, naming the element
        let r = s
            .post(
                "Subscription",
                &subscription("Observation?nonsense=1", &rx.url, json!({})),
            )
            .await
            .expect(422);
        assert_eq!(r.expressions(), ["Subscription.criteria"]);
        let r = s
            .post(
                "Subscription",
                &subscription("Observation?subject=Patient/p", "ftp://x", json!({})),
            )
            .await
            .expect(422);
        assert_eq!(r.expressions(), ["Subscription.channel.endpoint"]);
        let created = s
            .post(
                "Subscription",
                &subscription(
                    "Observation?subject=Patient/p",
                    &rx.url,
                    json!({"status": "active"}),
                ),
            )
            .await
            .expect(201)
            .json();
        // the server decides the status: requested until the handshake
        assert_eq!(created["status"], "requested");
        let id = created["id"].as_str().unwrap().to_string();
        wait_for("the handshake", 10, async || rx.handshakes() > 0).await;
        wait_for("active", 10, async || {
            status_of(&s, &id).await["status"] == "active"
        })
        .await;
        // five matching writes and two of another patient
        let mut committed = Vec::new();
        for i in 0..5 {
            let o = s
                .post(
                    "Observation",
                    &observation("p", &format!("{i}-1"), "laboratory"),
                )
                .await
                .expect(201);
            committed.push((o.json()["id"].as_str().unwrap().to_string(), Instant::now()));
            s.post(
                "Observation",
                &observation("q", &format!("{i}-2"), "laboratory"),
            )
            .await
            .expect(201);
        }
        wait_for("five notifications", 10, async || rx.events().len() >= 5).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = rx.events();
        assert_eq!(got.len(), 5, "{backend:?}: only p's, each once here");
        let mut last_seq = 0;
        for (g, (oid, at)) in got.iter().zip(&committed) {
            let body: Value = serde_json::from_str(&g.body).unwrap();
            assert_eq!(body["id"], oid.as_str(), "{backend:?}: commit order");
            assert_eq!(body["subject"]["reference"], "Patient/p");
            assert_eq!(g.headers["authorization"], "Bearer receiver-token");
            assert_eq!(g.headers["x-healporium-subscription"], id.as_str());
            let seq: i64 = g.headers["x-healporium-event"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(seq > last_seq);
            last_seq = seq;
            verify(g, "a-secret-of-sixteen-or-more");
            let latency = g.at.duration_since(*at);
            assert!(latency < Duration::from_secs(1), "{backend:?}: {latency:?}");
        }
        // the receiver goes down: retries, then `error` with the reason
        rx.status.store(503, Ordering::SeqCst);
        let o = s
            .post("Observation", &observation("p", "down", "laboratory"))
            .await
            .expect(201);
        let down_id = o.json()["id"].as_str().unwrap().to_string();
        wait_for("error", 30, async || {
            status_of(&s, &id).await["status"] == "error"
        })
        .await;
        let sub = status_of(&s, &id).await;
        assert!(sub["error"].as_str().unwrap().contains("503"), "{sub}");
        // it comes back: the notification arrives, the Subscription is active again
        rx.status.store(200, Ordering::SeqCst);
        wait_for("delivery after the outage", 40, async || {
            rx.events().iter().any(|g| g.body.contains(&down_id))
        })
        .await;
        wait_for("active again", 10, async || {
            status_of(&s, &id).await["status"] == "active"
        })
        .await;
        // switched off: nothing more
        let mut off = status_of(&s, &id).await;
        off["status"] = json!("off");
        s.put(&format!("Subscription/{id}"), &off).await.expect(200);
        let before = rx.events().len();
        s.post("Observation", &observation("p", "after-off", "laboratory"))
            .await
            .expect(201);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(rx.events().len(), before, "{backend:?}");
    }
}

/// SIGKILL while the receiver holds the notification: after a restart it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_delivery_delivers_after_restart() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let Some((url, _dir, _schema)) = fresh_database(backend).await else {
            continue;
        };
        let rx = Receiver::start().await;
        let mut node = Node::start(&url, "a", &["--job-lease", "2"]);
        let s = client(&node);
        s.put("Patient/p", &json!({"resourceType": "Patient", "id": "p"}))
            .await
            .expect(201);
        let id = s
            .post(
                "Subscription",
                &subscription("Observation?subject=Patient/p", &rx.url, json!({})),
            )
            .await
            .expect(201)
            .json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        wait_for("active", 10, async || {
            status_of(&s, &id).await["status"] == "active"
        })
        .await;
        // the receiver stalls (longer than this test waits): the node is killed while it
        // waits, so only the restarted node's delivery can arrive in time
        rx.delay_ms.store(30_000, Ordering::SeqCst);
        let oid = s
            .post("Observation", &observation("p", "kill", "laboratory"))
            .await
            .expect(201)
            .json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        tokio::time::sleep(Duration::from_millis(700)).await;
        node.kill();
        rx.delay_ms.store(0, Ordering::SeqCst);
        let restarted = Node::start(&url, "b", &["--job-lease", "2"]);
        let _ = client(&restarted);
        wait_for("delivery after the restart", 25, async || {
            rx.events().iter().any(|g| g.body.contains(&oid))
        })
        .await;
    }
}

/// The Backport IG's notification Bundles: a history Bundle whose first entry is the
/// SubscriptionStatus (Parameters, R4 profile), with the resource for `full-resource` and
/// only its reference for `id-only`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backport_notification_bundles() {
    let Some((url, _dir, _schema)) = fresh_database(Backend::Sqlite).await else {
        return;
    };
    let node = Node::start(&url, "a", &[]);
    let s = client(&node);
    s.put("Patient/p", &json!({"resourceType": "Patient", "id": "p"}))
        .await
        .expect(201);
    let mut receivers = Vec::new();
    for content in ["full-resource", "id-only"] {
        let rx = Receiver::start().await;
        let mut sub = subscription("Observation?subject=Patient/p", &rx.url, json!({}));
        sub["channel"]["_payload"] = json!({"extension": [{"url": healporium::interaction::subscription::PAYLOAD_CONTENT_URL, "valueCode": content}]});
        let id = s.post("Subscription", &sub).await.expect(201).json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        wait_for("active", 10, async || {
            status_of(&s, &id).await["status"] == "active"
        })
        .await;
        receivers.push((content, rx, id));
    }
    let oid = s
        .post("Observation", &observation("p", "bp", "vital-signs"))
        .await
        .expect(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for (content, rx, id) in &receivers {
        // the handshake was a Bundle too
        let hs: Value = serde_json::from_str(&rx.got.lock().unwrap()[0].body).unwrap();
        assert_eq!(
            hs["entry"][0]["resource"]["parameter"][3]["valueCode"],
            "handshake"
        );
        wait_for("a notification", 10, async || !rx.events().is_empty()).await;
        let b: Value = serde_json::from_str(&rx.events()[0].body).unwrap();
        assert_eq!(b["type"], "history");
        let status = &b["entry"][0]["resource"];
        assert_eq!(status["resourceType"], "Parameters");
        assert!(
            status["meta"]["profile"][0]
                .as_str()
                .unwrap()
                .ends_with("backport-subscription-status-r4")
        );
        let p = |name: &str| {
            status["parameter"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .cloned()
                .unwrap()
        };
        assert_eq!(
            p("subscription")["valueReference"]["reference"],
            format!("Subscription/{id}")
        );
        assert_eq!(p("type")["valueCode"], "event-notification");
        assert_eq!(p("events-since-subscription-start")["valueString"], "1");
        let event = p("notification-event");
        assert!(event.to_string().contains(&format!("Observation/{oid}")));
        if *content == "full-resource" {
            assert_eq!(b["entry"][1]["resource"]["id"], oid.as_str());
        } else {
            assert_eq!(b["entry"].as_array().unwrap().len(), 1);
        }
    }
}

/// A Subscription's notifications are what its owner may read: a backend service whose
/// Observation scope is confined to one patient never hears of another's, even with criteria
/// that name no patient; the Subscription keeps its creator as owner when an administrator
/// edits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_never_carry_what_the_owner_may_not_read() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((s, url)) = start_with_test_principals_and(backend, Default::default()).await
        else {
            continue;
        };
        let store = healporium::store::open(&url).await.unwrap();
        let ctx = healporium::interaction::Context::new(store.clone());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let dispatcher = tokio::spawn(healporium::interaction::notify::run_dispatcher(
            ctx.clone(),
            Duration::from_millis(25),
            stopped.clone(),
        ));
        let config = crate::common::serve_config();
        let worker = healporium::jobs::Worker::new(
            store.clone(),
            healporium::app::job_kinds(&ctx, &config.jobs).unwrap(),
            Arc::new(healporium::jobs::SystemClock),
            healporium::jobs::WorkerOptions {
                poll_ms: 50,
                ..Default::default()
            },
        );
        let worker = tokio::spawn(worker.run(stopped));
        for id in ["a", "b"] {
            s.put(
                &format!("Patient/{id}"),
                &json!({"resourceType": "Patient", "id": id}),
            )
            .await
            .expect(201);
        }
        let rx = Receiver::start().await;
        let confined = [(
            "x-test-scope",
            "system/Subscription.cruds system/Observation.rs?subject=Patient/a",
        )];
        let sub = s
            .post_with(
                "Subscription",
                &subscription("Observation?status=final", &rx.url, json!({})),
                &confined,
            )
            .await
            .expect(201)
            .json();
        let id = sub["id"].as_str().unwrap().to_string();
        let owner = sub["extension"].to_string();
        assert!(
            owner.contains("test-client") && owner.contains("subject=Patient/a"),
            "{owner}"
        );
        // an administrator's edit keeps the owner
        let mut edited = sub.clone();
        edited["reason"] = json!("edited");
        let admin = [("x-test-scope", "user/*.cruds"), ("x-test-role", "admin")];
        let edited = s
            .put_with(&format!("Subscription/{id}"), &edited, &admin)
            .await
            .expect(200)
            .json();
        assert_eq!(edited["extension"].to_string(), owner);
        wait_for("active", 10, async || {
            status_of(&s, &id).await["status"] == "active"
        })
        .await;
        let a_obs = s
            .post("Observation", &observation("a", "1", "laboratory"))
            .await
            .expect(201)
            .json();
        for i in 0..3 {
            s.post(
                "Observation",
                &observation("b", &format!("b{i}"), "laboratory"),
            )
            .await
            .expect(201);
        }
        let a2 = s
            .post("Observation", &observation("a", "2", "laboratory"))
            .await
            .expect(201)
            .json();
        wait_for("a's two", 10, async || rx.events().len() >= 2).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got = rx.events();
        assert_eq!(got.len(), 2, "{backend:?}: {got:?}");
        for (g, o) in got.iter().zip([&a_obs, &a2]) {
            assert!(g.body.contains(o["id"].as_str().unwrap()));
            assert!(!g.body.contains("Patient/b"), "{backend:?}: a leak");
        }
        let _ = stop.send(true);
        let _ = dispatcher.await;
        let _ = worker.await;
    }
}

/// A websocket client of `url` (with a bearer token when given).
pub(crate) async fn websocket(
    url: &str,
    token: Option<&str>,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next text message within `ms` (None: nothing came).
pub(crate) async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    ms: u64,
) -> Option<String> {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_millis(ms), ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                return Some(t.to_string());
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// R4's websocket channel: `bind <id>` → `bound <id>` (and the Subscription `active`), then
/// `ping <id>` for each matching write and nothing for others; an unknown id is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_bind_and_ping() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((url, _dir, _schema)) = fresh_database(backend).await else {
            continue;
        };
        let node = Node::start(&url, "a", &[]);
        let s = client(&node);
        s.put("Patient/p", &json!({"resourceType": "Patient", "id": "p"}))
            .await
            .expect(201);
        s.put("Patient/q", &json!({"resourceType": "Patient", "id": "q"}))
            .await
            .expect(201);
        let sub = s
            .post(
                "Subscription",
                &json!({"resourceType": "Subscription", "status": "requested", "reason": "ws",
                    "criteria": "Observation?subject=Patient/p",
                    "channel": {"type": "websocket"}}),
            )
            .await
            .expect(201)
            .json();
        let id = sub["id"].as_str().unwrap().to_string();
        // the CapabilityStatement says where
        let cs = s.get("metadata").await.expect(200).json();
        let ws_url = cs["rest"][0]["extension"][0]["valueUri"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            ws_url,
            format!("ws://127.0.0.1:{}/fhir/websocket", node.port)
        );
        let mut ws = websocket(&ws_url, None).await;
        ws.send(Message::Text("bind nope".into())).await.unwrap();
        let refused = next_text(&mut ws, 5_000).await.unwrap();
        assert!(refused.starts_with("error"), "{refused}");
        ws.send(Message::Text(format!("bind {id}").into()))
            .await
            .unwrap();
        assert_eq!(
            next_text(&mut ws, 5_000).await.unwrap(),
            format!("bound {id}")
        );
        wait_for("active", 10, async || {
            status_of(&s, &id).await["status"] == "active"
        })
        .await;
        s.post("Observation", &observation("q", "other", "laboratory"))
            .await
            .expect(201);
        let at = Instant::now();
        s.post("Observation", &observation("p", "mine", "laboratory"))
            .await
            .expect(201);
        assert_eq!(
            next_text(&mut ws, 5_000).await.unwrap(),
            format!("ping {id}")
        );
        assert!(
            at.elapsed() < Duration::from_secs(1),
            "{backend:?}: {:?}",
            at.elapsed()
        );
        // one ping per matching write: q's write sent none
        assert_eq!(next_text(&mut ws, 500).await, None, "{backend:?}");
    }
}
