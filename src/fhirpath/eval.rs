//! Evaluates an [`Expr`] over FHIR JSON: navigation that remembers locations, choice types and
//! primitive extensions, FHIRPath operators with three-valued logic, equality/equivalence and
//! ordering, and FHIR type tests. Function calls are delegated to `functions`.

use std::cell::Cell;
use std::cmp::Ordering;
use std::rc::Rc;

use serde_json::Value;

use super::functions;
use super::parser::{BinOp, Expr, Literal, TypeSpec};
use super::value::{Decimal, Quantity, Temporal, TemporalKind, arithmetic_unit};
use super::{Env, EvalError, FpValue, Item, Json, Node, Step};

pub(crate) type R<T> = Result<T, EvalError>;

/// Nested evaluation frames allowed (the parser already bounds the tree; this is a backstop).
const MAX_EVAL_DEPTH: u32 = 160;
/// Largest collection `repeat()`/`descendants()` may build.
pub(crate) const MAX_ITEMS: usize = 200_000;

/// Choice-type suffixes of FHIR R4 data types (`valueQuantity` → `Quantity`).
const CHOICE_TYPES: [&str; 50] = [
    "Base64Binary",
    "Boolean",
    "Canonical",
    "Code",
    "Date",
    "DateTime",
    "Decimal",
    "Id",
    "Instant",
    "Integer",
    "Markdown",
    "Oid",
    "PositiveInt",
    "String",
    "Time",
    "UnsignedInt",
    "Uri",
    "Url",
    "Uuid",
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "CodeableConcept",
    "Coding",
    "ContactPoint",
    "Count",
    "Distance",
    "Duration",
    "HumanName",
    "Identifier",
    "Money",
    "Period",
    "Quantity",
    "Range",
    "Ratio",
    "Reference",
    "SampledData",
    "Signature",
    "Timing",
    "ContactDetail",
    "Contributor",
    "DataRequirement",
    "Expression",
    "ParameterDefinition",
    "RelatedArtifact",
    "TriggerDefinition",
    "UsageContext",
    "Dosage",
    "Meta",
];

const PRIMITIVES: [&str; 20] = [
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
    "xhtml",
];

const OTHER_TYPES: [&str; 12] = [
    "Resource",
    "DomainResource",
    "Element",
    "BackboneElement",
    "Extension",
    "Narrative",
    "SimpleQuantity",
    "MoneyQuantity",
    "ElementDefinition",
    "MarketingStatus",
    "Population",
    "ProductShelfLife",
];

/// All R4 resource type names.
pub(crate) const RESOURCES: [&str; 146] = [
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

const SYSTEM_TYPES: [&str; 8] = [
    "Boolean", "Integer", "Decimal", "String", "Date", "DateTime", "Time", "Quantity",
];

const QUANTITY_TYPES: [&str; 7] = [
    "Quantity",
    "Age",
    "Distance",
    "Duration",
    "Count",
    "SimpleQuantity",
    "MoneyQuantity",
];

/// FHIR type name for a choice suffix (`DateTime` → `dateTime`, `Quantity` → `Quantity`).
fn choice_type(suffix: &str) -> Option<String> {
    let idx = CHOICE_TYPES.iter().position(|t| *t == suffix)?;
    if idx < 19 {
        let mut c = suffix.chars();
        let first = c.next()?;
        Some(first.to_ascii_lowercase().to_string() + c.as_str())
    } else {
        Some(suffix.to_string())
    }
}

/// Splits `valueQuantity` into (`value`, `Quantity` type) when the suffix is an R4 type.
fn split_choice(key: &str) -> Option<(&str, String)> {
    for (i, c) in key.char_indices().skip(1) {
        if c.is_ascii_uppercase() {
            let (base, suffix) = key.split_at(i);
            return choice_type(suffix).map(|t| (base, t));
        }
    }
    None
}

fn builtin_parent(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "code" | "id" | "markdown" => "string",
        "url" | "canonical" | "oid" | "uuid" => "uri",
        "unsignedInt" | "positiveInt" => "integer",
        "Age" | "Distance" | "Duration" | "Count" | "SimpleQuantity" | "MoneyQuantity" => {
            "Quantity"
        }
        "Bundle" | "Binary" | "Parameters" | "DomainResource" => "Resource",
        "BackboneElement" => "Element",
        "Resource" | "Element" => return None,
        t if RESOURCES.contains(&t) => "DomainResource",
        t if PRIMITIVES.contains(&t) || CHOICE_TYPES.contains(&t) || OTHER_TYPES.contains(&t) => {
            "Element"
        }
        _ => return None,
    })
}

pub(crate) fn is_resource_type(name: &str) -> bool {
    RESOURCES.contains(&name)
}

/// A node or value reduced to a System value for comparisons and arithmetic.
#[derive(Clone, Debug)]
pub(crate) enum Sys {
    Bool(bool),
    Int(i64),
    Dec(Decimal),
    /// String; the flag says it came from an untyped JSON node (may hold a date).
    Str(Rc<str>, bool),
    Tmp(Temporal),
    Qty(Quantity),
    /// A complex node (compared as JSON).
    Obj,
    Type(Rc<str>, Rc<str>),
}

fn number_sys(n: &serde_json::Number, as_decimal: bool) -> Option<Sys> {
    let text = n.to_string();
    if !as_decimal
        && !text.contains(['.', 'e', 'E'])
        && let Ok(i) = text.parse::<i64>()
    {
        return Some(Sys::Int(i));
    }
    Decimal::parse(&text).map(Sys::Dec)
}

fn quantity_from_json(v: &Value) -> Option<Quantity> {
    let o = v.as_object()?;
    let value = match o.get("value")? {
        Value::Number(n) => Decimal::parse(&n.to_string())?,
        _ => return None,
    };
    let code = o.get("code").and_then(Value::as_str);
    let unit = o.get("unit").and_then(Value::as_str);
    let u = code.or(unit).unwrap_or("1");
    Some(Quantity {
        value,
        unit: Rc::from(u),
        calendar: false,
    })
}

