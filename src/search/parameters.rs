//! The search-parameter registry: every R4 SearchParameter from fhir-profiles/
//! search-parameters.json (expressions restricted to their base type and parsed once), and the
//! Patient compartment from fhir-profiles/compartment-patient.json.

use crate::fhir::definitions::Profiles;
use crate::fhirpath::{Expr, parse};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

#[derive(Debug)]
pub struct SearchParam {
    pub code: String,
    pub kind: ParamType,
    pub expression: Option<String>,
    /// The parsed expression (None when absent or unparseable).
    pub parsed: Option<Expr>,
    pub targets: Vec<String>,
    /// A composite parameter's components, in order.
    pub components: Vec<Component>,
    /// Defined by a SearchParameter resource stored on this server (not by R4).
    pub custom: bool,
    /// Indexed for the access policy only (`hp-…`): clients cannot search, sort or include
    /// by it, and the CapabilityStatement does not list it.
    pub internal: bool,
}

/// Parameters the access policy needs where R4 defines none (see auth/type-policy.json):
/// (base, code, expression). Reference parameters, indexed like any other.
const POLICY_PARAMS: &[(&str, &str, &str)] = &[
    // a Binary is as visible as what its securityContext names
    ("Binary", "hp-security-context", "Binary.securityContext"),
    // a document Bundle belongs to its Composition's subject
    (
        "Bundle",
        "hp-subject",
        "Bundle.entry.first().resource.ofType(Composition).subject",
    ),
];

/// One component of a composite parameter: another parameter of the same base (by code) and
/// an expression evaluated on each value of the composite's expression.
#[derive(Debug)]
pub struct Component {
    pub param: String,
    pub expression: String,
    pub parsed: Option<Expr>,
}

#[derive(Deserialize)]
struct RawParam {
    code: String,
    #[serde(rename = "type")]
    kind: String,
    expression: Option<String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    components: Vec<RawComponent>,
}

#[derive(Deserialize)]
struct RawComponent {
    param: String,
    expression: String,
}

/// The registry: parameters by base type, and the Patient compartment. R4's are compiled in;
/// [`SearchParameters::with_custom`] adds those of stored SearchParameter resources.
#[derive(Debug, Default, Clone)]
pub struct SearchParameters {
    by_type: HashMap<String, Vec<Arc<SearchParam>>>,
    compartment: HashMap<String, Vec<String>>,
}

static R4: LazyLock<SearchParameters> = LazyLock::new(SearchParameters::load);

pub fn kind(s: &str) -> ParamType {
    match s {
        "number" => ParamType::Number,
        "date" => ParamType::Date,
        "string" => ParamType::String,
        "token" => ParamType::Token,
        "reference" => ParamType::Reference,
        "composite" => ParamType::Composite,
        "quantity" => ParamType::Quantity,
        "uri" => ParamType::Uri,
        _ => ParamType::Special,
    }
}

