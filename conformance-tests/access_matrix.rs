//! The access matrix with real SMART tokens for every role — a patient, a practitioner with
//! and one without a care relationship, a pharmacist, an insurer, an administrator and a
//! backend service — against one world of resources (two patients, bob's data of every kind
//! that used to leak: Task, Device, DocumentReference, Binary, document Bundle, Provenance),
//! over every read path (read, vread, history, `$meta`, search by id, `POST _search`, batch
//! entries), every collective path (includes with `:iterate`, compartments, `$everything`,
//! system search) and the writes each role may or may not do. Then each finding of the
//! access-control issue as a regression test named after it. SQLite and PostgreSQL.

use crate::common::Server;
use crate::common::secure::{SecureServer, TokenSet};
use crate::secure_backends;
use serde_json::{Value, json};

secure_backends!(
    every_role_on_every_read_path,
    collective_paths_never_leak,
    writes_follow_the_roles,
    types_outside_the_compartment_are_confined,
    patient_cannot_write_another_patients_task,
    patient_cannot_rename_a_practitioner,
    patient_cannot_create_a_search_parameter,
    ehr_launch_is_bound_to_user_and_client_and_single_use,
    history_serves_only_versions_within_reach,
    deleted_id_cannot_be_recreated_by_another_principal,
    chains_and_has_answer_nothing_about_hidden_patients,
    audit_events_concern_only_their_patient,
    everything_leaves_audit_events_out,
    validate_delete_and_conflicts_name_nothing_hidden,
    insurer_sees_only_members_and_no_audit,
    pharmacist_writes_only_dispensing,
    patient_picker_lists_only_patients_in_care,
    break_glass_is_audited_and_short_lived,
    writes_cannot_create_their_own_care_relationship,
    conditional_and_operation_paths_are_confined,
    credit_quote_follows_account_access,
    credit_commands_follow_roles_and_reach,
    claim_submit_follows_roles_and_reach,
    insurer_sees_only_billing_it_pays_for,
    operations_in_bundles_follow_the_roles,
    hl7v2_feed_follows_the_roles,
    health_is_public_and_the_same_for_everyone,
    scheduling_follows_the_roles,
    subscriptions_follow_the_roles,
    metrics_are_for_the_operator_only,
    openapi_is_public_and_names_no_data,
    bulk_export_follows_the_roles,
    web_pages_follow_the_roles,
);

/// What a role may see of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sees {
    /// 200, and it is found.
    Yes,
    /// 404 and never found, exactly like a resource that does not exist.
    Hidden,
    /// 403: the role or scopes do not reach the type at all.
    Forbidden,
}
use Sees::{Forbidden as F, Hidden as H, Yes as Y};

/// The roles, in the order of the columns below.
const ROLES: [&str; 7] = [
    "patient",
    "doctor",
    "other-doctor",
    "pharmacist",
    "insurer",
    "admin",
    "backend",
];

/// The world's resources and what each role sees of them (columns as in [`ROLES`]).
const WORLD: &[(&str, [Sees; 7])] = &[
    ("Patient/alice", [Y, Y, H, Y, Y, Y, Y]),
    ("Patient/bob", [H, H, H, H, H, Y, Y]),
    ("Observation/alice-obs", [Y, Y, H, F, F, Y, Y]),
    ("Observation/bob-hiv", [H, H, H, F, F, Y, Y]),
    ("Task/bob-task", [H, H, H, F, F, Y, Y]),
    ("Device/bob-device", [H, H, H, F, F, Y, Y]),
    ("DocumentReference/bob-doc", [H, H, H, F, F, Y, Y]),
    ("Binary/bob-binary", [H, H, H, F, F, Y, Y]),
    ("Bundle/bob-document", [H, H, H, F, F, Y, Y]),
    ("Provenance/bob-prov", [H, H, H, H, F, Y, Y]),
    ("Encounter/bob-enc", [H, H, H, F, F, Y, Y]),
    ("MedicationRequest/alice-rx", [Y, Y, H, Y, F, Y, Y]),
    ("Coverage/alice-cov", [Y, Y, H, Y, Y, Y, Y]),
    ("Practitioner/doc", [Y, Y, Y, Y, Y, Y, Y]),
    ("Organization/clinic", [Y, Y, Y, Y, Y, Y, Y]),
    ("Group/both", [F, F, F, F, F, Y, Y]),
    ("List/both", [H, H, H, F, F, Y, Y]),
];

fn put(r: Value) -> Value {
    let url = format!(
        "{}/{}",
        r["resourceType"].as_str().unwrap(),
        r["id"].as_str().unwrap()
    );
    json!({"resource": r, "request": {"method": "PUT", "url": url}})
}

/// The world: a clinic with Dr. doc (alice's GP), Dr. other (nobody's) and Dr. stranger (who
/// only appears in bob's records, and has no account), a pharmacy with alice's prescription,
/// an insurer covering alice, and bob, who is in no role's care and has data of every kind.
fn world() -> Vec<Value> {
    let role = |id: &str, practitioner: &str, org: &str| {
        json!({"resourceType": "PractitionerRole", "id": id, "active": true,
            "practitioner": {"reference": format!("Practitioner/{practitioner}")},
            "organization": {"reference": format!("Organization/{org}")}})
    };
    let org =
        |id: &str, name: &str| json!({"resourceType": "Organization", "id": id, "name": name});
    let prac = |id: &str, family: &str| json!({"resourceType": "Practitioner", "id": id, "name": [{"family": family}]});
    vec![
        org("clinic", "Clinic"),
        org("pharmacy", "Pharmacy"),
        org("insurer", "Insurer"),
        prac("doc", "Doc"),
        prac("other", "Other"),
        prac("stranger", "Stranger"),
        prac("pharmacist", "Pill"),
        prac("reviewer", "Claims"),
        role("pharmacist-role", "pharmacist", "pharmacy"),
        role("reviewer-role", "reviewer", "insurer"),
        json!({"resourceType": "Patient", "id": "alice", "name": [{"family": "Alpha", "given": ["Alice"]}],
            "birthDate": "1985-01-01",
            "generalPractitioner": [{"reference": "Practitioner/doc"}]}),
        json!({"resourceType": "Patient", "id": "bob", "name": [{"family": "Beta", "given": ["Bob"]}],
            "birthDate": "1970-07-07", "identifier": [{"system": "urn:ssn", "value": "bob-ssn"}],
            "managingOrganization": {"reference": "Organization/insurer"}}),
        json!({"resourceType": "Observation", "id": "alice-obs", "status": "final",
            "code": {"text": "heart rate"}, "subject": {"reference": "Patient/alice"}}),
        json!({"resourceType": "Observation", "id": "bob-hiv", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "75622-1"}], "text": "HIV 1+2 Ab"},
            "subject": {"reference": "Patient/bob"}, "focus": [{"reference": "Patient/bob"}],
            "performer": [{"reference": "Practitioner/stranger"}]}),
        json!({"resourceType": "Task", "id": "bob-task", "status": "requested", "intent": "order",
            "for": {"reference": "Patient/bob"}, "owner": {"reference": "Practitioner/stranger"}}),
        json!({"resourceType": "Device", "id": "bob-device", "patient": {"reference": "Patient/bob"}}),
        json!({"resourceType": "DocumentReference", "id": "bob-doc", "status": "current",
            "subject": {"reference": "Patient/bob"},
            "content": [{"attachment": {"contentType": "text/plain", "url": "Binary/bob-binary"}}]}),
        json!({"resourceType": "Binary", "id": "bob-binary", "contentType": "text/plain",
            "securityContext": {"reference": "DocumentReference/bob-doc"}, "data": "c2VjcmV0"}),
        json!({"resourceType": "Bundle", "id": "bob-document", "type": "document",
            "identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"},
            "timestamp": "2024-01-01T00:00:00Z",
            "entry": [{"fullUrl": "urn:uuid:5e0c2b1a-7e4d-4a3b-9a61-3f1d1f1b2c01",
                "resource": {"resourceType": "Composition", "status": "final",
                "type": {"text": "summary"}, "date": "2024-01-01", "title": "Bob's summary",
                "subject": {"reference": "Patient/bob"}, "author": [{"reference": "Practitioner/stranger"}]}}]}),
        json!({"resourceType": "Provenance", "id": "bob-prov", "recorded": "2024-01-01T00:00:00Z",
            "target": [{"reference": "Observation/bob-hiv"}],
            "agent": [{"who": {"reference": "Practitioner/stranger"}}]}),
        json!({"resourceType": "Encounter", "id": "bob-enc", "status": "finished", "class": {"code": "AMB"},
            "subject": {"reference": "Patient/bob"},
            "participant": [{"individual": {"reference": "Practitioner/stranger"}}],
            "serviceProvider": {"reference": "Organization/clinic"}}),
        json!({"resourceType": "MedicationRequest", "id": "alice-rx", "status": "active", "intent": "order",
            "medicationCodeableConcept": {"text": "metformin"}, "subject": {"reference": "Patient/alice"},
            "dispenseRequest": {"performer": {"reference": "Organization/pharmacy"}}}),
        json!({"resourceType": "Coverage", "id": "alice-cov", "status": "active",
            "beneficiary": {"reference": "Patient/alice"}, "payor": [{"reference": "Organization/insurer"}]}),
        json!({"resourceType": "Group", "id": "both", "type": "person", "actual": true,
            "member": [{"entity": {"reference": "Patient/alice"}}, {"entity": {"reference": "Patient/bob"}}]}),
        json!({"resourceType": "List", "id": "both", "status": "current", "mode": "working",
            "subject": {"reference": "Patient/bob"},
            "entry": [{"item": {"reference": "Patient/alice"}}, {"item": {"reference": "Patient/bob"}}]}),
    ]
}

/// A server with the world loaded and a token per role.
struct World {
    s: SecureServer,
    admin_setup: Server,
    tokens: Vec<(&'static str, Server)>,
}

impl World {
    async fn new(s: SecureServer) -> World {
        let admin_setup = s.admin().await;
        let entries: Vec<Value> = world().into_iter().map(put).collect();
        admin_setup
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
            )
            .await
            .expect(200);
        let mut tokens = Vec::new();
        for role in ROLES {
            let token = match role {
                "patient" => s.patient_token("alice", "patient/*.cruds").await,
                "doctor" => {
                    user(&s, "practitioner", "Practitioner/doc")
                        .await
                        .access_token
                }
                "other-doctor" => {
                    user(&s, "practitioner", "Practitioner/other")
                        .await
                        .access_token
                }
                "pharmacist" => {
                    user(&s, "pharmacist", "Practitioner/pharmacist")
                        .await
                        .access_token
                }
                "insurer" => {
                    user(&s, "insurer", "Practitioner/reviewer")
                        .await
                        .access_token
                }
                "admin" => {
                    s.user_tokens("admin", None, None, "user/*.cruds")
                        .await
                        .access_token
                }
                _ => s.system_token("system/*.cruds").await,
            };
            tokens.push((role, s.with_token(&token)));
        }
        World {
            s,
            admin_setup,
            tokens,
        }
    }

    fn as_role(&self, role: &str) -> &Server {
        &self
            .tokens
            .iter()
            .find(|(r, _)| *r == role)
            .unwrap_or_else(|| panic!("no role {role}"))
            .1
    }

    fn hidden_from(&self, col: usize) -> Vec<&'static str> {
        WORLD
            .iter()
            .filter(|(_, sees)| sees[col] != Y)
            .map(|(k, _)| *k)
            .collect()
    }
}

