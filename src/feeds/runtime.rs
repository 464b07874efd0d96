//! The feed runtime: a received message goes to the durable inbox first, is parsed, mapped,
//! and committed as one FHIR transaction through a [`Sink`] (the interaction layer, so
//! validation, integrity, the Guard and audit apply), and is answered with an ACK stored
//! beside it. A re-delivery (same MSH-3, MSH-4, MSH-10) gets the stored ACK back and writes
//! nothing; a failure leaves a dead letter by class that the operator can replay.
//!
//! The transports (MLLP, files, HTTP) all call [`Pipeline::receive`].

use super::map::MapIssue;
use super::mapping_set::MappingSet;
use crate::auth::Principal;
use crate::hl7v2::ack::{AckCode, AckError, ack};
use crate::hl7v2::er7::{self, Message};
use crate::store::{Begun, FeedStore, Finish, NewFeedMessage, StoreError};
use async_trait::async_trait;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Why a message failed: the dead-letter classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The bytes are not an HL7 v2 message.
    Parse,
    /// A structure, message type or processing id this channel does not take.
    Unsupported,
    /// The store refused the writes as conflicting (409, 412).
    Conflict,
    /// The message could not be mapped (a required field, a date, an unknown code).
    Mapping,
    /// The mapped resources were refused (validation, integrity, authorization).
    Validation,
    /// The store kept failing after the retries.
    TransientExhausted,
}

impl Class {
    pub const ALL: [Class; 6] = [
        Class::Parse,
        Class::Unsupported,
        Class::Conflict,
        Class::Mapping,
        Class::Validation,
        Class::TransientExhausted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Parse => "parse",
            Class::Unsupported => "unsupported",
            Class::Conflict => "conflict",
            Class::Mapping => "mapping",
            Class::Validation => "validation",
            Class::TransientExhausted => "transient-exhausted",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Why the sink refused a transaction.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// Conflict, Validation, or TransientExhausted for a failure worth retrying.
    pub class: Class,
    /// The HTTP status the interaction layer gave.
    pub status: u16,
    /// (FHIRPath expression, diagnostics) per issue.
    pub issues: Vec<(Option<String>, String)>,
}

/// Where mapped transactions go: the interaction layer (see `api::hl7v2`).
#[async_trait]
pub trait Sink: Send + Sync {
    async fn commit(
        &self,
        bundle: Value,
        provenance: Value,
        principal: Option<Principal>,
        source: Option<String>,
    ) -> Result<(), Refusal>;

    /// Runs a command a message carries (`credit-payment` on the patient `target` names,
    /// with `parameters`) after its transaction committed; idempotent by the `requestId`
    /// among the parameters.
    async fn command(
        &self,
        kind: &str,
        target: &str,
        parameters: Value,
        principal: Option<Principal>,
        source: Option<String>,
    ) -> Result<(), Refusal>;
}

/// A channel: a named way in, with what it accepts.
#[derive(Debug, Clone)]
pub struct Channel {
    pub name: String,
    /// The zone of timestamps without an offset (`+01:00`); None: such a timestamp is an error.
    pub default_zone: Option<String>,
    /// MSH-11.1 values taken (P production, T training, D debugging).
    pub processing_ids: Vec<String>,
    /// Who the channel writes as (None when authorization is off, or for HTTP: the caller).
    pub principal: Option<Principal>,
    /// The message types taken (None: every mapped one).
    pub accept: Option<Vec<String>>,
    /// MSH-12 versions taken (None: any).
    pub versions: Option<Vec<String>>,
    /// Enhanced acknowledgement: MSH-16 says whether an ACK is sent (AL always, NE never, ER
    /// on errors, SU on success); original mode answers every message.
    pub enhanced: bool,
}

impl Channel {
    /// The default channel: every supported message type, production and training.
    pub fn default_channel(principal: Option<Principal>) -> Channel {
        Channel {
            name: "default".into(),
            default_zone: None,
            processing_ids: vec!["P".into(), "T".into()],
            principal,
            accept: None,
            versions: None,
            enhanced: false,
        }
    }