/// Converts an item to its System form; `None` for a primitive that only has extensions.
pub(crate) fn sys(it: &Item<'_>) -> Option<Sys> {
    match &it.value {
        FpValue::Boolean(b) => Some(Sys::Bool(*b)),
        FpValue::Integer(i) => Some(Sys::Int(*i)),
        FpValue::Decimal(d) => Some(Sys::Dec(*d)),
        FpValue::String(s) => Some(Sys::Str(s.clone(), false)),
        FpValue::Temporal(t) => Some(Sys::Tmp(*t)),
        FpValue::Quantity(q) => Some(Sys::Qty(q.clone())),
        FpValue::Type { namespace, name } => Some(Sys::Type(namespace.clone(), name.clone())),
        FpValue::Node(n) => node_sys(n),
    }
}

fn node_sys(n: &Node<'_>) -> Option<Sys> {
    let v = n.json()?;
    let ty = n.ty.as_deref();
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(Sys::Bool(*b)),
        Value::Number(num) => number_sys(num, ty == Some("decimal")),
        Value::String(s) => Some(match ty {
            Some("date") => Temporal::parse_date(s).map_or_else(|| str_sys(s, false), Sys::Tmp),
            Some("dateTime" | "instant") => {
                Temporal::parse_datetime(s).map_or_else(|| str_sys(s, false), Sys::Tmp)
            }
            Some("time") => Temporal::parse_time(s).map_or_else(|| str_sys(s, false), Sys::Tmp),
            Some("integer" | "positiveInt" | "unsignedInt") => {
                s.parse().map_or_else(|_| str_sys(s, false), Sys::Int)
            }
            Some("decimal") => Decimal::parse(s).map_or_else(|| str_sys(s, false), Sys::Dec),
            Some(_) => str_sys(s, false),
            None => str_sys(s, true),
        }),
        Value::Object(_) => {
            let is_qty = match ty {
                Some(t) => QUANTITY_TYPES.contains(&t),
                None => v.get("value").is_some_and(Value::is_number),
            };
            if is_qty {
                quantity_from_json(v).map(Sys::Qty).or(Some(Sys::Obj))
            } else {
                Some(Sys::Obj)
            }
        }
        Value::Array(_) => Some(Sys::Obj),
    }
}

fn str_sys(s: &str, untyped: bool) -> Sys {
    Sys::Str(Rc::from(s), untyped)
}

pub(crate) fn sys_to_value<'a>(s: Sys) -> FpValue<'a> {
    match s {
        Sys::Bool(b) => FpValue::Boolean(b),
        Sys::Int(i) => FpValue::Integer(i),
        Sys::Dec(d) => FpValue::Decimal(d),
        Sys::Str(s, _) => FpValue::String(s),
        Sys::Tmp(t) => FpValue::Temporal(t),
        Sys::Qty(q) => FpValue::Quantity(q),
        Sys::Type(ns, n) => FpValue::Type {
            namespace: ns,
            name: n,
        },
        Sys::Obj => FpValue::Boolean(true),
    }
}

fn to_dec(s: &Sys) -> Option<Decimal> {
    match s {
        Sys::Int(i) => Some(Decimal::from_i64(*i)),
        Sys::Dec(d) => Some(*d),
        _ => None,
    }
}

/// Parses an untyped string against the kind of temporal it is compared with.
fn coerce_temporal(s: &str, like: &Temporal) -> Option<Temporal> {
    match like.kind {
        TemporalKind::Time => Temporal::parse_time(s),
        _ => Temporal::parse_date_or_datetime(s),
    }
}

fn eq_sys(a: &Sys, b: &Sys) -> Option<bool> {
    match (a, b) {
        (Sys::Bool(x), Sys::Bool(y)) => Some(x == y),
        (Sys::Int(x), Sys::Int(y)) => Some(x == y),
        (Sys::Str(x, _), Sys::Str(y, _)) => Some(x == y),
        (Sys::Tmp(x), Sys::Tmp(y)) => match x.compare(*y) {
            Ok(Some(o)) => Some(o == Ordering::Equal),
            Ok(None) => None,
            Err(()) => Some(false),
        },
        (Sys::Str(s, true), Sys::Tmp(t)) | (Sys::Tmp(t), Sys::Str(s, true)) => {
            match coerce_temporal(s, t) {
                Some(p) => eq_sys(&Sys::Tmp(p), &Sys::Tmp(*t)),
                None => Some(false),
            }
        }
        (Sys::Qty(x), Sys::Qty(y)) => x.compare(y).map(|o| o == Ordering::Equal),
        (Sys::Type(a1, a2), Sys::Type(b1, b2)) => Some(a1 == b1 && a2 == b2),
        _ => match (to_dec(a), to_dec(b)) {
            (Some(x), Some(y)) => Some(x.cmp_value(y) == Ordering::Equal),
            _ => Some(false),
        },
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn equiv_sys(a: &Sys, b: &Sys) -> bool {
    match (a, b) {
        (Sys::Str(x, _), Sys::Str(y, _)) => normalize_ws(x) == normalize_ws(y),
        (Sys::Tmp(x), Sys::Tmp(y)) => matches!(x.compare(*y), Ok(Some(Ordering::Equal))),
        (Sys::Str(s, true), Sys::Tmp(t)) | (Sys::Tmp(t), Sys::Str(s, true)) => {
            coerce_temporal(s, t).is_some_and(|p| equiv_sys(&Sys::Tmp(p), &Sys::Tmp(*t)))
        }
        (Sys::Qty(x), Sys::Qty(y)) => x.equivalent(y).unwrap_or(false),
        _ => match (to_dec(a), to_dec(b)) {
            (Some(x), Some(y)) => x.equivalent(y),
            _ => eq_sys(a, b).unwrap_or(false),
        },
    }
}

/// Deepest JSON compared structurally; deeper trees compare unequal instead of overflowing.
const MAX_JSON_CMP_DEPTH: u32 = 200;

fn json_equiv(a: &Value, b: &Value, depth: u32) -> bool {
    if depth > MAX_JSON_CMP_DEPTH {
        return false;
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => normalize_ws(x) == normalize_ws(y),
        (Value::Number(x), Value::Number(y)) => {
            match (
                Decimal::parse(&x.to_string()),
                Decimal::parse(&y.to_string()),
            ) {
                (Some(p), Some(q)) => p.equivalent(q),
                _ => x == y,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equiv(p, q, depth + 1))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equiv(v, w, depth + 1)))
        }
        _ => a == b,
    }
}