impl SearchParameters {
    pub fn r4() -> &'static SearchParameters {
        &R4
    }

    /// Loads the compiled-in tables; an unreadable table yields an empty registry (the tests
    /// check the tables load and match ../shared).
    fn load() -> SearchParameters {
        let mut out = SearchParameters::default();
        let raw: BTreeMap<String, Vec<RawParam>> = Profiles::get("search-parameters.json")
            .and_then(|f| serde_json::from_slice(&f.data).ok())
            .unwrap_or_default();
        for (base, params) in raw {
            let list = params
                .into_iter()
                .map(|p| SearchParam {
                    custom: false,
                    internal: false,
                    parsed: p.expression.as_deref().and_then(|e| parse(e).ok()),
                    code: p.code,
                    kind: kind(&p.kind),
                    expression: p.expression,
                    targets: p.targets,
                    components: p
                        .components
                        .into_iter()
                        .map(|c| Component {
                            parsed: parse(&c.expression).ok(),
                            param: c.param,
                            expression: c.expression,
                        })
                        .collect(),
                })
                .map(Arc::new)
                .collect();
            out.by_type.insert(base, list);
        }
        for (base, code, expression) in POLICY_PARAMS {
            out.by_type
                .entry(base.to_string())
                .or_default()
                .push(Arc::new(SearchParam {
                    code: code.to_string(),
                    kind: ParamType::Reference,
                    expression: Some(expression.to_string()),
                    parsed: parse(expression).ok(),
                    targets: Vec::new(),
                    components: Vec::new(),
                    custom: false,
                    internal: true,
                }));
        }
        out.compartment = Profiles::get("compartment-patient.json")
            .and_then(|f| serde_json::from_slice(&f.data).ok())
            .unwrap_or_default();
        out
    }

    /// This registry plus custom parameters (base types, definition); a custom parameter whose
    /// code its base already defines is left out (the R4 definition wins).
    pub fn with_custom(&self, custom: Vec<(Vec<String>, SearchParam)>) -> SearchParameters {
        let mut out = self.clone();
        for (bases, param) in custom {
            let param = Arc::new(param);
            for base in bases {
                if out.get(&base, &param.code).is_some() {
                    continue;
                }
                out.by_type.entry(base).or_default().push(param.clone());
            }
        }
        out
    }

    /// The custom parameters: (base, code).
    pub fn custom(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .by_type
            .iter()
            .flat_map(|(t, ps)| {
                ps.iter()
                    .filter(|p| p.custom)
                    .map(move |p| (t.clone(), p.code.clone()))
            })
            .collect();
        out.sort();
        out
    }

    /// The access policy's internal parameters: (base, code).
    pub fn internal(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .by_type
            .iter()
            .flat_map(|(t, ps)| {
                ps.iter()
                    .filter(|p| p.internal)
                    .map(move |p| (t.clone(), p.code.clone()))
            })
            .collect();
        out.sort();
        out
    }

    /// The parameters defined on `resource_type` itself (not those of Resource/DomainResource).
    pub fn own(&self, resource_type: &str) -> &[Arc<SearchParam>] {
        self.by_type
            .get(resource_type)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// A parameter of `resource_type` (own, or inherited from Resource/DomainResource) that
    /// clients may use (the policy's internal ones are left out).
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&SearchParam> {
        [resource_type, "DomainResource", "Resource"]
            .iter()
            .flat_map(|t| self.own(t))
            .find(|p| p.code == code && !p.internal)
            .map(Arc::as_ref)
    }

    /// The parameters that put a `resource_type` in a Patient's compartment.
    pub fn patient_compartment(&self, resource_type: &str) -> &[String] {
        self.compartment
            .get(resource_type)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Types that can be in a Patient's compartment.
    pub fn patient_compartment_types(&self) -> impl Iterator<Item = &str> {
        self.compartment.keys().map(String::as_str)
    }

    pub fn count(&self) -> usize {
        self.by_type.values().map(Vec::len).sum()
    }
}

/// A SearchParameter resource as a custom parameter: (base types, definition), when it is
/// active or draft, defines code, base, type and a FHIRPath expression this engine parses,
/// and is not one of R4's own (http://hl7.org/fhir/SearchParameter/…).
pub fn custom_from_resource(resource: &Value) -> Option<(Vec<String>, SearchParam)> {
    let s = |k: &str| resource.get(k).and_then(Value::as_str);
    if s("resourceType") != Some("SearchParameter")
        || s("status") == Some("retired")
        || s("url").is_some_and(|u| u.starts_with("http://hl7.org/fhir/SearchParameter/"))
    {
        return None;
    }
    let code = s("code")?.to_string();
    let kind = kind(s("type")?);
    if kind == ParamType::Special || code.starts_with('_') {
        return None;
    }
    let expression = s("expression")?.to_string();
    let parsed = parse(&expression).ok()?;
    let bases: Vec<String> = resource
        .get("base")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect();
    if bases.is_empty() {
        return None;
    }
    let targets = resource
        .get("target")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let components = resource
        .get("component")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    // components name other parameters by canonical; the code is its tail
                    let def = c.get("definition")?.as_str()?;
                    let param = def.rsplit(['/', '-']).next()?.to_string();
                    let expression = c.get("expression")?.as_str()?.to_string();
                    Some(Component {
                        parsed: parse(&expression).ok(),
                        param,
                        expression,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Some((
        bases,
        SearchParam {
            code,
            kind,
            expression: Some(expression),
            parsed: Some(parsed),
            targets,
            components,
            custom: true,
            internal: false,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_every_parameter_and_parses_its_expression() {
        let sp = SearchParameters::r4();
        assert!(sp.count() >= 1375, "{}", sp.count());
        let subject = sp.get("Observation", "subject").unwrap();
        assert_eq!(subject.kind, ParamType::Reference);
        assert_eq!(subject.expression.as_deref(), Some("Observation.subject"));
        let patient = sp.get("Observation", "patient").unwrap();
        assert_eq!(
            patient.expression.as_deref(),
            Some("Observation.subject.where(resolve() is Patient)")
        );
        assert!(sp.get("Patient", "_id").is_some());
        let unparsed: Vec<&str> = sp
            .by_type
            .values()
            .flatten()
            .filter(|p| p.expression.is_some() && p.parsed.is_none())
            .map(|p| p.code.as_str())
            .collect();
        assert!(unparsed.is_empty(), "{unparsed:?}");
        assert_eq!(
            sp.patient_compartment("Observation"),
            ["subject", "performer"]
        );
        assert!(sp.patient_compartment("Organization").is_empty());
    }
}

#[cfg(test)]
mod custom_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn custom_parameters_extend_but_never_replace_r4() {
        let sp = json!({"resourceType": "SearchParameter", "url": "http://example.org/sp/marital",
            "status": "active", "code": "marital", "base": ["Patient"], "type": "token",
            "expression": "Patient.maritalStatus"});
        let custom = custom_from_resource(&sp).unwrap();
        let shadow = custom_from_resource(&json!({"resourceType": "SearchParameter",
            "status": "active", "code": "gender", "base": ["Patient"], "type": "string",
            "expression": "Patient.name"}))
        .unwrap();
        let reg = SearchParameters::r4().with_custom(vec![custom, shadow]);
        assert_eq!(
            reg.get("Patient", "marital").unwrap().kind,
            ParamType::Token
        );
        assert_eq!(reg.get("Patient", "gender").unwrap().kind, ParamType::Token);
        assert_eq!(
            reg.custom(),
            [("Patient".to_string(), "marital".to_string())]
        );
        assert!(SearchParameters::r4().get("Patient", "marital").is_none());
        for bad in [
            json!({"resourceType": "SearchParameter", "status": "active", "code": "x", "base": ["Patient"], "type": "token", "expression": "Patient.("}),
            json!({"resourceType": "SearchParameter", "status": "retired", "code": "x", "base": ["Patient"], "type": "token", "expression": "Patient.id"}),
            json!({"resourceType": "SearchParameter", "url": "http://hl7.org/fhir/SearchParameter/x", "status": "active", "code": "x", "base": ["Patient"], "type": "token", "expression": "Patient.id"}),
            json!({"resourceType": "SearchParameter", "status": "active", "code": "x", "base": [], "type": "token", "expression": "Patient.id"}),
        ] {
            assert!(custom_from_resource(&bad).is_none(), "{bad}");
        }
    }
}