    /// A channel as its file in mappings/channels/ describes it.
    pub fn from_map(m: &super::maps::ChannelMap, principal: Option<Principal>) -> Channel {
        Channel {
            name: m.name.clone(),
            default_zone: m.zone.clone(),
            processing_ids: m
                .processing_ids
                .clone()
                .unwrap_or_else(|| vec!["P".into(), "T".into()]),
            principal,
            accept: m.accept.clone(),
            versions: m.versions.clone(),
            enhanced: m.ack.as_deref() == Some("enhanced"),
        }
    }

    /// Whether the sender gets an ACK for `message` answered with `code` (MLLP; HTTP always
    /// answers).
    pub fn answers(&self, message: Option<&Message>, code: AckCode) -> bool {
        if !self.enhanced {
            return true;
        }
        let wanted = message
            .and_then(|m| m.segment("MSH"))
            .map(|s| s.get(16, 1, 1).to_string())
            .unwrap_or_default();
        match wanted.as_str() {
            "NE" => false,
            "ER" => code != AckCode::Accept,
            "SU" => code == AckCode::Accept,
            _ => true,
        }
    }
}

/// What a delivery got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The ACK, ER7.
    pub ack: String,
    pub code: AckCode,
    /// The message had been received before: the stored ACK, nothing written.
    pub duplicate: bool,
    /// The inbox row (None when the message could not be stored).
    pub message_id: Option<String>,
    /// The message was not stored (the store failed, or another delivery of it is in
    /// progress): the sender should resend.
    pub retry: bool,
    /// Whether the channel sends this ACK (enhanced mode may not).
    pub send: bool,
}

/// The feed pipeline of a node.
pub struct Pipeline {
    set: Arc<MappingSet>,
    store: Arc<dyn FeedStore>,
    sink: Arc<dyn Sink>,
    /// How long a message is leased to the node processing it.
    pub lease_ms: i64,
    /// Retries of a transient store failure, with backoff from `backoff_ms`.
    pub retries: u32,
    pub backoff_ms: u64,
    /// Messages for one patient are committed one at a time (in arrival order on this node).
    stripes: Vec<tokio::sync::Mutex<()>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Now as an ACK timestamp (`YYYYMMDDHHMMSS+0000`).
pub fn ack_timestamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}+0000",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