fn json_eq(a: &Value, b: &Value, depth: u32) -> bool {
    if depth > MAX_JSON_CMP_DEPTH {
        return false;
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (
                Decimal::parse(&x.to_string()),
                Decimal::parse(&y.to_string()),
            ) {
                (Some(p), Some(q)) => p.cmp_value(q) == Ordering::Equal,
                _ => x == y,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q, depth + 1))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w, depth + 1)))
        }
        _ => a == b,
    }
}

fn node_parts<'x>(it: &'x Item<'_>) -> Option<(Option<&'x Value>, Option<&'x Value>)> {
    match &it.value {
        FpValue::Node(n) => Some((n.json(), n.primitive_extension())),
        _ => None,
    }
}

/// FHIRPath `=` on two single items; `None` means "unknown" (empty result).
pub(crate) fn eq_item(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    match (sys(a), sys(b)) {
        (Some(Sys::Obj), Some(Sys::Obj)) => {
            let (Some((Some(x), _)), Some((Some(y), _))) = (node_parts(a), node_parts(b)) else {
                return Some(false);
            };
            Some(json_eq(x, y, 0))
        }
        (Some(x), Some(y)) => eq_sys(&x, &y),
        (None, None) => match (node_parts(a), node_parts(b)) {
            (Some((_, x)), Some((_, y))) => Some(x == y),
            _ => Some(false),
        },
        _ => Some(false),
    }
}

/// FHIRPath `~` on two single items.
pub(crate) fn equiv_item(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (sys(a), sys(b)) {
        (Some(Sys::Obj), Some(Sys::Obj)) => match (node_parts(a), node_parts(b)) {
            (Some((Some(x), _)), Some((Some(y), _))) => json_equiv(x, y, 0),
            _ => false,
        },
        (Some(x), Some(y)) => equiv_sys(&x, &y),
        (None, None) => true,
        _ => false,
    }
}

fn sys_name(s: &Sys) -> &'static str {
    match s {
        Sys::Bool(_) => "Boolean",
        Sys::Int(_) => "Integer",
        Sys::Dec(_) => "Decimal",
        Sys::Str(..) => "String",
        Sys::Tmp(t) => match t.kind {
            TemporalKind::Date => "Date",
            TemporalKind::DateTime => "DateTime",
            TemporalKind::Time => "Time",
        },
        Sys::Qty(_) => "Quantity",
        Sys::Obj => "complex element",
        Sys::Type(..) => "TypeInfo",
    }
}

/// Ordering for `<`, `>`, `<=`, `>=` and `sort()`; `Ok(None)` = unknown (precision).
pub(crate) fn cmp_sys(a: &Sys, b: &Sys) -> R<Option<Ordering>> {
    let mismatch = || {
        EvalError::new(format!(
            "cannot compare {} with {}",
            sys_name(a),
            sys_name(b)
        ))
    };
    match (a, b) {
        (Sys::Str(x, _), Sys::Str(y, _)) => Ok(Some(x.cmp(y))),
        (Sys::Tmp(x), Sys::Tmp(y)) => x.compare(*y).map_err(|()| mismatch()),
        (Sys::Str(s, true), Sys::Tmp(t)) => {
            let p = coerce_temporal(s, t).ok_or_else(mismatch)?;
            p.compare(*t).map_err(|()| mismatch())
        }
        (Sys::Tmp(t), Sys::Str(s, true)) => {
            let p = coerce_temporal(s, t).ok_or_else(mismatch)?;
            t.compare(p).map_err(|()| mismatch())
        }
        (Sys::Qty(x), Sys::Qty(y)) => x
            .compare(y)
            .map(Some)
            .ok_or_else(|| EvalError::new("quantities with incomparable units")),
        _ => match (to_dec(a), to_dec(b)) {
            (Some(x), Some(y)) => Ok(Some(x.cmp_value(y))),
            _ => Err(mismatch()),
        },
    }
}

pub(crate) fn bool_item<'a>(b: bool) -> Item<'a> {
    Item::computed(FpValue::Boolean(b))
}

pub(crate) fn str_item<'a>(s: &str) -> Item<'a> {
    Item::computed(FpValue::String(Rc::from(s)))
}

/// Converts a collection used as a boolean (singleton evaluation): empty → `None`,
/// one Boolean → its value, one other item → `true`, several → error.
pub(crate) fn as_bool(items: &[Item<'_>], what: &str) -> R<Option<bool>> {
    match items {
        [] => Ok(None),
        [one] => Ok(Some(match sys(one) {
            Some(Sys::Bool(b)) => b,
            _ => true,
        })),
        _ => Err(EvalError::new(format!(
            "{what} expects a single boolean, got {} items",
            items.len()
        ))),
    }
}

/// Returns the single item, `None` for empty, or an error for several items.
pub(crate) fn single<'x, 'a>(items: &'x [Item<'a>], what: &str) -> R<Option<&'x Item<'a>>> {
    match items {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(EvalError::new(format!(
            "{what} expects a single item, got {}",
            items.len()
        ))),
    }
}

/// Appends `it` unless an equal item is already present.
pub(crate) fn push_distinct<'a>(out: &mut Vec<Item<'a>>, it: Item<'a>) {
    if !out.iter().any(|o| eq_item(o, &it) == Some(true)) {
        out.push(it);
    }
}

fn child_json<'a>(j: &Json<'a>, key: &str) -> Option<Json<'a>> {
    match j {
        Json::Borrowed(v) => v.get(key).map(Json::Borrowed),
        Json::Shared(v) => v.get(key).map(|c| Json::Shared(Rc::new(c.clone()))),
    }
}

