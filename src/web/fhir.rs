//! How a page reads and writes: interactions of the interaction layer, run as the signed-in
//! person's principal — the app has no access of its own. What the layer refuses becomes a
//! message a person reads beside the field concerned, never a raw OperationOutcome.

use super::session::Session;
use crate::auth::Principal;
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::interaction::operation::{OperationMethod, OperationRequest};
use crate::interaction::search::{SearchRequest, SearchScope};
use crate::interaction::{self, Context, FhirRequest, Interaction, Preconditions, Target};
use serde_json::{Value, json};

/// The interaction layer, as one person.
pub struct Fhir<'a> {
    ctx: &'a Context,
    base: String,
    principal: Principal,
}

impl<'a> Fhir<'a> {
    pub fn new(ctx: &'a Context, session: &Session) -> Fhir<'a> {
        Fhir {
            ctx,
            base: session.base.clone(),
            principal: session.principal.clone(),
        }
    }

    /// As another principal (the payment processor posting a payment the person made).
    pub fn as_principal(ctx: &'a Context, base: &str, principal: Principal) -> Fhir<'a> {
        Fhir {
            ctx,
            base: base.to_string(),
            principal,
        }
    }

    async fn run(&self, interaction: Interaction) -> Result<Value, Outcome> {
        let request = FhirRequest {
            base: self.base.clone(),
            interaction,
            preconditions: Preconditions::default(),
            cascade: false,
            provenance: None,
            prefer: interaction::PreferReturn::Representation,
            principal: Some(self.principal.clone()),
            source: None,
        };
        interaction::handle(self.ctx, request).await?.body_value()
    }

    pub async fn read(&self, resource_type: &str, id: &str) -> Result<Value, Outcome> {
        self.run(Interaction::Read {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
        })
        .await
    }

    /// The matches of a search (not the included resources), in the server's order.
    pub async fn search(
        &self,
        resource_type: &str,
        params: &[(&str, &str)],
    ) -> Result<Vec<Value>, Outcome> {
        let bundle = self.search_bundle(resource_type, params).await?;
        Ok(entries(&bundle, "match"))
    }

    /// A whole searchset Bundle (matches and includes).
    pub async fn search_bundle(
        &self,
        resource_type: &str,
        params: &[(&str, &str)],
    ) -> Result<Value, Outcome> {
        self.run(Interaction::Search(SearchRequest {
            scope: SearchScope::Type(resource_type.to_string()),
            pairs: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            strict: false,
            paging: false,
        }))
        .await
    }

    pub async fn create(&self, resource: Value) -> Result<Value, Outcome> {
        let resource_type = type_of(&resource)?;
        self.run(Interaction::Create {
            resource_type,
            resource,
        })
        .await
    }

    pub async fn update(&self, resource: Value) -> Result<Value, Outcome> {
        let resource_type = type_of(&resource)?;
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| Outcome::new(ErrorKind::Invalid, "no id"))?
            .to_string();
        self.run(Interaction::Update {
            resource_type,
            target: Target::Id(id),
            resource,
        })
        .await
    }

    /// A transaction Bundle of `entries` (each `{fullUrl, resource, request}`).
    pub async fn transaction(&self, entries: Vec<Value>) -> Result<Value, Outcome> {
        self.run(Interaction::Bundle {
            bundle: json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        })
        .await
    }

    /// `POST [base]/{type}[/{id}]/${name}` with a Parameters body (or a resource).
    pub async fn operation(
        &self,
        resource_type: Option<&str>,
        id: Option<&str>,
        name: &str,
        body: Value,
    ) -> Result<Value, Outcome> {
        self.run(Interaction::Operation(OperationRequest {
            name: name.to_string(),
            resource_type: resource_type.map(str::to_string),
            id: id.map(str::to_string),
            version: None,
            method: OperationMethod::Post,
            query: Vec::new(),
            body: Some(body),
            prefer: None,
            accept: None,
        }))
        .await
    }
}

fn type_of(resource: &Value) -> Result<String, Outcome> {
    resource
        .get("resourceType")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Outcome::new(ErrorKind::Invalid, "no resourceType"))
}