/// A user of `role` linked to `fhir_user`, with `user/*.cruds`.
async fn user(s: &SecureServer, role: &str, fhir_user: &str) -> TokenSet {
    s.user_tokens(role, Some(fhir_user), None, "user/*.cruds")
        .await
}

/// Every resource key (`Type/id`) in a response body, Bundle entries and nested resources
/// included (OperationOutcomes and Bundles themselves left out).
fn keys_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            if let (Some(Value::String(t)), Some(Value::String(id))) =
                (o.get("resourceType"), o.get("id"))
                && t != "OperationOutcome"
            {
                out.push(format!("{t}/{id}"));
            }
            for (k, x) in o {
                if k != "link" {
                    keys_in(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| keys_in(x, out)),
        _ => {}
    }
}

#[track_caller]
fn assert_none_of(label: &str, body: &Value, hidden: &[&str]) {
    let mut keys = Vec::new();
    keys_in(body, &mut keys);
    let leaked: Vec<&String> = keys
        .iter()
        .filter(|k| hidden.contains(&k.as_str()))
        .collect();
    assert!(leaked.is_empty(), "{label} leaks {leaked:?}");
}

fn status_of(entry: &Value) -> u16 {
    entry["response"]["status"]
        .as_str()
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn every_role_on_every_read_path(s: SecureServer) {
    let w = World::new(s).await;
    let mut checked = 0;
    for (col, role) in ROLES.iter().enumerate() {
        let c = w.as_role(role);
        for (key, sees) in WORLD {
            let expect = sees[col];
            let (t, id) = key.split_once('/').unwrap();
            let code = |e: Sees| match e {
                Y => 200,
                H => 404,
                F => 403,
            };
            let label = |p: &str| format!("{role} {p}");
            // read, vread, instance history, $meta
            for path in [
                key.to_string(),
                format!("{key}/_history/1"),
                format!("{key}/_history"),
                format!("{key}/$meta"),
            ] {
                let r = c.get(&path).await;
                assert_eq!(
                    r.status.as_u16(),
                    code(expect),
                    "{}: {}",
                    label(&path),
                    r.text
                );
                if expect != Y {
                    assert_eq!(r.json()["resourceType"], "OperationOutcome");
                }
                checked += 1;
            }
            // forbidden and unknown answer alike
            if expect == H {
                let unknown = c.get(&format!("{t}/no-such-{id}")).await.expect(404);
                let r = c.get(key).await;
                assert_eq!(
                    r.json()["issue"][0]["diagnostics"]
                        .as_str()
                        .unwrap()
                        .replace(id, "X"),
                    unknown.json()["issue"][0]["diagnostics"]
                        .as_str()
                        .unwrap()
                        .replace(&format!("no-such-{id}"), "X"),
                    "{role} {key}: hidden and unknown differ"
                );
            }
            // search by id, GET and POST, with totals
            for r in [
                c.get(&format!("{t}?_id={id}&_total=accurate")).await,
                c.send(
                    reqwest::Method::POST,
                    &format!("{t}/_search"),
                    &[("content-type", "application/x-www-form-urlencoded")],
                    Some(format!("_id={id}&_total=accurate")),
                )
                .await,
            ] {
                checked += 1;
                match expect {
                    F => assert_eq!(r.status.as_u16(), 403, "{role} search {key}"),
                    _ => {
                        assert_eq!(r.status.as_u16(), 200, "{role} search {key}: {}", r.text);
                        let b = r.json();
                        let want = u64::from(expect == Y);
                        assert_eq!(b["total"], want, "{role} search {key} total");
                        let mut keys = Vec::new();
                        keys_in(&b, &mut keys);
                        assert_eq!(
                            keys.contains(&key.to_string()),
                            expect == Y,
                            "{role} search {key}"
                        );
                    }
                }
            }
            // a batch entry
            let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "GET", "url": key}}]});
            let b = c.post("", &batch).await.expect(200).json();
            assert_eq!(
                status_of(&b["entry"][0]),
                code(expect),
                "{role} batch GET {key}"
            );
            checked += 1;
        }
    }
    eprintln!(
        "access matrix: {checked} read-path checks across {} roles",
        ROLES.len()
    );
}

async fn collective_paths_never_leak(s: SecureServer) {
    let w = World::new(s).await;
    for (col, role) in ROLES.iter().enumerate() {
        let c = w.as_role(role);
        let hidden = w.hidden_from(col);
        for path in [
            "Patient?_revinclude=*&_include=*&_include:iterate=*&_revinclude:iterate=*",
            "Observation?_include=*&_include:iterate=*",
            "Practitioner?_revinclude=*&_revinclude:iterate=*",
            "Organization?_revinclude=*",
            "Patient/bob/*",
            "Patient/alice/*",
            "Patient/bob/Task",
            "Task?patient=Patient/bob",
            "Device?patient=Patient/bob",
            "Patient/alice/$everything",
            "Patient/$everything",
            "?_type=Patient,Observation,Task,Device,Binary,Bundle,DocumentReference,Provenance",
            "Patient?_list=both",
            "Binary",
            "Bundle",
        ] {
            let r = c.get(path).await;
            if r.status.as_u16() == 403 || r.status.as_u16() == 404 {
                continue; // a type the role may not reach, or a patient it may not see
            }
            assert_eq!(r.status.as_u16(), 200, "{role} {path}: {}", r.text);
            assert_none_of(&format!("{role} {path}"), &r.json(), &hidden);
        }
    }
}

async fn writes_follow_the_roles(s: SecureServer) {
    let w = World::new(s).await;
    let obs = |p: &str| {
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": format!("Patient/{p}")}})
    };
    let search_param = json!({"resourceType": "SearchParameter", "url": "http://example.org/sp/x",
        "name": "x", "status": "active", "description": "x", "code": "xcode",
        "base": ["Patient"], "type": "token", "expression": "Patient.gender"});
    // (role, what, expected status)
    let cases: Vec<(&str, &str, u16)> = vec![
        ("patient", "obs-alice", 201),
        ("patient", "obs-bob", 403),
        ("patient", "encounter-alice", 403),
        ("patient", "search-parameter", 403),
        ("doctor", "obs-alice", 201),
        ("doctor", "obs-bob", 403),
        ("doctor", "encounter-alice", 201),
        ("doctor", "search-parameter", 403),
        ("other-doctor", "obs-alice", 403),
        ("pharmacist", "obs-alice", 403),
        ("pharmacist", "dispense-alice", 201),
        ("pharmacist", "dispense-bob", 403),
        ("insurer", "obs-alice", 403),
        ("insurer", "dispense-alice", 403),
        ("admin", "obs-bob", 201),
        ("admin", "search-parameter", 201),
        ("backend", "obs-bob", 201),
    ];
    for (role, what, want) in cases {
        let c = w.as_role(role);
        let body = match what {
            "obs-alice" => obs("alice"),
            "obs-bob" => obs("bob"),
            "encounter-alice" => json!({"resourceType": "Encounter", "status": "planned",
                "class": {"code": "AMB"}, "subject": {"reference": "Patient/alice"}}),
            "dispense-alice" | "dispense-bob" => {
                json!({"resourceType": "MedicationDispense", "status": "completed",
                "medicationCodeableConcept": {"text": "metformin"},
                "subject": {"reference": format!("Patient/{}", what.trim_start_matches("dispense-"))}})
            }
            _ => {
                let mut sp = search_param.clone();
                sp["url"] = json!(format!("http://example.org/sp/{role}"));
                sp["code"] = json!(format!("code-{role}"));
                sp
            }
        };
        let rt = body["resourceType"].as_str().unwrap().to_string();
        let r = c.post(&rt, &body).await;
        assert_eq!(r.status.as_u16(), want, "{role} creates {what}: {}", r.text);
    }
    // updates and deletes of what a role may not see: 404, and nothing changes
    for role in ["patient", "doctor", "other-doctor"] {
        let c = w.as_role(role);
        let mut changed = w.admin_setup.get("Observation/bob-hiv").await.json();
        changed["status"] = json!("cancelled");
        c.put("Observation/bob-hiv", &changed).await.expect(404);
        c.delete("Observation/bob-hiv").await.expect(404);
        c.patch_with(
            "Observation/bob-hiv",
            "application/json-patch+json",
            &json!([{"op": "replace", "path": "/status", "value": "cancelled"}]),
            &[],
        )
        .await
        .expect(404);
    }
    let bob = w
        .admin_setup
        .get("Observation/bob-hiv")
        .await
        .expect(200)
        .json();
    assert_eq!(bob["status"], "final");
    assert_eq!(bob["meta"]["versionId"], "1");
    // shared data: readable by everyone, written by staff; the directory by admins only
    let loc = json!({"resourceType": "Location", "name": "Ward 1"});
    w.as_role("patient")
        .post("Location", &loc)
        .await
        .expect(403);
    w.as_role("doctor").post("Location", &loc).await.expect(201);
    let mut doc = w.admin_setup.get("Practitioner/doc").await.json();
    doc["name"] = json!([{"family": "Renamed"}]);
    w.as_role("doctor")
        .put("Practitioner/doc", &doc)
        .await
        .expect(403);
    w.as_role("admin")
        .put("Practitioner/doc", &doc)
        .await
        .expect(200);
}

async fn types_outside_the_compartment_are_confined(s: SecureServer) {
    // the finding: Task, Device, a document Bundle and a Binary about bob were open to
    // alice's patient token, also through _include=*&_include:iterate=*, Patient/bob/* and
    // batch GET entries
    let w = World::new(s).await;
    let alice = w.as_role("patient");
    for key in [
        "Task/bob-task",
        "Device/bob-device",
        "Bundle/bob-document",
        "Binary/bob-binary",
    ] {
        alice.get(key).await.expect(404);
    }
    for q in [
        "Task?patient=Patient/bob",
        "Task?subject=Patient/bob",
        "Device",
        "Bundle",
        "Binary",
    ] {
        assert_eq!(alice.get(q).await.expect(200).json()["total"], 0, "{q}");
    }
    let hidden = w.hidden_from(0);
    let r = alice
        .get("Patient?_include=*&_include:iterate=*&_revinclude=*&_revinclude:iterate=*")
        .await
        .expect(200)
        .json();
    assert_none_of("includes", &r, &hidden);
    assert_none_of(
        "Patient/bob/*",
        &alice.get("Patient/bob/*").await.expect(200).json(),
        &hidden,
    );
    // bob sees his own, through the new patient links and proxies
    let bob =
        w.s.with_token(&w.s.patient_token("bob", "patient/*.rs").await);
    for key in [
        "Task/bob-task",
        "Device/bob-device",
        "Bundle/bob-document",
        "Binary/bob-binary",
        "Provenance/bob-prov",
        "List/both",
    ] {
        bob.get(key).await.expect(200);
    }
}

async fn patient_cannot_write_another_patients_task(s: SecureServer) {
    let w = World::new(s).await;
    let mut task = w.admin_setup.get("Task/bob-task").await.json();
    task["status"] = json!("cancelled");
    // a patient changes no Task (the role), and a token that may change Tasks cannot
    // change bob's: it looks unknown
    w.as_role("patient")
        .put("Task/bob-task", &task)
        .await
        .expect(403);
    w.as_role("other-doctor")
        .put("Task/bob-task", &task)
        .await
        .expect(404);
    assert_eq!(
        w.admin_setup.get("Task/bob-task").await.json()["status"],
        "requested"
    );
}