fn elem_json<'a>(j: &Json<'a>, i: usize) -> Option<Json<'a>> {
    match j {
        Json::Borrowed(v) => v.get(i).map(Json::Borrowed),
        Json::Shared(v) => v.get(i).map(|c| Json::Shared(Rc::new(c.clone()))),
    }
}

fn non_null<'a>(j: Option<Json<'a>>) -> Option<Json<'a>> {
    j.filter(|v| !v.get().is_null())
}

pub(crate) fn extend_loc(loc: Option<&Rc<[Step]>>, steps: &[Step]) -> Option<Rc<[Step]>> {
    loc.map(|l| {
        let mut v: Vec<Step> = l.to_vec();
        v.extend_from_slice(steps);
        Rc::from(v)
    })
}

/// Location of a primitive's `_name` sibling: the last key step gains a leading underscore.
fn underscore_loc(loc: &Rc<[Step]>) -> Rc<[Step]> {
    let mut v: Vec<Step> = loc.to_vec();
    if let Some(Step::Key(k)) = v.iter_mut().rev().find(|s| matches!(s, Step::Key(_))) {
        *k = format!("_{k}");
    }
    Rc::from(v)
}

/// The evaluator: the document root, the environment and the recursion guard.
pub(crate) struct Ev<'a, 'e> {
    pub root: Item<'a>,
    pub env: &'e Env<'e>,
    depth: Cell<u32>,
    pub now: Temporal,
}

/// Values of `$this`, `$index` and `$total` while evaluating an expression.
#[derive(Clone)]
pub(crate) struct Scope<'a> {
    pub this: Option<Item<'a>>,
    pub index: Option<usize>,
    pub total: Option<Vec<Item<'a>>>,
}

impl<'a> Scope<'a> {
    pub fn with_this(&self, this: Item<'a>, index: Option<usize>) -> Scope<'a> {
        Scope {
            this: Some(this),
            index,
            total: self.total.clone(),
        }
    }
}

/// Evaluates a parsed expression against `root` (which is `%resource`, `%context` and `$this`).
pub fn evaluate<'a>(
    expr: &Expr,
    root: &'a Value,
    env: &Env<'_>,
) -> Result<Vec<Item<'a>>, EvalError> {
    let ty = root
        .get("resourceType")
        .and_then(Value::as_str)
        .map(Rc::from);
    let root_item = Item {
        value: FpValue::Node(Node {
            json: Some(Json::Borrowed(root)),
            ext: None,
            ty,
        }),
        loc: Some(Rc::from(Vec::new())),
    };
    let ev = Ev {
        root: root_item.clone(),
        env,
        depth: Cell::new(0),
        now: env.now.unwrap_or_else(Temporal::now),
    };
    let scope = Scope {
        this: Some(root_item),
        index: None,
        total: None,
    };
    ev.eval(expr, &scope)
}

