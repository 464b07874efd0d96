//! Hospital feeds end to end, on SQLite and PostgreSQL: HL7 v2 over `POST /hl7v2` and over a
//! real MLLP socket becomes FHIR resources through the interaction layer, with a Provenance
//! naming the source message and the mapping set, and an ACK after the commit; a re-delivery
//! gets the same ACK and writes nothing; failures are AE/AR with ERR segments and land in the
//! dead letters by class, where a replay after a fix resolves them; `import hl7v2` and
//! `feeds dead-letter` from the command line.

use crate::common::Server;
use healporium::app::AppOptions;
use healporium::store::Store;
use serde_json::{Value, json};
use std::sync::Arc;

macro_rules! feed_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (s, store) = $crate::common::start_store($crate::common::Backend::Sqlite, super::options()).await.unwrap();
                    super::$name(s, store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    match $crate::common::start_store($crate::common::Backend::Postgres, super::options()).await {
                        Some((s, store)) => super::$name(s, store).await,
                        None => eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set"),
                    }
                }
            )*
        }
    };
}

feed_backends!(
    an_admission_becomes_resources_with_provenance,
    redelivery_returns_the_same_ack_and_writes_nothing,
    admit_then_discharge_is_one_encounter,
    results_attach_to_their_order,
    mapping_errors_are_ae_and_dead_letters_and_write_nothing,
    unsupported_and_unreadable_messages_are_ar,
    a_conflict_is_replayed_after_the_fix,
    mllp_over_a_real_socket,
    an_older_message_does_not_overwrite_newer_data,
    a_merge_links_the_records_once,
    a_channel_takes_what_it_declares,
    an_identifier_change_keeps_the_patient,
    a_dft_payment_posts_to_the_credit_line,
);

fn options() -> AppOptions {
    AppOptions {
        audit: true,
        feed_zone: Some("+01:00".into()),
        ..AppOptions::default()
    }
}

const A01: &str = "MSH|^~\\&|EPIC|HOSP|HP|HP|20240105083000+0100||ADT^A01^ADT_A01|MSG0001|P|2.5.1\r\
EVN|A01|20240105083000+0100\r\
PID|1||12345^^^HEALPORIUM^MR~999-99-9999^^^SSA^SS||Doe^Jane^Q||19800214|F|||1 Main St^^Town^ST^12345^^H||^PRN^PH^^^^^^^^^555-1234\r\
ZPI|custom\r\
PV1|1|I|W1^101^A||||1234^Smith^John||||||||||||V100^^^HEALPORIUM^VN|||||||||||||||||||||||||20240105080000\r";

fn a01(control: &str, mrn: &str) -> String {
    A01.replace("MSG0001", control)
        .replace("12345^^^HEALPORIUM", &format!("{mrn}^^^HEALPORIUM"))
}

/// MSA-1 and the ERR segments of an ACK.
fn ack_code(ack: &str) -> String {
    ack.split('\r')
        .find(|s| s.starts_with("MSA|"))
        .and_then(|s| s.split('|').nth(1))
        .unwrap_or("")
        .to_string()
}

fn errs(ack: &str) -> Vec<String> {
    ack.split('\r')
        .filter(|s| s.starts_with("ERR|"))
        .map(str::to_string)
        .collect()
}

/// Versions of what feeds write (the AuditEvents of the reads themselves left out).
async fn written(s: &Server) -> u64 {
    let mut n = 0;
    for t in [
        "Patient",
        "Encounter",
        "Observation",
        "DiagnosticReport",
        "Provenance",
    ] {
        n += s
            .get(&format!("{t}/_history?_count=0"))
            .await
            .expect(200)
            .json()["total"]
            .as_u64()
            .unwrap();
    }
    n
}

async fn search(s: &Server, query: &str) -> Vec<Value> {
    s.get(query).await.expect(200).json()["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect()
}

async fn an_admission_becomes_resources_with_provenance(s: Server, store: Arc<dyn Store>) {
    let r = s.post_hl7(A01).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("x-application/hl7-v2+er7; charset=utf-8")
    );
    assert_eq!(ack_code(&r.text), "AA", "{}", r.text);
    assert!(r.text.contains("MSA|AA|MSG0001\r"), "{}", r.text);
    assert!(
        r.text.starts_with("MSH|^~\\&|HP|HP|EPIC|HOSP|"),
        "{}",
        r.text
    );
    // the Z-segment rides along as a warning
    assert!(
        errs(&r.text).iter().any(|e| e.contains("|W|")),
        "{}",
        r.text
    );
    let patients = search(
        &s,
        "Patient?identifier=https://healporium.dev/fhir/sid/mrn|12345",
    )
    .await;
    assert_eq!(patients.len(), 1);
    assert_eq!(patients[0]["birthDate"], "1980-02-14");
    assert_eq!(patients[0]["name"][0]["family"], "Doe");
    let pid = patients[0]["id"].as_str().unwrap().to_string();
    let encounters = search(&s, &format!("Encounter?subject=Patient/{pid}")).await;
    assert_eq!(encounters.len(), 1);
    // the channel's zone completes a timestamp without an offset
    assert_eq!(
        encounters[0]["period"]["start"],
        "2024-01-05T08:00:00+01:00"
    );
    // the Provenance names the inbox message and the mapping set, and targets both writes
    let provs = search(&s, &format!("Provenance?target=Patient/{pid}")).await;
    assert_eq!(provs.len(), 1, "{provs:?}");
    let p = &provs[0];
    let message_id = p["entity"][0]["what"]["identifier"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        p["entity"][0]["what"]["identifier"]["system"],
        "urn:healporium:feed-message"
    );
    assert!(
        p["policy"][0]
            .as_str()
            .unwrap()
            .starts_with("urn:healporium:mapping-set:"),
        "{p}"
    );
    assert_eq!(p["target"].as_array().unwrap().len(), 2);
    let row = store.feeds().message(&message_id).await.unwrap().unwrap();
    assert_eq!(row.raw, A01.as_bytes());
    assert_eq!(row.dup_key, "EPIC|HOSP|MSG0001");
    assert_eq!(row.state, "accepted");
    assert_eq!(row.ack.as_deref(), Some(r.text.as_str()));
    // the writes were audited like any other transaction
    let audits = search(&s, "AuditEvent?subtype=transaction").await;
    assert!(!audits.is_empty(), "the feed's transaction is audited");
}