async fn patient_cannot_rename_a_practitioner(s: SecureServer) {
    let w = World::new(s).await;
    let mut doc = w.admin_setup.get("Practitioner/doc").await.json();
    doc["name"] = json!([{"family": "Hacked"}]);
    let r = w
        .as_role("patient")
        .put("Practitioner/doc", &doc)
        .await
        .expect(403);
    assert_eq!(r.json()["issue"][0]["code"], "forbidden");
    assert_eq!(
        w.admin_setup.get("Practitioner/doc").await.json()["name"][0]["family"],
        "Doc"
    );
}

async fn patient_cannot_create_a_search_parameter(s: SecureServer) {
    let w = World::new(s).await;
    let sp = json!({"resourceType": "SearchParameter", "url": "http://example.org/sp/evil",
        "name": "evil", "status": "active", "description": "x", "code": "evil",
        "base": ["Patient"], "type": "token", "expression": "Patient.gender"});
    w.as_role("patient")
        .post("SearchParameter", &sp)
        .await
        .expect(403);
    for role in ["doctor", "pharmacist", "insurer"] {
        w.as_role(role)
            .post("SearchParameter", &sp)
            .await
            .expect(403);
    }
    assert_eq!(
        w.admin_setup
            .get("SearchParameter?url=http://example.org/sp/evil")
            .await
            .json()["total"],
        0
    );
}

async fn ehr_launch_is_bound_to_user_and_client_and_single_use(s: SecureServer) {
    let w = World::new(s).await;
    let s = &w.s;
    s.add_user("drsmith", "practitioner", Some("Practitioner/doc"))
        .await;
    s.add_user("alice-user", "patient", Some("Patient/alice"))
        .await;
    let app = s.add_public_app().await;
    let other_app = s.add_public_app().await;
    let doc = s
        .authorize(&app, "drsmith", "user/*.rs openid fhirUser", None, None)
        .await;
    let launch = |body: Value| {
        let token = doc.access_token.clone();
        async move {
            let r = s
                .client
                .post(format!("{}/auth/launch", s.origin()))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    // the launch names its app; a patient the practitioner does not care for is unknown
    assert_eq!(launch(json!({"patient": "alice"})).await.0, 400);
    assert_eq!(
        launch(json!({"client_id": app, "patient": "bob"})).await.0,
        400
    );
    let (st, l) = launch(json!({"client_id": app, "patient": "alice"})).await;
    assert_eq!(st, 201, "{l}");
    let id = l["launch"].as_str().unwrap().to_string();
    // another user cannot complete it (alice signs in with drsmith's launch)
    let (verifier, challenge) = crate::common::secure::pkce();
    let _ = verifier;
    let query = |client: &str, launch: &str, challenge: &str| {
        serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", client),
            ("redirect_uri", crate::common::secure::REDIRECT_URI),
            ("scope", "launch patient/*.rs"),
            ("state", "st"),
            ("aud", s.base.as_str()),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
            ("launch", launch),
        ])
        .unwrap()
    };
    let page = s
        .client
        .get(format!(
            "{}/auth/authorize?{}",
            s.origin(),
            query(&app, &id, &challenge)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let request = crate::common::secure::request_field(&page.text().await.unwrap());
    let signed = s
        .auth_post(
            "login",
            &[
                ("request", &request),
                ("username", "alice-user"),
                ("password", crate::common::secure::PASSWORD),
            ],
            None,
        )
        .await;
    assert_eq!(signed.status(), 200);
    let done = s
        .auth_post(
            "consent",
            &[("request", &request), ("decision", "allow")],
            None,
        )
        .await;
    assert_eq!(done.status(), 303);
    let loc = done.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.contains("error=access_denied") && !loc.contains("code="),
        "{loc}"
    );
    // and the launch is spent: not even its creator can use it again
    let again = s
        .client
        .get(format!(
            "{}/auth/authorize?{}",
            s.origin(),
            query(&app, &id, &challenge)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 303);
    assert!(
        again.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=invalid_request")
    );
    // a launch made for one app does not work for another
    let (_, l2) = launch(json!({"client_id": app, "patient": "alice"})).await;
    let id2 = l2["launch"].as_str().unwrap();
    let wrong = s
        .client
        .get(format!(
            "{}/auth/authorize?{}",
            s.origin(),
            query(&other_app, id2, &challenge)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 303);
    assert!(
        wrong.headers()["location"]
            .to_str()
            .unwrap()
            .contains("error=invalid_request")
    );
    // the creator with the right app gets the patient in context
    let (_, l3) = launch(json!({"client_id": app, "patient": "alice"})).await;
    let t = s
        .authorize(
            &app,
            "drsmith",
            "launch patient/*.rs",
            None,
            Some(l3["launch"].as_str().unwrap()),
        )
        .await;
    assert_eq!(t.patient.as_deref(), Some("alice"));
}

async fn history_serves_only_versions_within_reach(s: SecureServer) {
    // the finding: an Observation whose v1 was bob's and v2 alice's served v1 to alice
    let w = World::new(s).await;
    let admin = &w.admin_setup;
    let mut o = json!({"resourceType": "Observation", "id": "moved", "status": "final",
        "code": {"text": "bob's secret"}, "subject": {"reference": "Patient/bob"}});
    admin.put("Observation/moved", &o).await.expect(201);
    o["subject"] = json!({"reference": "Patient/alice"});
    o["code"] = json!({"text": "now alice's"});
    admin.put("Observation/moved", &o).await.expect(200);
    let alice = w.as_role("patient");
    alice.get("Observation/moved").await.expect(200);
    alice.get("Observation/moved/_history/2").await.expect(200);
    alice.get("Observation/moved/_history/1").await.expect(404);
    let h = alice
        .get("Observation/moved/_history")
        .await
        .expect(200)
        .json();
    assert!(!h.to_string().contains("bob's secret"), "{h}");
    assert_eq!(h["entry"].as_array().unwrap().len(), 1);
    assert!(
        h.get("total").is_none(),
        "no total that would count the hidden version"
    );
    // in a batch too
    let b = alice
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "batch", "entry": [
                {"request": {"method": "GET", "url": "Observation/moved/_history/1"}}]}),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(status_of(&b["entry"][0]), 404);
    // the admin sees both
    assert_eq!(
        admin.get("Observation/moved/_history").await.json()["total"],
        2
    );
}

async fn deleted_id_cannot_be_recreated_by_another_principal(s: SecureServer) {
    // the finding: alice re-created a deleted id of bob's with PUT and then read its bob-era
    // _history/1
    let w = World::new(s).await;
    let admin = &w.admin_setup;
    admin
        .put(
            "Observation/gone",
            &json!({"resourceType": "Observation", "id": "gone", "status": "final",
                "code": {"text": "bob's old result"}, "subject": {"reference": "Patient/bob"}}),
        )
        .await
        .expect(201);
    admin.delete("Observation/gone").await.expect(204);
    let alice = w.as_role("patient");
    // deleted and not hers: exactly like unknown (not 410)
    alice.get("Observation/gone").await.expect(404);
    let mine = json!({"resourceType": "Observation", "id": "gone", "status": "final",
        "code": {"text": "x"}, "subject": {"reference": "Patient/alice"}});
    alice.put("Observation/gone", &mine).await.expect(404);
    alice.get("Observation/gone/_history/1").await.expect(404);
    alice.get("Observation/gone/_history").await.expect(404);
    assert_eq!(admin.get("Observation/gone").await.status.as_u16(), 410);
    // her own deleted resource she may re-create, and sees as deleted
    let id = alice
        .create(&json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "x"}, "subject": {"reference": "Patient/alice"}}))
        .await;
    alice.delete(&format!("Observation/{id}")).await.expect(204);
    alice.get(&format!("Observation/{id}")).await.expect(410);
    let mut again = mine.clone();
    again["id"] = json!(id);
    alice
        .put(&format!("Observation/{id}"), &again)
        .await
        .expect(201);
}

async fn chains_and_has_answer_nothing_about_hidden_patients(s: SecureServer) {
    // the finding: chains and _has answered yes/no questions about bob (9 exact oracles).
    // Each question is asked twice, once true and once false of bob's data: a confined token
    // must get the same answer both times.
    let w = World::new(s).await;
    let oracles: [(&str, &str); 9] = [
        (
            "Observation?focus:Patient.name=beta",
            "Observation?focus:Patient.name=zzz",
        ),
        (
            "Observation?subject:Patient.birthdate=1970-07-07",
            "Observation?subject:Patient.birthdate=1971-01-01",
        ),
        (
            "Patient?link:Patient.identifier=urn:ssn|bob-ssn",
            "Patient?link:Patient.identifier=urn:ssn|nobody",
        ),
        (
            "Organization?_has:Patient:organization:birthdate=1970-07-07",
            "Organization?_has:Patient:organization:birthdate=1971-01-01",
        ),
        (
            "Practitioner?_has:Encounter:practitioner:patient=Patient/bob",
            "Practitioner?_has:Encounter:practitioner:patient=Patient/nobody",
        ),
        (
            "Practitioner?_has:Observation:performer:code=75622-1",
            "Practitioner?_has:Observation:performer:code=00000-0",
        ),
        (
            "Practitioner?_has:Task:owner:patient=Patient/bob",
            "Practitioner?_has:Task:owner:patient=Patient/nobody",
        ),
        (
            "Organization?_has:Encounter:service-provider:_has:Observation:encounter:code=x",
            "Organization?_has:Encounter:service-provider:patient=Patient/bob",
        ),
        (
            "Patient?_has:List:item:_id=both",
            "Patient?_has:List:item:_id=none",
        ),
    ];
    // the admin sees the difference (the oracle is real) …
    let admin = w.as_role("admin");
    let mut real = 0;
    for (yes, no) in oracles {
        let a = admin.get(yes).await.expect(200).json()["total"].clone();
        let b = admin.get(no).await.expect(200).json()["total"].clone();
        if a != b {
            real += 1;
        }
    }
    assert!(
        real >= 7,
        "the oracles must be real for an unconfined token ({real})"
    );
    // … no confined role does
    for role in ["patient", "doctor", "other-doctor", "pharmacist", "insurer"] {
        let c = w.as_role(role);
        for (yes, no) in oracles {
            let a = c.get(yes).await;
            let b = c.get(no).await;
            assert_eq!(a.status, b.status, "{role}: {yes}");
            if a.status.as_u16() == 200 {
                assert_eq!(
                    a.json()["total"],
                    b.json()["total"],
                    "{role}: {yes} is an oracle"
                );
            }
        }
    }
}

async fn audit_events_concern_only_their_patient(s: SecureServer) {
    // the finding: one AuditEvent listed every patient a search returned, so each of them
    // could read the others in it
    let Some(s) = audited(s).await else { return };
    let w = World::new(s).await;
    // the administrator's search returns alice and bob
    let admin = w.as_role("admin");
    let r = admin.get("Patient?_id=alice,bob").await.expect(200).json();
    assert_eq!(r["total"], 2);
    admin
        .get("Observation?subject=Patient/alice,Patient/bob")
        .await
        .expect(200);
    let alice = w.as_role("patient");
    let events = alice.get("AuditEvent?_count=500").await.expect(200).json();
    let text = events.to_string();
    assert!(
        !text.contains("Patient/bob"),
        "alice's AuditEvents name bob"
    );
    assert!(
        !text.contains("bob-hiv"),
        "alice's AuditEvents name bob's data"
    );
    // but she sees that the administrator read her record
    let about_her: Vec<&Value> = events["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|e| e["subtype"][0]["code"] == "search-type")
        .collect();
    assert!(
        !about_her.is_empty(),
        "the search that returned alice is in her audit trail"
    );
    // the admin sees one event per patient plus one for the query
    let all = w
        .as_role("admin")
        .get("AuditEvent?subtype=search-type&_count=500")
        .await
        .expect(200)
        .json();
    let with_query = all["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["resource"]["entity"]
                .as_array()
                .is_some_and(|es| es.iter().any(|x| x.get("query").is_some()))
        })
        .count();
    assert!(with_query >= 2);
    // AuditEvents are for administrators (and a patient's own)
    for role in ["doctor", "pharmacist", "insurer"] {
        w.as_role(role).get("AuditEvent").await.expect(403);
    }
}

