//! Scheduling on both databases: a Schedule's weekly availability generates free Slots
//! (from the job, once, never over a booked or changed slot), `Appointment/$find` proposes
//! them, `$hold` keeps them for one patient, `$book` makes them busy in the booking's
//! transaction, and cancelling (update, PATCH, delete) frees them; a busy or held slot is a
//! 409 that leaves the store as it was, on every write path. Fifty parallel `$book` calls for
//! one slot, over two server processes sharing the database, give exactly one booking.

use crate::common::{Backend, Server, fresh_database};
use crate::jobs::Node;
use healporium::fhir::types::Instant;
use healporium::interaction::scheduling::AVAILABILITY_URL;
use healporium::store::Store;
use serde_json::{Value, json};
use std::sync::Arc;

/// Runs every job that is due (the outbox jobs of Schedule writes, and others).
async fn run_jobs(store: &Arc<dyn Store>) {
    let ctx = healporium::interaction::Context::new(store.clone());
    let config = crate::common::serve_config();
    let registry = healporium::app::job_kinds(&ctx, &config.jobs).unwrap();
    let w = healporium::jobs::Worker::new(
        store.clone(),
        registry,
        Arc::new(healporium::jobs::SystemClock),
        healporium::jobs::WorkerOptions::default(),
    );
    while w.tick().await > 0 {}
}

fn schedule(id: &str, practitioner: &str, horizon_days: i64) -> Value {
    json!({"resourceType": "Schedule", "id": id, "active": true,
        "actor": [{"reference": format!("Practitioner/{practitioner}")}],
        "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": "394814009",
            "display": "General practice"}]}],
        "extension": [{"url": AVAILABILITY_URL, "extension": [
            {"url": "timeZone", "valueCode": "Europe/Berlin"},
            {"url": "slotMinutes", "valueInteger": 30},
            {"url": "horizonDays", "valueInteger": horizon_days},
            {"url": "available", "extension": [
                {"url": "daysOfWeek", "valueCode": "mon"}, {"url": "daysOfWeek", "valueCode": "tue"},
                {"url": "daysOfWeek", "valueCode": "wed"}, {"url": "daysOfWeek", "valueCode": "thu"},
                {"url": "daysOfWeek", "valueCode": "fri"}, {"url": "daysOfWeek", "valueCode": "sat"},
                {"url": "daysOfWeek", "valueCode": "sun"},
                {"url": "start", "valueTime": "00:00:00"}, {"url": "end", "valueTime": "23:30:00"}]}]}]})
}

fn find_params(from: i64, days: i64, extra: &[Value]) -> Value {
    let mut p = vec![
        json!({"name": "start", "valueDateTime": Instant::from_millis(from).to_fhir()}),
        json!({"name": "end", "valueDateTime": Instant::from_millis(from + days * 86_400_000).to_fhir()}),
    ];
    p.extend(extra.iter().cloned());
    json!({"resourceType": "Parameters", "parameter": p})
}

fn for_patient(proposal: &Value, patient: &str) -> Value {
    let mut a = proposal.clone();
    let parts = a["participant"].as_array_mut().unwrap();
    parts.retain(|p| {
        !p["actor"]["reference"]
            .as_str()
            .unwrap_or("")
            .starts_with("Patient/")
    });
    parts.push(json!({"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"}));
    json!({"resourceType": "Parameters", "parameter": [{"name": "appt-resource", "resource": a}]})
}

async fn slot_status(s: &Server, slot: &str) -> String {
    s.get(&format!("Slot/{slot}")).await.expect(200).json()["status"]
        .as_str()
        .unwrap()
        .to_string()
}

