//! `serve --demo`: a small demo data set (a clinic with two practitioners, three patients
//! with encounters and observations, a pharmacy, an insurer) whose care relationships, the
//! prescription and the coverages give each demo role something to see, a demo account for
//! each role, a demo public SMART app,
//! and the sign-in instructions printed at start. Seeding is idempotent: the resources are
//! PUT with fixed ids in one transaction, existing accounts are left as they are.

use crate::config::Config;
use crate::interaction::{self, Context, FhirRequest, Interaction, Preconditions};
use crate::smart::accounts::{self, ClientKind, NewClient, NewUser, Role};
use crate::store::AuthStore;
use serde_json::{Value, json};

/// The demo accounts: (user name, password, role, fhirUser).
pub const USERS: &[(&str, &str, Role, Option<&str>)] = &[
    (
        "alice",
        "alice-demo-pw",
        Role::Patient,
        Some("Patient/demo-alice"),
    ),
    (
        "bob",
        "bob-demo-pw",
        Role::Patient,
        Some("Patient/demo-bob"),
    ),
    (
        "drsmith",
        "drsmith-demo-pw",
        Role::Practitioner,
        Some("Practitioner/demo-practitioner"),
    ),
    (
        "pharmacist",
        "pharmacist-demo-pw",
        Role::Pharmacist,
        Some("Practitioner/demo-pharmacist"),
    ),
    (
        "insurer",
        "insurer-demo-pw",
        Role::Insurer,
        Some("Practitioner/demo-claims"),
    ),
    ("admin", "admin-demo-pw", Role::Admin, None),
];

/// The demo app's client id and redirect URI.
pub const CLIENT_ID: &str = "demo-app";
pub const REDIRECT_URI: &str = "http://localhost:9000/callback";

/// RFC 7636's example PKCE pair, for trying the flow by hand.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn patient(id: &str, family: &str, given: &str, gender: &str, born: &str, gp: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "active": true,
        "name": [{"family": family, "given": [given]}], "gender": gender, "birthDate": born,
        "managingOrganization": {"reference": "Organization/demo-org"},
        "generalPractitioner": [{"reference": format!("Practitioner/{gp}")}]})
}

fn encounter(id: &str, patient: &str, day: &str, gp: &str) -> Value {
    json!({"resourceType": "Encounter", "id": id, "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB",
            "display": "ambulatory"},
        "subject": {"reference": format!("Patient/{patient}")},
        "participant": [{"individual": {"reference": format!("Practitioner/{gp}")}}],
        "period": {"start": format!("{day}T09:00:00Z"), "end": format!("{day}T09:30:00Z")},
        "serviceProvider": {"reference": "Organization/demo-org"}})
}

#[allow(clippy::too_many_arguments)]
fn observation(
    id: &str,
    patient: &str,
    enc: &str,
    category: &str,
    code: &str,
    display: &str,
    value: f64,
    unit: &str,
    ucum: &str,
    day: &str,
) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "category": [{"coding": [{"system":
            "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}],
            "text": display},
        "subject": {"reference": format!("Patient/{patient}")},
        "encounter": {"reference": format!("Encounter/{enc}")},
        "effectiveDateTime": format!("{day}T09:10:00Z"),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
            "code": ucum}})
}

