//! The rules of a Subscription write (docs/subscriptions.md): its `criteria` must be a search
//! this server can run, its channel a `rest-hook` to an http(s) endpoint; the server records
//! who created it (the `subscription-owner` extension: every notification is judged by that
//! principal's Guard, never by the server's) and the secret its notifications are signed
//! with (`subscription-secret` on the channel, generated when not given); a client's write
//! puts it back to `requested` (the server moves it to `active` after a handshake, to
//! `error` after repeated failures). The dispatcher and the delivery live in `notify.rs`.

use super::session::Session;
use crate::auth::{Principal, Role};
use crate::fhir::outcome::{ErrorKind, Outcome};
use serde_json::{Value, json};

/// Who created a Subscription: its notifications are what this principal may read.
pub const OWNER_URL: &str =
    "https://healporium.example/fhir/StructureDefinition/subscription-owner";
/// On `Subscription.channel`: the HMAC-SHA256 key of its notifications' signatures.
pub const SECRET_URL: &str =
    "https://healporium.example/fhir/StructureDefinition/subscription-secret";
/// The Subscriptions Backport IG's payload content (on `channel.payload`): `empty`,
/// `id-only` or `full-resource`; its presence selects the IG's notification Bundles.
pub const PAYLOAD_CONTENT_URL: &str =
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-payload-content";
/// The job delivering a Subscription's notifications (payload `{"subscription": id}`).
pub const NOTIFY_JOB: &str = "subscription-notify";

/// The resource type and query of a `criteria` (`Observation?code=…`).
pub fn criteria(subscription: &Value) -> Option<(String, Vec<(String, String)>)> {
    let text = subscription.get("criteria")?.as_str()?;
    let (rt, query) = text.split_once('?').unwrap_or((text, ""));
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).ok()?;
    Some((rt.to_string(), pairs))
}

fn invalid(at: &str, why: impl Into<String>) -> Outcome {
    Outcome::new(ErrorKind::Invalid, why).at(at)
}

fn extension<'a>(v: &'a Value, url: &str) -> Option<&'a Value> {
    v.get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(url))
}

fn set_extension(v: &mut Value, url: &str, ext: Option<Value>) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    let mut list: Vec<Value> = obj
        .get("extension")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    list.retain(|e| e.get("url").and_then(Value::as_str) != Some(url));
    if let Some(e) = ext {
        list.push(e);
    }
    if list.is_empty() {
        obj.shift_remove("extension");
    } else {
        obj.insert("extension".into(), Value::Array(list));
    }
}

/// The signing secret of a Subscription.
pub fn secret(subscription: &Value) -> Option<String> {
    subscription
        .get("channel")
        .and_then(|c| extension(c, SECRET_URL))
        .and_then(|e| e.get("valueString"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The owner extension of `principal` (None: authorization is off), created `now`.
fn owner_extension(p: Option<&Principal>, now: &str) -> Value {
    let mut parts = vec![json!({"url": "created", "valueInstant": now})];
    let Some(p) = p else {
        return json!({"url": OWNER_URL, "extension": parts});
    };
    parts.push(json!({"url": "client", "valueString": p.client_id}));
    parts.push(json!({"url": "scope", "valueString": p.scope}));
    if let Some(u) = &p.user {
        parts.push(json!({"url": "user", "valueString": u}));
    }
    if let Some(r) = p.role {
        parts.push(json!({"url": "role", "valueCode": r.as_str()}));
    }
    if let Some(f) = &p.fhir_user {
        parts.push(json!({"url": "fhirUser", "valueString": f}));
    }
    if let Some(pc) = &p.patient_context {
        parts.push(json!({"url": "patient", "valueString": pc}));
    }
    json!({"url": OWNER_URL, "extension": parts})
}

/// The principal that created a Subscription (None: created with authorization off — its
/// notifications are unconfined, like everything on such a server).
pub fn owner(subscription: &Value) -> Option<Principal> {
    let ext = extension(subscription, OWNER_URL)?;
    let part = |name: &str| -> Option<String> {
        ext.get("extension")?
            .as_array()?
            .iter()
            .find(|e| e.get("url").and_then(Value::as_str) == Some(name))
            .and_then(|e| {
                e.as_object()?
                    .iter()
                    .find(|(k, _)| k.starts_with("value"))
                    .and_then(|(_, v)| v.as_str())
                    .map(str::to_string)
            })
    };
    let client_id = part("client")?;
    let scope = part("scope").unwrap_or_default();
    Some(Principal {
        client_id,
        user: part("user"),
        role: part("role").and_then(|r| Role::parse(&r).ok()),
        fhir_user: part("fhirUser"),
        patient_context: part("patient"),
        grants: crate::auth::parse_scopes(&scope),
        scope,
        token_id: None,
    })
}

/// When a Subscription was created (ms): versions committed before are not its business.
pub fn created(subscription: &Value) -> i64 {
    extension(subscription, OWNER_URL)
        .and_then(|e| e.get("extension"))
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("url").and_then(Value::as_str) == Some("created"))
        })
        .and_then(|p| p.get("valueInstant"))
        .and_then(Value::as_str)
        .and_then(crate::search::dates::range)
        .map_or(0, |r| r.0)
}