async fn redelivery_returns_the_same_ack_and_writes_nothing(s: Server, _store: Arc<dyn Store>) {
    let first = s.post_hl7(A01).await;
    assert_eq!(ack_code(&first.text), "AA", "{}", first.text);
    let versions = written(&s).await;
    let again = s.post_hl7(A01).await;
    assert_eq!(again.status.as_u16(), 200);
    assert_eq!(again.text, first.text, "the very same ACK");
    assert_eq!(again.header("x-hl7-duplicate"), Some("true"));
    assert_eq!(written(&s).await, versions, "zero new versions");
    // the same content under a new control id is processed, and is a no-op write
    let resent = s.post_hl7(&a01("MSG0001-B", "12345")).await;
    assert_eq!(ack_code(&resent.text), "AA", "{}", resent.text);
    assert_eq!(resent.header("x-hl7-duplicate"), None);
    let extra = written(&s).await - versions;
    assert!(
        extra <= 1,
        "unchanged resources are not written again (only the Provenance is new): {extra}"
    );
}

async fn admit_then_discharge_is_one_encounter(s: Server, _store: Arc<dyn Store>) {
    let r = s.post_hl7(A01).await;
    assert_eq!(ack_code(&r.text), "AA", "{}", r.text);
    let discharge = A01
        .replace("ADT^A01^ADT_A01|MSG0001", "ADT^A03^ADT_A03|MSG0002")
        .replace("EVN|A01", "EVN|A03")
        .replace("ZPI|custom\r", "");
    let r = s.post_hl7(&discharge).await;
    assert_eq!(ack_code(&r.text), "AA", "{}", r.text);
    let encounters = search(&s, "Encounter").await;
    assert_eq!(encounters.len(), 1, "one Encounter: {encounters:?}");
    assert_eq!(encounters[0]["status"], "finished");
    assert_eq!(search(&s, "Patient").await.len(), 1);
}

async fn results_attach_to_their_order(s: Server, _store: Arc<dyn Store>) {
    let oru = "MSH|^~\\&|LAB|HOSP|HP|HP|20240105||ORU^R01^ORU_R01|M2|P|2.5.1\r\
PID|1||777^^^HEALPORIUM^MR||Doe^John\r\
OBR|1|ORD1|FIL1|24323-8^Metabolic panel^LN|||20240105070000+0000\r\
OBX|1|NM|2345-7^Glucose^LN||95|mg/dL^^UCUM|70-99|N|||F|||20240105070000+0000\r\
OBX|2|NM|2160-0^Creatinine^LN||0.9|mg/dL^^UCUM|||||F|||20240105070000+0000\r\
OBR|2|ORD2|FIL2|58410-2^CBC^LN\r\
OBX|1|NM|718-7^Hemoglobin^LN||13.5|g/dL^^UCUM|||||P\r";
    let r = s.post_hl7(oru).await;
    assert_eq!(ack_code(&r.text), "AA", "{}", r.text);
    let obs = search(&s, "Observation?_count=50").await;
    assert_eq!(obs.len(), 3, "{obs:?}");
    let glucose = obs
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "2345-7")
        .unwrap();
    assert_eq!(glucose["valueQuantity"]["value"].to_string(), "95");
    assert_eq!(glucose["status"], "final");
    let reports = search(&s, "DiagnosticReport").await;
    assert_eq!(reports.len(), 2);
}

async fn mapping_errors_are_ae_and_dead_letters_and_write_nothing(
    s: Server,
    store: Arc<dyn Store>,
) {
    let versions = written(&s).await;
    let bad_date = a01("BAD1", "1").replace("|19800214|", "|1980-02-14|");
    let r = s.post_hl7(&bad_date).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(ack_code(&r.text), "AE", "{}", r.text);
    assert!(
        errs(&r.text)
            .iter()
            .any(|e| e.contains("PID^^7") && e.contains("|102^^HL70357|E|")),
        "{}",
        r.text
    );
    let unknown_authority = a01("BAD2", "2").replace("2^^^HEALPORIUM^MR", "2^^^ELSEWHERE^MR");
    let r = s.post_hl7(&unknown_authority).await;
    assert_eq!(ack_code(&r.text), "AE", "{}", r.text);
    assert!(
        errs(&r.text).iter().any(|e| e.contains("|103^^HL70357|")),
        "{}",
        r.text
    );
    assert_eq!(written(&s).await, versions, "nothing written");
    let dead = store
        .feeds()
        .dead_letters(Some("mapping"), false, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead.iter().any(|d| d.dup_key == "EPIC|HOSP|BAD1"));
    // a re-delivery of a failed message gets the same AE
    let again = s.post_hl7(&bad_date).await;
    assert_eq!(ack_code(&again.text), "AE");
    assert_eq!(again.header("x-hl7-duplicate"), Some("true"));
}