/// The demo resources.
pub fn resources() -> Vec<Value> {
    let mut out = vec![
        json!({"resourceType": "Organization", "id": "demo-org", "active": true,
            "name": "Healporium Demo Clinic"}),
        json!({"resourceType": "Location", "id": "demo-clinic", "status": "active",
            "name": "Healporium Demo Clinic, main building",
            "managingOrganization": {"reference": "Organization/demo-org"}}),
        json!({"resourceType": "Practitioner", "id": "demo-practitioner", "active": true,
            "name": [{"family": "Smith", "given": ["Dana"], "prefix": ["Dr."]}]}),
        json!({"resourceType": "Practitioner", "id": "demo-practitioner-2", "active": true,
            "name": [{"family": "Lee", "given": ["Morgan"], "prefix": ["Dr."]}]}),
        // the pharmacy and its pharmacist
        json!({"resourceType": "Organization", "id": "demo-pharmacy", "active": true,
            "name": "Healporium Demo Pharmacy"}),
        json!({"resourceType": "Practitioner", "id": "demo-pharmacist", "active": true,
            "name": [{"family": "Okafor", "given": ["Sam"]}]}),
        json!({"resourceType": "PractitionerRole", "id": "demo-pharmacist-role", "active": true,
            "practitioner": {"reference": "Practitioner/demo-pharmacist"},
            "organization": {"reference": "Organization/demo-pharmacy"},
            "code": [{"text": "pharmacist"}]}),
        // the insurer and its claims reviewer
        json!({"resourceType": "Organization", "id": "demo-insurer", "active": true,
            "name": "Healporium Demo Health Insurance"}),
        demo_plan(),
        json!({"resourceType": "Practitioner", "id": "demo-claims", "active": true,
            "name": [{"family": "Ito", "given": ["Kim"]}]}),
        json!({"resourceType": "PractitionerRole", "id": "demo-claims-role", "active": true,
            "practitioner": {"reference": "Practitioner/demo-claims"},
            "organization": {"reference": "Organization/demo-insurer"},
            "code": [{"text": "claims reviewer"}]}),
        // the doctors' weekly availability: the scheduling job turns it into free Slots for
        // the next four weeks (Appointment/$find, $book)
        demo_schedule(
            "demo-smith-week",
            "demo-practitioner",
            "General practice",
            "394814009",
        ),
        demo_schedule(
            "demo-lee-week",
            "demo-practitioner-2",
            "Cardiology",
            "394579002",
        ),
    ];
    // alice and bob are Dr. Smith's patients and insured by the demo insurer; carol is
    // Dr. Lee's, and only alice has a prescription for the demo pharmacy
    for (id, family, given, gender, born, day, gp) in [
        (
            "alice",
            "Lopez",
            "Alice",
            "female",
            "1985-04-12",
            "2026-01-10",
            "demo-practitioner",
        ),
        (
            "bob",
            "Meyer",
            "Bob",
            "male",
            "1962-09-30",
            "2026-02-03",
            "demo-practitioner",
        ),
        (
            "carol",
            "Nguyen",
            "Carol",
            "female",
            "2001-12-05",
            "2026-03-21",
            "demo-practitioner-2",
        ),
    ] {
        let pid = format!("demo-{id}");
        let enc = format!("demo-{id}-visit");
        out.push(patient(&pid, family, given, gender, born, gp));
        out.push(encounter(&enc, &pid, day, gp));
        if id != "carol" {
            out.push(
                json!({"resourceType": "Coverage", "id": format!("demo-{id}-coverage"),
                "status": "active",
                "beneficiary": {"reference": format!("Patient/{pid}")},
                "payor": [{"reference": "Organization/demo-insurer"}],
                "period": {"start": "2026-01-01"},
                "class": [{"type": {"coding": [{"system":
                    "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "plan"}]},
                    "value": "demo-gold", "name": "Demo Gold"}]}),
            );
        }
        if id == "alice" {
            out.push(
                json!({"resourceType": "MedicationRequest", "id": "demo-alice-rx",
                "status": "active", "intent": "order",
                "medicationCodeableConcept": {"coding": [{"system":
                    "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975",
                    "display": "metformin 500 MG Oral Tablet"}]},
                "subject": {"reference": format!("Patient/{pid}")},
                "requester": {"reference": "Practitioner/demo-practitioner"},
                "dispenseRequest": {"performer": {"reference": "Organization/demo-pharmacy"}}}),
            );
        }
        out.push(observation(
            &format!("demo-{id}-hr"),
            &pid,
            &enc,
            "vital-signs",
            "8867-4",
            "Heart rate",
            72.0,
            "beats/minute",
            "/min",
            day,
        ));
        out.push(observation(
            &format!("demo-{id}-glucose"),
            &pid,
            &enc,
            "laboratory",
            "2339-0",
            "Glucose [Mass/volume] in Blood",
            95.0,
            "mg/dL",
            "mg/dL",
            day,
        ));
    }
    out
}

/// The demo insurer's benefit plan (docs/finance.md, *Benefit plans*): a 500.00 deductible, a
/// 3,000.00 out-of-pocket maximum, office visits and an MRI covered.
/// A practitioner's Schedule: weekdays 09:00–12:00 and 13:00–17:00 (New York), 30-minute
/// slots, four weeks ahead.
fn demo_schedule(id: &str, practitioner: &str, specialty: &str, code: &str) -> Value {
    let window = |start: &str, end: &str| {
        let mut parts: Vec<Value> = ["mon", "tue", "wed", "thu", "fri"]
            .iter()
            .map(|d| json!({"url": "daysOfWeek", "valueCode": d}))
            .collect();
        parts.push(json!({"url": "start", "valueTime": start}));
        parts.push(json!({"url": "end", "valueTime": end}));
        json!({"url": "available", "extension": parts})
    };
    json!({"resourceType": "Schedule", "id": id, "active": true,
        "actor": [{"reference": format!("Practitioner/{practitioner}")},
            {"reference": "Location/demo-clinic"}],
        "specialty": [{"coding": [{"system": "http://snomed.info/sct", "code": code,
            "display": specialty}]}],
        "extension": [{"url": crate::interaction::scheduling::AVAILABILITY_URL, "extension": [
            {"url": "timeZone", "valueCode": "America/New_York"},
            {"url": "slotMinutes", "valueInteger": 30},
            {"url": "horizonDays", "valueInteger": 28},
            window("09:00:00", "12:00:00"),
            window("13:00:00", "17:00:00")]}]})
}

fn demo_plan() -> Value {
    let usd = |v: f64| json!({"value": v, "unit": "USD", "system": "urn:iso:std:iso:4217", "code": "USD"});
    let service = |code: &str, allowed: f64, copay: f64| {
        json!({"category": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]},
            "benefit": [{"type": {"text": "in network"}, "cost": [
                {"type": {"coding": [{"code": "allowed"}]}, "value": usd(allowed)},
                {"type": {"coding": [{"code": "copay"}]}, "value": usd(copay)},
                {"type": {"coding": [{"code": "coinsurance"}]},
                    "value": {"value": 20, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}}]}]})
    };
    // a knee replacement is always reviewed by the insurer (the claim is queued)
    let mut knee = service("27447", 30000.00, 0.0);
    if let Some(o) = knee.as_object_mut() {
        o.insert(
            "extension".into(),
            json!([{"url": "https://healporium.example/fhir/StructureDefinition/pend",
                "valueBoolean": true}]),
        );
    }
    json!({"resourceType": "InsurancePlan", "id": "demo-gold", "status": "active",
        "identifier": [{"system": "https://healporium.example/fhir/plan", "value": "demo-gold"}],
        "name": "Demo Gold", "ownedBy": {"reference": "Organization/demo-insurer"},
        "plan": [{
            "generalCost": [
                {"type": {"coding": [{"code": "deductible"}]}, "cost": {"value": 500.00, "currency": "USD"}},
                {"type": {"coding": [{"code": "out-of-pocket-max"}]}, "cost": {"value": 3000.00, "currency": "USD"}}],
            "specificCost": [service("99213", 150.00, 25.00), service("70553", 1200.00, 0.0),
                knee]}]})
}

/// The demo claims, submitted (adjudicated natively) when the demo is seeded: alice's MRI
/// (adjudicated: she owes 640.00 USD) and bob's knee replacement (queued for the insurer's
/// review).
pub fn claims() -> Vec<Value> {
    let claim = |who: &str, key: &str, day: &str, code: &str, display: &str, net: f64| {
        json!({"resourceType": "Claim", "status": "active",
        "identifier": [{"system": "https://healporium.example/fhir/demo-claims", "value": key}],
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim", "patient": {"reference": format!("Patient/demo-{who}")},
        "billablePeriod": {"start": day}, "created": day,
        "provider": {"reference": "Organization/demo-org"},
        "insurer": {"reference": "Organization/demo-insurer"},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": true,
            "coverage": {"reference": format!("Coverage/demo-{who}-coverage")}}],
        "item": [{"sequence": 1,
            "productOrService": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code,
                "display": display}]},
            "net": {"value": net, "currency": "USD"}}]})
    };
    vec![
        claim(
            "alice",
            "alice-mri-1",
            "2026-03-02",
            "70553",
            "MRI brain",
            1500.00,
        ),
        claim(
            "bob",
            "bob-knee-1",
            "2026-04-14",
            "27447",
            "Total knee replacement",
            32000.00,
        ),
    ]
}