async fn everything_leaves_audit_events_out(s: SecureServer) {
    // the finding: $everything returned the patient's AuditEvents and grew by one per call
    let Some(s) = audited(s).await else { return };
    let w = World::new(s).await;
    let alice = w.as_role("patient");
    let first = alice
        .get("Patient/alice/$everything")
        .await
        .expect(200)
        .json();
    let second = alice
        .get("Patient/alice/$everything")
        .await
        .expect(200)
        .json();
    assert_eq!(first["total"], second["total"]);
    assert!(!first.to_string().contains("\"AuditEvent\""));
    // asked for by _type they come (her own)
    let audits = alice
        .get("Patient/alice/$everything?_type=AuditEvent")
        .await
        .expect(200)
        .json();
    assert!(audits["total"].as_u64().unwrap() > 0);
}

async fn validate_delete_and_conflicts_name_nothing_hidden(s: SecureServer) {
    // the finding: $validate mode=delete on bob's Patient, and the 409 of a delete, named
    // resources alice may not read
    let w = World::new(s).await;
    let alice = w.as_role("patient");
    let hidden = alice.get("Patient/bob/$validate?mode=delete").await;
    let unknown = alice.get("Patient/nobody/$validate?mode=delete").await;
    assert_eq!(hidden.status, unknown.status);
    assert_eq!(
        hidden.text.replace("bob", "X"),
        unknown.text.replace("nobody", "X"),
        "bob's Patient answers like an unknown one"
    );
    // alice's Observation is referenced by one of her own and by one of bob's
    let mine = alice
        .create(
            &json!({"resourceType": "Observation", "status": "final", "code": {"text": "base"},
            "subject": {"reference": "Patient/alice"}}),
        )
        .await;
    w.admin_setup
        .put(
            "Observation/bob-derived",
            &json!({"resourceType": "Observation", "id": "bob-derived", "status": "final",
                "code": {"text": "derived"}, "subject": {"reference": "Patient/bob"},
                "derivedFrom": [{"reference": format!("Observation/{mine}")}]}),
        )
        .await
        .expect(201);
    let r = alice
        .delete(&format!("Observation/{mine}"))
        .await
        .expect(409);
    assert!(!r.text.contains("bob-derived"), "{}", r.text);
    let v = alice
        .get(&format!("Observation/{mine}/$validate?mode=delete"))
        .await
        .expect(200);
    assert!(!v.text.contains("bob-derived"), "{}", v.text);
    // referencing what she may not see resolves no more than referencing nothing
    let focus_bob = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient/alice"}, "focus": [{"reference": "Observation/bob-hiv"}]});
    let focus_none = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient/alice"}, "focus": [{"reference": "Observation/nothing"}]});
    let a = alice.post("Observation", &focus_bob).await.expect(422);
    let b = alice.post("Observation", &focus_none).await.expect(422);
    assert_eq!(
        a.text.replace("bob-hiv", "X"),
        b.text.replace("nothing", "X")
    );
}

async fn insurer_sees_only_members_and_no_audit(s: SecureServer) {
    // the finding: an insurer with user/*.rs read an HIV Observation of a patient it does not
    // cover, and all AuditEvents
    let w = World::new(s).await;
    let insurer = w.as_role("insurer");
    insurer.get("Observation/bob-hiv").await.expect(403);
    insurer.get("Observation?code=75622-1").await.expect(403);
    insurer.get("AuditEvent").await.expect(403);
    insurer.get("Patient/alice").await.expect(200);
    insurer.get("Patient/bob").await.expect(404);
    let members = insurer.get("Patient").await.expect(200).json();
    assert_eq!(members["total"], 1);
    insurer.get("Coverage/alice-cov").await.expect(200);
}

async fn pharmacist_writes_only_dispensing(s: SecureServer) {
    // the finding: a pharmacist deleted an Observation
    let w = World::new(s).await;
    let p = w.as_role("pharmacist");
    p.delete("Observation/alice-obs").await.expect(403);
    p.delete("MedicationRequest/alice-rx").await.expect(403);
    assert_eq!(
        w.admin_setup
            .get("Observation/alice-obs")
            .await
            .status
            .as_u16(),
        200
    );
    p.get("MedicationRequest/alice-rx").await.expect(200);
    let d = json!({"resourceType": "MedicationDispense", "status": "completed",
        "medicationCodeableConcept": {"text": "metformin"}, "subject": {"reference": "Patient/alice"},
        "authorizingPrescription": [{"reference": "MedicationRequest/alice-rx"}]});
    let id = p.create(&d).await;
    p.delete(&format!("MedicationDispense/{id}"))
        .await
        .expect(204);
}

async fn patient_picker_lists_only_patients_in_care(s: SecureServer) {
    // the finding: the patient picker showed every patient to every staff role, the first
    // one pre-selected
    let w = World::new(s).await;
    let s = &w.s;
    s.add_user("picker-doc", "practitioner", Some("Practitioner/doc"))
        .await;
    let app = s.add_public_app().await;
    let (_, challenge) = crate::common::secure::pkce();
    let q = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", app.as_str()),
        ("redirect_uri", crate::common::secure::REDIRECT_URI),
        ("scope", "launch/patient patient/*.rs"),
        ("aud", s.base.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ])
    .unwrap();
    let page = s
        .client
        .get(format!("{}/auth/authorize?{q}", s.origin()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request = crate::common::secure::request_field(&page);
    let consent = s
        .auth_post(
            "login",
            &[
                ("request", &request),
                ("username", "picker-doc"),
                ("password", crate::common::secure::PASSWORD),
            ],
            None,
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(consent.contains("value=\"alice\""), "{consent}");
    assert!(!consent.contains("value=\"bob\"") && !consent.contains("Beta"));
    assert!(!consent.contains(" checked"));
    // the search narrows the list
    let found = s
        .auth_post(
            "consent",
            &[("request", &request), ("decision", "search"), ("q", "zzz")],
            None,
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(!found.contains("value=\"alice\""), "{found}");
    // typing bob's id is refused like an unknown patient
    let typed = s
        .auth_post(
            "consent",
            &[
                ("request", &request),
                ("decision", "allow"),
                ("patient_id", "bob"),
            ],
            None,
        )
        .await;
    assert_eq!(typed.status(), 400);
    // and a practitioner picking alice gets her, confined to her record
    let t = s
        .authorize(
            &app,
            "picker-doc",
            "launch/patient patient/*.rs",
            Some("alice"),
            None,
        )
        .await;
    assert_eq!(t.patient.as_deref(), Some("alice"));
    let c = s.with_token(&t.access_token);
    c.get("Patient/alice").await.expect(200);
    c.get("Observation/bob-hiv").await.expect(404);
}

async fn break_glass_is_audited_and_short_lived(s: SecureServer) {
    let Some(s) = audited(s).await else { return };
    let w = World::new(s).await;
    let other = w.as_role("other-doctor");
    other.get("Observation/bob-hiv").await.expect(404);
    let p = |reason: Option<&str>| {
        let mut params = vec![];
        if let Some(r) = reason {
            params.push(json!({"name": "reason", "valueString": r}));
        }
        json!({"resourceType": "Parameters", "parameter": params})
    };
    let r = other
        .post("Patient/bob/$break-glass", &p(None))
        .await
        .expect(400);
    assert!(!r.expressions().is_empty());
    other
        .post("Patient/nobody/$break-glass", &p(Some("unconscious")))
        .await
        .expect(404);
    w.as_role("pharmacist")
        .post("Patient/bob/$break-glass", &p(Some("x")))
        .await
        .expect(403);
    w.as_role("patient")
        .post("Patient/bob/$break-glass", &p(Some("x")))
        .await
        .expect(403);
    let g = other
        .post(
            "Patient/bob/$break-glass",
            &p(Some("unconscious in the emergency room")),
        )
        .await
        .expect(200)
        .json();
    assert!(g["parameter"].to_string().contains("expires"));
    // now the practitioner sees bob's record, and only bob's
    other.get("Observation/bob-hiv").await.expect(200);
    other.get("Patient/bob").await.expect(200);
    other.get("Patient/alice").await.expect(404);
    // bob sees who broke the glass, when and why
    let bob =
        w.s.with_token(&w.s.patient_token("bob", "patient/*.rs").await);
    let ev = bob.get("AuditEvent?_count=200").await.expect(200).json();
    let btg: Vec<&Value> = ev["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|e| e["purposeOfEvent"][0]["coding"][0]["code"] == "BTG")
        .collect();
    assert_eq!(btg.len(), 1, "{ev}");
    assert!(
        btg[0]
            .to_string()
            .contains("unconscious in the emergency room")
    );
    assert_eq!(btg[0]["agent"][0]["who"]["reference"], "Practitioner/other");
    // the grant is bob's only: other patients stay hidden
}

async fn writes_cannot_create_their_own_care_relationship(s: SecureServer) {
    // a practitioner cannot put themselves on bob's care team, open an encounter for him or
    // make themselves his general practitioner to gain access
    let w = World::new(s).await;
    let other = w.as_role("other-doctor");
    other
        .post(
            "CareTeam",
            &json!({"resourceType": "CareTeam", "subject": {"reference": "Patient/bob"},
                "participant": [{"member": {"reference": "Practitioner/other"}}]}),
        )
        .await
        .expect(403);
    other
        .post(
            "Encounter",
            &json!({"resourceType": "Encounter", "status": "planned", "class": {"code": "AMB"},
                "subject": {"reference": "Patient/bob"},
                "participant": [{"individual": {"reference": "Practitioner/other"}}]}),
        )
        .await
        .expect(403);
    let mut bob = w.admin_setup.get("Patient/bob").await.json();
    bob["generalPractitioner"] = json!([{"reference": "Practitioner/other"}]);
    other.put("Patient/bob", &bob).await.expect(404);
    other.get("Patient/bob").await.expect(404);
    // a new patient of their own they may register
    other
        .post(
            "Patient",
            &json!({"resourceType": "Patient", "name": [{"family": "New"}],
                "generalPractitioner": [{"reference": "Practitioner/other"}]}),
        )
        .await
        .expect(201);
}

/// The same server with auditing on (the library default is off).
async fn audited(s: SecureServer) -> Option<SecureServer> {
    let backend = s.backend;
    drop(s);
    crate::common::secure::start_secure_with(
        backend,
        healporium::app::AppOptions {
            audit: true,
            ..healporium::app::AppOptions::default()
        },
    )
    .await
}

async fn conditional_and_operation_paths_are_confined(s: SecureServer) {
    let w = World::new(s).await;
    let alice = w.as_role("patient");
    let doc = w.as_role("doctor");
    let mine = json!({"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "75622-1"}]},
        "subject": {"reference": "Patient/alice"}});
    // conditional update and create see only the token's data: they create, never touch bob's
    let r = alice
        .put("Observation?code=75622-1", &mine)
        .await
        .expect(201);
    assert_ne!(r.json()["id"], "bob-hiv");
    let r = alice
        .post_with(
            "Observation",
            &mine,
            &[(
                "if-none-exist",
                "code=http://loinc.org|75622-1&subject=Patient/bob",
            )],
        )
        .await
        .expect(201);
    assert_ne!(r.json()["id"], "bob-hiv");
    // a body id naming bob's resource is not said to exist
    let mut named = mine.clone();
    named["id"] = json!("bob-hiv");
    let hidden = alice.put("Observation?_id=none-such", &named).await;
    assert_eq!(hidden.status.as_u16(), 404, "{}", hidden.text);
    // conditional delete and patch match nothing of bob's
    alice
        .delete("Observation?subject=Patient/bob")
        .await
        .expect(204);
    let patched = alice
        .patch_with(
            "Observation?_id=bob-hiv",
            "application/json-patch+json",
            &json!([{"op": "replace", "path": "/status", "value": "cancelled"}]),
            &[],
        )
        .await;
    assert!(
        patched.status.as_u16() == 404 || patched.status.as_u16() == 412,
        "{}",
        patched.text
    );
    // $meta-add, $validate on what the token may not see: as if unknown
    let meta = json!({"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": {"tag": [{"code": "t"}]}}]});
    doc.post("Observation/bob-hiv/$meta-add", &meta)
        .await
        .expect(404);
    let mut update = w.admin_setup.get("Observation/bob-hiv").await.json();
    update["status"] = json!("amended");
    let v = json!({"resourceType": "Parameters", "parameter": [
        {"name": "mode", "valueCode": "update"}, {"name": "resource", "resource": update}]});
    doc.post("Observation/bob-hiv/$validate", &v)
        .await
        .expect(404);
    // a conditional reference in a transaction resolves only to what the token may read
    let tx = |identifier: &str| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "subject": {"reference": format!("Patient?identifier=urn:ssn|{identifier}")}},
             "request": {"method": "POST", "url": "Observation"}}]})
    };
    let a = doc.post("", &tx("bob-ssn")).await;
    let b = doc.post("", &tx("nobody-ssn")).await;
    assert_eq!(a.status, b.status);
    assert_eq!(
        a.text.replace("bob-ssn", "X"),
        b.text.replace("nobody-ssn", "X")
    );
    // server administration: administrators and backend services only
    doc.get("$reindex").await.expect(403);
    alice.get("$reindex").await.expect(403);
    w.as_role("admin").get("$reindex").await.expect(200);
    w.as_role("backend").get("$reindex").await.expect(200);
    // bob's data is as it was
    let bob = w.admin_setup.get("Observation/bob-hiv").await.json();
    assert_eq!(bob["status"], "final");
    assert!(bob["meta"].get("tag").is_none());
    assert_eq!(bob["meta"]["versionId"], "1");
}