fn instant_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The message's text: UTF-8, else ISO 8859-1 (what older interfaces send).
pub fn decode(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_string(),
        Err(_) => raw.iter().map(|&b| char::from(b)).collect(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The duplicate key: `MSH-3|MSH-4|MSH-10`, or the hash when there is no control id.
pub fn duplicate_key(message: Option<&Message>, sha256: &str) -> String {
    match message {
        Some(m) if !m.control_id().is_empty() => {
            let msh = m.segment("MSH");
            let get = |n: usize| msh.map_or(String::new(), |s| s.get(n, 1, 1).to_string());
            format!("{}|{}|{}", get(3), get(4), m.control_id())
        }
        _ => format!("sha256:{sha256}"),
    }
}

/// The outcome of processing, before it is stored.
struct Outcome {
    code: AckCode,
    errors: Vec<AckError>,
    dead: Option<(Class, String)>,
}

fn fail(code: AckCode, class: Class, errors: Vec<AckError>) -> Outcome {
    let text = errors
        .iter()
        .map(|e| match &e.location {
            Some(l) => format!("{l}: {}", e.text),
            None => e.text.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    Outcome {
        code,
        errors,
        dead: Some((class, text)),
    }
}

fn ack_error(location: Option<String>, code: &'static str, text: impl Into<String>) -> AckError {
    AckError {
        location,
        code,
        text: text.into(),
    }
}

fn from_issue(i: &MapIssue) -> AckError {
    ack_error(i.location.clone(), i.code, i.message.clone())
}

impl Pipeline {
    pub fn new(set: Arc<MappingSet>, store: Arc<dyn FeedStore>, sink: Arc<dyn Sink>) -> Self {
        Pipeline {
            set,
            store,
            sink,
            lease_ms: 60_000,
            retries: 3,
            backoff_ms: 100,
            stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    pub fn mapping_set(&self) -> &MappingSet {
        &self.set
    }

    pub fn store(&self) -> &Arc<dyn FeedStore> {
        &self.store
    }

    /// Receives one message on `channel`; `principal` is who writes (the channel's when
    /// None), `source` the peer's address for the audit trail.
    pub async fn receive(
        &self,
        channel: &Channel,
        principal: Option<Principal>,
        source: Option<String>,
        raw: &[u8],
    ) -> Receipt {
        let sha256 = hex(&Sha256::digest(raw));
        let text = decode(raw);
        let parsed = er7::parse(&text);
        let dup_key = duplicate_key(parsed.as_ref().ok(), &sha256);
        let new = NewFeedMessage {
            channel: channel.name.clone(),
            dup_key,
            sha256,
            raw: raw.to_vec(),
        };
        let original = parsed.as_ref().ok();
        let begun = self.store.begin(&new, now_ms(), self.lease_ms).await;
        let id = match begun {
            Ok(Begun::New(id) | Begun::TakenOver(id)) => id,
            Ok(Begun::Done { id, ack }) => {
                let code = match er7::parse(&ack)
                    .ok()
                    .and_then(|a| a.segment("MSA").map(|s| s.get(1, 1, 1).to_string()))
                    .as_deref()
                {
                    Some("AA") => AckCode::Accept,
                    Some("AR") => AckCode::Reject,
                    _ => AckCode::Error,
                };
                return Receipt {
                    ack,
                    code,
                    duplicate: true,
                    message_id: Some(id),
                    retry: false,
                    send: channel.answers(original, code),
                };
            }
            Ok(Begun::Busy) => {
                return self.unstored(original, "another delivery of this message is in progress");
            }
            Err(e) => {
                tracing::error!(error = %e, "the feed inbox could not store a message");
                return self.unstored(original, "the server could not store the message");
            }
        };
        self.run(&id, channel, principal, source, parsed).await
    }

    /// Processes a stored message again (a dead letter after a fix): its ACK and dead letter
    /// are replaced by the new outcome. None when there is no such message.
    pub async fn replay(
        &self,
        id: &str,
        channel: &Channel,
        principal: Option<Principal>,
    ) -> Result<Option<Receipt>, StoreError> {
        let Some(row) = self.store.message(id).await? else {
            return Ok(None);
        };
        if !self.store.lease(id, now_ms(), self.lease_ms).await? {
            return Ok(Some(self.unstored(None, "the message is being processed")));
        }
        let text = decode(&row.raw);
        let parsed = er7::parse(&text);
        Ok(Some(self.run(id, channel, principal, None, parsed).await))
    }

    /// An AE for a message that was not stored: the sender resends.
    fn unstored(&self, original: Option<&Message>, why: &str) -> Receipt {
        let a = ack(
            original,
            AckCode::Error,
            &[ack_error(None, "207", format!("{why}; resend it"))],
            &ack_timestamp(),
        );
        Receipt {
            ack: a.to_er7(),
            code: AckCode::Error,
            duplicate: false,
            message_id: None,
            retry: true,
            send: true,
        }
    }

    async fn run(
        &self,
        id: &str,
        channel: &Channel,
        principal: Option<Principal>,
        source: Option<String>,
        parsed: Result<Message, er7::ParseError>,
    ) -> Receipt {
        let principal = principal.or_else(|| channel.principal.clone());
        let outcome = match &parsed {
            Err(e) => fail(
                AckCode::Reject,
                Class::Parse,
                vec![ack_error(None, "207", e.to_string())],
            ),
            Ok(m) => self.process(id, channel, principal, source, m).await,
        };
        let a = ack(
            parsed.as_ref().ok(),
            outcome.code,
            &outcome.errors,
            &ack_timestamp(),
        )
        .to_er7();
        let finish = Finish {
            ack_code: outcome.code.as_str(),
            ack: &a,
            dead: outcome.dead.as_ref().map(|(c, e)| (c.as_str(), e.as_str())),
        };
        if let Err(e) = self.store.finish(id, &finish, now_ms()).await {
            // the writes (if any) are committed; the lease expires and a re-delivery is
            // processed again, which deterministic identity makes a no-op
            tracing::error!(error = %e, "the feed inbox could not store an ACK");
        }
        Receipt {
            ack: a,
            code: outcome.code,
            duplicate: false,
            message_id: Some(id.to_string()),
            retry: false,
            send: channel.answers(parsed.as_ref().ok(), outcome.code),
        }
    }

    async fn process(
        &self,
        id: &str,
        channel: &Channel,
        principal: Option<Principal>,
        source: Option<String>,
        m: &Message,
    ) -> Outcome {
        let msh = m.segment("MSH");
        let processing = msh.map_or("", |s| s.get(11, 1, 1));
        let processing = if processing.is_empty() {
            "P"
        } else {
            processing
        };
        if !channel.processing_ids.iter().any(|p| p == processing) {
            return fail(
                AckCode::Reject,
                Class::Unsupported,
                vec![ack_error(
                    Some("MSH-11".into()),
                    "202",
                    format!(
                        "processing id {processing} is not taken on channel {}",
                        channel.name
                    ),
                )],
            );
        }
        let version = msh.map_or("", |s| s.get(12, 1, 1));
        if let Some(vs) = &channel.versions
            && !vs.iter().any(|v| v == version)
        {
            return fail(
                AckCode::Reject,
                Class::Unsupported,
                vec![ack_error(
                    Some("MSH-12".into()),
                    "203",
                    format!("version {version} is not taken on channel {}", channel.name),
                )],
            );
        }
        let (code, trigger, _) = m.message_type();
        let key = format!("{code}^{trigger}");
        if let Some(accept) = &channel.accept
            && !accept.iter().any(|a| a == &key)
        {
            return fail(
                AckCode::Reject,
                Class::Unsupported,
                vec![ack_error(
                    Some("MSH-9".into()),
                    "200",
                    format!("{key} is not taken on channel {}", channel.name),
                )],
            );
        }
        if self.set.message_map(&key).is_none() {
            let text = if self.set.structure_for(m).is_some() {
                format!("{key} is read but not yet mapped by this server")
            } else {
                format!("{key} is not a message type this server supports")
            };
            return fail(
                AckCode::Reject,
                Class::Unsupported,
                vec![ack_error(Some("MSH-9".into()), "200", text)],
            );
        }
        let mapped = match self.set.map_message(m, channel.default_zone.as_deref()) {
            Ok(mapped) => mapped,
            Err(issues) => {
                let errors: Vec<&MapIssue> = issues.iter().filter(|i| i.error).collect();
                // what the maps refuse outright is unsupported (AR), not a mapping error
                let (code, class) = if !errors.is_empty() && errors.iter().all(|i| i.code == "200")
                {
                    (AckCode::Reject, Class::Unsupported)
                } else {
                    (AckCode::Error, Class::Mapping)
                };
                return fail(code, class, errors.into_iter().map(from_issue).collect());
            }
        };
        let mut warnings: Vec<AckError> = mapped.issues.iter().map(from_issue).collect();
        let provenance = self.provenance(id, channel, m);
        let mut bundle = mapped.bundle;
        let lock_key = patient_key(&bundle);
        let stripe = self
            .stripes
            .get(stripe_of(&lock_key, self.stripes.len()))
            .map(tokio::sync::Mutex::lock);
        let _guard = match stripe {
            Some(lock) => Some(lock.await),
            None => None,
        };
        // an older message arriving after a newer one (an A01 after its A08) leaves the
        // newer data as it is: its entries become conditional creates that match and write
        // nothing, so the references to them still resolve
        let event = event_ms(m, channel.default_zone.as_deref());
        let identities = entry_urls(&bundle);
        let mut fresh = identities.clone();
        if let Some(ev) = event {
            let times = match self.store.event_times(&identities).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(error = %e, "the feed's event times could not be read");
                    return fail(
                        AckCode::Error,
                        Class::TransientExhausted,
                        vec![ack_error(
                            None,
                            "207",
                            "the server could not check the message's order",
                        )],
                    );
                }
            };
            for (identity, t) in times {
                if t > ev && keep_newer(&mut bundle, &identity) {
                    fresh.retain(|f| f != &identity);
                    let rt = identity.split(['/', '?']).next().unwrap_or("").to_string();
                    warnings.push(ack_error(
                        None,
                        "207",
                        format!(
                            "{rt}: the server holds data from a later message; this older one does not overwrite it"
                        ),
                    ));
                }
            }
        }
        let mut attempt = 0;
        loop {
            let result = self
                .sink
                .commit(
                    bundle.clone(),
                    provenance.clone(),
                    principal.clone(),
                    source.clone(),
                )
                .await;
            match result {
                Ok(()) => {
                    if let Some(ev) = event
                        && let Err(e) = self.store.record_events(&fresh, ev, id).await
                    {
                        tracing::error!(error = %e, "the feed's event times could not be stored");
                    }
                    let dup = duplicate_key(Some(m), "");
                    for c in &mapped.commands {
                        // the sender's own transaction id makes a resent payment the same one;
                        // without it, the message and the segment do
                        let request_id = match processor_id(&c.parameters) {
                            Some(tx) => format!("hl7v2|{}|{tx}", sender(m)),
                            None => format!("hl7v2|{dup}|{}", c.segment),
                        };
                        let parameters = with_request_id(&c.parameters, &request_id);
                        if let Err(r) = self
                            .sink
                            .command(
                                &c.kind,
                                &c.target,
                                parameters,
                                principal.clone(),
                                source.clone(),
                            )
                            .await
                        {
                            let mut errors = refusal_errors(&r);
                            for e in &mut errors {
                                e.location = Some(c.segment.replace('[', "-").replace(']', ""));
                            }
                            return fail(AckCode::Error, r.class, errors);
                        }
                    }
                    return Outcome {
                        code: AckCode::Accept,
                        errors: warnings,
                        dead: None,
                    };
                }
                Err(r) if r.class == Class::TransientExhausted && attempt < self.retries => {
                    let wait = self.backoff_ms.saturating_mul(4u64.saturating_pow(attempt));
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                    attempt += 1;
                }
                Err(r) => {
                    let errors = refusal_errors(&r);
                    return fail(AckCode::Error, r.class, errors);
                }
            }
        }
    }

    /// The Provenance of an import: the source message, the channel, the mapping set.
    fn provenance(&self, id: &str, channel: &Channel, m: &Message) -> Value {
        let (code, trigger, _) = m.message_type();
        let msh = m.segment("MSH");
        let sender = msh.map_or(String::new(), |s| {
            format!("{}/{}", s.get(3, 1, 1), s.get(4, 1, 1))
        });
        json!({
            "resourceType": "Provenance",
            "recorded": instant_now(),
            "activity": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                "code": "UPDATE"
            }]},
            "policy": [format!("urn:healporium:mapping-set:{}:{}", self.set.name, self.set.version)],
            "agent": [{
                "type": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                    "code": "assembler"
                }]},
                "who": {"display": format!("Healporium feed channel {}", channel.name)}
            }],
            "entity": [{
                "role": "source",
                "what": {
                    "identifier": {"system": "urn:healporium:feed-message", "value": id},
                    "display": format!("{code}^{trigger} {} from {sender}", m.control_id())
                }
            }]
        })
    }
}