fn slot_of(appointment: &Value) -> String {
    appointment["slot"][0]["reference"]
        .as_str()
        .unwrap()
        .trim_start_matches("Slot/")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_find_hold_book_and_cancel() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((s, store)) = crate::common::start_store(backend, Default::default()).await else {
            continue;
        };
        for r in [
            json!({"resourceType": "Practitioner", "id": "gp", "name": [{"family": "Gee"}]}),
            json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "One"}]}),
            json!({"resourceType": "Patient", "id": "p2", "name": [{"family": "Two"}]}),
        ] {
            s.put(
                &format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                ),
                &r,
            )
            .await
            .expect(201);
        }
        // a malformed availability is refused, naming the element
        let mut bad = schedule("bad", "gp", 3);
        bad["extension"][0]["extension"][0]["valueCode"] = json!("Mars/Olympus");
        let r = s.put("Schedule/bad", &bad).await.expect(422);
        assert!(
            r.expressions().iter().any(|e| e.contains("timeZone")),
            "{backend:?}: {}",
            r.text
        );
        s.put("Schedule/gp-week", &schedule("gp-week", "gp", 3))
            .await
            .expect(201);
        let now = Instant::now().millis();
        run_jobs(&store).await;
        let slots = s
            .get("Slot?schedule=Schedule/gp-week&_count=500&_sort=start")
            .await
            .expect(200)
            .json();
        let generated = slots["entry"].as_array().unwrap();
        // three days of 47 half-hours, less what has passed today
        assert!(
            generated.len() >= 94 && generated.len() <= 141,
            "{backend:?}: {}",
            generated.len()
        );
        for e in generated {
            let slot = &e["resource"];
            assert_eq!(slot["status"], "free");
            assert_eq!(slot["specialty"][0]["coding"][0]["code"], "394814009");
            let start = healporium::search::dates::range(slot["start"].as_str().unwrap())
                .unwrap()
                .0;
            assert!(start >= now - 60_000, "{backend:?}: a slot in the past");
        }
        // $find proposes them, filtered by practitioner and specialty
        let found = s
            .post(
                "Appointment/$find",
                &find_params(
                    now,
                    3,
                    &[
                        json!({"name": "practitioner", "valueReference": {"reference": "Practitioner/gp"}}),
                        json!({"name": "specialty", "valueCoding": {"system": "http://snomed.info/sct", "code": "394814009"}}),
                        json!({"name": "patient", "valueReference": {"reference": "Patient/p1"}}),
                        json!({"name": "_count", "valueInteger": 10}),
                    ],
                ),
            )
            .await
            .expect(200)
            .json();
        assert_eq!(found["type"], "searchset");
        let proposals: Vec<Value> = found["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .collect();
        assert_eq!(proposals.len(), 10, "{backend:?}");
        let first = &proposals[0];
        assert_eq!(first["status"], "proposed");
        assert!(first["start"].is_string() && first["end"].is_string());
        let actors: Vec<&str> = first["participant"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["actor"]["reference"].as_str().unwrap())
            .collect();
        assert_eq!(actors, ["Practitioner/gp", "Patient/p1"]);
        // another practitioner's and another specialty's slots are not offered
        for extra in [
            json!({"name": "practitioner", "valueReference": {"reference": "Practitioner/nobody"}}),
            json!({"name": "specialty", "valueCode": "419772000"}),
        ] {
            let none = s
                .post("Appointment/$find", &find_params(now, 3, &[extra]))
                .await
                .expect(200)
                .json();
            assert_eq!(none["total"], 0, "{backend:?}: {none}");
        }
        // bad input names the parameter
        let r = s
            .post(
                "Appointment/$find",
                &json!({"resourceType": "Parameters", "parameter": [
                    {"name": "end", "valueDateTime": "2030-01-01T00:00:00Z"}]}),
            )
            .await
            .expect(422);
        assert_eq!(
            r.expressions(),
            ["Parameters.parameter.where(name = 'start')"]
        );
        s.post("Appointment/$find", &find_params(now, 400, &[]))
            .await
            .expect(422);

        // p1 holds the first slot: it is no longer offered to p2, still to p1
        let slot = slot_of(first);
        let held = s
            .post("Appointment/$hold", &for_patient(first, "p1"))
            .await
            .expect(200)
            .json();
        assert_eq!(held["status"], "pending");
        assert_eq!(slot_status(&s, &slot).await, "busy-tentative");
        let offered = |bundle: &Value| {
            bundle["entry"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| slot_of(&e["resource"]) == slot)
        };
        let p = |patient: &str| {
            find_params(
                now,
                3,
                &[
                    json!({"name": "patient", "valueReference": {"reference": format!("Patient/{patient}")}}),
                    json!({"name": "_count", "valueInteger": 10}),
                ],
            )
        };
        assert!(!offered(
            &s.post("Appointment/$find", &p("p2"))
                .await
                .expect(200)
                .json()
        ));
        assert!(offered(
            &s.post("Appointment/$find", &p("p1"))
                .await
                .expect(200)
                .json()
        ));
        // the Slot names no patient
        assert!(!s.get(&format!("Slot/{slot}")).await.text.contains("p1"));
        // p2 may neither hold nor book it; nothing is written
        let before = s.version_count().await;
        let r = s
            .post("Appointment/$book", &for_patient(first, "p2"))
            .await
            .expect(409);
        assert_eq!(r.expressions(), ["Appointment.slot"]);
        s.post("Appointment/$hold", &for_patient(first, "p2"))
            .await
            .expect(409);
        assert_eq!(s.version_count().await, before, "{backend:?}");
        // p1 books it
        let booked = s
            .post("Appointment/$book", &for_patient(first, "p1"))
            .await
            .expect(201);
        assert!(booked.header("location").is_some());
        let booked = booked.json();
        assert_eq!(booked["status"], "booked");
        let appt = booked["id"].as_str().unwrap().to_string();
        assert_eq!(slot_status(&s, &slot).await, "busy");
        let again = s
            .post("Appointment/$book", &for_patient(first, "p2"))
            .await
            .expect(409);
        assert!(again.text.contains("is not free"), "{}", again.text);
        // a plain create of a booked Appointment on the busy slot is refused the same way
        let mut direct = booked.clone();
        direct.as_object_mut().unwrap().remove("id");
        direct.as_object_mut().unwrap().remove("meta");
        let before = s.version_count().await;
        s.post("Appointment", &direct).await.expect(409);
        assert_eq!(s.version_count().await, before);

        // cancelling by update frees the slot; p2 books it; cancelling by PATCH frees it
        let mut cancelled = booked.clone();
        cancelled["status"] = json!("cancelled");
        s.put(&format!("Appointment/{appt}"), &cancelled)
            .await
            .expect(200);
        assert_eq!(slot_status(&s, &slot).await, "free");
        let second = s
            .post("Appointment/$book", &for_patient(first, "p2"))
            .await
            .expect(201)
            .json();
        let second_id = second["id"].as_str().unwrap();
        assert_eq!(slot_status(&s, &slot).await, "busy");
        s.patch_with(
            &format!("Appointment/{second_id}"),
            "application/json-patch+json",
            &json!([{"op": "replace", "path": "/status", "value": "cancelled"}]),
            &[],
        )
        .await
        .expect(200);
        assert_eq!(slot_status(&s, &slot).await, "free");
        // re-booking the cancelled Appointment by update takes the slot again; delete frees it
        s.put(&format!("Appointment/{appt}"), &booked)
            .await
            .expect(200);
        assert_eq!(slot_status(&s, &slot).await, "busy");
        s.delete(&format!("Appointment/{appt}")).await.expect(204);
        assert_eq!(slot_status(&s, &slot).await, "free");

        // the job never overwrites: a booked slot stays booked, a deleted one stays deleted
        let other_slot = slot_of(&proposals[1]);
        s.post("Appointment/$book", &for_patient(&proposals[1], "p2"))
            .await
            .expect(201);
        let third_slot = slot_of(&proposals[2]);
        s.delete(&format!("Slot/{third_slot}")).await.expect(204);
        let count = |b: &Value| b["entry"].as_array().map_or(0, Vec::len);
        let before = count(
            &s.get("Slot?schedule=Schedule/gp-week&_count=500")
                .await
                .json(),
        );
        run_jobs(&store).await;
        healporium::interaction::slots::run_slots_job(
            &healporium::interaction::Context::new(store.clone()),
            None,
            Instant::now().millis(),
        )
        .await
        .unwrap();
        assert_eq!(
            count(
                &s.get("Slot?schedule=Schedule/gp-week&_count=500")
                    .await
                    .json()
            ),
            before
        );
        assert_eq!(slot_status(&s, &other_slot).await, "busy");
        s.get(&format!("Slot/{third_slot}")).await.expect(410);

        // an expired hold is free: offered, bookable, and released by the job
        let fourth = &proposals[3];
        let fourth_slot = slot_of(fourth);
        let mut stale = s.get(&format!("Slot/{fourth_slot}")).await.json();
        stale["status"] = json!("busy-tentative");
        stale["extension"] = json!([{"url": healporium::interaction::scheduling::HOLD_URL, "extension": [
            {"url": "expires", "valueInstant": "2020-01-01T00:00:00Z"},
            {"url": "holder", "valueString": "someone-else"}]}]);
        s.put(&format!("Slot/{fourth_slot}"), &stale)
            .await
            .expect(200);
        healporium::interaction::slots::run_slots_job(
            &healporium::interaction::Context::new(store.clone()),
            None,
            Instant::now().millis(),
        )
        .await
        .unwrap();
        let released = s.get(&format!("Slot/{fourth_slot}")).await.json();
        assert_eq!(released["status"], "free", "{backend:?}");
        assert!(released.get("extension").is_none());
    }
}

