//! AuditEvent for every interaction, in the spirit of IHE BALP: who (user, fhirUser, client,
//! network address), what (each resource read or changed, with its version; for searches the
//! query and each patient whose data was returned), when, and the outcome. A request that
//! touches several patients' data records one AuditEvent per patient plus one for the query,
//! so a patient reading their own AuditEvents sees only what concerns them. Writes are audited
//! in the same database transaction as the write; reads are audited before the response leaves
//! (a read whose audit cannot be stored fails). Every AuditEvent joins a hash chain
//! (`audit_chain`: SHA-256 over the previous hash and the event's exact JSON), which
//! `healporium audit verify` walks to detect a changed, removed or inserted record. AuditEvents
//! are ordinary resources, searchable by patient, agent, entity and date, and immutable through
//! the API.

use super::Context;
use super::seal::{self, Seal};
use crate::auth::Principal;
use crate::fhir::outcome::Outcome;
use crate::fhir::resource::stamp;
use crate::fhir::types::{Id, Instant};
use crate::search::parameters::SearchParameters;
use crate::store::{Method, NewVersion, Store, Transaction};
use base64::Engine;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The lock key serializing appends to the chain.
const CHAIN_LOCK: &str = "audit-chain";
/// The chain's first `prev_hash`.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Entities listed per event, at most.
const MAX_ENTITIES: usize = 500;

/// What one interaction did, for its AuditEvent.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// A restful-interaction code (`read`, `search-type`, `create`, `transaction`…) or
    /// `operation`.
    pub subtype: String,
    /// C, R, U, D or E.
    pub action: &'static str,
    /// The HTTP status of the outcome.
    pub status: u16,
    /// The resources read or changed: `Type/id` or `Type/id/_history/n`.
    pub entities: Vec<String>,
    /// A search's query string.
    pub query: Option<String>,
    /// The patients whose data was returned or changed (`Patient/id`).
    pub patients: Vec<String>,
    /// The operation's name, or the request path, for the description.
    pub description: Option<String>,
}

/// Who asked, as the audit sees it.
#[derive(Debug, Clone, Default)]
pub struct Requester {
    pub principal: Option<Principal>,
    /// The client's network address.
    pub address: Option<String>,
}

fn outcome_code(status: u16) -> &'static str {
    match status {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    }
}