/// The ERR lines of a refusal.
fn refusal_errors(r: &Refusal) -> Vec<AckError> {
    if r.issues.is_empty() {
        return vec![ack_error(
            None,
            "207",
            format!("the server refused the writes ({})", r.status),
        )];
    }
    r.issues
        .iter()
        .map(|(expr, text)| {
            let text = match expr {
                Some(e) => format!("{e}: {text}"),
                None => text.clone(),
            };
            ack_error(None, "207", text)
        })
        .collect()
}

/// The `processorTransactionId` among a command's parameters.
fn processor_id(parameters: &Value) -> Option<String> {
    parameters
        .get("parameter")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some("processorTransactionId"))?
        .get("valueString")?
        .as_str()
        .map(str::to_string)
}

/// MSH-3|MSH-4: who sent the message.
fn sender(m: &Message) -> String {
    let msh = m.segment("MSH");
    let get = |n: usize| msh.map_or(String::new(), |s| s.get(n, 1, 1).to_string());
    format!("{}|{}", get(3), get(4))
}

/// `parameters` with a `requestId` (the command's idempotency key) in front.
fn with_request_id(parameters: &Value, request_id: &str) -> Value {
    let mut p = parameters.clone();
    if let Some(list) = p.get_mut("parameter").and_then(Value::as_array_mut) {
        list.retain(|x| x.get("name").and_then(Value::as_str) != Some("requestId"));
        list.insert(0, json!({"name": "requestId", "valueString": request_id}));
    }
    p
}