/// Fifty `$book` calls for one slot at once, spread over two `healporium serve` processes
/// on one database: one booking, forty-nine 409s, and the slot is busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_bookings_of_one_slot_give_one() {
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let Some((url, _dir, _schema)) = fresh_database(backend).await else {
            continue;
        };
        let a = Node::start(&url, "a", &[]);
        let b = Node::start(&url, "b", &[]);
        let client = reqwest::Client::new();
        let base = |n: &Node| format!("http://127.0.0.1:{}/fhir", n.port);
        let put = |path: String, body: Value| {
            let client = client.clone();
            async move {
                let r = client
                    .put(path)
                    .header("content-type", "application/fhir+json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            }
        };
        put(
            format!("{}/Practitioner/gp", base(&a)),
            json!({"resourceType": "Practitioner", "id": "gp"}),
        )
        .await;
        put(
            format!("{}/Patient/p", base(&a)),
            json!({"resourceType": "Patient", "id": "p"}),
        )
        .await;
        put(
            format!("{}/Schedule/s", base(&a)),
            json!({"resourceType": "Schedule", "id": "s",
                "actor": [{"reference": "Practitioner/gp"}]}),
        )
        .await;
        put(
            format!("{}/Slot/one", base(&a)),
            json!({"resourceType": "Slot", "id": "one", "schedule": {"reference": "Schedule/s"},
                "status": "free", "start": "2030-01-07T09:00:00Z", "end": "2030-01-07T09:30:00Z"}),
        )
        .await;
        let body = json!({"resourceType": "Parameters", "parameter": [{"name": "appt-resource",
            "resource": {"resourceType": "Appointment", "status": "proposed",
                "slot": [{"reference": "Slot/one"}],
                "participant": [{"actor": {"reference": "Patient/p"}, "status": "accepted"},
                    {"actor": {"reference": "Practitioner/gp"}, "status": "accepted"}]}}]})
        .to_string();
        let mut calls = Vec::new();
        for i in 0..50 {
            let url = format!(
                "{}/Appointment/$book",
                base(if i % 2 == 0 { &a } else { &b })
            );
            let client = client.clone();
            let body = body.clone();
            calls.push(tokio::spawn(async move {
                let r = client
                    .post(url)
                    .header("content-type", "application/fhir+json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = r.status().as_u16();
                (status, r.text().await.unwrap())
            }));
        }
        let mut statuses = std::collections::BTreeMap::new();
        for c in calls {
            let (status, text) = c.await.unwrap();
            assert!(
                status == 201 || status == 409,
                "{backend:?}: {status} {text}"
            );
            *statuses.entry(status).or_insert(0) += 1;
        }
        assert_eq!(statuses.get(&201), Some(&1), "{backend:?}: {statuses:?}");
        assert_eq!(statuses.get(&409), Some(&49), "{backend:?}: {statuses:?}");
        let booked: Value = client
            .get(format!(
                "{}/Appointment?slot=Slot/one&status=booked",
                base(&b)
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(booked["entry"].as_array().map_or(0, Vec::len), 1);
        let slot: Value = client
            .get(format!("{}/Slot/one", base(&b)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(slot["status"], "busy");
    }
}

/// A patient's booking and a practitioner's schedule change each leave an AuditEvent naming
/// who did it and what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookings_and_schedule_changes_are_audited() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some((s, _url)) = crate::common::start_with_test_principals_and(
            backend,
            healporium::app::AppOptions {
                audit: true,
                ..Default::default()
            },
        )
        .await
        else {
            continue;
        };
        for r in [
            json!({"resourceType": "Practitioner", "id": "gp"}),
            json!({"resourceType": "Patient", "id": "p", "generalPractitioner": [{"reference": "Practitioner/gp"}]}),
            json!({"resourceType": "Schedule", "id": "s", "actor": [{"reference": "Practitioner/gp"}]}),
        ] {
            s.put(
                &format!(
                    "{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                ),
                &r,
            )
            .await
            .expect(201);
        }
        let gp = [
            ("x-test-scope", "user/*.cruds"),
            ("x-test-role", "practitioner"),
            ("x-test-user", "gee"),
            ("x-test-fhir-user", "Practitioner/gp"),
        ];
        s.put_with(
            "Slot/one",
            &json!({"resourceType": "Slot", "id": "one", "schedule": {"reference": "Schedule/s"},
                "status": "free", "start": "2030-01-07T09:00:00Z", "end": "2030-01-07T09:30:00Z"}),
            &gp,
        )
        .await
        .expect(201);
        let patient = [
            ("x-test-scope", "patient/*.cruds"),
            ("x-test-role", "patient"),
            ("x-test-patient", "p"),
            ("x-test-user", "pat"),
            ("x-test-fhir-user", "Patient/p"),
        ];
        let booked = s
            .post_with(
                "Appointment/$book",
                &json!({"resourceType": "Appointment", "status": "proposed",
                    "slot": [{"reference": "Slot/one"}],
                    "participant": [{"actor": {"reference": "Practitioner/gp"}, "status": "accepted"}]}),
                &patient,
            )
            .await
            .expect(201)
            .json();
        // the patient was added as the participant the booking is for
        assert!(booked.to_string().contains("Patient/p"));
        let id = booked["id"].as_str().unwrap();
        let events = s.get("AuditEvent?_count=200").await.expect(200).json();
        let text = |e: &Value| e.to_string();
        let all: Vec<&Value> = events["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["resource"])
            .collect();
        let booking = all
            .iter()
            .find(|e| text(e).contains("$book"))
            .unwrap_or_else(|| panic!("{backend:?}: no $book event in {events}"));
        assert!(
            text(booking).contains(&format!("Appointment/{id}")),
            "{backend:?}: {booking}"
        );
        assert!(text(booking).contains("pat"), "{booking}");
        assert!(
            all.iter()
                .any(|e| text(e).contains("Slot/one") && text(e).contains("gee")),
            "{backend:?}: no event of the practitioner's slot write"
        );
    }
}
