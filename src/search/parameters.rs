//! The search-parameter registry: every R4 SearchParameter from fhir-profiles/
//! search-parameters.json (expressions restricted to their base type and parsed once), and the
//! Patient compartment from fhir-profiles/compartment-patient.json.

use crate::fhir::definitions::Profiles;
use crate::fhirpath::{Expr, parse};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

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
}

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

#[derive(Debug, Default)]
pub struct SearchParameters {
    by_type: HashMap<String, Vec<SearchParam>>,
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
                .collect();
            out.by_type.insert(base, list);
        }
        out.compartment = Profiles::get("compartment-patient.json")
            .and_then(|f| serde_json::from_slice(&f.data).ok())
            .unwrap_or_default();
        out
    }

    /// The parameters defined on `resource_type` itself (not those of Resource/DomainResource).
    pub fn own(&self, resource_type: &str) -> &[SearchParam] {
        self.by_type
            .get(resource_type)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// A parameter of `resource_type` (own, or inherited from Resource/DomainResource).
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&SearchParam> {
        [resource_type, "DomainResource", "Resource"]
            .iter()
            .flat_map(|t| self.own(t))
            .find(|p| p.code == code)
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