/// The AuditEvent resource for a record.
pub fn event(who: &Requester, r: &Record) -> Value {
    let mut agents = Vec::new();
    let mut user = Map::new();
    user.insert("requestor".into(), json!(true));
    match &who.principal {
        Some(p) => {
            let who = if let Some(fu) = &p.fhir_user {
                json!({"reference": fu})
            } else if let Some(u) = &p.user {
                json!({"display": u})
            } else {
                json!({"display": p.client_id})
            };
            user.insert("who".into(), who);
            if let Some(u) = &p.user {
                user.insert("name".into(), json!(u));
            }
            user.insert("altId".into(), json!(p.client_id));
            user.insert("policy".into(), json!([format!("scope:{}", p.scope)]));
        }
        None => {
            user.insert(
                "who".into(),
                json!({"display": "anonymous (authorization off)"}),
            );
        }
    }
    if let Some(addr) = &who.address {
        user.insert("network".into(), json!({"address": addr, "type": "2"}));
    }
    agents.push(Value::Object(user));
    if let Some(p) = &who.principal {
        agents.push(json!({
            "type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110150", "display": "Application"}]},
            "who": {"identifier": {"system": "urn:healporium:client", "value": p.client_id}},
            "requestor": false
        }));
    }
    let mut entities: Vec<Value> = r
        .entities
        .iter()
        .take(MAX_ENTITIES)
        .map(|e| {
            json!({"what": {"reference": e},
                   "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"}})
        })
        .collect();
    for p in r.patients.iter().take(MAX_ENTITIES) {
        entities.push(json!({"what": {"reference": p},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1", "display": "Patient"}}));
    }
    if let Some(q) = &r.query {
        entities.push(json!({
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
            "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24", "display": "Query"},
            "query": base64::engine::general_purpose::STANDARD.encode(q)
        }));
    }
    let subtype_system = if r.subtype == "operation" || r.subtype.starts_with('$') {
        "urn:healporium:operation"
    } else if r.subtype == "refused" {
        // a request refused before it was an interaction (malformed, 405, 406, 413, 415…)
        "urn:healporium:request"
    } else {
        "http://hl7.org/fhir/restful-interaction"
    };
    let mut source = Map::new();
    source.insert("observer".into(), json!({"display": "Healporium"}));
    source.insert(
        "type".into(),
        json!([{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]),
    );
    if let Some(d) = &r.description {
        source.insert(
            "site".into(),
            json!(d.chars().take(200).collect::<String>()),
        );
    }
    let mut ev = json!({
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [{"system": subtype_system, "code": r.subtype}],
        "action": r.action,
        "recorded": Instant::now().to_fhir(),
        "outcome": outcome_code(r.status),
        "outcomeDesc": format!("HTTP {}", r.status),
        "agent": agents,
        "source": Value::Object(source),
    });
    if !entities.is_empty()
        && let Some(obj) = ev.as_object_mut()
    {
        obj.insert("entity".into(), Value::Array(entities));
    }
    ev
}

/// A sign-in or token event (`login`, `login-failed`, `token`, `token-failed`,
/// `token-rejected`): who tried (account name and/or client), from where, and how it ended.
pub async fn security_event(
    ctx: &Context,
    user: Option<&str>,
    client: Option<&str>,
    subtype: &str,
    status: u16,
    address: Option<String>,
) -> Result<(), Outcome> {
    if !ctx.audit {
        return Ok(());
    }
    let mut agent = Map::new();
    agent.insert("requestor".into(), json!(true));
    agent.insert(
        "who".into(),
        json!({"display": user.or(client).unwrap_or("unknown")}),
    );
    if let Some(u) = user {
        agent.insert("name".into(), json!(u));
    }
    if let Some(c) = client {
        agent.insert("altId".into(), json!(c));
    }
    if let Some(a) = address {
        agent.insert("network".into(), json!({"address": a, "type": "2"}));
    }
    let ev = json!({
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114", "display": "User Authentication"},
        "subtype": [{"system": "urn:healporium:security", "code": subtype}],
        "action": "E",
        "recorded": Instant::now().to_fhir(),
        "outcome": outcome_code(status),
        "outcomeDesc": format!("HTTP {status}"),
        "agent": [Value::Object(agent)],
        "source": {"observer": {"display": "Healporium"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}]},
    });
    append(ctx, ev).await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The chain hash of an event's exact text after `prev`.
pub fn chain_hash(prev: &str, text: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(text.as_bytes());
    hex(&h.finalize())
}

/// Records AuditEvents and links them into the chain in their order, inside `tx`: the chain
/// is locked and its last link read once, and every event goes into one multi-row INSERT of
/// `audit_pending` and one of the chain, however many events there are. They become
/// searchable resources when [`settle`] moves them (before anything reads AuditEvents).
pub async fn append_many_in(
    tx: &mut dyn Transaction,
    seal: Option<&Seal>,
    events: &[&Value],
) -> Result<(), Outcome> {
    if events.is_empty() {
        return Ok(());
    }
    tx.lock_key(CHAIN_LOCK).await?;
    let mut prev = tx
        .audit()
        .last_audit_hash()
        .await?
        .unwrap_or_else(|| GENESIS.to_string());
    // the previous link is committed (it was read under the chain lock), so it is what the
    // signed head records
    if let Some(seal) = seal {
        seal.record_head(&prev);
    }
    let mut rows = Vec::with_capacity(events.len());
    let mut links = Vec::with_capacity(events.len());
    for ev in events {
        // the one copy: the stamped event is what is recorded and hashed
        let mut ev = (*ev).clone();
        let id = Id::generate();
        let now = Instant::now();
        stamp(&mut ev, id.as_str(), 1, now);
        let text = serde_json::to_string(&ev)
            .map_err(|_| Outcome::internal("Cannot serialize an AuditEvent"))?;
        // keyed with the server's audit key when there is one
        let hash = match seal {
            Some(seal) => seal.link(&prev, &text),
            None => chain_hash(&prev, &text),
        };
        links.push((
            id.to_string(),
            std::mem::replace(&mut prev, hash.clone()),
            hash,
        ));
        rows.push((id.to_string(), now.millis(), text));
    }
    tx.audit().append_pending(&rows).await?;
    tx.audit().append_audits(&links).await?;
    Ok(())
}

/// The lock key serializing the indexer's moves.
const SETTLE_LOCK: &str = "audit-settle";
/// Pending AuditEvents moved per transaction: small enough that the transaction holds
/// SQLite's one writer for tens of milliseconds, not a request's whole patience.
const SETTLE_BATCH: u32 = 250;

/// Stores the pending AuditEvents as resources (version, current pointer, index rows) in
/// batches, each in one transaction that also removes them from `audit_pending`. Their index
/// rows are computed before the transaction begins, so the writer is held only for the
/// INSERTs. Called before every interaction that can return AuditEvents, by the audit writer
/// when a backlog builds up, and periodically. Returns how many were moved.
pub async fn settle(store: &dyn Store, registry: &SearchParameters) -> Result<u64, Outcome> {
    let mut moved = 0u64;
    let started = std::time::Instant::now();
    loop {
        let rows = store.pending_audits(SETTLE_BATCH).await?;
        let (Some(first), Some(last)) = (rows.first().map(|r| r.0), rows.last().map(|r| r.0))
        else {
            break;
        };
        let full = rows.len() >= SETTLE_BATCH as usize;
        let count = rows.len() as u64;
        let mut versions = Vec::with_capacity(rows.len());
        for (_, id, recorded, body) in rows {
            let ev: Value = serde_json::from_str(&body)
                .map_err(|_| Outcome::internal("A recorded AuditEvent is not JSON"))?;
            let mut index = crate::search::index::extract_with(&ev, None, registry);
            // an AuditEvent never keeps what it names from being deleted
            index.links.clear();
            versions.push(NewVersion {
                resource_type: "AuditEvent".to_string(),
                id,
                version: 1,
                previous: None,
                last_updated: Instant::from_millis(recorded),
                method: Method::Post,
                body: Some(body),
                index,
            });
        }
        let mut tx = store.begin().await?;
        tx.lock_key(SETTLE_LOCK).await?;
        // another node (or task) moved some of them meanwhile: read again
        if tx.audit().remove_pending(first, last).await? != count {
            drop(tx);
            continue;
        }
        tx.write_new(&versions).await?;
        tx.commit().await?;
        moved += count;
        if !full {
            break;
        }
    }
    if moved > 0 {
        tracing::debug!(
            moved,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "recorded AuditEvents stored as resources"
        );
    }
    Ok(moved)
}

/// Stores an AuditEvent outside any write (a refusal, a sign-in), durably before it returns:
/// through the node's group commit ([`super::audit_writer`]).
pub async fn append(ctx: &Context, ev: Value) -> Result<(), Outcome> {
    append_all(ctx, vec![ev]).await
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// Every link holds: the number of AuditEvents.
    Intact(u64),
    /// The first broken link: its sequence number and what is wrong.
    Broken(i64, String),
}

/// Walks the whole chain: each link's prev must be the previous hash, and each hash must be
/// the hash of the stored AuditEvent's text — keyed with `seal`'s key for keyed links (an
/// unkeyed link after a keyed one means the chain was re-hashed). With a seal, the signed
/// head must be a link of the chain (else its end was cut off, or it was emptied); and every
/// stored AuditEvent must have a link (else one was inserted beside the server).
pub async fn verify(store: &dyn Store, seal: Option<&Seal>) -> Result<Verified, Outcome> {
    let head = match seal.map(Seal::head).transpose() {
        Ok(h) => h.flatten(),
        Err(why) => return Ok(Verified::Broken(0, why)),
    };
    let mut head_seen = false;
    let mut keyed_seen = false;
    let mut prev = GENESIS.to_string();
    let mut after = 0i64;
    let mut count = 0u64;
    loop {
        let links = store.audit_chain(after, 500).await?;
        if links.is_empty() {
            break;
        }
        let keys: Vec<(String, String)> = links
            .iter()
            .map(|(_, id, _, _)| ("AuditEvent".to_string(), id.clone()))
            .collect();
        let mut bodies: std::collections::HashMap<String, String> = store
            .read_many(&keys)
            .await?
            .into_iter()
            .filter_map(|v| v.body.map(|b| (v.id, b.to_string())))
            .collect();
        // recorded events the indexer has not stored as resources yet
        let unsettled: Vec<String> = keys
            .iter()
            .filter(|(_, id)| !bodies.contains_key(id))
            .map(|(_, id)| id.clone())
            .collect();
        if !unsettled.is_empty() {
            bodies.extend(store.pending_audit_bodies(&unsettled).await?);
            // moved by the indexer between the two reads
            let moved: Vec<(String, String)> = unsettled
                .iter()
                .filter(|id| !bodies.contains_key(*id))
                .map(|id| ("AuditEvent".to_string(), id.clone()))
                .collect();
            if !moved.is_empty() {
                bodies.extend(
                    store
                        .read_many(&moved)
                        .await?
                        .into_iter()
                        .filter_map(|v| v.body.map(|b| (v.id, b.to_string()))),
                );
            }
        }
        for (seq, id, link_prev, hash) in links {
            if link_prev != prev {
                return Ok(Verified::Broken(
                    seq,
                    format!("AuditEvent/{id}: the link does not follow the previous record"),
                ));
            }
            let Some(text) = bodies.get(&id) else {
                return Ok(Verified::Broken(seq, format!("AuditEvent/{id} is missing")));
            };
            let expected = if hash.starts_with(seal::KEYED) {
                keyed_seen = true;
                match seal {
                    Some(seal) => seal.link(&prev, text),
                    None => {
                        return Ok(Verified::Broken(
                            seq,
                            "the chain is keyed: verify it with the audit key (--audit-key-file)"
                                .into(),
                        ));
                    }
                }
            } else if keyed_seen {
                return Ok(Verified::Broken(
                    seq,
                    format!("AuditEvent/{id}: an unkeyed link after keyed ones (re-hashed)"),
                ));
            } else {
                chain_hash(&prev, text)
            };
            if expected != hash {
                return Ok(Verified::Broken(
                    seq,
                    format!("AuditEvent/{id} was changed after it was recorded"),
                ));
            }
            head_seen |= head.as_deref() == Some(hash.as_str());
            prev = hash;
            after = seq;
            count += 1;
        }
    }
    if head.is_some() && !head_seen {
        return Ok(Verified::Broken(
            after,
            "the chain ends before its signed head: records were cut off or the chain was \
             emptied or re-hashed"
                .into(),
        ));
    }
    let stored =
        store.live_ids("AuditEvent").await?.len() as u64 + store.audit_pending_count().await?;
    if stored > count {
        return Ok(Verified::Broken(
            after,
            format!(
                "{} AuditEvent(s) have no link in the chain (written beside the server)",
                stored - count
            ),
        ));
    }
    Ok(Verified::Intact(count))
}

/// The resources of a response body — each entry resource of a Bundle, or the resource
/// itself — as (`Type/id/_history/n`, the resource).
pub fn resources_of(body: &Value) -> Vec<(String, &Value)> {
    fn item(r: &Value) -> Option<(String, &Value)> {
        let t = r.get("resourceType").and_then(Value::as_str)?;
        let id = r.get("id").and_then(Value::as_str)?;
        if t == "OperationOutcome" || t == "Bundle" || t == "Parameters" {
            return None;
        }
        let key = match r.pointer("/meta/versionId").and_then(Value::as_str) {
            Some(v) => format!("{t}/{id}/_history/{v}"),
            None => format!("{t}/{id}"),
        };
        Some((key, r))
    }
    if body.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        body.get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource").and_then(item))
            .collect()
    } else {
        item(body).into_iter().collect()
    }
}

/// Splits one interaction's record the way IHE BALP does, so that the AuditEvents a patient
/// can read (those naming them) concern only them: with data of several patients — or a
/// query that may name someone else — one record per patient (that patient and their
/// resources, no query) plus one for the rest (the query and the resources of no patient,
/// naming no patient). `items` are (entity, its patients); `requester` is the Patient the
/// requester is, whose own single-patient requests stay one record.
pub fn split(r: Record, items: &[(String, Vec<String>)], requester: Option<&str>) -> Vec<Record> {
    let mut patients: Vec<String> = Vec::new();
    for (_, ps) in items {
        for p in ps {
            if !patients.contains(p) {
                patients.push(p.clone());
            }
        }
    }
    let own = |p: &str| requester == Some(p);
    let single = match patients.as_slice() {
        [] => true,
        [only] => r.query.is_none() || own(only),
        _ => false,
    };
    if single {
        return vec![Record {
            entities: items.iter().map(|(e, _)| e.clone()).collect(),
            patients: patients.iter().map(|p| format!("Patient/{p}")).collect(),
            ..r
        }];
    }
    let mut out = Vec::new();
    for p in &patients {
        out.push(Record {
            entities: items
                .iter()
                .filter(|(e, ps)| ps.contains(p) && !e.starts_with("Patient/"))
                .map(|(e, _)| e.clone())
                .collect(),
            patients: vec![format!("Patient/{p}")],
            query: None,
            ..r.clone()
        });
    }
    let rest: Vec<String> = items
        .iter()
        .filter(|(e, ps)| ps.is_empty() && !e.starts_with("Patient/"))
        .map(|(e, _)| e.clone())
        .collect();
    if r.query.is_some() || !rest.is_empty() {
        out.push(Record {
            entities: rest,
            patients: Vec::new(),
            ..r
        });
    }
    out
}

/// Stores several AuditEvents (a search's per-patient records) in one transaction, durably
/// before it returns: concurrent requests' events share that transaction and its fsync
/// ([`super::audit_writer`]).
pub async fn append_all(ctx: &Context, events: Vec<Value>) -> Result<(), Outcome> {
    if events.is_empty() {
        return Ok(());
    }
    ctx.audit_writer.submit(ctx, events).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_who_what_and_outcome() {
        let who = Requester {
            principal: Some(Principal {
                client_id: "app".into(),
                user: Some("ann".into()),
                role: Some(crate::auth::Role::Practitioner),
                fhir_user: Some("Practitioner/7".into()),
                patient_context: None,
                grants: Vec::new(),
                scope: "user/*.rs".into(),
                token_id: None,
            }),
            address: Some("10.0.0.1".into()),
        };
        let r = Record {
            subtype: "search-type".into(),
            action: "E",
            status: 200,
            entities: vec!["Observation/1/_history/2".into()],
            query: Some("Observation?code=x".into()),
            patients: vec!["Patient/A".into()],
            description: None,
        };
        let ev = event(&who, &r);
        assert_eq!(ev["agent"][0]["who"]["reference"], "Practitioner/7");
        assert_eq!(ev["agent"][0]["network"]["address"], "10.0.0.1");
        assert_eq!(ev["agent"][1]["who"]["identifier"]["value"], "app");
        assert_eq!(ev["entity"][1]["what"]["reference"], "Patient/A");
        assert_eq!(ev["outcome"], "0");
        crate::fhir::validation::Validator::r4()
            .validate(&ev)
            .expect("a valid AuditEvent");
        assert_ne!(chain_hash(GENESIS, "a"), chain_hash(GENESIS, "b"));
        let b = json!({"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "Observation", "id": "o", "meta": {"versionId": "3"}, "subject": {"reference": "Patient/p"}}},
            {"resource": {"resourceType": "Patient", "id": "p"}}]});
        let keys: Vec<String> = resources_of(&b).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["Observation/o/_history/3", "Patient/p"]);
        // one patient without a query: one record
        let base = Record {
            subtype: "search-type".into(),
            action: "E",
            status: 200,
            query: Some("Observation?subject=Patient/p".into()),
            ..Record::default()
        };
        let items = vec![
            ("Observation/o".to_string(), vec!["p".to_string()]),
            ("Observation/q".to_string(), vec!["q".to_string()]),
            ("Practitioner/d".to_string(), vec![]),
            ("Patient/p".to_string(), vec!["p".to_string()]),
        ];
        let parts = split(base.clone(), &items, None);
        assert_eq!(parts.len(), 3, "one per patient and one for the query");
        assert_eq!(parts[0].patients, ["Patient/p"]);
        assert_eq!(parts[0].entities, ["Observation/o"]);
        assert!(parts[0].query.is_none());
        assert_eq!(parts[1].entities, ["Observation/q"]);
        assert!(parts[2].patients.is_empty());
        assert_eq!(parts[2].entities, ["Practitioner/d"]);
        assert!(parts[2].query.is_some());
        // the requester's own data: one record, query and all
        let own = split(base, &items[..1], Some("p"));
        assert_eq!(own.len(), 1);
        assert!(own[0].query.is_some());
    }
}