/// PUTs `entries` in one transaction, as the server itself.
async fn put_all(ctx: &Context, base: &str, entries: Vec<Value>) -> anyhow::Result<()> {
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let request = FhirRequest {
        base: base.to_string(),
        interaction: Interaction::Bundle { bundle },
        preconditions: Preconditions::default(),
        cascade: false,
        provenance: None,
        prefer: interaction::PreferReturn::Minimal,
        // the server's own work (the signed-in practitioner's picker, the demo seed)
        principal: Some(crate::auth::Principal::system()),
        source: None,
    };
    interaction::handle(ctx, request)
        .await
        .map_err(|o| anyhow::anyhow!("cannot seed the demo data: {:?}", o.issues))?;
    Ok(())
}

/// Submits the demo claims (adjudicated natively by the demo plan).
async fn submit_claims(ctx: &Context, base: &str) -> anyhow::Result<()> {
    for claim in claims() {
        submit_claim(ctx, base, claim).await?;
    }
    Ok(())
}

async fn submit_claim(ctx: &Context, base: &str, claim: Value) -> anyhow::Result<()> {
    let submit = FhirRequest {
        base: base.to_string(),
        interaction: Interaction::Operation(interaction::operation::OperationRequest {
            name: "submit".into(),
            resource_type: Some("Claim".into()),
            id: None,
            version: None,
            method: interaction::operation::OperationMethod::Post,
            query: Vec::new(),
            body: Some(claim),
            prefer: None,
            accept: None,
        }),
        preconditions: Preconditions::default(),
        cascade: false,
        provenance: None,
        prefer: interaction::PreferReturn::Minimal,
        principal: Some(crate::auth::Principal::system()),
        source: None,
    };
    interaction::handle(ctx, submit)
        .await
        .map_err(|o| anyhow::anyhow!("cannot submit the demo claim: {:?}", o.issues))?;
    Ok(())
}

