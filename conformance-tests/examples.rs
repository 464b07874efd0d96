//! Round trip of every official R4 example: POST it, read it back, equal apart from meta/id.

use crate::common::{FHIR_JSON, Server, official_examples, without_meta};
use crate::lenient_backends;
use reqwest::Method;

// The examples reference resources outside the example set: integrity is off here.
lenient_backends!(every_official_example_round_trips);

async fn every_official_example_round_trips(s: Server) {
    let examples = official_examples();
    assert_eq!(
        examples.len(),
        278,
        "every example resource of ../shared/fhir/examples"
    );
    let mut failures = Vec::new();
    for (name, resource) in &examples {
        let rt = resource["resourceType"].as_str().unwrap();
        // the file's exact text, so decimals travel as written
        let r = s
            .send(
                Method::POST,
                rt,
                &[("content-type", FHIR_JSON)],
                Some(resource.to_string()),
            )
            .await;
        if r.status.as_u16() != 201 {
            failures.push(format!("{name}: POST {} {}", r.status, r.text));
            continue;
        }
        let id = r.json()["id"].as_str().unwrap().to_string();
        let back = s.get(&format!("{rt}/{id}")).await.expect(200).json();
        if without_meta(&back) != without_meta(resource) {
            failures.push(format!("{name}: read back differs"));
        }
        // meta the client sent (profile, tags) is kept; the server's parts are new
        if let Some(profile) = resource["meta"].get("profile")
            && &back["meta"]["profile"] != profile
        {
            failures.push(format!("{name}: meta.profile lost"));
        }
        assert_eq!(back["meta"]["versionId"], "1");
    }
    assert!(
        failures.is_empty(),
        "{} of {} examples fail:\n{}",
        failures.len(),
        examples.len(),
        failures.join("\n")
    );
}