/// `$credit-quote` changes nothing but reads the Account it is invoked on: every role gets
/// exactly what a read of that Account gets (hidden looks unknown), and at type level what
/// its scopes and role allow on Account.
async fn credit_quote_follows_account_access(s: SecureServer) {
    let w = World::new(s).await;
    for (id, patient) in [("alice-acct", "alice"), ("bob-acct", "bob")] {
        w.admin_setup
            .put(
                &format!("Account/{id}"),
                &json!({"resourceType": "Account", "id": id, "status": "active",
                    "subject": [{"reference": format!("Patient/{patient}")}]}),
            )
            .await
            .expect(201);
    }
    let quote = json!({"resourceType": "Parameters", "parameter": [
        {"name": "amount", "valueMoney": {"value": 100.00, "currency": "USD"}},
        {"name": "termMonths", "valueInteger": 3},
        {"name": "plan", "valueCode": "installments-0"}]});
    let expected: [(&str, [Sees; 7]); 2] = [
        ("Account/alice-acct", [Y, Y, H, F, Y, Y, Y]),
        ("Account/bob-acct", [H, H, H, F, H, Y, Y]),
    ];
    let type_level = [200, 200, 200, 403, 200, 200, 200];
    for (col, role) in ROLES.iter().enumerate() {
        let c = w.as_role(role);
        let r = c.post("Account/$credit-quote", &quote).await;
        assert_eq!(r.status.as_u16(), type_level[col], "{role}: {}", r.text);
        if r.status.as_u16() == 200 {
            assert_eq!(
                r.json()["parameter"][0]["valueMoney"]["value"],
                json!(33.34)
            );
        }
        for (key, sees) in &expected {
            let code = match sees[col] {
                Y => 200,
                H => 404,
                F => 403,
            };
            let read = c.get(key).await;
            assert_eq!(
                read.status.as_u16(),
                code,
                "{role} read {key}: {}",
                read.text
            );
            let r = c.post(&format!("{key}/$credit-quote"), &quote).await;
            assert_eq!(r.status.as_u16(), code, "{role} quote {key}: {}", r.text);
            if code == 404 {
                // hidden answers exactly like unknown
                let unknown = c
                    .post("Account/no-such-acct/$credit-quote", &quote)
                    .await
                    .expect(404);
                assert_eq!(
                    r.json()["issue"][0]["diagnostics"]
                        .as_str()
                        .unwrap()
                        .replace(&key[8..], "X"),
                    unknown.json()["issue"][0]["diagnostics"]
                        .as_str()
                        .unwrap()
                        .replace("no-such-acct", "X"),
                    "{role} {key}"
                );
            }
        }
    }
}

/// `$credit-apply` and `$credit-draw` for every role: the scopes must grant Account and
/// Contract create, the role must be one that may open credit (patient for themselves,
/// practitioner for patients in care, administrator; backend services by scope), and the
/// patient, line and bill must be within reach — hidden answers like unknown.
async fn credit_commands_follow_roles_and_reach(s: SecureServer) {
    let w = World::new(s).await;
    let apply = |patient: &str, request: String| {
        json!({"resourceType": "Parameters", "parameter": [
            {"name": "patient", "valueReference": {"reference": format!("Patient/{patient}")}},
            {"name": "product", "valueCode": "standard"},
            {"name": "requestedLimit", "valueMoney": {"value": 1000, "currency": "USD"}},
            {"name": "requestId", "valueString": request}]})
    };
    // columns as in ROLES
    let alice = [200, 200, 404, 403, 403, 200, 200];
    let bob = [404, 404, 404, 403, 403, 200, 200];
    for (col, role) in ROLES.iter().enumerate() {
        let c = w.as_role(role);
        for (patient, expected) in [("alice", alice), ("bob", bob)] {
            let r = c
                .post(
                    "Account/$credit-apply",
                    &apply(patient, format!("{role}-{patient}")),
                )
                .await;
            assert_eq!(
                r.status.as_u16(),
                expected[col],
                "{role} applies for {patient}: {}",
                r.text
            );
        }
    }
    // alice's line exists now (opened by the first role allowed); draws on it
    let lines = w
        .admin_setup
        .get("Account?subject=Patient/alice&_total=accurate")
        .await
        .expect(200)
        .json();
    assert_eq!(
        lines["total"], 1,
        "one line, the later applications were declined"
    );
    let line = lines["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let draw = [200, 200, 404, 403, 403, 200, 200];
    for (col, role) in ROLES.iter().enumerate() {
        let inv = w
            .admin_setup
            .create(&json!({"resourceType": "Invoice", "status": "issued",
                "subject": {"reference": "Patient/alice"},
                "totalGross": {"value": 10, "currency": "USD"}}))
            .await;
        let body = json!({"resourceType": "Parameters", "parameter": [
            {"name": "source", "valueReference": {"reference": format!("Invoice/{inv}")}},
            {"name": "termMonths", "valueInteger": 3},
            {"name": "requestId", "valueString": format!("draw-{role}")}]});
        let r = w
            .as_role(role)
            .post(&format!("Account/{line}/$credit-draw"), &body)
            .await;
        assert_eq!(r.status.as_u16(), draw[col], "{role} draws: {}", r.text);
    }
    // payments: recorded by the back office or the processor, never by the payer
    let pay = [403, 403, 404, 403, 403, 200, 200];
    for (col, role) in ROLES.iter().enumerate() {
        let body = json!({"resourceType": "Parameters", "parameter": [
            {"name": "amount", "valueMoney": {"value": 1, "currency": "USD"}},
            {"name": "requestId", "valueString": format!("pay-{role}")}]});
        let r = w
            .as_role(role)
            .post(&format!("Account/{line}/$credit-payment"), &body)
            .await;
        assert_eq!(r.status.as_u16(), pay[col], "{role} pays: {}", r.text);
    }
    // $defer of a claim's adjudication: Claim read, then $credit-draw's rules
    let defer = [200, 200, 404, 403, 403, 200, 200];
    let claim_type = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]});
    for (col, role) in ROLES.iter().enumerate() {
        let claim = w
            .admin_setup
            .create(&json!({"resourceType": "Claim", "status": "active", "type": claim_type,
                "use": "claim", "patient": {"reference": "Patient/alice"}, "created": "2026-06-01",
                "insurer": {"reference": "Organization/insurer"},
                "provider": {"reference": "Practitioner/doc"}, "priority": {"coding": [{"code": "normal"}]},
                "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/alice-cov"}}]}))
            .await;
        w.admin_setup
            .create(
                &json!({"resourceType": "ClaimResponse", "status": "active", "type": claim_type,
                "use": "claim", "patient": {"reference": "Patient/alice"}, "created": "2026-06-01",
                "insurer": {"reference": "Organization/insurer"}, "outcome": "complete",
                "request": {"reference": format!("Claim/{claim}")},
                "total": [{"category": {"coding": [{"code": "memberliability"}]},
                    "amount": {"value": 5, "currency": "USD"}}]}),
            )
            .await;
        let body = json!({"resourceType": "Parameters", "parameter": [
            {"name": "creditLine", "valueReference": {"reference": format!("Account/{line}")}},
            {"name": "termMonths", "valueInteger": 3},
            {"name": "requestId", "valueString": format!("defer-{role}")}]});
        let r = w
            .as_role(role)
            .post(&format!("Claim/{claim}/$defer"), &body)
            .await;
        assert_eq!(r.status.as_u16(), defer[col], "{role} defers: {}", r.text);
    }
    // payoff reads; a reversal is the back office's (administrators, backend services)
    let payoff = [200, 200, 404, 403, 200, 200, 200];
    let receipt = w
        .admin_setup
        .get("PaymentReconciliation?_count=1")
        .await
        .expect(200)
        .json()["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let reverse = [403, 403, 404, 403, 403, 200, 409];
    for (col, role) in ROLES.iter().enumerate() {
        let c = w.as_role(role);
        let r = c
            .post(
                &format!("Account/{line}/$payoff"),
                &json!({"resourceType": "Parameters"}),
            )
            .await;
        assert_eq!(r.status.as_u16(), payoff[col], "{role} payoff: {}", r.text);
        let body = json!({"resourceType": "Parameters", "parameter": [
            {"name": "payment", "valueReference": {"reference": format!("PaymentReconciliation/{receipt}")}},
            {"name": "reason", "valueCode": "chargeback"},
            {"name": "requestId", "valueString": format!("reverse-{role}")}]});
        let r = c
            .post(&format!("Account/{line}/$credit-reverse"), &body)
            .await;
        // the backend comes after the administrator: the payment is reversed already
        assert_eq!(
            r.status.as_u16(),
            reverse[col],
            "{role} reverses: {}",
            r.text
        );
    }
    // statements: those who may read the line and are the patient, their practitioner or
    // the back office
    let statement = [200, 200, 404, 403, 403, 200, 200];
    for (col, role) in ROLES.iter().enumerate() {
        let r = w
            .as_role(role)
            .post(
                &format!("Account/{line}/$statement"),
                &json!({"resourceType": "Parameters"}),
            )
            .await;
        assert_eq!(
            r.status.as_u16(),
            statement[col],
            "{role} statement: {}",
            r.text
        );
    }
    // bob's bill on alice's line is refused; bob's own line is out of alice's reach
    let bob_line = w
        .as_role("admin")
        .get("Account?subject=Patient/bob")
        .await
        .expect(200)
        .json()["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let inv = w
        .admin_setup
        .create(&json!({"resourceType": "Invoice", "status": "issued",
            "subject": {"reference": "Patient/bob"},
            "totalGross": {"value": 10, "currency": "USD"}}))
        .await;
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "source", "valueReference": {"reference": format!("Invoice/{inv}")}},
        {"name": "termMonths", "valueInteger": 3},
        {"name": "requestId", "valueString": "alice-on-bob"}]});
    w.as_role("patient")
        .post(&format!("Account/{bob_line}/$credit-draw"), &body)
        .await
        .expect(404);
    // alice may not draw bob's bill (hidden) on her own line
    w.as_role("patient")
        .post(&format!("Account/{line}/$credit-draw"), &body)
        .await
        .expect(404);
}

