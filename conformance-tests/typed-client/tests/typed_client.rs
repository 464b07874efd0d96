//! The typed-client check: the server as a Rust SMART-app developer sees it through fhir-sdk's
//! typed R4B client — create, read, conditional update, vread, instance and type history and
//! delete against the real binary, on SQLite and (with HEALPORIUM_TEST_DATABASE_URL) PostgreSQL.

use std::str::FromStr;
use std::time::Duration;

use fhir_sdk::client::{Client, Error, RequestSettings, ResourceWrite};
use fhir_sdk::r4b::codes::{
    AdministrativeGender, BundleType, FHIRVersion, HTTPVerb, IssueType, ObservationStatus,
};
use fhir_sdk::r4b::resources::{
    Bundle, Observation, ObservationValue, OperationOutcome, Patient, ResourceType,
};
use fhir_sdk::r4b::types::{CodeableConcept, Coding, HumanName, Meta, Quantity, Reference};
use fhir_sdk::version::FhirR4B;
use fhir_sdk::{Date, StatusCode, header};
use healporium_typed_client::{PgSchema, Scratch, Server, postgres_admin_url};

#[tokio::test]
async fn typed_client_on_sqlite() {
    let scratch = Scratch::new();
    let database_url = format!("sqlite:{}", scratch.path().join("t.db").display());
    let server = Server::start(&database_url, &scratch);
    scenario(&client(&server)).await;
}

#[tokio::test]
async fn typed_client_on_postgres() {
    let Some(admin_url) = postgres_admin_url() else {
        eprintln!(
            "note: HEALPORIUM_TEST_DATABASE_URL is not set; skipping the PostgreSQL half of the \
             typed-client check"
        );
        return;
    };
    // Declared before the server, so it is dropped after the server has been killed.
    let schema = PgSchema::create(&admin_url);
    let scratch = Scratch::new();
    let server = Server::start(&schema.database_url(), &scratch);
    scenario(&client(&server)).await;
}

/// fhir-sdk's R4B client for the server, with retries off so failures are not hidden.
fn client(server: &Server) -> Client<FhirR4B> {
    let settings = RequestSettings::default()
        .retries(0)
        .timeout(Some(Duration::from_secs(30)));
    Client::builder()
        .base_url(server.base_url().parse().expect("base URL"))
        .request_settings(settings)
        .build()
        .expect("build fhir-sdk client")
}