/// Checks and completes a Subscription a client writes (`current`: the live version it
/// replaces). The server's own status changes skip this (`Session::internal`).
pub(super) fn prepare(
    s: &Session,
    resource: &mut Value,
    current: Option<&Value>,
) -> Result<(), Outcome> {
    let (rt, pairs) = criteria(resource).ok_or_else(|| {
        invalid(
            "Subscription.criteria",
            "criteria must be a search: Type?param=value&…",
        )
    })?;
    if crate::fhir::definitions::Definitions::r4()
        .resource_type(&rt)
        .is_none()
        || rt == "Subscription"
    {
        return Err(invalid(
            "Subscription.criteria",
            format!(
                "'{}' is not a resource type notifications can be about",
                rt.chars().take(64).collect::<String>()
            ),
        ));
    }
    crate::search::query::parse(&s.registry, &[rt], &pairs, true).map_err(|o| {
        let why = o
            .issues
            .first()
            .map(|i| i.diagnostics.clone())
            .unwrap_or_default();
        invalid(
            "Subscription.criteria",
            format!("criteria is not a search this server supports: {why}"),
        )
    })?;
    let channel = resource
        .get("channel")
        .cloned()
        .ok_or_else(|| invalid("Subscription.channel", "channel is required"))?;
    let websocket = match channel.get("type").and_then(Value::as_str) {
        Some("rest-hook") => false,
        Some("websocket") => true,
        _ => {
            return Err(invalid(
                "Subscription.channel.type",
                "this server delivers rest-hook and websocket channels",
            ));
        }
    };
    let endpoint = channel
        .get("endpoint")
        .and_then(Value::as_str)
        .unwrap_or("");
    let url = reqwest::Url::parse(endpoint).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https") && u.host_str().is_some() && u.username().is_empty()
    });
    if url.is_none() && !websocket {
        return Err(invalid(
            "Subscription.channel.endpoint",
            "a rest-hook needs an http(s) endpoint URL without credentials",
        ));
    }
    match channel.get("payload").and_then(Value::as_str) {
        None | Some("application/fhir+json" | "application/json") => {}
        Some(_) => {
            return Err(invalid(
                "Subscription.channel.payload",
                "payload is empty or application/fhir+json",
            ));
        }
    }
    let content = channel
        .get("_payload")
        .and_then(|p| extension(p, PAYLOAD_CONTENT_URL))
        .and_then(|e| e.get("valueCode"))
        .and_then(Value::as_str);
    if let Some(c) = content
        && !matches!(c, "empty" | "id-only" | "full-resource")
    {
        return Err(invalid(
            "Subscription.channel.payload",
            "the backport payload content is empty, id-only or full-resource",
        ));
    }
    for (i, h) in channel
        .get("header")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let ok = h
            .as_str()
            .and_then(|h| h.split_once(':'))
            .is_some_and(|(n, v)| {
                !n.trim().is_empty()
                    && n.trim()
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !v.contains(['\r', '\n'])
            });
        if !ok {
            return Err(invalid(
                &format!("Subscription.channel.header[{i}]"),
                "a header is 'Name: value'",
            ));
        }
    }
    // the secret: as given, else the current one, else a new one
    let given = secret(resource);
    if let Some(g) = &given
        && !(16..=256).contains(&g.len())
    {
        return Err(invalid(
            "Subscription.channel.extension('subscription-secret')",
            "the secret is 16 to 256 characters",
        ));
    }
    let secret = given
        .or_else(|| current.and_then(secret))
        .unwrap_or_else(|| {
            format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            )
        });
    if let Some(ch) = resource.get_mut("channel") {
        set_extension(
            ch,
            SECRET_URL,
            Some(json!({"url": SECRET_URL, "valueString": secret})),
        );
    }
    // the owner: whoever created it; an update keeps it
    let owner = match current {
        Some(c) => extension(c, OWNER_URL).cloned(),
        None => Some(owner_extension(
            s.guard.principal(),
            &crate::fhir::types::Instant::now().to_fhir(),
        )),
    };
    set_extension(resource, OWNER_URL, owner);
    // the server decides the status: a client asks for delivery or switches it off
    if let Some(obj) = resource.as_object_mut() {
        if obj.get("status").and_then(Value::as_str) != Some("off") {
            obj.insert("status".into(), Value::from("requested"));
        }
        obj.shift_remove("error");
    }
    Ok(())
}