/// `Claim/$submit` for every role: practitioners (for patients in their care), administrators
/// and backend services submit; patients, pharmacists and insurers do not; a patient out of
/// reach answers 404. The ClaimResponse is answered whatever the adjudication says (alice's
/// coverage names no plan: outcome error, still 200).
async fn claim_submit_follows_roles_and_reach(s: SecureServer) {
    let w = World::new(s).await;
    let claim = |patient: &str, n: &str| {
        json!({"resourceType": "Claim", "status": "active",
            "identifier": [{"system": "https://clinic.example/claims", "value": n}],
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
            "use": "claim", "patient": {"reference": format!("Patient/{patient}")},
            "created": "2026-06-02", "provider": {"reference": "Practitioner/doc"},
            "priority": {"coding": [{"code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/alice-cov"}}],
            "item": [{"sequence": 1, "productOrService": {"coding": [{"code": "99213"}]},
                "net": {"value": 100, "currency": "USD"}}]})
    };
    let alice = [403, 200, 404, 403, 403, 200, 200];
    let bob = [403, 404, 404, 403, 403, 200, 200];
    for (col, role) in ROLES.iter().enumerate() {
        let c = w.as_role(role);
        for (patient, expected) in [("alice", alice), ("bob", bob)] {
            let r = c
                .post(
                    "Claim/$submit",
                    &claim(patient, &format!("{role}-{patient}")),
                )
                .await;
            assert_eq!(
                r.status.as_u16(),
                expected[col],
                "{role} submits for {patient}: {}",
                r.text
            );
            if expected[col] == 200 {
                assert_eq!(r.json()["resourceType"], "ClaimResponse");
            }
        }
    }
}

/// An insurer sees its members' Claims, ClaimResponses, ExplanationOfBenefits and Coverages
/// only where its organization is the insurer or payor — not what the same member billed to
/// another insurer: not by read, search, count, include or chain.
async fn insurer_sees_only_billing_it_pays_for(s: SecureServer) {
    let w = World::new(s).await;
    let a = &w.admin_setup;
    a.put(
        "Organization/rival",
        &json!({"resourceType": "Organization", "id": "rival", "name": "Rival"}),
    )
    .await
    .expect(201);
    a.put("Coverage/alice-rival", &json!({"resourceType": "Coverage", "id": "alice-rival", "status": "active",
        "beneficiary": {"reference": "Patient/alice"}, "payor": [{"reference": "Organization/rival"}]}))
        .await
        .expect(201);
    let claim_type = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]});
    for (id, insurer, coverage) in [
        ("ours", "insurer", "alice-cov"),
        ("theirs", "rival", "alice-rival"),
    ] {
        a.put(&format!("Claim/{id}"), &json!({"resourceType": "Claim", "id": id, "status": "active",
            "type": claim_type, "use": "claim", "patient": {"reference": "Patient/alice"},
            "created": "2026-06-01", "insurer": {"reference": format!("Organization/{insurer}")},
            "provider": {"reference": "Practitioner/doc"}, "priority": {"coding": [{"code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": format!("Coverage/{coverage}")}}]}))
            .await
            .expect(201);
        a.put(
            &format!("ClaimResponse/{id}"),
            &json!({"resourceType": "ClaimResponse", "id": id, "status": "active",
            "type": claim_type, "use": "claim", "patient": {"reference": "Patient/alice"},
            "created": "2026-06-01", "insurer": {"reference": format!("Organization/{insurer}")},
            "outcome": "complete", "request": {"reference": format!("Claim/{id}")}}),
        )
        .await
        .expect(201);
        a.put(&format!("ExplanationOfBenefit/{id}"), &json!({"resourceType": "ExplanationOfBenefit", "id": id,
            "status": "active", "type": claim_type, "use": "claim", "patient": {"reference": "Patient/alice"},
            "created": "2026-06-01", "insurer": {"reference": format!("Organization/{insurer}")},
            "provider": {"reference": "Practitioner/doc"}, "outcome": "complete",
            "claim": {"reference": format!("Claim/{id}")},
            "insurance": [{"focal": true, "coverage": {"reference": format!("Coverage/{coverage}")}}]}))
            .await
            .expect(201);
    }
    let insurer = w.as_role("insurer");
    for t in ["Claim", "ClaimResponse", "ExplanationOfBenefit"] {
        insurer.get(&format!("{t}/ours")).await.expect(200);
        let hidden = insurer.get(&format!("{t}/theirs")).await.expect(404);
        let unknown = insurer.get(&format!("{t}/none")).await.expect(404);
        assert_eq!(
            hidden.json()["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .replace("theirs", "X"),
            unknown.json()["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .replace("none", "X")
        );
        let all = insurer
            .get(&format!("{t}?patient=Patient/alice&_total=accurate"))
            .await
            .expect(200)
            .json();
        assert_eq!(all["total"], 1, "{t}: {all}");
        assert!(!all.to_string().contains("theirs"), "{t}: {all}");
        insurer
            .get(&format!("{t}/theirs/_history"))
            .await
            .expect(404);
    }
    insurer.get("Coverage/alice-cov").await.expect(200);
    insurer.get("Coverage/alice-rival").await.expect(404);
    // nor through an include, a reverse include or a chain
    let r = insurer
        .get("ClaimResponse?_include=ClaimResponse:request&patient=Patient/alice")
        .await
        .expect(200)
        .json();
    assert!(!r.to_string().contains("Claim/theirs"), "{r}");
    let r = insurer
        .get("Patient?_id=alice&_revinclude=Claim:patient&_revinclude=ExplanationOfBenefit:patient")
        .await
        .expect(200)
        .json();
    assert!(!r.to_string().contains("\"theirs\""), "{r}");
    let r = insurer
        .get("Claim?insurer=Organization/rival&_total=accurate")
        .await
        .expect(200)
        .json();
    assert_eq!(r["total"], 0);
    let r = insurer
        .get("Patient?_has:Claim:patient:insurer=Organization/rival&_total=accurate")
        .await
        .expect(200)
        .json();
    assert_eq!(r["total"], 0, "{r}");
    // the administrator sees both
    let r = a
        .get("Claim?patient=Patient/alice&_total=accurate")
        .await
        .expect(200)
        .json();
    assert_eq!(r["total"], 2);
}

/// Operations inside batch and transaction Bundles meet the same Guard as their REST calls:
/// for every role each entry answers exactly as the operation called on its own (hidden
/// looks unknown, bodies name nothing hidden), `$lookup` included; a state-changing
/// operation is refused inside a transaction for every role.
async fn operations_in_bundles_follow_the_roles(s: SecureServer) {
    let w = World::new(s).await;
    w.admin_setup
        .post(
            "CodeSystem",
            &json!({"resourceType": "CodeSystem", "url": "http://example.org/cs", "status": "active",
                "content": "complete", "concept": [{"code": "a", "display": "Alpha"}]}),
        )
        .await
        .expect(201);
    let calls = [
        ("GET", "Patient/alice/$everything"),
        ("GET", "Patient/bob/$everything"),
        ("GET", "Patient/bob/$meta"),
        (
            "GET",
            "CodeSystem/$lookup?system=http://example.org/cs&code=a",
        ),
    ];
    for (col, role) in ROLES.iter().enumerate() {
        let c = w.as_role(role);
        let entries: Vec<Value> = calls
            .iter()
            .map(|(m, u)| json!({"request": {"method": m, "url": u}}))
            .collect();
        let b = c
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "batch", "entry": entries}),
            )
            .await;
        assert_eq!(b.status.as_u16(), 200, "{role}: {}", b.text);
        let body = b.json();
        for (i, (_, url)) in calls.iter().enumerate() {
            let alone = c.get(url).await;
            let entry = &body["entry"][i];
            assert_eq!(
                status_of(entry),
                alone.status.as_u16(),
                "{role} {url}: batch {entry} vs alone {}",
                alone.text
            );
            assert_none_of(&format!("{role} {url}"), entry, &w.hidden_from(col));
        }
        // in a transaction: read-only operations run, state-changing ones are refused
        let t = c
            .post(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
                    {"resource": {"resourceType": "Parameters", "parameter": [
                        {"name": "patient", "valueReference": {"reference": "Patient/alice"}},
                        {"name": "product", "valueCode": "standard"},
                        {"name": "requestedLimit", "valueMoney": {"value": 100, "currency": "USD"}},
                        {"name": "requestId", "valueString": format!("tx-{role}")}]},
                     "request": {"method": "POST", "url": "Account/$credit-apply"}}]}),
            )
            .await
            .expect(400);
        assert_eq!(t.expressions(), vec!["Bundle.entry[0]"], "{role}");
    }
}