/// A decimal as an exact JSON number (rust_decimal serializes as a string).
pub fn decimal(d: rust_decimal::Decimal) -> Value {
    serde_json::from_str(&d.to_string()).unwrap_or(Value::Null)
}

/// Sets `key` of a JSON object (nothing for other values).
pub fn set(v: &mut Value, key: &str, value: Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_string(), value);
    }
}

/// The resources of a Bundle's entries with search mode `mode` (or every entry when the
/// entries carry no mode).
pub fn entries(bundle: &Value, mode: &str) -> Vec<Value> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(|es| {
            es.iter()
                .filter(|e| {
                    e.pointer("/search/mode")
                        .and_then(Value::as_str)
                        .is_none_or(|m| m == mode)
                })
                .filter_map(|e| e.get("resource").cloned())
                .collect()
        })
        .unwrap_or_default()
}

/// Every entry of a Bundle, whole (`response`, `resource`…).
pub fn entries_raw(bundle: &Value) -> Vec<Value> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A Parameters resource of `(name, value)` pairs, each value an object holding one
/// `valueX` (or `resource`) key.
pub fn parameters(params: Vec<(&str, Value)>) -> Value {
    let parameter: Vec<Value> = params
        .into_iter()
        .map(|(name, v)| {
            let mut p = serde_json::Map::new();
            p.insert("name".into(), json!(name));
            if let Value::Object(o) = v {
                p.extend(o);
            }
            Value::Object(p)
        })
        .collect();
    json!({"resourceType": "Parameters", "parameter": parameter})
}

/// A parameter of a Parameters resource: its `valueX`/`resource` or its parts.
pub fn param<'v>(parameters: &'v Value, name: &str) -> Option<&'v Value> {
    parameters
        .get("parameter")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| {
            p.as_object()?
                .iter()
                .find(|(k, _)| k.starts_with("value") || *k == "resource")
                .map(|(_, v)| v)
        })
}

/// Every parameter named `name`, as the whole parameter (for parts).
pub fn params_named<'v>(parameters: &'v Value, name: &str) -> Vec<&'v Value> {
    parameters
        .get("parameter")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter(|p| p.get("name").and_then(Value::as_str) == Some(name))
                .collect()
        })
        .unwrap_or_default()
}

/// What went wrong, for a person: one sentence, and which form field it is about (matched
/// from the issue's FHIRPath expression against `fields`: (expression fragment, field)).
pub fn problem(
    outcome: &Outcome,
    fields: &[(&str, &'static str)],
) -> (Option<&'static str>, String) {
    let field = outcome.issues.iter().find_map(|i| {
        i.expression.iter().find_map(|e| {
            fields
                .iter()
                .find(|(frag, _)| e.contains(frag))
                .map(|(_, f)| *f)
        })
    });
    let text = match outcome.kind {
        ErrorKind::NotFound | ErrorKind::Gone => {
            "That record does not exist, or you may not see it.".to_string()
        }
        ErrorKind::Forbidden => "Your role does not allow this.".to_string(),
        ErrorKind::Conflict => match field {
            _ if outcome
                .issues
                .iter()
                .any(|i| i.expression.iter().any(|e| e.contains("slot"))) =>
            {
                "That time has just been taken. Choose another.".to_string()
            }
            _ => first_sentence(
                outcome,
                "This was changed by someone else meanwhile; try again.",
            ),
        },
        ErrorKind::TooManyRequests => "Too many requests; wait a moment and try again.".to_string(),
        k if k.is_fault() => "Something went wrong on our side. Nothing was changed.".to_string(),
        _ => first_sentence(outcome, "Check what you entered."),
    };
    (field, text)
}

/// The first issue's diagnostics, as a sentence (they are written for people), or `fallback`.
fn first_sentence(outcome: &Outcome, fallback: &str) -> String {
    outcome
        .issues
        .first()
        .map(|i| i.diagnostics.trim())
        .filter(|d| !d.is_empty() && d.len() < 300)
        .map_or_else(
            || fallback.to_string(),
            |d| {
                let mut s = d.to_string();
                if !s.ends_with('.') {
                    s.push('.');
                }
                s
            },
        )
}