/// When the message's event happened (EVN-2, else MSH-7), in ms since the epoch.
fn event_ms(m: &Message, zone: Option<&str>) -> Option<i64> {
    let evn = m
        .segment("EVN")
        .map(|s| s.get(2, 1, 1))
        .filter(|v| !v.is_empty());
    let msh = m
        .segment("MSH")
        .map(|s| s.get(7, 1, 1))
        .filter(|v| !v.is_empty());
    let text = evn.or(msh)?;
    let fhir = crate::hl7v2::dtm::to_datetime(text, zone.or(Some("Z"))).ok()?;
    let rfc = time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(&fhir, &rfc) {
        return i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok();
    }
    // a partial time: its start (a day, a month, a year)
    let padded = match fhir.len() {
        4 => format!("{fhir}-01-01T00:00:00Z"),
        7 => format!("{fhir}-01T00:00:00Z"),
        10 => format!("{fhir}T00:00:00Z"),
        _ => return None,
    };
    let t = time::OffsetDateTime::parse(&padded, &rfc).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The request URLs of a transaction's entries (their identities).
fn entry_urls(bundle: &Value) -> Vec<String> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.pointer("/request/url").and_then(Value::as_str))
        .map(str::to_string)
        .collect()
}

/// Turns the entry written to `identity` into a conditional create that matches the stored
/// resource (and so writes nothing); false when there is no such entry.
fn keep_newer(bundle: &mut Value, identity: &str) -> bool {
    let Some(entries) = bundle.get_mut("entry").and_then(Value::as_array_mut) else {
        return false;
    };
    let Some(e) = entries
        .iter_mut()
        .find(|e| e.pointer("/request/url").and_then(Value::as_str) == Some(identity))
    else {
        return false;
    };
    let (rt, criteria) = match identity.split_once('?') {
        Some((rt, q)) => (rt.to_string(), q.to_string()),
        None => match identity.split_once('/') {
            Some((rt, id)) => (rt.to_string(), format!("_id={id}")),
            None => return false,
        },
    };
    if let Some(r) = e.get_mut("resource").and_then(Value::as_object_mut) {
        r.shift_remove("id");
    }
    if let Some(obj) = e.as_object_mut() {
        obj.insert(
            "request".into(),
            json!({"method": "POST", "url": rt, "ifNoneExist": criteria}),
        );
    }
    true
}