/// `POST /hl7v2` writes whatever a hospital sends: only a backend service with system/ write
/// scopes or an administrator may post. Every other role is refused with 403 before anything
/// is stored (no inbox row, no dead letter, no resource) — even a patient posting about
/// herself — and without a token it is 401.
async fn hl7v2_feed_follows_the_roles(s: SecureServer) {
    let w = World::new(s).await;
    let message = |control: &str, mrn: &str| {
        format!(
            "MSH|^~\\&|EPIC|HOSP|HP|HP|20240105083000+0100||ADT^A04^ADT_A01|{control}|P|2.5.1\r\
             EVN|A04|20240105083000+0100\r\
             PID|1||{mrn}^^^HEALPORIUM^MR||Doe^Jane||19800214|F\r\
             PV1|1|O\r"
        )
    };
    let expected = [403, 403, 403, 403, 403, 200, 200];
    for (col, role) in ROLES.iter().enumerate() {
        let c = w.as_role(role);
        let r = c
            .post_hl7(&message(&format!("M-{role}"), &format!("mrn-{role}")))
            .await;
        assert_eq!(r.status.as_u16(), expected[col], "{role}: {}", r.text);
        if expected[col] == 200 {
            assert!(r.text.contains("MSA|AA|"), "{role}: {}", r.text);
        } else {
            assert_eq!(r.json()["resourceType"], "OperationOutcome");
        }
    }
    let anonymous = w.s.server.clone();
    let r = anonymous.post_hl7(&message("M-anon", "mrn-anon")).await;
    assert_eq!(r.status.as_u16(), 401, "{}", r.text);
    // what was refused left nothing behind
    let admin = w.as_role("admin");
    for role in ["patient", "doctor", "pharmacist", "insurer", "anon"] {
        let found = admin
            .get(&format!(
                "Patient?identifier=https://healporium.dev/fhir/sid/mrn|mrn-{role}"
            ))
            .await
            .expect(200)
            .json();
        assert!(
            found["entry"].as_array().is_none_or(Vec::is_empty),
            "{role}: {found}"
        );
    }
    let dead =
        w.s.store
            .feeds()
            .dead_letters(None, true, 100)
            .await
            .unwrap();
    assert!(dead.is_empty(), "{dead:?}");
    for role in ["admin", "backend"] {
        let found = admin
            .get(&format!(
                "Patient?identifier=https://healporium.dev/fhir/sid/mrn|mrn-{role}"
            ))
            .await
            .expect(200)
            .json();
        assert_eq!(
            found["entry"].as_array().map_or(0, Vec::len),
            1,
            "{role}: {found}"
        );
    }
}

/// `/health/live` and `/health/ready` answer every caller — no token, any role, a bad token —
/// with the same small body about the node only: nothing to read, count or tell apart.
async fn health_is_public_and_the_same_for_everyone(s: SecureServer) {
    let w = World::new(s).await;
    let origin = w.s.server.origin();
    let client = &w.s.server.client;
    for path in ["/health/live", "/health/ready"] {
        let mut bodies = Vec::new();
        let mut tokens: Vec<Option<String>> = vec![None, Some("not-a-token".into())];
        for role in ROLES {
            tokens.push(w.as_role(role).bearer.clone());
        }
        for token in tokens {
            let mut req = client.get(format!("{origin}{path}"));
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{path}");
            assert_eq!(
                r.headers()["content-type"].to_str().unwrap(),
                "application/health+json"
            );
            bodies.push(r.text().await.unwrap());
        }
        assert!(
            bodies.windows(2).all(|b| b[0] == b[1]),
            "{path}: {bodies:?}"
        );
        let v: Value = serde_json::from_str(&bodies[0]).unwrap();
        assert_eq!(v["status"], "pass", "{v}");
        assert!(bodies[0].len() < 120, "about the node only: {}", bodies[0]);
    }
}