async fn unsupported_and_unreadable_messages_are_ar(s: Server, store: Arc<dyn Store>) {
    let unknown = a01("U1", "3").replace("ADT^A01^ADT_A01", "ZZZ^Z99");
    let r = s.post_hl7(&unknown).await;
    assert_eq!(ack_code(&r.text), "AR", "{}", r.text);
    assert!(r.text.contains("|200^^HL70357|"), "{}", r.text);
    let debug = a01("U2", "3")
        .replace("|MSG0001|P|", "|U2|D|")
        .replace("|U2|P|", "|U2|D|");
    let r = s.post_hl7(&debug).await;
    assert_eq!(ack_code(&r.text), "AR", "{}", r.text);
    assert!(r.text.contains("|202^^HL70357|"), "{}", r.text);
    let r = s.post_hl7("this is not an HL7 message").await;
    assert_eq!(ack_code(&r.text), "AR", "{}", r.text);
    let parse = store
        .feeds()
        .dead_letters(Some("parse"), false, 10)
        .await
        .unwrap();
    assert_eq!(parse.len(), 1);
    assert!(parse[0].dup_key.starts_with("sha256:"));
    let unsupported = store
        .feeds()
        .dead_letters(Some("unsupported"), false, 10)
        .await
        .unwrap();
    assert_eq!(unsupported.len(), 2);
    // a body over one message's limit is refused before it is stored
    let huge = format!("{}NTE|{}\r", a01("HUGE", "9"), "x".repeat(9 * 1024 * 1024));
    let r = s.post_hl7(&huge).await;
    assert_eq!(
        r.status.as_u16(),
        413,
        "{}",
        &r.text[..r.text.len().min(200)]
    );
    assert!(
        store
            .feeds()
            .dead_letters(None, true, 50)
            .await
            .unwrap()
            .iter()
            .all(|d| !d.dup_key.contains("HUGE")),
        "nothing stored"
    );
    // a body that is not ER7 is refused at the door
    let r = s
        .client
        .post(format!("{}/hl7v2", s.origin()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 415);
}

/// Two Patients share the MRN: the conditional update is ambiguous (a conflict). Once the
/// duplicate is removed, a replay of the dead letter is accepted and resolves it.
async fn a_conflict_is_replayed_after_the_fix(s: Server, store: Arc<dyn Store>) {
    let twin = |id: &str| {
        json!({"resourceType": "Patient", "id": id,
            "identifier": [{"system": "https://healporium.dev/fhir/sid/mrn", "value": "4242"}]})
    };
    s.put("Patient/twin-a", &twin("twin-a")).await.expect(201);
    s.put("Patient/twin-b", &twin("twin-b")).await.expect(201);
    let r = s.post_hl7(&a01("C1", "4242")).await;
    assert_eq!(ack_code(&r.text), "AE", "{}", r.text);
    let dead = store
        .feeds()
        .dead_letters(Some("conflict"), false, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let id = dead[0].message_id.clone();
    s.delete("Patient/twin-b").await.expect(204);
    let pipeline = healporium::app::feed_pipeline(
        &healporium::interaction::Context::new(store.clone()),
        "http://localhost/fhir",
        None,
    )
    .unwrap();
    let channel = healporium::feeds::runtime::Channel {
        default_zone: Some("+01:00".into()),
        ..healporium::feeds::runtime::Channel::default_channel(None)
    };
    let receipt = pipeline.replay(&id, &channel, None).await.unwrap().unwrap();
    assert_eq!(ack_code(&receipt.ack), "AA", "{}", receipt.ack);
    assert!(
        store
            .feeds()
            .dead_letters(Some("conflict"), false, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let resolved = store
        .feeds()
        .dead_letters(Some("conflict"), true, 10)
        .await
        .unwrap();
    assert!(resolved[0].resolved.is_some());
    assert_eq!(
        s.get("Patient/twin-a").await.expect(200).json()["name"][0]["family"],
        "Doe"
    );
    // the sender re-delivering now gets the new ACK
    let again = s.post_hl7(&a01("C1", "4242")).await;
    assert_eq!(ack_code(&again.text), "AA", "{}", again.text);
}

async fn mllp_over_a_real_socket(s: Server, store: Arc<dyn Store>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_, pipeline, _) = healporium::app::router_and_feeds(store.clone(), &options(), None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let limits = healporium::feeds::mllp::Limits {
        max_frame: 4096,
        idle: std::time::Duration::from_secs(5),
        frame: std::time::Duration::from_secs(1),
    };
    let channel = healporium::feeds::runtime::Channel {
        default_zone: Some("+01:00".into()),
        ..healporium::feeds::runtime::Channel::default_channel(None)
    };
    let server = tokio::spawn(healporium::feeds::mllp::serve(
        listener,
        pipeline.unwrap(),
        Arc::new(channel),
        limits,
        shutdown,
    ));
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    // two messages in one write, then one split over three writes, then an oversized one
    let mut wire = Vec::new();
    for m in [a01("L1", "501"), a01("L2", "502")] {
        wire.extend_from_slice(&healporium::feeds::mllp::frame(m.as_bytes()));
    }
    c.write_all(&wire).await.unwrap();
    let third = healporium::feeds::mllp::frame(a01("L3", "503").as_bytes());
    let (a, rest) = third.split_at(10);
    let (b, d) = rest.split_at(40);
    for part in [a, b, d] {
        c.write_all(part).await.unwrap();
        c.flush().await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    let big = format!("{}NTE|{}\r", a01("L4", "504"), "x".repeat(5000));
    c.write_all(&healporium::feeds::mllp::frame(big.as_bytes()))
        .await
        .unwrap();
    let mut acks: Vec<String> = Vec::new();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while acks.len() < 4 && tokio::time::Instant::now() < deadline {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(20), c.read(&mut chunk))
            .await
            .expect("an ACK in time")
            .unwrap();
        assert!(n > 0, "the connection stays open");
        buf.extend_from_slice(&chunk[..n]);
        while let Some(end) = buf.windows(2).position(|w| w == [0x1c, 0x0d]) {
            let frame: Vec<u8> = buf.drain(..end + 2).collect();
            assert_eq!(frame[0], 0x0b, "ACKs are framed");
            acks.push(String::from_utf8(frame[1..frame.len() - 2].to_vec()).unwrap());
        }
    }
    assert_eq!(acks.len(), 4, "{acks:?}");
    for (ack, control) in acks.iter().zip(["L1", "L2", "L3"]) {
        assert!(ack.contains(&format!("MSA|AA|{control}\r")), "{ack}");
    }
    assert_eq!(ack_code(&acks[3]), "AR", "{}", acks[3]);
    assert_eq!(search(&s, "Patient?_count=10").await.len(), 3);
    // the idle connection is closed by the server
    let mut chunk = [0u8; 16];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), c.read(&mut chunk))
        .await
        .expect("closed after the idle timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    // a sender that starts a frame and never finishes it is cut off after the frame timeout
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"\x0bMSH|^~\\&|SLOW").await.unwrap();
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), slow.read(&mut chunk))
        .await
        .expect("closed after the frame timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() < std::time::Duration::from_millis(4000),
        "the frame timeout (1 s), not the idle one (5 s): {:?}",
        started.elapsed()
    );
    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
}