/// The patient a transaction concerns (its Patient entry's request URL), for ordering.
fn patient_key(bundle: &Value) -> String {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| e.pointer("/resource/resourceType").and_then(Value::as_str) == Some("Patient"))
        .and_then(|e| e.pointer("/request/url").and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
}

fn stripe_of(key: &str, n: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    usize::try_from(h.finish() % (n.max(1) as u64)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_come_from_the_header_or_the_hash() {
        let m = er7::parse("MSH|^~\\&|EPIC|HOSP|HP|HPF|20240105||ADT^A01|MSG1|P|2.5.1\r").unwrap();
        assert_eq!(duplicate_key(Some(&m), "ab"), "EPIC|HOSP|MSG1");
        let m = er7::parse("MSH|^~\\&|EPIC|HOSP|HP|HPF|20240105||ADT^A01||P|2.5.1\r").unwrap();
        assert_eq!(duplicate_key(Some(&m), "ab"), "sha256:ab");
        assert_eq!(duplicate_key(None, "ab"), "sha256:ab");
    }

    #[test]
    fn latin1_is_read_when_the_bytes_are_not_utf8() {
        assert_eq!(decode(b"M\xfcller"), "Müller");
        assert_eq!(decode("Müller".as_bytes()), "Müller");
    }

    #[test]
    fn classes_round_trip() {
        for c in Class::ALL {
            assert_eq!(Class::parse(c.as_str()), Some(c));
        }
    }
}
