//! The map files as data: the rows, segment, datatype, vocabulary, identity-system and
//! message maps that mappings/ holds (read by [`super::mapping_set`], applied by
//! [`super::map`]).

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A row of a datatype or segment map.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// `3` (a field), `3.1` (component), `3.1.2` (subcomponent) — inside a datatype map the
    /// first number is the component.
    pub from: String,
    /// A FHIR path below the resource or datatype: `name`, `type.coding[0].code`, and `[]`
    /// to append (`identifier[]`).
    pub to: String,
    /// The value's FHIR type when it is not a string: date, dateTime, decimal, integer,
    /// boolean (`Y`/`N`).
    #[serde(default, rename = "type")]
    pub value_type: Option<String>,
    /// A datatype map applied to the field's or component's content.
    #[serde(default)]
    pub datatype: Option<String>,
    /// A vocabulary map applied to the value.
    #[serde(default)]
    pub vocab: Option<String>,
    /// The value is an assigning authority, turned into an identifier system.
    #[serde(default)]
    pub identity: bool,
    /// With `identity`: the assigning authority's namespace, universal id and its type are
    /// this component and the next two (EI), not subcomponents of this one (CX.4).
    #[serde(default)]
    pub flat: bool,
    /// Every repetition of the field (with `to` ending in `[]`), not only the first.
    #[serde(default)]
    pub repeats: bool,
    /// A constant written when `from` is valued.
    #[serde(default, rename = "const")]
    pub constant: Option<Value>,
    /// A missing value is an error (101).
    #[serde(default)]
    pub required: bool,
    /// The row applies only when another field of the segment has one of these values
    /// (`{"field": "2", "in": ["NM", "SN"]}`: OBX-5 by its value type OBX-2).
    #[serde(default)]
    pub when: Option<When>,
}

/// A condition on a sibling field, as the v2-to-FHIR guide's `IF OBX-2 IN ("NM")`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    pub field: String,
    #[serde(rename = "in")]
    pub is_in: Vec<String>,
}

/// `kind: DatatypeMap`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct DatatypeMap {
    pub name: String,
    pub rows: Vec<Row>,
}

/// `kind: SegmentMap`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SegmentMap {
    pub name: String,
    pub segment: String,
    pub resource: String,
    /// Elements every resource of this map gets (`{"status": "final"}`).
    #[serde(default)]
    pub fixed: Map<String, Value>,
    pub rows: Vec<Row>,
}

/// `kind: VocabMap`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct VocabMap {
    pub name: String,
    pub map: BTreeMap<String, String>,
    /// `error` (103, the default), `keep` (the code as sent) or `drop`.
    #[serde(default)]
    pub unmapped: Option<String>,
}

/// `kind: IdentitySystems`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct IdentitySystems {
    pub name: String,
    #[serde(default)]
    pub systems: BTreeMap<String, String>,
    /// The system of a namespace no file names (`https://example.org/id/{namespace}`): for a
    /// feed whose local namespaces are trusted as they come. At most one in a set.
    #[serde(default)]
    pub namespace_template: Option<String>,
}

/// How a produced resource is identified.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// Conditional update on its first identifier with a system and a value.
    #[serde(default)]
    pub identifier: bool,
    /// UUIDv5 over this tuple: `@key` (another resource's identity) or a v2 location
    /// (`PV1-19.1`) read from the resource's own segment or, for another segment, the nearest.
    #[serde(default)]
    pub uuid: Vec<String>,
    /// Conditional update on the identifier in this CX field of the message (`MRG-1`: the
    /// patient an A47 changes is found by its prior identifier, and gets the new ones).
    #[serde(default)]
    pub identifier_from: Option<String>,
}