/// Scheduling: every role may look for free slots (shared data); a patient books and holds
/// only for herself, a practitioner only for patients in their care, pharmacists and
/// insurers not at all; a refused booking leaves its slot free. A patient cancels her own
/// booking (the server frees the slot she may not write herself). A practitioner writes
/// only Schedules naming them and the Slots of those.
async fn scheduling_follows_the_roles(s: SecureServer) {
    let w = World::new(s).await;
    let admin = &w.admin_setup;
    let schedule = |id: &str, practitioner: &str| {
        json!({"resourceType": "Schedule", "id": id,
            "actor": [{"reference": format!("Practitioner/{practitioner}")}]})
    };
    let slot = |id: &str, schedule: &str, hour: usize| {
        json!({"resourceType": "Slot", "id": id, "schedule": {"reference": format!("Schedule/{schedule}")},
            "status": "free", "start": format!("2030-01-07T{hour:02}:00:00Z"),
            "end": format!("2030-01-07T{hour:02}:30:00Z")})
    };
    admin
        .put("Schedule/doc-sched", &schedule("doc-sched", "doc"))
        .await
        .expect(201);
    admin
        .put("Schedule/other-sched", &schedule("other-sched", "other"))
        .await
        .expect(201);
    for (i, role) in ROLES.iter().enumerate() {
        for who in ["alice", "bob"] {
            let id = format!("slot-{who}-{role}");
            let hour = i + if who == "bob" { 8 } else { 0 };
            admin
                .put(&format!("Slot/{id}"), &slot(&id, "doc-sched", hour))
                .await
                .expect(201);
        }
    }
    let book = |slot: &str, patient: &str| {
        json!({"resourceType": "Parameters", "parameter": [{"name": "appt-resource", "resource": {
            "resourceType": "Appointment", "status": "proposed",
            "slot": [{"reference": format!("Slot/{slot}")}],
            "participant": [{"actor": {"reference": format!("Patient/{patient}")}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/doc"}, "status": "accepted"}]}}]})
    };
    let find = json!({"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDateTime": "2030-01-07T00:00:00Z"},
        {"name": "end", "valueDateTime": "2030-01-08T00:00:00Z"},
        {"name": "practitioner", "valueReference": {"reference": "Practitioner/doc"}}]});
    let slot_status = |id: String| async move {
        admin.get(&format!("Slot/{id}")).await.expect(200).json()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // columns as in ROLES
    let alice = [201, 201, 403, 403, 403, 201, 201];
    let bob = [403, 403, 403, 403, 403, 201, 201];
    let hold = [200, 200, 403, 403, 403, 200, 200];
    for (col, role) in ROLES.iter().enumerate() {
        let c = w.as_role(role);
        let found = c.post("Appointment/$find", &find).await.expect(200).json();
        assert!(
            found["total"].as_u64().unwrap() >= 1,
            "{role} finds free slots: {found}"
        );
        let r = c
            .post(
                "Appointment/$hold",
                &book(&format!("slot-alice-{role}"), "alice"),
            )
            .await;
        assert_eq!(r.status.as_u16(), hold[col], "{role} holds: {}", r.text);
        for (patient, expected) in [("alice", alice), ("bob", bob)] {
            let id = format!("slot-{patient}-{role}");
            let r = c.post("Appointment/$book", &book(&id, patient)).await;
            assert_eq!(
                r.status.as_u16(),
                expected[col],
                "{role} books for {patient}: {}",
                r.text
            );
            let status = slot_status(id).await;
            if expected[col] == 201 {
                assert_eq!(status, "busy", "{role} for {patient}");
            } else {
                assert_ne!(status, "busy", "{role} for {patient}: a refused booking");
                assert_eq!(r.json()["resourceType"], "OperationOutcome");
            }
        }
    }
    // alice cancels her own booking; the slot is free again
    let alice_token = w.as_role("patient");
    let mine = alice_token
        .get("Appointment?slot=Slot/slot-alice-patient")
        .await
        .expect(200)
        .json();
    let mut appt = mine["entry"][0]["resource"].clone();
    let id = appt["id"].as_str().unwrap().to_string();
    appt["status"] = json!("cancelled");
    alice_token
        .put(&format!("Appointment/{id}"), &appt)
        .await
        .expect(200);
    assert_eq!(slot_status("slot-alice-patient".into()).await, "free");
    // schedule management: a practitioner's own only
    let doc = w.as_role("doctor");
    doc.put("Schedule/doc-second", &schedule("doc-second", "doc"))
        .await
        .expect(201);
    doc.put("Schedule/doc-fake", &schedule("doc-fake", "other"))
        .await
        .expect(403);
    doc.put("Slot/doc-new", &slot("doc-new", "doc-second", 20))
        .await
        .expect(201);
    doc.put("Slot/doc-sneak", &slot("doc-sneak", "other-sched", 20))
        .await
        .expect(403);
    let other = w.as_role("other-doctor");
    other
        .put("Slot/doc-new", &slot("doc-new", "other-sched", 21))
        .await
        .expect(403);
    other.delete("Slot/doc-new").await.expect(403);
    other
        .put("Schedule/doc-second", &schedule("doc-second", "other"))
        .await
        .expect(403);
    for role in ["patient", "pharmacist", "insurer"] {
        let r = w
            .as_role(role)
            .put("Slot/doc-new", &slot("doc-new", "doc-second", 22))
            .await;
        assert_eq!(r.status.as_u16(), 403, "{role}: {}", r.text);
    }
    let after = admin.get("Slot/doc-new").await.expect(200).json();
    assert_eq!(after["start"], "2030-01-07T20:00:00Z");
}

/// Subscriptions are configuration: administrators and backend services create them (each
/// recorded as its owner, whose Guard judges every notification); every other role is
/// refused before anything is stored, none of them may read one, and none may bind a
/// websocket to one.
async fn subscriptions_follow_the_roles(s: SecureServer) {
    let w = World::new(s).await;
    let sub = json!({"resourceType": "Subscription", "status": "requested", "reason": "r",
        "criteria": "Observation?subject=Patient/alice",
        "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook"}});
    let expected = [403, 403, 403, 403, 403, 201, 201];
    let mut created = Vec::new();
    for (col, role) in ROLES.iter().enumerate() {
        let r = w.as_role(role).post("Subscription", &sub).await;
        assert_eq!(r.status.as_u16(), expected[col], "{role}: {}", r.text);
        if expected[col] == 201 {
            let v = r.json();
            let owner = v["extension"].to_string();
            assert!(owner.contains("subscription-owner"), "{role}: {owner}");
            created.push(v["id"].as_str().unwrap().to_string());
        }
    }
    let all = w.admin_setup.get("Subscription").await.expect(200).json();
    assert_eq!(all["entry"].as_array().map_or(0, Vec::len), created.len());
    for (col, role) in ROLES.iter().enumerate() {
        let r = w
            .as_role(role)
            .get(&format!("Subscription/{}", created[0]))
            .await;
        let ok = expected[col] == 201;
        assert_eq!(r.status.is_success(), ok, "{role} reads: {}", r.text);
    }
    // a websocket binds only to a Subscription its token may read; without a token the
    // upgrade is refused
    use futures_util::SinkExt;
    let ws_sub = w
        .admin_setup
        .post(
            "Subscription",
            &json!({"resourceType": "Subscription", "status": "requested", "reason": "r",
                "criteria": "Observation?subject=Patient/alice", "channel": {"type": "websocket"}}),
        )
        .await
        .expect(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/websocket", w.s.server.base.replacen("http", "ws", 1));
    for (col, role) in ROLES.iter().enumerate() {
        let token = w.as_role(role).bearer.clone().unwrap();
        let mut ws = crate::subscriptions::websocket(&url, Some(&token)).await;
        ws.send(tokio_tungstenite::tungstenite::Message::Text(
            format!("bind {ws_sub}").into(),
        ))
        .await
        .unwrap();
        let answer = crate::subscriptions::next_text(&mut ws, 5_000)
            .await
            .unwrap();
        let bound = expected[col] == 201;
        assert_eq!(
            answer == format!("bound {ws_sub}"),
            bound,
            "{role}: {answer}"
        );
    }
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let anonymous = tokio_tungstenite::connect_async(url.into_client_request().unwrap()).await;
    assert!(anonymous.is_err(), "a websocket without a token");
}

/// `GET /metrics` answers only the operator's metrics token: no token, a wrong one and every
/// role's SMART token get 401 with nothing counted in the answer; the page names routes and
/// states, never a patient, a resource id or a query.
async fn metrics_are_for_the_operator_only(s: SecureServer) {
    let w = World::new(s).await;
    let origin = w.s.server.origin();
    let client = &w.s.server.client;
    // traffic that names patients, ids and queries
    let admin = w.as_role("admin");
    admin.get("Patient/alice").await.expect(200);
    admin
        .get("Observation?subject=Patient/bob&code=secret-code-123")
        .await
        .expect(200);
    let mut tokens: Vec<Option<String>> = vec![None, Some("not-the-metrics-token".into())];
    for role in ROLES {
        tokens.push(w.as_role(role).bearer.clone());
    }
    for token in &tokens {
        let mut req = client.get(format!("{origin}/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{token:?}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("healporium_"), "{body}");
        assert!(body.contains("OperationOutcome"), "{body}");
    }
    let r = client
        .get(format!("{origin}/metrics"))
        .bearer_auth(crate::common::secure::METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    // every node's page (one in single-node mode): request counters are per node
    let page = r.text().await.unwrap()
        + &crate::common::metrics_pages(&w.s.server, crate::common::secure::METRICS_TOKEN)
            .await
            .concat();
    for needle in [
        "healporium_http_requests_total{route=\"/fhir/{type}/{id}\",method=\"GET\",status=\"200\"}",
        "healporium_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"401\"}",
        "healporium_http_request_duration_seconds_bucket",
        "healporium_db_pool_connections",
        "healporium_audit_pending",
        "healporium_verification_age_seconds{kind=\"audit\"}",
        "healporium_feed_backlog",
        "healporium_subscription_lag",
    ] {
        assert!(page.contains(needle), "{needle} missing:\n{page}");
    }
    for secret in ["alice", "bob", "secret-code-123", "Observation?", "Bearer"] {
        assert!(!page.contains(secret), "{secret} on the metrics page");
    }
}

/// `GET /openapi.json` describes the API, never data: every caller (no token, a bad one,
/// every role) gets the same document, and it names none of the world's patients or ids.
async fn openapi_is_public_and_names_no_data(s: SecureServer) {
    let w = World::new(s).await;
    let origin = w.s.server.origin();
    let client = &w.s.server.client;
    let mut tokens: Vec<Option<String>> = vec![None, Some("not-a-token".into())];
    for role in ROLES {
        tokens.push(w.as_role(role).bearer.clone());
    }
    let mut bodies = Vec::new();
    for token in &tokens {
        let mut req = client.get(format!("{origin}/openapi.json"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "{token:?}");
        bodies.push(r.text().await.unwrap());
    }
    assert!(
        bodies.windows(2).all(|b| b[0] == b[1]),
        "the same for everyone"
    );
    for secret in ["alice", "bob-hiv", "Patient/bob", "alice-rx", "Bearer ey"] {
        assert!(
            !bodies[0].contains(secret),
            "{secret} in the OpenAPI document"
        );
    }
    let r = client
        .post(format!("{origin}/openapi.json"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
}

/// Exports every role's kick-off (system level and Patient level) and returns what its
/// files hold, as type/id keys; the status and files are read with the role's own token.
async fn exported(w: &World, role: &str, path: &str) -> Vec<String> {
    let kick = [
        ("accept", "application/fhir+json"),
        ("prefer", "respond-async"),
    ];
    let s = w.as_role(role);
    let r = s.get_with(path, &kick).await.expect(202);
    let status = r.header("content-location").unwrap().to_string();
    let status = status.split("/fhir/").nth(1).unwrap().to_string();
    crate::bulk::run_jobs(&w.s.store, &Default::default()).await;
    let m = s.get(&status).await.expect(200).json();
    assert_eq!(m["requiresAccessToken"], true);
    // nobody else may poll, download or cancel it: as if it did not exist
    for other in ROLES.iter().filter(|r| **r != role) {
        w.as_role(other).get(&status).await.expect(404);
        w.as_role(other).delete(&status).await.expect(404);
    }
    let mut keys = Vec::new();
    for o in m["output"].as_array().unwrap() {
        let file = o["url"]
            .as_str()
            .unwrap()
            .split("/fhir/")
            .nth(1)
            .unwrap()
            .to_string();
        for other in ROLES.iter().filter(|r| **r != role) {
            w.as_role(other).get(&file).await.expect(404);
        }
        // without a token: 401
        let anonymous = crate::common::Server::at(&w.s.server.url(""));
        assert_eq!(anonymous.get(&file).await.status.as_u16(), 401);
        let r = s
            .get_with(&file, &[("accept", "application/fhir+ndjson")])
            .await
            .expect(200);
        for line in r.text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["resourceType"], o["type"]);
            keys.push(format!(
                "{}/{}",
                v["resourceType"].as_str().unwrap(),
                v["id"].as_str().unwrap()
            ));
        }
    }
    keys.sort();
    keys
}

/// A Bulk Data export is a search of every type by the kick-off's token: each role's system
/// export holds exactly what the role may read of the world, its Patient-level export only
/// the compartments within its reach, and the kick-off, status, download and cancel are
/// audited.
async fn bulk_export_follows_the_roles(s: SecureServer) {
    let Some(s) = audited(s).await else { return };
    let w = World::new(s).await;
    for (col, role) in ROLES.iter().enumerate() {
        let all = exported(&w, role, "$export").await;
        for (key, sees) in WORLD {
            assert_eq!(
                all.contains(&key.to_string()),
                sees[col] == Y,
                "{role}'s system export and {key} ({:?}): {all:?}",
                sees[col]
            );
        }
        let patients = exported(&w, role, "Patient/$export").await;
        for key in &patients {
            assert!(
                all.contains(key),
                "{role}: {key} only in the Patient export"
            );
        }
        assert!(
            !patients
                .iter()
                .any(|k| k.starts_with("Practitioner/") || k.starts_with("Organization/")),
            "{role}: {patients:?}"
        );
        if col == 0 {
            // the patient's own Patient-level export is her compartment
            for k in [
                "Patient/alice",
                "Observation/alice-obs",
                "MedicationRequest/alice-rx",
            ] {
                assert!(patients.contains(&k.to_string()), "{patients:?}");
            }
            assert!(!patients.iter().any(|k| k.contains("bob")), "{patients:?}");
        }
    }
    // a Group the role may not read cannot be exported
    let kick = [
        ("accept", "application/fhir+json"),
        ("prefer", "respond-async"),
    ];
    w.as_role("patient")
        .get_with("Group/both/$export", &kick)
        .await
        .expect(403);
    let group = exported(&w, "backend", "Group/both/$export").await;
    assert!(
        group.contains(&"Observation/bob-hiv".to_string()),
        "{group:?}"
    );
    // `$import` fetches URLs and writes anything: server administration only
    let manifest = json!({"resourceType": "Parameters", "parameter": [{"name": "input", "part": [
        {"name": "type", "valueCode": "Patient"},
        {"name": "url", "valueUri": "https://example.invalid/p.ndjson"}]}]});
    for role in ROLES {
        let r = w
            .as_role(role)
            .post_with("$import", &manifest, &[("prefer", "respond-async")])
            .await;
        let expected = if matches!(role, "admin" | "backend") {
            202
        } else {
            403
        };
        r.expect(expected);
    }
    // audited: kick-off, status, download and cancel
    let alice = w.as_role("patient");
    let r = alice.get_with("Patient/$export", &kick).await.expect(202);
    let status = r
        .header("content-location")
        .unwrap()
        .split("/fhir/")
        .nth(1)
        .unwrap()
        .to_string();
    alice.delete(&status).await.expect(202);
    let events = w
        .as_role("admin")
        .get("AuditEvent?_count=1000")
        .await
        .expect(200)
        .json()
        .to_string();
    for op in ["$export", "$bulk-status", "$bulk-file"] {
        assert!(events.contains(op), "no {op} AuditEvent");
    }
}

/// The web app (`/app/`), every page for every role, on the demo world: a role's own pages answer 200, other roles' pages say they are
/// not theirs (404), and pages about records out of reach are not found.
async fn web_pages_follow_the_roles(s: SecureServer) {
    crate::common::web::demo_world(&s).await;
    let origin = s.origin();
    let patient_pages = [
        "/app/",
        "/app/health",
        "/app/health/chart.svg?kind=weight",
        "/app/records",
        "/app/records/Observation/demo-alice-hr",
        "/app/appointments",
        "/app/bills",
        "/app/messages",
        "/app/profile",
        "/app/access",
    ];
    let doctor_pages = [
        "/app/patients",
        "/app/patients/demo-alice",
        "/app/inbox",
        "/app/availability",
    ];
    let pharmacy_pages = ["/app/rx/demo-alice-rx"];
    let claim = s
        .admin()
        .await
        .get("Claim?patient=Patient/demo-alice")
        .await
        .json()["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let claim_page = format!("/app/claims/{claim}");
    let insurer_pages = [claim_page.as_str(), "/app/members"];
    // (user, pages answering 200)
    let roles: [(&str, Vec<&str>); 5] = [
        ("alice", patient_pages.to_vec()),
        ("drsmith", [&["/app/"][..], &doctor_pages[..]].concat()),
        ("pharmacist", [&["/app/"][..], &pharmacy_pages[..]].concat()),
        ("insurer", [&["/app/"][..], &insurer_pages[..]].concat()),
        ("admin", vec!["/app/"]),
    ];
    let every: Vec<&str> = patient_pages
        .iter()
        .chain(&doctor_pages)
        .chain(&pharmacy_pages)
        .chain(&insurer_pages)
        .copied()
        .collect();
    for (user, own) in &roles {
        let web = crate::common::web::Web::sign_in(&origin, user).await;
        for page in &every {
            let got = web.get(page).await;
            let expected = if own.contains(page) { 200 } else { 404 };
            assert_eq!(
                got.status.as_u16(),
                expected,
                "{user} GET {page}: {}",
                got.text.chars().take(400).collect::<String>()
            );
        }
    }
    // out of reach: Dr. Smith does not care for carol; the insurer does not cover carol
    let smith = crate::common::web::Web::sign_in(&origin, "drsmith").await;
    assert_eq!(smith.get("/app/patients/demo-carol").await.status, 404);
    assert!(!smith.get("/app/patients").await.text.contains("Carol"));
    let insurer = crate::common::web::Web::sign_in(&origin, "insurer").await;
    assert!(!insurer.get("/app/members").await.text.contains("Carol"));
    let admin = s.admin().await;
    let carol_claim = admin
        .post("Claim", &json!({"resourceType": "Claim", "status": "active",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
            "use": "claim", "patient": {"reference": "Patient/demo-carol"}, "created": "2026-05-01",
            "provider": {"reference": "Organization/demo-org"}, "priority": {"coding": [{"code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": true, "coverage": {"display": "self-pay"}}]}))
        .await
        .expect(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        insurer
            .get(&format!("/app/claims/{carol_claim}"))
            .await
            .status,
        404
    );
    // the pharmacist's queue holds alice's prescription, the doctor's patients alice and bob
    let pharmacist = crate::common::web::Web::sign_in(&origin, "pharmacist").await;
    assert!(pharmacist.get("/app/").await.text.contains("metformin"));
    let list = smith.get("/app/patients").await.text;
    assert!(list.contains("Alice") && list.contains("Bob"), "{list}");
    // forms of other roles are refused the same way (and change nothing)
    let alice = crate::common::web::Web::sign_in(&origin, "alice").await;
    let refused = alice
        .submit(
            "/app/",
            "/app/patients/demo-alice/prescribe",
            &[("medicine", "860975"), ("dosage", "daily")],
        )
        .await;
    assert_eq!(refused.status, 404);
    let refused = alice
        .submit("/app/", "/app/admin/users/bob/disable", &[])
        .await;
    assert_eq!(refused.status, 404);
    assert_eq!(
        crate::common::web::Web::sign_in(&origin, "bob")
            .await
            .get("/app/")
            .await
            .status,
        200
    );
}