/// `healporium import hl7v2` reads a directory of files (several messages per file), answers
/// with a summary by ACK code, and the operator finds the failed one with
/// `feeds dead-letter list`, reads it with `show`, and replays it.
#[test]
fn import_and_dead_letters_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("feeds.db").display());
    let files = dir.path().join("in");
    std::fs::create_dir(&files).unwrap();
    let two = format!("{}\n{}\n", a01("F1", "601"), a01("F2", "602")).replace('\r', "\n");
    std::fs::write(files.join("a.hl7"), two).unwrap();
    let bad = a01("F3", "603").replace("|19800214|", "|1980-02-14|");
    std::fs::write(files.join("b.hl7"), &bad).unwrap();
    let run = |args: &[&str]| {
        let out = crate::cli::bin()
            .args(args)
            .args(["--database-url", &db])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let dir_arg = files.display().to_string();
    let (code, _, err) = run(&["import", "hl7v2", &dir_arg, "--zone", "+01:00"]);
    assert_eq!(code, Some(1), "one message failed: {err}");
    assert!(
        err.contains("3 message(s) from 2 file(s)") && err.contains("AA 2, AE 1, AR 0"),
        "{err}"
    );
    // importing again: everything is a duplicate, answered from the inbox
    let (_, _, err) = run(&["import", "hl7v2", &dir_arg, "--zone", "+01:00"]);
    assert!(err.contains("3 already received"), "{err}");
    let (code, out, err) = run(&["feeds", "dead-letter", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("mapping") && out.contains("EPIC|HOSP|F3"),
        "{out}"
    );
    assert!(out.contains("1 dead letter(s)"), "{out}");
    let id = out
        .lines()
        .find(|l| l.contains("EPIC|HOSP|F3"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let (code, out, _) = run(&["feeds", "dead-letter", "show", &id]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("class     mapping") && out.contains("PID-7"),
        "{out}"
    );
    assert!(
        out.contains("PID|1||603^^^HEALPORIUM"),
        "the message as received: {out}"
    );
    // nothing was fixed, so the replay fails the same way
    let (code, _, err) = run(&["feeds", "dead-letter", "replay", &id, "--zone", "+01:00"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(": AE"), "{err}");
    let (_, out, _) = run(&["feeds", "dead-letter", "list", "--class", "mapping"]);
    assert!(out.contains("      1  "), "one replay counted: {out}");
    let (code, _, err) = run(&["feeds", "dead-letter", "list", "--class", "nonsense"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--class"), "{err}");
}

/// What mapping a golden case gives, as its expected file holds it.
fn golden_outcome(set: &healporium::feeds::mapping_set::MappingSet, text: &str) -> Value {
    let m = healporium::hl7v2::er7::parse(text).expect("a golden message parses");
    let (code, trigger, _) = m.message_type();
    if set.message_map(&format!("{code}^{trigger}")).is_none() {
        return json!({"ack": "AR", "errors": ["MSH-9 200"]});
    }
    let list = |issues: &[healporium::feeds::map::MapIssue], errors: bool| -> Vec<String> {
        issues
            .iter()
            .filter(|i| i.error == errors)
            .map(|i| format!("{} {}", i.location.as_deref().unwrap_or("-"), i.code))
            .collect()
    };
    match set.map_message(&m, Some("+01:00")) {
        Ok(mapped) => {
            let mut v = json!({
                "ack": "AA",
                "warnings": list(&mapped.issues, false),
                "bundle": mapped.bundle,
            });
            if !mapped.commands.is_empty() {
                v["commands"] = mapped
                    .commands
                    .iter()
                    .map(|c| json!({"kind": c.kind, "target": c.target, "segment": c.segment, "parameters": c.parameters}))
                    .collect();
            }
            v
        }
        Err(issues) => {
            let refused = issues.iter().filter(|i| i.error).all(|i| i.code == "200");
            json!({"ack": if refused { "AR" } else { "AE" }, "errors": list(&issues, true)})
        }
    }
}

/// The golden cases beside the maps (mappings/hl7v2/golden: a message and the transaction
/// Bundle and ACK it must give). Mapping is pure, so each must match exactly; then every
/// message goes through a real server, whose ACK must agree — the golden Bundles are valid
/// FHIR that the server commits. `GOLDEN_UPDATE=1 cargo test golden` rewrites the expected
/// files after a deliberate map change (review the diff).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_cases_map_exactly_and_commit() {
    let set = healporium::feeds::mapping_set::MappingSet::embedded().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/hl7v2/golden");
    let mut cases: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 22, "{} golden cases", cases.len());
    let update = std::env::var("GOLDEN_UPDATE").is_ok_and(|v| v == "1");
    let mut wrong = Vec::new();
    let mut messages = Vec::new();
    for case in &cases {
        let text = std::fs::read_to_string(case).unwrap().replace('\n', "\r");
        let got = golden_outcome(&set, &text);
        let expected_path = case.with_extension("json");
        if update {
            std::fs::write(
                &expected_path,
                serde_json::to_string_pretty(&got).unwrap() + "\n",
            )
            .unwrap();
        }
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(&expected_path)
                .unwrap_or_else(|_| panic!("{} has no expected file", case.display())),
        )
        .unwrap();
        if got != expected {
            wrong.push(format!(
                "{}: got\n{}",
                case.display(),
                serde_json::to_string_pretty(&got).unwrap()
            ));
        }
        messages.push((
            case.clone(),
            text,
            expected["ack"].as_str().unwrap().to_string(),
            expected.get("commands").is_some(),
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    let (s, _) = crate::common::start_store(crate::common::Backend::Sqlite, options())
        .await
        .unwrap();
    for (case, text, ack, commands) in messages {
        let r = s.post_hl7(&text).await;
        if commands {
            // the golden server has no credit lines: the payment is refused after the rest
            assert_eq!(ack_code(&r.text), "AE", "{}: {}", case.display(), r.text);
            assert!(r.text.contains("no open credit line"), "{}", r.text);
        } else {
            assert_eq!(ack_code(&r.text), ack, "{}: {}", case.display(), r.text);
        }
    }
}

/// An A08 (update) recorded on the 6th arrives before the A01 (admission) recorded on the 5th:
/// the A01 is accepted but leaves the newer data as it is, and a still newer A08 applies.
async fn an_older_message_does_not_overwrite_newer_data(s: Server, _store: Arc<dyn Store>) {
    let at = |control: &str, trigger: &str, when: &str, street: &str| {
        A01.replace(
            "ADT^A01^ADT_A01|MSG0001",
            &format!("ADT^{trigger}^ADT_A01|{control}"),
        )
        .replace(
            "EVN|A01|20240105083000+0100",
            &format!("EVN|{trigger}|{when}"),
        )
        .replace("1 Main St", street)
    };
    let address = |s: &Server| {
        let s = s.clone();
        async move {
            let p = search(
                &s,
                "Patient?identifier=https://healporium.dev/fhir/sid/mrn|12345",
            )
            .await;
            assert_eq!(p.len(), 1);
            p[0]["address"][0]["line"][0].as_str().unwrap().to_string()
        }
    };
    let r = s
        .post_hl7(&at("N1", "A08", "20240106083000+0100", "2 Oak Ave"))
        .await;
    assert_eq!(ack_code(&r.text), "AA", "{}", r.text);
    let versions = written(&s).await;
    let r = s
        .post_hl7(&at("N2", "A01", "20240105083000+0100", "1 Main St"))
        .await;
    assert_eq!(ack_code(&r.text), "AA", "{}", r.text);
    assert!(r.text.contains("later message"), "{}", r.text);
    assert_eq!(address(&s).await, "2 Oak Ave");
    assert_eq!(search(&s, "Encounter").await.len(), 1);
    assert!(
        written(&s).await - versions <= 1,
        "nothing but the Provenance is written"
    );
    let r = s
        .post_hl7(&at("N3", "A08", "20240107083000+0100", "3 Elm St"))
        .await;
    assert_eq!(ack_code(&r.text), "AA", "{}", r.text);
    assert!(!r.text.contains("later message"), "{}", r.text);
    assert_eq!(address(&s).await, "3 Elm St");
}

/// ADT^A40: the record of MRG-1 becomes inactive and `replaced-by` the surviving one, which
/// `replaces` it; the same merge sent again (another control id) writes nothing.
async fn a_merge_links_the_records_once(s: Server, _store: Arc<dyn Store>) {
    let old = a01("OLD", "55555");
    assert_eq!(ack_code(&s.post_hl7(&old).await.text), "AA");
    let merge = |control: &str| {
        format!(
            "MSH|^~\\&|EPIC|HOSP|HP|HP|20240108090000+0100||ADT^A40^ADT_A39|{control}|P|2.5.1\r\
             EVN|A40|20240108090000+0100\r\
             PID|1||12345^^^HEALPORIUM^MR||Doe^Jane^Q||19800214|F\r\
             MRG|55555^^^HEALPORIUM^MR\r"
        )
    };
    let r = s.post_hl7(&merge("M1")).await;
    assert_eq!(ack_code(&r.text), "AA", "{}", r.text);
    let find = |mrn: &str| {
        let s = s.clone();
        let q = format!("Patient?identifier=https://healporium.dev/fhir/sid/mrn|{mrn}");
        async move { search(&s, &q).await }
    };
    let prior = find("55555").await;
    let survivor = find("12345").await;
    assert_eq!((prior.len(), survivor.len()), (1, 1));
    assert_eq!(prior[0]["active"], false);
    assert_eq!(prior[0]["link"][0]["type"], "replaced-by");
    assert_eq!(
        prior[0]["link"][0]["other"]["reference"],
        format!("Patient/{}", survivor[0]["id"].as_str().unwrap())
    );
    assert_eq!(survivor[0]["link"][0]["type"], "replaces");
    let versions = written(&s).await;
    let r = s.post_hl7(&merge("M2")).await;
    assert_eq!(ack_code(&r.text), "AA", "{}", r.text);
    assert_eq!(
        written(&s).await,
        versions,
        "a merge sent twice merges once"
    );
}

/// A channel file of an operator's own mapping set: a lab channel that takes ORU^R01 in
/// version 2.5.1 only, in enhanced acknowledgement mode (MSH-16 decides whether an ACK goes
/// back).
async fn a_channel_takes_what_it_declares(_s: Server, store: Arc<dyn Store>) {
    use healporium::feeds::mapping_set::MappingSet;
    use healporium::hl7v2::ack::AckCode;
    let mut files = MappingSet::embedded_files();
    files.push((
        "channels/lab.json".into(),
        br#"{"kind": "Channel", "name": "lab", "bind": "127.0.0.1:0", "accept": ["ORU^R01"],
            "versions": ["2.5.1"], "ack": "enhanced", "zone": "+01:00"}"#
            .to_vec(),
    ));
    let set = Arc::new(MappingSet::from_files(files).unwrap());
    let lab = set.channels().iter().find(|c| c.name == "lab").unwrap();
    assert_eq!(lab.bind.as_deref(), Some("127.0.0.1:0"));
    let pipeline = healporium::app::feed_pipeline(
        &healporium::interaction::Context::new(store.clone()),
        "http://localhost/fhir",
        Some(set.clone()),
    )
    .unwrap();
    let channel = healporium::app::feed_channel(&pipeline, "lab", None, None);
    assert_eq!(channel.default_zone.as_deref(), Some("+01:00"));
    let r = pipeline
        .receive(&channel, None, None, a01("CH1", "801").as_bytes())
        .await;
    assert_eq!(r.code, AckCode::Reject, "{}", r.ack);
    assert!(r.ack.contains("not taken on channel lab"), "{}", r.ack);
    let oru = |control: &str, version: &str, ack_type: &str| {
        format!(
            "MSH|^~\\&|LAB|HOSP|HP|HP|20240105||ORU^R01^ORU_R01|{control}|P|{version}|||AL|{ack_type}\r\
             PID|1||802^^^HEALPORIUM^MR||Doe^John\r\
             OBR|1|ORD1|FIL1|24323-8^Metabolic panel^LN|||20240105070000+0000\r\
             OBX|1|NM|2345-7^Glucose^LN||95|mg/dL^^UCUM|70-99|N|||F|||20240105070000+0000\r"
        )
    };
    let r = pipeline
        .receive(&channel, None, None, oru("CH2", "2.3", "AL").as_bytes())
        .await;
    assert_eq!(r.code, AckCode::Reject, "{}", r.ack);
    assert!(r.ack.contains("|203^^HL70357|"), "{}", r.ack);
    assert!(r.send, "AL: always answered");
    let r = pipeline
        .receive(&channel, None, None, oru("CH3", "2.5.1", "NE").as_bytes())
        .await;
    assert_eq!(r.code, AckCode::Accept, "{}", r.ack);
    assert!(!r.send, "NE: never answered");
    let r = pipeline
        .receive(&channel, None, None, oru("CH4", "2.5.1", "ER").as_bytes())
        .await;
    assert_eq!(r.code, AckCode::Accept);
    assert!(!r.send, "ER: answered on errors only");
    let r = pipeline
        .receive(&channel, None, None, oru("CH5", "2.9", "ER").as_bytes())
        .await;
    assert_eq!(r.code, AckCode::Reject);
    assert!(r.send, "ER: an error is answered");
    // the default channel of the same set takes what the lab channel refuses
    let default = healporium::app::feed_channel(&pipeline, "default", None, Some("+01:00"));
    let r = pipeline
        .receive(&default, None, None, a01("CH6", "803").as_bytes())
        .await;
    assert_eq!(r.code, AckCode::Accept, "{}", r.ack);
}

mod csv_import {
    use crate::common::{Backend, fresh_database};
    use healporium::config::{DatabaseArgs, ImportCsvArgs};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        csv_rows_are_imported_and_bad_ones_named(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        if crate::common::postgres_url().is_none() {
            eprintln!("skipped: HEALPORIUM_TEST_DATABASE_URL not set");
            return;
        }
        csv_rows_are_imported_and_bad_ones_named(Backend::Postgres).await;
    }

    async fn import(url: &str, map: &str, file: &std::path::Path) -> Result<String, String> {
        healporium::app::feeds::import_csv(ImportCsvArgs {
            database: DatabaseArgs {
                database_url: url.to_string(),
            },
            map: map.to_string(),
            files: vec![file.to_path_buf()],
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// `import csv` writes every good row, names each bad one by row and column (or by the
    /// server's refusal), and importing the same file again writes nothing new.
    async fn csv_rows_are_imported_and_bad_ones_named(backend: Backend) {
        let (url, dir, pg) = fresh_database(backend).await.unwrap();
        let store = healporium::store::open(&url).await.unwrap();
        let s = crate::common::serve(backend, store, &super::options(), dir, pg).await;
        let tmp = tempfile::tempdir().unwrap();
        let patients = tmp.path().join("patients.csv");
        std::fs::write(
            &patients,
            "mrn,family,given,birth_date,sex,phone\n\
             100,Doe,Jane,1980-02-14,F,555-1234\n\
             101,Roe,Rick,1975-06-01,M,\n\
             102,\"Smith, Jr\",Al,1990-01-31,U,\n\
             103,Bad,Date,1980-13-01,F,\n\
             104,Bad,Sex,1980-01-01,Q,\n",
        )
        .unwrap();
        let err = import(&url, "patients", &patients).await.unwrap_err();
        assert!(
            err.contains("5 row(s)") && err.contains("3 written or unchanged, 2 failed"),
            "{err}"
        );
        assert!(err.contains("row 5, column birth_date"), "{err}");
        assert!(err.contains("row 6, column sex"), "{err}");
        let found = super::search(&s, "Patient?_count=50").await;
        assert_eq!(found.len(), 3);
        assert!(found.iter().any(|p| p["name"][0]["family"] == "Smith, Jr"));
        let versions = super::written(&s).await;
        let _ = import(&url, "patients", &patients).await;
        assert_eq!(
            super::written(&s).await,
            versions,
            "a second import changes nothing"
        );
        // coverage rows reference patients by MRN; an unknown one is that row's error
        s.put(
            "Organization/ins1",
            &serde_json::json!({"resourceType": "Organization", "id": "ins1", "name": "Insurer"}),
        )
        .await
        .expect(201);
        let coverage = tmp.path().join("coverage.csv");
        std::fs::write(
            &coverage,
            "member_id,mrn,payor,plan,start,end\nM-1,100,ins1,Gold,2024-01-01,2024-12-31\nM-2,999,ins1,Gold,2024-01-01,\n",
        )
        .unwrap();
        let err = import(&url, "coverage", &coverage).await.unwrap_err();
        assert!(err.contains("1 written or unchanged, 1 failed"), "{err}");
        assert!(err.contains("row 3 (key M-2)"), "{err}");
        let cov = super::search(&s, "Coverage").await;
        assert_eq!(cov.len(), 1);
        let pid = found
            .iter()
            .find(|p| p["identifier"][0]["value"] == "100")
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(cov[0]["beneficiary"]["reference"], format!("Patient/{pid}"));
        let appts = tmp.path().join("appointments.csv");
        std::fs::write(
            &appts,
            "appointment_id,mrn,start,end,status,description\n\
             A-1,100,2024-02-01T09:00:00+01:00,2024-02-01T09:30:00+01:00,booked,Check-up\n",
        )
        .unwrap();
        let ok = import(&url, "appointments", &appts).await.unwrap();
        assert!(ok.contains("1 written or unchanged, 0 failed"), "{ok}");
        // payments go to the patient's credit line as `$credit-payment` calls, once
        let apply = serde_json::json!({"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": format!("Patient/{pid}")}},
            {"name": "product", "valueCode": "standard"},
            {"name": "requestedLimit", "valueMoney": {"value": 1000, "currency": "USD"}},
            {"name": "requestId", "valueString": "open-100"}]});
        let opened = s
            .post("Account/$credit-apply", &apply)
            .await
            .expect(200)
            .json();
        let line = opened["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "account")
            .unwrap()["resource"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let pay = tmp.path().join("payments.csv");
        std::fs::write(
            &pay,
            format!(
                "payment_id,line,amount,currency,transaction_id,paid_on\n\
                 PAY-1,{line},25.00,USD,tx-1,2024-03-01\n\
                 PAY-2,no-such-line,5.00,USD,tx-2,2024-03-01\n"
            ),
        )
        .unwrap();
        let err = import(&url, "payments", &pay).await.unwrap_err();
        assert!(err.contains("1 written or unchanged, 1 failed"), "{err}");
        assert!(err.contains("row 3 (key PAY-2)"), "{err}");
        let _ = import(&url, "payments", &pay).await;
        let recs = super::search(&s, "PaymentReconciliation").await;
        assert_eq!(
            recs.len(),
            1,
            "one payment however often the file is imported"
        );
        assert_eq!(recs[0]["paymentIdentifier"]["value"], "tx-1");
        let missing = import(&url, "no-such-map", &appts).await.unwrap_err();
        assert!(
            missing.contains("shipped: appointments, charges, coverage, patients, payments"),
            "{missing}"
        );
    }
}

/// ADT^A47: the patient found by its prior identifier (MRG-1) gets the new one (PID-3); it
/// stays the same resource, and the prior identifier finds nothing afterwards.
async fn an_identifier_change_keeps_the_patient(s: Server, _store: Arc<dyn Store>) {
    assert_eq!(ack_code(&s.post_hl7(&a01("ID1", "12345")).await.text), "AA");
    let by = |mrn: &str| {
        let s = s.clone();
        let q = format!("Patient?identifier=https://healporium.dev/fhir/sid/mrn|{mrn}");
        async move { search(&s, &q).await }
    };
    let before = by("12345").await;
    assert_eq!(before.len(), 1);
    let change = "MSH|^~\\&|EPIC|HOSP|HP|HP|20240109090000+0100||ADT^A47^ADT_A30|ID2|P|2.5.1\r\
                  EVN|A47|20240109090000+0100\r\
                  PID|1||12399^^^HEALPORIUM^MR||Doe^Jane^Q||19800214|F\r\
                  MRG|12345^^^HEALPORIUM^MR\r";
    let r = s.post_hl7(change).await;
    assert_eq!(ack_code(&r.text), "AA", "{}", r.text);
    let after = by("12399").await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0]["id"], before[0]["id"], "the same Patient");
    assert!(by("12345").await.is_empty());
    // an unknown authority in MRG-1 is an error naming it
    let bad = change
        .replace("MRG|12345^^^HEALPORIUM^MR", "MRG|12345^^^ELSEWHERE^MR")
        .replace("|ID2|", "|ID3|");
    let r = s.post_hl7(&bad).await;
    assert_eq!(ack_code(&r.text), "AE", "{}", r.text);
    assert!(r.text.contains("|103^^HL70357|"), "{}", r.text);
}

/// DFT^P03 with a charge and a payment: the charge is a ChargeItem on the patient's Account,
/// the payment (FT1-6 PY, a negative credit of 50.00) is posted to the patient's credit line
/// through `$credit-payment` — a PaymentReconciliation with the processor's transaction id,
/// never a charge. The same message sent again posts nothing twice; without a credit line
/// the payment is an AE and a dead letter to replay once the line exists.
async fn a_dft_payment_posts_to_the_credit_line(s: Server, store: Arc<dyn Store>) {
    let dft = |control: &str, mrn: &str| {
        format!(
            "MSH|^~\\&|BILL|HOSP|HP|HP|20240106||DFT^P03^DFT_P03|{control}|P|2.5.1\r\
             EVN|P03|20240106100000+0100\r\
             PID|1||{mrn}^^^HEALPORIUM^MR||Doe^Jane^Q||19800214|F||||||||||ACC-{mrn}^^^HEALPORIUM^AN\r\
             FT1|1|T-1001||20240105140000+0100||CG|99213^Office visit^CPT|||1|120.00&USD\r\
             FT1|2|PAY-77||20240106100000+0100||PY|CASH^Cash payment^L|||1|-50.00&USD\r"
        )
    };
    // no credit line yet: the charge commits, the payment is refused and kept
    assert_eq!(ack_code(&s.post_hl7(&a01("P0", "7001")).await.text), "AA");
    let r = s.post_hl7(&dft("P1", "7001")).await;
    assert_eq!(ack_code(&r.text), "AE", "{}", r.text);
    assert!(r.text.contains("no open credit line"), "{}", r.text);
    assert!(
        r.text.contains("ERR||FT1^^"),
        "the ERR names the FT1: {}",
        r.text
    );
    assert_eq!(search(&s, "ChargeItem").await.len(), 1, "the charge is in");
    assert!(search(&s, "PaymentReconciliation").await.is_empty());
    let dead = store
        .feeds()
        .dead_letters(Some("validation"), false, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    // the patient opens a line; the operator replays: the payment lands once
    let pid = search(
        &s,
        "Patient?identifier=https://healporium.dev/fhir/sid/mrn|7001",
    )
    .await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let apply = json!({"resourceType": "Parameters", "parameter": [
        {"name": "patient", "valueReference": {"reference": format!("Patient/{pid}")}},
        {"name": "product", "valueCode": "standard"},
        {"name": "requestedLimit", "valueMoney": {"value": 1000, "currency": "USD"}},
        {"name": "requestId", "valueString": "open-7001"}]});
    s.post("Account/$credit-apply", &apply).await.expect(200);
    let pipeline = healporium::app::feed_pipeline(
        &healporium::interaction::Context::new(store.clone()),
        "http://localhost/fhir",
        None,
    )
    .unwrap();
    let channel = healporium::app::feed_channel(&pipeline, "default", None, Some("+01:00"));
    let receipt = pipeline
        .replay(&dead[0].message_id, &channel, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack_code(&receipt.ack), "AA", "{}", receipt.ack);
    let payments = search(&s, "PaymentReconciliation").await;
    assert_eq!(payments.len(), 1, "{payments:?}");
    assert_eq!(payments[0]["paymentIdentifier"]["value"], "PAY-77");
    assert_eq!(payments[0]["paymentAmount"]["value"].to_string(), "50.00");
    assert_eq!(
        search(&s, "ChargeItem").await.len(),
        1,
        "a payment is never a charge"
    );
    // the sender re-delivers (answered from the inbox) and resends under a new control id
    // (the same payment id: the ledger takes it once)
    let again = s.post_hl7(&dft("P1", "7001")).await;
    assert_eq!(again.header("x-hl7-duplicate"), Some("true"));
    assert_eq!(ack_code(&again.text), "AA");
    let resent = s.post_hl7(&dft("P2", "7001")).await;
    assert_eq!(ack_code(&resent.text), "AA", "{}", resent.text);
    assert_eq!(
        search(&s, "PaymentReconciliation").await.len(),
        1,
        "the same payment, once"
    );
}

/// The pipeline over a real store with a sink of our own: a store that keeps failing
/// transiently, and one that records how many commits of one patient overlap.
mod pipeline_behaviour {
    use crate::common::{Backend, fresh_database};
    use async_trait::async_trait;
    use healporium::auth::Principal;
    use healporium::feeds::mapping_set::MappingSet;
    use healporium::feeds::runtime::{Channel, Class, Pipeline, Refusal, Sink};
    use healporium::hl7v2::ack::AckCode;
    use serde_json::Value;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails the first `fail` commits as the store being unavailable, then succeeds; tracks
    /// the largest number of commits in flight at once.
    struct TestSink {
        fail: usize,
        calls: AtomicUsize,
        in_flight: AtomicUsize,
        most: AtomicUsize,
    }

    #[async_trait]
    impl Sink for TestSink {
        async fn commit(
            &self,
            _bundle: Value,
            _provenance: Value,
            _principal: Option<Principal>,
            _source: Option<String>,
        ) -> Result<(), Refusal> {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self.calls.fetch_add(1, Ordering::SeqCst) < self.fail {
                return Err(Refusal {
                    class: Class::TransientExhausted,
                    status: 503,
                    issues: vec![(None, "the database is busy".into())],
                });
            }
            Ok(())
        }

        async fn command(
            &self,
            _kind: &str,
            _target: &str,
            _parameters: Value,
            _principal: Option<Principal>,
            _source: Option<String>,
        ) -> Result<(), Refusal> {
            Ok(())
        }
    }

    fn sink(fail: usize) -> Arc<TestSink> {
        Arc::new(TestSink {
            fail,
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        })
    }

    async fn pipeline(s: Arc<TestSink>) -> (Pipeline, Option<tempfile::TempDir>) {
        let (url, dir, _) = fresh_database(Backend::Sqlite).await.unwrap();
        let store = healporium::store::open(&url).await.unwrap();
        let mut p = Pipeline::new(MappingSet::shared().unwrap(), store.feeds(), s);
        p.backoff_ms = 5;
        (p, dir)
    }

    fn channel() -> Channel {
        Channel {
            default_zone: Some("+01:00".into()),
            ..Channel::default_channel(None)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transient_failures_are_retried_then_dead_lettered() {
        let s = sink(2);
        let (p, _db) = pipeline(s.clone()).await;
        let r = p
            .receive(&channel(), None, None, super::a01("T1", "1").as_bytes())
            .await;
        assert_eq!(
            r.code,
            AckCode::Accept,
            "two failures, then the third try: {}",
            r.ack
        );
        assert_eq!(s.calls.load(Ordering::SeqCst), 3);
        let s = sink(usize::MAX);
        let (mut p, _db2) = pipeline(s.clone()).await;
        p.retries = 2;
        let r = p
            .receive(&channel(), None, None, super::a01("T2", "2").as_bytes())
            .await;
        assert_eq!(r.code, AckCode::Error, "{}", r.ack);
        assert_eq!(s.calls.load(Ordering::SeqCst), 3, "one try and two retries");
        let dead = p
            .store()
            .dead_letters(Some("transient-exhausted"), false, 10)
            .await
            .unwrap();
        assert_eq!(dead.len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_patients_messages_commit_one_at_a_time() {
        let s = sink(0);
        let (p, _db) = pipeline(s.clone()).await;
        let p = Arc::new(p);
        let mut tasks = Vec::new();
        for i in 0..6 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                let m = super::a01(&format!("O{i}"), "4711");
                p.receive(&channel(), None, None, m.as_bytes()).await.code
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), AckCode::Accept);
        }
        assert_eq!(
            s.most.load(Ordering::SeqCst),
            1,
            "never two commits of one patient at once"
        );
        // different patients do not wait for each other
        let s = sink(0);
        let (p, _db2) = pipeline(s.clone()).await;
        let p = Arc::new(p);
        let mut tasks = Vec::new();
        for i in 0..6 {
            let p = p.clone();
            tasks.push(tokio::spawn(async move {
                let m = super::a01(&format!("D{i}"), &format!("50{i}"));
                p.receive(&channel(), None, None, m.as_bytes()).await.code
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), AckCode::Accept);
        }
        assert!(s.most.load(Ordering::SeqCst) > 1, "patients in parallel");
    }
}