/// One resource a message map produces.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Produce {
    /// A name other resources reference it by.
    pub key: String,
    /// The segment, with its group path: `PID`, `PROCEDURE/PR1`,
    /// `PATIENT_RESULT/ORDER_OBSERVATION/OBSERVATION/OBX`.
    pub path: String,
    /// The segment map filling it.
    pub map: String,
    /// How it is identified (absent with `into`).
    #[serde(default)]
    pub identity: Identity,
    /// Instead of a resource of its own, the segment fills in the nearest resource of this
    /// key (PV2 into the Encounter, RXR into the Immunization, AIS into the Appointment):
    /// its arrays are appended, its other elements set over the target's.
    #[serde(default)]
    pub into: Option<String>,
    /// Only the segments whose field has one of these values (`{"field": "6", "in": ["CG"]}`).
    #[serde(default)]
    pub when: Option<When>,
    /// The message is refused as unsupported (AR) when it has such a segment: what this
    /// server does not take yet, said plainly instead of half-imported.
    #[serde(default)]
    pub refuse: Option<String>,
    /// Instead of a resource, the segment's map fills the Parameters of a command run after
    /// the transaction commits, on the resource its `references` name (`credit-payment`: a
    /// payment on the patient's credit line, posted to the ledger).
    #[serde(default)]
    pub command: Option<String>,
    /// element → key: `{"subject": "patient"}` sets `subject.reference`.
    #[serde(default)]
    pub references: BTreeMap<String, String>,
    /// Not every message has the segment.
    #[serde(default)]
    pub optional: bool,
    /// Elements set for this message type (`{"status": "finished"}` for an A03), over the
    /// segment map's.
    #[serde(default)]
    pub fixed: Map<String, Value>,
}

/// `kind: MessageMap`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct MessageMap {
    pub name: String,
    pub structure: String,
    pub triggers: Vec<String>,
    pub produce: Vec<Produce>,
}

/// `kind: Channel`: a way in (`serve --mllp` starts `default`; a channel with `bind` listens
/// on its own address).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ChannelMap {
    pub name: String,
    /// The MLLP listener's address; None: started by `serve --mllp` (the default channel) or
    /// not at all.
    #[serde(default)]
    pub bind: Option<String>,
    /// The message types taken (every mapped one when absent).
    #[serde(default)]
    pub accept: Option<Vec<String>>,
    /// MSH-12 versions taken (any when absent).
    #[serde(default)]
    pub versions: Option<Vec<String>>,
    /// MSH-11 processing ids taken (P and T when absent).
    #[serde(default)]
    pub processing_ids: Option<Vec<String>>,
    /// The zone of timestamps without an offset.
    #[serde(default)]
    pub zone: Option<String>,
    /// `original`: every message is answered; `enhanced`: MSH-16 decides (AL, NE, ER, SU).
    #[serde(default)]
    pub ack: Option<String>,
}

/// One column rule of a CSV map.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvColumn {
    /// The header name the value comes from (absent with `const`).
    #[serde(default)]
    pub column: Option<String>,
    /// A FHIR path below the resource (`name[0].given[]`).
    pub to: String,
    /// A fixed value instead of a column's.
    #[serde(default, rename = "const")]
    pub constant: Option<Value>,
    /// date, dateTime, decimal, integer or boolean (a string when absent).
    #[serde(default, rename = "type")]
    pub value_type: Option<String>,
    /// A vocabulary of the set translating the value.
    #[serde(default)]
    pub vocab: Option<String>,
    /// A reference template, `{}` replaced by the value: `Patient?identifier=sys|{}`.
    #[serde(default)]
    pub reference: Option<String>,
    #[serde(default)]
    pub required: bool,
}

/// How a CSV row is written.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvRequest {
    pub method: String,
    /// `{column}` placeholders are replaced by the row's values.
    pub url: String,
}

/// `kind: CsvMap`: one resource (or operation call) per row of a CSV file.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CsvMap {
    pub name: String,
    pub resource: String,
    /// The columns that identify a row (its key, for idempotency and messages).
    pub key: Vec<String>,
    /// How the written resource is identified (unless `request` says where it goes).
    #[serde(default)]
    pub identity: Identity,
    /// An explicit request (an operation such as `Account/{line}/$credit-payment`).
    #[serde(default)]
    pub request: Option<CsvRequest>,
    pub columns: Vec<CsvColumn>,
}