/// The whole conversation, in the order a SMART app would have it.
async fn scenario(client: &Client<FhirR4B>) {
    // The server says it speaks R4 (4.0.1); the R4B model reads its CapabilityStatement.
    let capabilities = client.capabilities().await.expect("GET metadata");
    assert_eq!(capabilities.fhir_version, FHIRVersion::N401);

    // create: the id and version come back in Location / ETag and land in the local copy.
    let mut patient = Patient::builder()
        .name(vec![Some(
            HumanName::builder()
                .family("Chalmers".to_owned())
                .given(vec![Some("Peter".to_owned())])
                .build()
                .expect("HumanName"),
        )])
        .gender(AdministrativeGender::Male)
        .birth_date(Date::from_str("1974-12-25").expect("date"))
        .build()
        .expect("Patient");
    let id = patient.create(client).await.expect("create Patient");
    assert!(!id.is_empty());
    assert_eq!(version(&patient.meta), Some("1"), "version from Location");

    // read
    let mut current = client
        .read::<Patient>(&id)
        .await
        .expect("read Patient")
        .expect("the created Patient exists");
    assert_eq!(current.id.as_deref(), Some(id.as_str()));
    assert_eq!(version(&current.meta), Some("1"));
    assert!(
        current
            .meta
            .as_ref()
            .is_some_and(|m| m.last_updated.is_some())
    );
    assert_eq!(current.name, patient.name);
    assert_eq!(current.gender, Some(AdministrativeGender::Male));
    assert_eq!(current.birth_date, patient.birth_date);

    // conditional update (If-Match: W/"1"), as a careful client does
    current.gender = Some(AdministrativeGender::Female);
    *family_mut(&mut current) = Some("Chalmers-Smith".to_owned());
    let created = current.update(true, client).await.expect("update Patient");
    assert!(!created, "updating an existing Patient does not create it");
    assert_eq!(version(&current.meta), Some("2"), "version from ETag");

    // a second update still claiming version 1 is refused with 412
    let mut stale = patient.clone();
    stale.gender = Some(AdministrativeGender::Other);
    match stale.update(true, client).await {
        Err(Error::OperationOutcomeR4B(status, _)) => {
            assert_eq!(status, StatusCode::PRECONDITION_FAILED);
        }
        other => panic!("stale If-Match: expected 412 with an OperationOutcome, got {other:?}"),
    }

    // read the new version
    let v2 = client
        .read::<Patient>(&id)
        .await
        .expect("read Patient after update")
        .expect("the updated Patient exists");
    assert_eq!(version(&v2.meta), Some("2"));
    assert_eq!(v2.gender, Some(AdministrativeGender::Female));
    assert_eq!(family(&v2), Some("Chalmers-Smith"));
    assert_eq!(v2.birth_date, patient.birth_date);

    // vread version 1: the old values
    let v1 = client
        .read_version::<Patient>(&id, "1")
        .await
        .expect("vread Patient/_history/1")
        .expect("version 1 exists");
    assert_eq!(version(&v1.meta), Some("1"));
    assert_eq!(v1.gender, Some(AdministrativeGender::Male));
    assert_eq!(family(&v1), Some("Chalmers"));

    // instance history: two versions, newest first
    let history = client
        .history::<Patient>(Some(&id))
        .await
        .expect("GET Patient/{id}/_history")
        .into_inner();
    assert_history(
        &history,
        &id,
        &[("2", HTTPVerb::Put), ("1", HTTPVerb::Post)],
    );

    // type history: the same two versions (the database is fresh)
    let history = client
        .history::<Patient>(None)
        .await
        .expect("GET Patient/_history")
        .into_inner();
    assert_history(
        &history,
        &id,
        &[("2", HTTPVerb::Put), ("1", HTTPVerb::Post)],
    );

    // an Observation about the Patient: the decimal survives (fhir-sdk holds it as f64)
    let mut observation = Observation::builder()
        .status(ObservationStatus::Final)
        .code(
            CodeableConcept::builder()
                .coding(vec![Some(
                    Coding::builder()
                        .system("http://loinc.org".to_owned())
                        .code("8480-6".to_owned())
                        .display("Systolic blood pressure".to_owned())
                        .build()
                        .expect("Coding"),
                )])
                .build()
                .expect("CodeableConcept"),
        )
        .subject(
            Reference::builder()
                .reference(format!("Patient/{id}"))
                .build()
                .expect("Reference"),
        )
        .value(ObservationValue::Quantity(
            Quantity::builder()
                .value(135.5)
                .unit("mmHg".to_owned())
                .system("http://unitsofmeasure.org".to_owned())
                .code("mm[Hg]".to_owned())
                .build()
                .expect("Quantity"),
        ))
        .build()
        .expect("Observation");
    let obs_id = observation
        .create(client)
        .await
        .expect("create Observation");
    let read_obs = client
        .read::<Observation>(&obs_id)
        .await
        .expect("read Observation")
        .expect("the created Observation exists");
    let Some(ObservationValue::Quantity(quantity)) = &read_obs.value else {
        panic!("valueQuantity came back as {:?}", read_obs.value);
    };
    assert_eq!(quantity.value, Some(135.5));
    assert_eq!(quantity.code.as_deref(), Some("mm[Hg]"));
    assert_eq!(read_obs.code, observation.code);
    let subject = read_obs
        .subject
        .as_ref()
        .and_then(|s| s.reference.as_deref());
    assert_eq!(subject, Some(format!("Patient/{id}").as_str()));
    assert_eq!(read_obs.status, ObservationStatus::Final);

    // delete: the Observation first — the server keeps referential integrity and refuses to
    // delete a Patient that a live Observation references
    client
        .delete(ResourceType::Observation, &obs_id)
        .await
        .expect("delete Observation");
    client
        .delete(ResourceType::Patient, &id)
        .await
        .expect("delete Patient");

    // fhir-sdk's read folds 404 and 410 into Ok(None) …
    let gone = client
        .read::<Patient>(&id)
        .await
        .expect("read after delete");
    assert!(gone.is_none(), "read after delete returned {gone:?}");
    // … so ask through the same client for the status itself: 410 Gone with an OperationOutcome.
    let url = client
        .base_url()
        .join(&format!("Patient/{id}"))
        .expect("Patient URL");
    let response = client
        .send_custom_request(|http| {
            http.get(url)
                .header(header::ACCEPT, fhir_sdk::r4b::JSON_MIME_TYPE)
        })
        .await
        .expect("GET Patient after delete");
    assert_eq!(response.status(), StatusCode::GONE);
    let outcome: OperationOutcome = response
        .json()
        .await
        .expect("410 body is an OperationOutcome");
    let codes: Vec<IssueType> = outcome.issue.iter().flatten().map(|i| i.code).collect();
    assert_eq!(codes, [IssueType::Deleted]);

    // the history keeps the deletion, newest first, without a resource
    let history = client
        .history::<Patient>(Some(&id))
        .await
        .expect("GET Patient/{id}/_history after delete")
        .into_inner();
    assert_history(
        &history,
        &id,
        &[
            ("3", HTTPVerb::Delete),
            ("2", HTTPVerb::Put),
            ("1", HTTPVerb::Post),
        ],
    );
}