/// Seeds the demo data, accounts and app; returns the instructions to print.
pub async fn seed(ctx: &Context, auth: &dyn AuthStore, config: &Config) -> anyhow::Result<String> {
    let base = config
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{}{}", config.listen, config.prefix));
    // only what was never there: a restart keeps what demo users changed or deleted
    let mut entries: Vec<Value> = Vec::new();
    for r in resources() {
        let resource_type = r.get("resourceType").and_then(Value::as_str).unwrap_or("");
        let id = r.get("id").and_then(Value::as_str).unwrap_or("");
        let existing = ctx
            .store
            .read(resource_type, id)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the demo data: {e:?}"))?;
        if existing.is_none() {
            let url = format!("{resource_type}/{id}");
            entries.push(json!({"resource": r, "request": {"method": "PUT", "url": url}}));
        }
    }
    let first_start = entries
        .iter()
        .any(|e| e.pointer("/request/url").and_then(Value::as_str) == Some("Patient/demo-alice"));
    if !entries.is_empty() {
        put_all(ctx, &base, entries).await?;
    }
    // alice's MRI, adjudicated by the demo insurer's plan on the first start: what she owes
    // can be deferred (a restart leaves the claim, and what was done with it, as it is)
    if first_start {
        submit_claims(ctx, &base).await?;
    }
    let cost = crate::smart::PasswordCost::Standard;
    for (username, password, role, fhir_user) in USERS {
        let user = NewUser {
            username: username.to_string(),
            password: password.to_string(),
            role: *role,
            fhir_user: fhir_user.map(str::to_string),
        };
        match accounts::add_user(auth, user, cost).await {
            Ok(()) => {}
            Err(e) if e.contains("exists already") => {}
            Err(e) => anyhow::bail!("cannot add demo user {username}: {e}"),
        }
    }
    let app = NewClient {
        client_id: Some(CLIENT_ID.to_string()),
        name: "Healporium demo app".to_string(),
        kind: ClientKind::Public,
        redirect_uris: vec![
            REDIRECT_URI.to_string(),
            "http://127.0.0.1:9000/callback".to_string(),
        ],
        scopes: "openid fhirUser profile launch launch/patient launch/encounter \
            offline_access online_access patient/*.cruds user/*.cruds"
            .to_string(),
        jwks: None,
        jwks_url: None,
    };
    match accounts::add_client(auth, app, cost).await {
        Ok(_) => {}
        Err(e) if e.contains("exists already") => {}
        Err(e) => anyhow::bail!("cannot add the demo app: {e}"),
    }
    let origin = base
        .strip_suffix(&config.prefix)
        .unwrap_or(&base)
        .to_string();
    let authorize = |scope: &str| {
        crate::smart::authorize::redirect_with(
            &format!("{origin}/auth/authorize"),
            &[
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT_URI),
                ("scope", scope),
                ("state", "demo"),
                ("aud", &base),
                ("code_challenge", CHALLENGE),
                ("code_challenge_method", "S256"),
            ],
        )
    };
    let reader = authorize("openid fhirUser launch/patient patient/*.rs offline_access");
    let writer = authorize("openid fhirUser user/*.cruds offline_access");
    let observation = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "Patient/demo-alice"},
        "valueQuantity": {"value": 64, "unit": "beats/minute",
            "system": "http://unitsofmeasure.org", "code": "/min"}});
    let mut text = String::new();
    text.push_str(&format!(
        "Healporium demo is ready. The web app: {origin}/app/ (sign in with an account \
         below; card payments take the test card 4242 4242 4242 4242). FHIR base: {base}\n\
         Demo data: Organization/demo-org, Practitioner/demo-practitioner (alice's and bob's \
         doctor), Patient/demo-alice, Patient/demo-bob, Patient/demo-carol (each with an \
         Encounter and two Observations), a pharmacy with alice's prescription and an insurer \
         covering alice and bob (plan InsurancePlan/demo-gold).\n\
         Finance: alice's MRI claim is adjudicated (ClaimResponse?patient=Patient/demo-alice: \
         she owes 640.00 USD); bob's knee replacement waits for the insurer's review. Open her credit line with POST {base}/Account/$credit-apply \
         (patient Patient/demo-alice, product standard, requestedLimit 1000.00 USD, a \
         requestId), then defer the claim with POST {base}/Claim/<id>/$defer (creditLine, \
         termMonths 6, plan installments-0, a requestId).\n\
         Scheduling: Dr. Smith and Dr. Lee have weekday availability (Schedule/demo-smith-week, \
         Schedule/demo-lee-week); free Slots appear within seconds. Find one with POST \
         {base}/Appointment/$find (start, end, practitioner), book it with POST \
         {base}/Appointment/$book (appt-resource: the proposal).\n\
         Sign in with one of these demo accounts (user / password):\n"
    ));
    for (username, password, role, fhir_user) in USERS {
        text.push_str(&format!(
            "  {username:<11} / {password:<19} {}{}\n",
            role.as_str(),
            fhir_user.map(|f| format!(", {f}")).unwrap_or_default()
        ));
    }
    text.push_str(&format!(
        "Demo SMART app: client_id {CLIENT_ID} (public), redirect_uri {REDIRECT_URI}\n\
         Try the authorization-code flow by hand (the address may use 127.0.0.1 or localhost):\n\
         1. open one of these in a browser\n\
         \x20  to read, as a patient (sign in as alice):\n\
         \x20  {reader}\n\
         \x20  to read and write, as a doctor (sign in as drsmith):\n\
         \x20  {writer}\n\
         2. sign in, allow, and copy the code from the address bar after the redirect \
         (nothing listens on port 9000: the page does not load, the address holds ?code=...)\n\
         3. exchange it within two minutes: paste it between the quotes, then run the curl line\n\
         \x20  CODE='paste-the-code-here'\n\
         \x20  curl -s '{origin}/auth/token' -d grant_type=authorization_code \
         -d client_id={CLIENT_ID} --data-urlencode 'redirect_uri={REDIRECT_URI}' \
         -d code_verifier={VERIFIER} --data-urlencode \"code=$CODE\"\n\
         4. use the access_token from the answer\n\
         \x20  TOKEN='paste-the-access_token-here'\n\
         \x20  curl -s '{base}/Patient/demo-alice' -H \"Authorization: Bearer $TOKEN\"\n\
         \x20  curl -s '{base}/Observation' -H \"Authorization: Bearer $TOKEN\" \
         -H 'Content-Type: application/fhir+json' -d '{observation}'\n\
         \x20  (the second writes a heart rate to alice's record: drsmith's token may, alice's \
         read-only one gets 403)\n\
         Discovery: {base}/.well-known/smart-configuration\n"
    ));
    Ok(text)
}
