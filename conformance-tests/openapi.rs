//! `GET /openapi.json`: an OpenAPI 3 document generated from the CapabilityStatement, the
//! operation table and the edge's routes — every type, interaction and operation the server
//! advertises is described, custom SearchParameters appear as they are created, every `$ref`
//! resolves, and every edge route it lists is really served.

use crate::common::Server;
use crate::common::secure::SecureServer;
use crate::{backends, secure_backends};
use serde_json::{Value, json};
use std::collections::HashSet;

backends!(describes_every_advertised_type_interaction_and_operation);

async fn document(s: &Server) -> Value {
    let r = s
        .client
        .get(format!("{}/openapi.json", s.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// Every `$ref` in `v` names something in `doc`.
fn refs_resolve(doc: &Value, v: &Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("$ref") {
                let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r}"));
                assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
            }
            o.values().for_each(|x| refs_resolve(doc, x));
        }
        Value::Array(a) => a.iter().for_each(|x| refs_resolve(doc, x)),
        _ => {}
    }
}

async fn describes_every_advertised_type_interaction_and_operation(s: Server) {
    let cs = s.get("metadata").await.expect(200).json();
    let doc = document(&s).await;
    assert_eq!(doc["openapi"], "3.0.3");
    assert_eq!(doc["info"]["version"], cs["software"]["version"]);
    let paths = doc["paths"].as_object().unwrap();
    let resources = cs["rest"][0]["resource"].as_array().unwrap();
    assert!(resources.len() > 140);
    for r in resources {
        let t = r["type"].as_str().unwrap();
        let methods = |p: &str| -> Vec<String> {
            let p = paths.get(p).unwrap_or_else(|| panic!("{p} missing"));
            p.as_object().unwrap().keys().cloned().collect()
        };
        for (path, expected) in [
            (
                format!("/fhir/{t}"),
                &["get", "post", "put", "patch", "delete"][..],
            ),
            (
                format!("/fhir/{t}/{{id}}"),
                &["get", "put", "patch", "delete"],
            ),
            (format!("/fhir/{t}/_search"), &["post"]),
            (format!("/fhir/{t}/_history"), &["get"]),
            (format!("/fhir/{t}/{{id}}/_history"), &["get"]),
            (format!("/fhir/{t}/{{id}}/_history/{{vid}}"), &["get"]),
        ] {
            let have = methods(&path);
            for m in expected {
                assert!(have.iter().any(|h| h == m), "{m} {path}");
            }
        }
        // each advertised search parameter is a query parameter of the type's search
        let search = &paths[&format!("/fhir/{t}")]["get"]["parameters"];
        let names: HashSet<&str> = search
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        for p in r["searchParam"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap();
            assert!(names.contains(name), "{t}?{name}");
        }
        // each advertised operation is a path at type or instance level
        for op in r["operation"].as_array().into_iter().flatten() {
            let name = op["name"].as_str().unwrap();
            let at_type = paths.contains_key(&format!("/fhir/{t}/${name}"));
            let at_instance = paths.contains_key(&format!("/fhir/{t}/{{id}}/${name}"));
            assert!(at_type || at_instance, "{t}/${name}");
        }
    }
    for op in cs["rest"][0]["operation"].as_array().into_iter().flatten() {
        let name = op["name"].as_str().unwrap();
        assert!(paths.contains_key(&format!("/fhir/${name}")), "${name}");
    }
    for p in [
        "/fhir/metadata",
        "/fhir",
        "/fhir/_history",
        "/health/ready",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(p), "{p}");
    }
    // operation ids are unique, as OpenAPI requires
    let mut ids = HashSet::new();
    for item in paths.values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap().to_string();
            assert!(ids.insert(id.clone()), "operationId {id} twice");
        }
    }
    refs_resolve(&doc, &doc);
    // without authorization there is no security scheme to satisfy
    assert!(doc.get("security").is_none());
    // generated from the registry: a custom SearchParameter is there once created
    let sp = json!({"resourceType": "SearchParameter", "url": "http://example.org/sp/nickname",
        "name": "nickname", "status": "active", "code": "nickname", "base": ["Patient"],
        "type": "string", "expression": "Patient.name.where(use = 'nickname').given",
        "description": "a nickname"});
    s.post("SearchParameter", &sp).await.expect(201);
    let doc = document(&s).await;
    let search = doc["paths"]["/fhir/Patient"]["get"]["parameters"].to_string();
    assert!(search.contains("\"nickname\""), "{search}");
}

mod secured {
    use super::*;
    secure_backends!(lists_the_oauth2_flows_and_every_listed_edge_route_is_served);

    async fn lists_the_oauth2_flows_and_every_listed_edge_route_is_served(s: SecureServer) {
        // public: no token needed
        let doc = document(&s.server).await;
        let origin = s.server.origin();
        let smart: Value = s
            .client
            .get(format!("{origin}/fhir/.well-known/smart-configuration"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let flows = &doc["components"]["securitySchemes"]["smart"]["flows"];
        assert_eq!(
            flows["authorizationCode"]["authorizationUrl"],
            smart["authorization_endpoint"]
        );
        assert_eq!(
            flows["authorizationCode"]["tokenUrl"],
            smart["token_endpoint"]
        );
        assert_eq!(doc["security"], json!([{"smart": []}]));
        assert_eq!(doc["paths"]["/fhir/metadata"]["get"]["security"], json!([]));
        assert_eq!(
            doc["paths"]["/metrics"]["get"]["security"],
            json!([{"metricsToken": []}])
        );
        // every route it lists outside the FHIR interactions is served: requested without
        // credentials, none answers the router's "no such endpoint" or 405
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            let fhir_interaction = path.starts_with("/fhir/")
                && !path.starts_with("/fhir/.well-known")
                && path != "/fhir/websocket";
            if fhir_interaction || path == "/fhir" {
                continue;
            }
            for method in item.as_object().unwrap().keys() {
                let url = format!("{origin}{path}");
                let req = match method.as_str() {
                    "get" => s.client.get(&url),
                    "post" => s
                        .client
                        .post(&url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(""),
                    m => panic!("{m} {path}"),
                };
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                assert!(
                    status != 405 && !(status == 404 && body.contains("No such endpoint")),
                    "{method} {path}: {status} {body}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 15, "{checked}");
    }
}