/// `meta.versionId`.
fn version(meta: &Option<Meta>) -> Option<&str> {
    meta.as_ref().and_then(|m| m.version_id.as_deref())
}

/// The family name of the first name.
fn family(patient: &Patient) -> Option<&str> {
    patient
        .name
        .first()
        .and_then(Option::as_ref)
        .and_then(|n| n.family.as_deref())
}

/// The family name of the first name, to change it.
fn family_mut(patient: &mut Patient) -> &mut Option<String> {
    &mut patient
        .name
        .first_mut()
        .and_then(Option::as_mut)
        .expect("a name")
        .family
}

/// A history Bundle of Patient `id` with exactly these (versionId, method) entries in this order.
/// Deleted versions carry no resource; their version is read from `response.etag`.
fn assert_history(bundle: &Bundle, id: &str, expected: &[(&str, HTTPVerb)]) {
    assert_eq!(bundle.r#type, BundleType::History);
    if let Some(total) = bundle.total {
        assert_eq!(total as usize, expected.len(), "Bundle.total");
    }
    let seen: Vec<(String, HTTPVerb)> = bundle
        .entry
        .iter()
        .flatten()
        .map(|entry| {
            let method = entry.request.as_ref().expect("entry.request").method;
            let version = match &entry.resource {
                Some(resource) => {
                    let patient = <&Patient>::try_from(resource).expect("a Patient");
                    assert_eq!(patient.id.as_deref(), Some(id));
                    version(&patient.meta).expect("meta.versionId").to_owned()
                }
                None => {
                    assert_eq!(method, HTTPVerb::Delete, "only deletions lack a resource");
                    let etag = entry.response.as_ref().and_then(|r| r.etag.as_deref());
                    etag.and_then(|e| e.strip_prefix("W/\"")?.strip_suffix('"'))
                        .expect("deletion entry with response.etag W/\"n\"")
                        .to_owned()
                }
            };
            (version, method)
        })
        .collect();
    let expected: Vec<(String, HTTPVerb)> = expected
        .iter()
        .map(|(v, m)| ((*v).to_owned(), *m))
        .collect();
    assert_eq!(
        seen, expected,
        "history entries (versionId, request.method)"
    );
}