impl<'a> Ev<'a, '_> {
    pub fn eval(&self, e: &Expr, sc: &Scope<'a>) -> R<Vec<Item<'a>>> {
        let d = self.depth.get();
        if d >= MAX_EVAL_DEPTH {
            return Err(EvalError::new("expression evaluation nested too deeply"));
        }
        self.depth.set(d + 1);
        let r = self.eval_inner(e, sc);
        self.depth.set(d);
        r
    }

    fn eval_inner(&self, e: &Expr, sc: &Scope<'a>) -> R<Vec<Item<'a>>> {
        match e {
            Expr::Literal(l) => literal(l),
            Expr::Ident(name) => {
                let Some(this) = &sc.this else {
                    return Ok(Vec::new());
                };
                if name.starts_with(|c: char| c.is_ascii_uppercase())
                    && self.is_resource_of_type(this, name)
                {
                    return Ok(vec![this.clone()]);
                }
                self.check_choice_key(this, name)?;
                Ok(self.navigate(this, name))
            }
            Expr::Member(target, name) => {
                let input = self.eval(target, sc)?;
                let mut out = Vec::new();
                for it in &input {
                    self.check_choice_key(it, name)?;
                    out.extend(self.navigate(it, name));
                }
                Ok(out)
            }
            Expr::Call { target, name, args } => {
                let input = match target {
                    Some(t) => self.eval(t, sc)?,
                    None => sc.this.iter().cloned().collect(),
                };
                functions::call(self, name, input, args, sc, target.is_some())
            }
            Expr::Index(target, idx) => {
                let input = self.eval(target, sc)?;
                let idx = self.eval(idx, sc)?;
                let Some(i) = single(&idx, "indexer")? else {
                    return Ok(Vec::new());
                };
                let Some(Sys::Int(i)) = sys(i) else {
                    return Err(EvalError::new("indexer expects an integer"));
                };
                Ok(usize::try_from(i)
                    .ok()
                    .and_then(|i| input.into_iter().nth(i))
                    .into_iter()
                    .collect())
            }
            Expr::Neg(inner, neg) => {
                let items = self.eval(inner, sc)?;
                negate(items, *neg)
            }
            Expr::Binary(op, l, r) => self.binary(*op, l, r, sc),
            Expr::Is(inner, ty) => {
                let items = self.eval(inner, sc)?;
                match single(&items, "is")? {
                    None => Ok(Vec::new()),
                    Some(it) => Ok(vec![bool_item(self.is_type(it, ty)?)]),
                }
            }
            Expr::As(inner, ty) => {
                let items = self.eval(inner, sc)?;
                let mut out = Vec::new();
                for it in items {
                    if self.is_type_exact(&it, ty)? {
                        out.push(it);
                    }
                }
                Ok(out)
            }
            Expr::This => Ok(sc.this.iter().cloned().collect()),
            Expr::IndexVar => Ok(sc
                .index
                .and_then(|i| i64::try_from(i).ok())
                .map(|i| Item::computed(FpValue::Integer(i)))
                .into_iter()
                .collect()),
            Expr::Total => Ok(sc.total.clone().unwrap_or_default()),
            Expr::Var(name) => self.var(name),
        }
    }

    fn var(&self, name: &str) -> R<Vec<Item<'a>>> {
        if let Some(v) = self.env.vars.get(name) {
            return Ok(json_to_items(v));
        }
        let s = match name {
            "ucum" => "http://unitsofmeasure.org".to_string(),
            "sct" => "http://snomed.info/sct".to_string(),
            "loinc" => "http://loinc.org".to_string(),
            "context" | "resource" | "rootResource" => return Ok(vec![self.root.clone()]),
            n => {
                if let Some(rest) = n.strip_prefix("vs-") {
                    format!("http://hl7.org/fhir/ValueSet/{rest}")
                } else if let Some(rest) = n.strip_prefix("ext-") {
                    format!("http://hl7.org/fhir/StructureDefinition/{rest}")
                } else {
                    return Err(EvalError::new(format!("unknown variable %{n}")));
                }
            }
        };
        Ok(vec![str_item(&s)])
    }

    /// True when `it` is a resource whose type is `name` or specialises it.
    fn is_resource_of_type(&self, it: &Item<'a>, name: &str) -> bool {
        match &it.value {
            FpValue::Node(n) => {
                let rt = n
                    .json()
                    .and_then(|v| v.get("resourceType"))
                    .and_then(Value::as_str);
                rt.is_some_and(|rt| self.derives(rt, name))
            }
            _ => false,
        }
    }

    fn type_of_child(&self, parent: &Node<'a>, key: &str) -> Option<Rc<str>> {
        if let (Some(ti), Some(pt)) = (self.env.type_info, parent.ty.as_deref())
            && let Some(t) = ti.element_type(pt, key)
        {
            return Some(Rc::from(t));
        }
        match key {
            "extension" | "modifierExtension" => Some(Rc::from("Extension")),
            _ => None,
        }
    }

    /// Items for `obj[key]` (and its `_key` sibling), flattening arrays.
    fn expand(
        &self,
        obj: &Json<'a>,
        key: &str,
        ty: Option<Rc<str>>,
        loc: Option<&Rc<[Step]>>,
        out: &mut Vec<Item<'a>>,
    ) {
        let val = non_null(child_json(obj, key));
        let ext = non_null(child_json(obj, &format!("_{key}")));
        let mk = |json: Option<Json<'a>>, ext: Option<Json<'a>>, idx: Option<usize>| {
            let ty = json
                .as_ref()
                .and_then(|j| j.get().get("resourceType"))
                .and_then(Value::as_str)
                .map(Rc::from)
                .or_else(|| ty.clone());
            let mut steps = vec![Step::Key(key.to_string())];
            if let Some(i) = idx {
                steps.push(Step::Index(i));
            }
            Item {
                value: FpValue::Node(Node { json, ext, ty }),
                loc: extend_loc(loc, &steps),
            }
        };
        let len_of = |j: &Option<Json<'a>>| match j.as_ref().map(Json::get) {
            Some(Value::Array(a)) => Some(a.len()),
            _ => None,
        };
        match (len_of(&val), len_of(&ext)) {
            (None, None) => {
                if val.is_some() || ext.is_some() {
                    out.push(mk(val, ext, None));
                }
            }
            (a, b) => {
                let n = a.unwrap_or(0).max(b.unwrap_or(0));
                for i in 0..n {
                    let v = val.as_ref().and_then(|j| non_null(elem_json(j, i)));
                    let e = ext.as_ref().and_then(|j| non_null(elem_json(j, i)));
                    if v.is_some() || e.is_some() {
                        out.push(mk(v, e, Some(i)));
                    }
                }
            }
        }
    }

    /// With type information, `valueQuantity` is not a FHIRPath name (the element is `value`).
    fn check_choice_key(&self, it: &Item<'a>, name: &str) -> R<()> {
        if let (Some(ti), FpValue::Node(n)) = (self.env.type_info, &it.value)
            && let Some(t) = n.ty.as_deref()
            && ti.is_choice_key(t, name)
        {
            return Err(EvalError::new(format!(
                "'{name}' is a choice element written with its type: use the element name \
                 and ofType()/as()"
            )));
        }
        Ok(())
    }

    /// Member access `it.name`.
    pub fn navigate(&self, it: &Item<'a>, name: &str) -> Vec<Item<'a>> {
        let mut out = Vec::new();
        match &it.value {
            FpValue::Node(n) => self.nav_node(n, it.loc.as_ref(), name, &mut out),
            FpValue::Type {
                namespace,
                name: tn,
            } => match name {
                "namespace" => out.push(Item::computed(FpValue::String(namespace.clone()))),
                "name" => out.push(Item::computed(FpValue::String(tn.clone()))),
                _ => {}
            },
            FpValue::Quantity(q) => match name {
                "value" => out.push(Item::computed(FpValue::Decimal(q.value))),
                "unit" | "code" => out.push(Item::computed(FpValue::String(q.unit.clone()))),
                "system" if !q.calendar => out.push(str_item("http://unitsofmeasure.org")),
                _ => {}
            },
            _ => {}
        }
        out
    }

    fn nav_node(
        &self,
        n: &Node<'a>,
        loc: Option<&Rc<[Step]>>,
        name: &str,
        out: &mut Vec<Item<'a>>,
    ) {
        let (obj, base_loc) = match n.json() {
            Some(Value::Object(_)) => match &n.json {
                Some(j) => (j.clone(), loc.cloned()),
                None => return,
            },
            _ => match &n.ext {
                Some(e) => (e.clone(), loc.map(underscore_loc)),
                None => return,
            },
        };
        let Some(map) = obj.get().as_object() else {
            return;
        };
        if map.contains_key(name) || map.contains_key(&format!("_{name}")) {
            let ty = self.type_of_child(n, name);
            self.expand(&obj, name, ty, base_loc.as_ref(), out);
            return;
        }
        // choice type: name + TypeSuffix
        let keys: Vec<String> = map
            .keys()
            .filter_map(|k| {
                let k = k.strip_prefix('_').unwrap_or(k);
                let rest = k.strip_prefix(name)?;
                (rest.starts_with(|c: char| c.is_ascii_uppercase()) && choice_type(rest).is_some())
                    .then(|| k.to_string())
            })
            .collect();
        let mut seen: Vec<&str> = Vec::new();
        for k in &keys {
            if seen.contains(&k.as_str()) {
                continue;
            }
            seen.push(k);
            let ty = k
                .strip_prefix(name)
                .and_then(choice_type)
                .map(|t| Rc::from(t.as_str()));
            self.expand(&obj, k, ty, base_loc.as_ref(), out);
        }
    }

    /// All child nodes (`children()`).
    pub fn children(&self, it: &Item<'a>) -> Vec<Item<'a>> {
        let mut out = Vec::new();
        let FpValue::Node(n) = &it.value else {
            return out;
        };
        let (obj, base_loc) = match n.json() {
            Some(Value::Object(_)) => match &n.json {
                Some(j) => (j.clone(), it.loc.clone()),
                None => return out,
            },
            _ => match &n.ext {
                Some(e) => (e.clone(), it.loc.as_ref().map(underscore_loc)),
                None => return out,
            },
        };
        let Some(map) = obj.get().as_object() else {
            return out;
        };
        for k in map.keys() {
            if k == "resourceType" {
                continue;
            }
            if let Some(base) = k.strip_prefix('_')
                && map.contains_key(base)
            {
                continue;
            }
            let key = k.strip_prefix('_').unwrap_or(k);
            let ty = self
                .type_of_child(n, key)
                .or_else(|| split_choice(key).map(|(_, t)| Rc::from(t.as_str())));
            self.expand(&obj, key, ty, base_loc.as_ref(), &mut out);
        }
        out
    }

    /// The FHIR type name of a node (known type, resourceType, or JSON shape).
    pub fn node_type(&self, n: &Node<'a>) -> Option<String> {
        if let Some(t) = &n.ty {
            return Some(t.to_string());
        }
        match n.json()? {
            Value::Bool(_) => Some("boolean".into()),
            Value::String(_) => Some("string".into()),
            Value::Number(num) => {
                if num.to_string().contains(['.', 'e', 'E']) {
                    Some("decimal".into())
                } else {
                    Some("integer".into())
                }
            }
            Value::Object(o) => o
                .get("resourceType")
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        }
    }

    /// `ty` is `base` or specialises it.
    pub fn derives(&self, ty: &str, base: &str) -> bool {
        let mut cur = ty;
        for _ in 0..8 {
            if cur == base {
                return true;
            }
            if let Some(ti) = self.env.type_info
                && ti.derives_from(cur, base)
            {
                return true;
            }
            match builtin_parent(cur) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        false
    }

    fn known_type(&self, name: &str) -> bool {
        SYSTEM_TYPES.contains(&name)
            || PRIMITIVES.contains(&name)
            || CHOICE_TYPES.contains(&name)
            || OTHER_TYPES.contains(&name)
            || RESOURCES.contains(&name)
            || self.env.type_info.is_some_and(|t| t.is_known_type(name))
    }

    /// `it is ty`.
    pub fn is_type(&self, it: &Item<'a>, ty: &TypeSpec) -> R<bool> {
        let ns = ty.namespace.as_deref();
        let name = ty.name.as_str();
        match ns {
            None | Some("FHIR") if !self.known_type(name) => {
                return Err(EvalError::new(format!("unknown type {name}")));
            }
            Some("System" | "FHIR") | None => {}
            Some(other) => return Err(EvalError::new(format!("unknown namespace {other}"))),
        }
        match &it.value {
            FpValue::Node(n) => {
                if ns == Some("System") {
                    return Ok(false);
                }
                Ok(self.node_type(n).is_some_and(|t| self.derives(&t, name)))
            }
            other => {
                if ns == Some("FHIR") {
                    return Ok(false);
                }
                let s = sys(&Item::computed(other.clone()));
                Ok(s.is_some_and(|s| sys_name(&s) == name))
            }
        }
    }

    /// Type test used by `as`/`ofType`: like [`Ev::is_type`], except that FHIR primitive
    /// type names must match exactly (`code` is not `as(string)`), as the R4 suite expects.
    pub fn is_type_exact(&self, it: &Item<'a>, ty: &TypeSpec) -> R<bool> {
        if !self.is_type(it, ty)? {
            return Ok(false);
        }
        match &it.value {
            FpValue::Node(n) if PRIMITIVES.contains(&ty.name.as_str()) => {
                Ok(self.node_type(n).as_deref() == Some(ty.name.as_str()))
            }
            _ => Ok(true),
        }
    }

    /// `(namespace, name)` for `type()`.
    pub fn type_of(&self, it: &Item<'a>) -> Option<(&'static str, String)> {
        match &it.value {
            FpValue::Node(n) => self.node_type(n).map(|t| ("FHIR", t)),
            FpValue::Type { .. } => Some(("System", "TypeInfo".into())),
            _ => sys(it).map(|s| ("System", sys_name(&s).to_string())),
        }
    }

    fn binary(&self, op: BinOp, l: &Expr, r: &Expr, sc: &Scope<'a>) -> R<Vec<Item<'a>>> {
        let lv = self.eval(l, sc)?;
        let rv = self.eval(r, sc)?;
        binary_values(op, lv, rv)
    }
}

/// Applies a binary operator to evaluated operands (kept out of the recursive path so the
/// evaluator's stack frames stay small).
#[inline(never)]
fn binary_values<'a>(op: BinOp, lv: Vec<Item<'a>>, rv: Vec<Item<'a>>) -> R<Vec<Item<'a>>> {
    {
        match op {
            BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies => {
                let a = as_bool(&lv, "boolean operator")?;
                let b = as_bool(&rv, "boolean operator")?;
                let res = match op {
                    BinOp::And => match (a, b) {
                        (Some(false), _) | (_, Some(false)) => Some(false),
                        (Some(true), Some(true)) => Some(true),
                        _ => None,
                    },
                    BinOp::Or => match (a, b) {
                        (Some(true), _) | (_, Some(true)) => Some(true),
                        (Some(false), Some(false)) => Some(false),
                        _ => None,
                    },
                    BinOp::Xor => match (a, b) {
                        (Some(x), Some(y)) => Some(x != y),
                        _ => None,
                    },
                    _ => match (a, b) {
                        (Some(false), _) | (_, Some(true)) => Some(true),
                        (Some(true), Some(false)) => Some(false),
                        _ => None,
                    },
                };
                Ok(res.map(bool_item).into_iter().collect())
            }
            BinOp::Union => {
                let mut out = Vec::new();
                for it in lv.into_iter().chain(rv) {
                    push_distinct(&mut out, it);
                }
                Ok(out)
            }
            BinOp::In | BinOp::Contains => {
                let (needle, hay) = if op == BinOp::In { (lv, rv) } else { (rv, lv) };
                let Some(n) = single(&needle, "membership operator")? else {
                    return Ok(Vec::new());
                };
                Ok(vec![bool_item(
                    hay.iter().any(|h| eq_item(n, h) == Some(true)),
                )])
            }
            BinOp::Eq | BinOp::Ne => {
                if lv.is_empty() || rv.is_empty() {
                    return Ok(Vec::new());
                }
                let res = eq_collections(&lv, &rv);
                Ok(res
                    .map(|b| bool_item(if op == BinOp::Eq { b } else { !b }))
                    .into_iter()
                    .collect())
            }
            BinOp::Equiv | BinOp::NotEquiv => {
                let b = equiv_collections(&lv, &rv);
                Ok(vec![bool_item(if op == BinOp::Equiv { b } else { !b })])
            }
            BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
                let (Some(a), Some(b)) = (single(&lv, "comparison")?, single(&rv, "comparison")?)
                else {
                    return Ok(Vec::new());
                };
                let (Some(sa), Some(sb)) = (sys(a), sys(b)) else {
                    return Ok(Vec::new());
                };
                let Some(o) = cmp_sys(&sa, &sb)? else {
                    return Ok(Vec::new());
                };
                let b = match op {
                    BinOp::Lt => o == Ordering::Less,
                    BinOp::Gt => o == Ordering::Greater,
                    BinOp::Le => o != Ordering::Greater,
                    _ => o != Ordering::Less,
                };
                Ok(vec![bool_item(b)])
            }
            BinOp::Concat => {
                let text = |v: &[Item<'a>]| -> R<String> {
                    match single(v, "&")? {
                        None => Ok(String::new()),
                        Some(it) => match sys(it) {
                            Some(Sys::Str(s, _)) => Ok(s.to_string()),
                            None => Ok(String::new()),
                            Some(o) => Err(EvalError::new(format!(
                                "& expects strings, got {}",
                                sys_name(&o)
                            ))),
                        },
                    }
                };
                let s = text(&lv)? + &text(&rv)?;
                Ok(vec![Item::computed(FpValue::String(Rc::from(s)))])
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => {
                let (Some(a), Some(b)) = (single(&lv, "arithmetic")?, single(&rv, "arithmetic")?)
                else {
                    return Ok(Vec::new());
                };
                let (Some(sa), Some(sb)) = (sys(a), sys(b)) else {
                    return Ok(Vec::new());
                };
                Ok(arith(op, sa, sb)?
                    .map(|v| Item::computed(sys_to_value(v)))
                    .into_iter()
                    .collect())
            }
        }
    }
}

/// Unary `+`/`-` on an evaluated operand.
#[inline(never)]
fn negate<'a>(items: Vec<Item<'a>>, neg: bool) -> R<Vec<Item<'a>>> {
    let Some(it) = single(&items, "unary sign")? else {
        return Ok(Vec::new());
    };
    let s = sys(it).ok_or_else(|| EvalError::new("unary sign on empty value"))?;
    if !neg {
        return match s {
            Sys::Int(_) | Sys::Dec(_) | Sys::Qty(_) => Ok(vec![Item::computed(sys_to_value(s))]),
            _ => Err(EvalError::new("unary + expects a number")),
        };
    }
    let v = match s {
        Sys::Int(i) => FpValue::Integer(
            i.checked_neg()
                .ok_or_else(|| EvalError::new("integer overflow"))?,
        ),
        Sys::Dec(d) => FpValue::Decimal(d.negated()),
        Sys::Qty(q) => FpValue::Quantity(Quantity {
            value: q.value.negated(),
            ..q
        }),
        other => {
            return Err(EvalError::new(format!(
                "cannot negate {}",
                sys_name(&other)
            )));
        }
    };
    Ok(vec![Item::computed(v)])
}

/// Converts an environment variable to items.
fn json_to_items<'a>(v: &Value) -> Vec<Item<'a>> {
    match v {
        Value::Null => Vec::new(),
        Value::Bool(b) => vec![bool_item(*b)],
        Value::String(s) => vec![str_item(s)],
        Value::Number(n) => number_sys(n, false)
            .map(|s| Item::computed(sys_to_value(s)))
            .into_iter()
            .collect(),
        Value::Array(a) => a.iter().flat_map(json_to_items).collect(),
        Value::Object(o) => {
            let ty = o.get("resourceType").and_then(Value::as_str).map(Rc::from);
            vec![Item::computed(FpValue::Node(Node {
                json: Some(Json::Shared(Rc::new(v.clone()))),
                ext: None,
                ty,
            }))]
        }
    }
}

pub(crate) fn eq_collections(a: &[Item<'_>], b: &[Item<'_>]) -> Option<bool> {
    if a.len() != b.len() {
        return Some(false);
    }
    let mut unknown = false;
    for (x, y) in a.iter().zip(b) {
        match eq_item(x, y) {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown { None } else { Some(true) }
}

pub(crate) fn equiv_collections(a: &[Item<'_>], b: &[Item<'_>]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut used = vec![false; b.len()];
    'outer: for x in a {
        for (y, u) in b.iter().zip(used.iter_mut()) {
            if !*u && equiv_item(x, y) {
                *u = true;
                continue 'outer;
            }
        }
        return false;
    }
    true
}

fn literal<'a>(l: &Literal) -> R<Vec<Item<'a>>> {
    let v = match l {
        Literal::Empty => return Ok(Vec::new()),
        Literal::Boolean(b) => FpValue::Boolean(*b),
        Literal::String(s) => FpValue::String(Rc::from(s.as_str())),
        Literal::Integer(i) => FpValue::Integer(*i),
        Literal::Decimal(d) => FpValue::Decimal(
            Decimal::parse(d).ok_or_else(|| EvalError::new(format!("bad decimal {d}")))?,
        ),
        Literal::DateTime(s) => FpValue::Temporal(
            Temporal::parse_date_or_datetime(s)
                .ok_or_else(|| EvalError::new(format!("invalid date/time literal @{s}")))?,
        ),
        Literal::Time(s) => FpValue::Temporal(
            Temporal::parse_time(s)
                .ok_or_else(|| EvalError::new(format!("invalid time literal @T{s}")))?,
        ),
        Literal::Quantity {
            value,
            unit,
            calendar,
        } => FpValue::Quantity(Quantity {
            value: Decimal::parse(value)
                .ok_or_else(|| EvalError::new(format!("bad quantity value {value}")))?,
            unit: Rc::from(unit.as_str()),
            calendar: *calendar,
        }),
    };
    Ok(vec![Item::computed(v)])
}

fn date_arith(t: Temporal, q: &Quantity, sub: bool) -> R<Option<Sys>> {
    let unit = arithmetic_unit(&q.unit).ok_or_else(|| {
        EvalError::new(format!(
            "cannot add a quantity in '{}' to a date/time",
            q.unit
        ))
    })?;
    let whole = q
        .value
        .trunc_to(0)
        .and_then(Decimal::to_i64)
        .ok_or_else(|| EvalError::new("date arithmetic amount out of range"))?;
    let amount = if sub { -whole } else { whole };
    Ok(t.add(amount, unit).map(Sys::Tmp))
}

fn overflow() -> EvalError {
    EvalError::new("arithmetic overflow")
}

/// Arithmetic on System values; `Ok(None)` is an empty result (division by zero).
pub(crate) fn arith(op: BinOp, a: Sys, b: Sys) -> R<Option<Sys>> {
    let bad = |a: &Sys, b: &Sys| {
        EvalError::new(format!(
            "operator {op:?} not defined for {} and {}",
            sys_name(a),
            sys_name(b)
        ))
    };
    match (&a, &b) {
        (Sys::Int(x), Sys::Int(y)) => {
            let (x, y) = (*x, *y);
            Ok(match op {
                BinOp::Add => Some(Sys::Int(x.checked_add(y).ok_or_else(overflow)?)),
                BinOp::Sub => Some(Sys::Int(x.checked_sub(y).ok_or_else(overflow)?)),
                BinOp::Mul => Some(Sys::Int(x.checked_mul(y).ok_or_else(overflow)?)),
                BinOp::Div => Decimal::from_i64(x)
                    .checked_div(Decimal::from_i64(y))
                    .map(Sys::Dec),
                BinOp::IntDiv => x.checked_div(y).map(Sys::Int),
                BinOp::Mod => x.checked_rem(y).map(Sys::Int),
                _ => return Err(bad(&a, &b)),
            })
        }
        (Sys::Str(x, _), Sys::Str(y, _)) if op == BinOp::Add => {
            Ok(Some(Sys::Str(Rc::from(format!("{x}{y}")), false)))
        }
        (Sys::Tmp(t), Sys::Qty(q)) if matches!(op, BinOp::Add | BinOp::Sub) => {
            date_arith(*t, q, op == BinOp::Sub)
        }
        (Sys::Str(s, true), Sys::Qty(q)) if matches!(op, BinOp::Add | BinOp::Sub) => {
            let t = Temporal::parse_date_or_datetime(s).ok_or_else(|| bad(&a, &b))?;
            date_arith(t, q, op == BinOp::Sub)
        }
        (Sys::Qty(x), Sys::Qty(y)) => Ok(match op {
            BinOp::Add | BinOp::Sub => {
                let yv = x
                    .convert_value(y)
                    .ok_or_else(|| EvalError::new("quantities with incomparable units"))?;
                let v = if op == BinOp::Add {
                    x.value.checked_add(yv)
                } else {
                    x.value.checked_sub(yv)
                };
                Some(Sys::Qty(Quantity {
                    value: v.ok_or_else(overflow)?,
                    ..x.clone()
                }))
            }
            BinOp::Mul => Some(Sys::Qty(x.mul(y).ok_or_else(overflow)?)),
            BinOp::Div => x.div(y).map(Sys::Qty),
            _ => return Err(bad(&a, &b)),
        }),
        (Sys::Qty(x), other)
            if matches!(op, BinOp::Mul | BinOp::Div) && to_dec(other).is_some() =>
        {
            let d = to_dec(other).ok_or_else(|| bad(&a, &b))?;
            let v = if op == BinOp::Mul {
                Some(x.value.checked_mul(d).ok_or_else(overflow)?)
            } else {
                x.value.checked_div(d)
            };
            Ok(v.map(|value| Sys::Qty(Quantity { value, ..x.clone() })))
        }
        (other, Sys::Qty(y)) if op == BinOp::Mul && to_dec(other).is_some() => {
            let d = to_dec(other).ok_or_else(|| bad(&a, &b))?;
            Ok(Some(Sys::Qty(Quantity {
                value: y.value.checked_mul(d).ok_or_else(overflow)?,
                ..y.clone()
            })))
        }
        _ => {
            let (Some(x), Some(y)) = (to_dec(&a), to_dec(&b)) else {
                return Err(bad(&a, &b));
            };
            Ok(match op {
                BinOp::Add => Some(Sys::Dec(x.checked_add(y).ok_or_else(overflow)?)),
                BinOp::Sub => Some(Sys::Dec(x.checked_sub(y).ok_or_else(overflow)?)),
                BinOp::Mul => Some(Sys::Dec(x.checked_mul(y).ok_or_else(overflow)?)),
                BinOp::Div => x.checked_div(y).map(Sys::Dec),
                BinOp::IntDiv => match x.div_trunc(y) {
                    Some(q) => Some(Sys::Int(q.to_i64().ok_or_else(overflow)?)),
                    None => None,
                },
                BinOp::Mod => x.checked_rem(y).map(Sys::Dec),
                _ => return Err(bad(&a, &b)),
            })
        }
    }
}
