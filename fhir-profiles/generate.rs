//! Generates the project's compact FHIR R4 tables and per-type JSON Schemas in fhir-profiles/
//! from the official definitions in ../shared/fhir/definitions.
//!
//! Run: `cargo run --example gen-profiles -- ../shared/fhir` (writes into fhir-profiles/).
//! The drift test (conformance-tests/profiles.rs) includes this file as a module, re-runs
//! [`generate`] in memory and compares every output byte with what is committed.
//!
//! Only facts are carried over (names, types, cardinalities, required codes, regexes);
//! descriptions and narrative text stay out.

// a tool, not a request path: a failed step may stop it (see .clippy.toml)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::disallowed_methods
)]

use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The `$id` base of the generated schemas.
pub const SCHEMA_BASE: &str = "https://healporium.dev/fhir-profiles/schemas/";

type GenResult<T> = Result<T, String>;

/// One element of a type, as stored in `elements.json`.
#[derive(Debug, Clone)]
struct Element {
    path: String,
    min: u64,
    max: String,
    types: Vec<String>,
    targets: Vec<String>,
    content_ref: Option<String>,
    binding: Option<String>,
    summary: bool,
    modifier: bool,
}

#[derive(Debug, Clone)]
struct TypeDef {
    name: String,
    kind: String,
    base: Option<String>,
    is_abstract: bool,
    elements: Vec<Element>,
}

/// Generates every file of fhir-profiles/ (relative path → content).
pub fn generate(shared_fhir: &Path) -> GenResult<BTreeMap<PathBuf, String>> {
    let defs = shared_fhir.join("definitions");
    let types_bundle = read_json(&defs.join("profiles-types.json"))?;
    let resources_bundle = read_json_gz(&defs.join("profiles-resources.json.gz"))?;
    let bindings = read_json(&defs.join("required-bindings.json"))?;

    let mut primitives: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    let mut types: Vec<TypeDef> = Vec::new();
    for bundle in [&types_bundle, &resources_bundle] {
        for entry in bundle["entry"].as_array().ok_or("bundle without entry")? {
            let sd = &entry["resource"];
            if sd["resourceType"] != "StructureDefinition" {
                continue;
            }
            let kind = str_of(sd, "kind")?;
            let name = str_of(sd, "id")?;
            if sd["derivation"] == "constraint" {
                continue; // SimpleQuantity, MoneyQuantity: profiles, not types
            }
            if kind == "primitive-type" {
                primitives.insert(name.to_string(), primitive_of(sd)?);
                continue;
            }
            if kind == "logical" {
                continue;
            }
            types.push(type_of(sd)?);
        }
    }
    let value_sets = value_sets_of(&bindings)?;
    for t in &types {
        for e in &t.elements {
            if let Some(vs) = &e.binding
                && !value_sets.contains_key(vs)
            {
                return Err(format!("{}: required binding {vs} has no entry", e.path));
            }
        }
    }

    let mut out = BTreeMap::new();
    out.insert(
        PathBuf::from("elements.json"),
        elements_json(&primitives, &types, &value_sets),
    );
    out.insert(
        PathBuf::from("schemas/datatypes.schema.json"),
        pretty(&datatypes_schema(&primitives, &types, &value_sets)?),
    );
    for t in types
        .iter()
        .filter(|t| t.kind == "resource" && !t.is_abstract)
    {
        out.insert(
            PathBuf::from(format!("schemas/{}.schema.json", t.name)),
            pretty(&resource_schema(t, &primitives, &types, &value_sets)?),
        );
    }
    let search_params = read_json(&defs.join("search-parameters.json"))?;
    out.insert(
        PathBuf::from("search-parameters.json"),
        search_parameters_json(&search_params)?,
    );
    let terminology = read_json_gz(&defs.join("valuesets.json.gz"))?;
    out.insert(
        PathBuf::from("code-systems.json"),
        code_systems_json(&terminology)?,
    );
    let compartment = read_json(&defs.join("compartmentdefinition-patient.json"))?;
    out.insert(
        PathBuf::from("compartment-patient.json"),
        compartment_json(&compartment)?,
    );
    Ok(out)
}

/// Splits a FHIRPath union at top-level `|` (outside parentheses and string literals).
fn split_union(expr: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quoted = false;
    let mut cur = String::new();
    for c in expr.chars() {
        match c {
            '\'' => quoted = !quoted,
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth -= 1,
            '|' if !quoted && depth == 0 => {
                parts.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur.trim().to_string());
    parts
}

/// The type a union part navigates from: `Observation` for `(Observation.value as Quantity)`.
fn leading_type(part: &str) -> &str {
    let p = part.trim_start_matches(['(', ' ']);
    let end = p
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(p.len());
    &p[..end]
}

/// `search-parameters.json`: for each base type, its parameters (code, type, the expression
/// restricted to that base, reference targets, composite components), one line each.
fn search_parameters_json(bundle: &Value) -> GenResult<String> {
    let mut by_url = BTreeMap::new();
    for e in bundle["entry"]
        .as_array()
        .ok_or("search parameters: no entry")?
    {
        let sp = &e["resource"];
        if let (Some(url), Some(code)) = (sp["url"].as_str(), sp["code"].as_str()) {
            by_url.insert(url.to_string(), code.to_string());
        }
    }
    let mut by_base: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in bundle["entry"].as_array().into_iter().flatten() {
        let sp = &e["resource"];
        let code = str_of(sp, "code")?;
        let bases: Vec<&str> = sp["base"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for base in &bases {
            let mut m = Map::new();
            m.insert("code".into(), json!(code));
            m.insert("type".into(), sp["type"].clone());
            if let Some(expr) = sp["expression"].as_str() {
                let expr = if bases.len() == 1 {
                    expr.to_string()
                } else {
                    let parts: Vec<String> = split_union(expr)
                        .into_iter()
                        .filter(|p| leading_type(p) == *base)
                        .collect();
                    if parts.is_empty() {
                        expr.to_string()
                    } else {
                        parts.join(" | ")
                    }
                };
                m.insert("expression".into(), json!(expr));
            }
            if let Some(t) = sp["target"].as_array() {
                m.insert("targets".into(), Value::Array(t.clone()));
            }
            if let Some(components) = sp["component"].as_array() {
                let comps: Vec<Value> = components
                    .iter()
                    .map(|c| {
                        let def = c["definition"].as_str().unwrap_or("");
                        json!({
                            "param": by_url.get(def).cloned().unwrap_or_else(|| def.to_string()),
                            "expression": c["expression"],
                        })
                    })
                    .collect();
                m.insert("components".into(), Value::Array(comps));
            }
            by_base
                .entry(base.to_string())
                .or_default()
                .push(Value::Object(m));
        }
    }
    let mut s = String::from("{\n");
    let types: Vec<String> = by_base
        .iter_mut()
        .map(|(base, params)| {
            params.sort_by(|a, b| a["code"].as_str().cmp(&b["code"].as_str()));
            let lines: Vec<String> = params.iter().map(|p| format!("    {p}")).collect();
            format!("  {}: [\n{}\n  ]", json!(base), lines.join(",\n"))
        })
        .collect();
    s.push_str(&types.join(",\n"));
    s.push_str("\n}\n");
    Ok(s)
}

/// `compartment-patient.json`: for each resource type, the parameters that put it in a
/// Patient's compartment.
fn compartment_json(def: &Value) -> GenResult<String> {
    let mut out = BTreeMap::new();
    for r in def["resource"]
        .as_array()
        .ok_or("compartment: no resource")?
    {
        let params: Vec<&str> = r["param"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !params.is_empty() {
            out.insert(str_of(r, "code")?.to_string(), params);
        }
    }
    Ok(pretty(&json!(out)))
}

fn read_json(path: &Path) -> GenResult<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn read_json_gz(path: &Path) -> GenResult<Value> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn str_of<'a>(v: &'a Value, key: &str) -> GenResult<&'a str> {
    v[key].as_str().ok_or_else(|| format!("missing {key}"))
}

/// (JSON representation, regex) of a primitive type.
fn primitive_of(sd: &Value) -> GenResult<(String, Option<String>)> {
    let name = str_of(sd, "id")?;
    let json = match name {
        "boolean" => "boolean",
        "integer" | "positiveInt" | "unsignedInt" => "integer",
        "decimal" => "number",
        _ => "string",
    };
    let mut regex = None;
    for el in sd["snapshot"]["element"].as_array().ok_or("no snapshot")? {
        if el["path"].as_str() == Some(&format!("{name}.value")) {
            for ty in el["type"].as_array().into_iter().flatten() {
                for ext in ty["extension"].as_array().into_iter().flatten() {
                    if ext["url"] == "http://hl7.org/fhir/StructureDefinition/regex" {
                        regex = ext["valueString"].as_str().map(str::to_string);
                    }
                }
            }
        }
    }
    Ok((json.to_string(), regex))
}

fn type_of(sd: &Value) -> GenResult<TypeDef> {
    let name = str_of(sd, "id")?.to_string();
    let kind = str_of(sd, "kind")?.to_string();
    let base = sd["baseDefinition"]
        .as_str()
        .and_then(|b| b.rsplit('/').next())
        .map(str::to_string);
    let mut elements = Vec::new();
    for el in sd["snapshot"]["element"].as_array().ok_or("no snapshot")? {
        let path = str_of(el, "path")?.to_string();
        if !path.contains('.') {
            continue;
        }
        let max = str_of(el, "max")?.to_string();
        if max == "0" {
            continue;
        }
        let min = el["min"].as_u64().ok_or_else(|| format!("{path}: min"))?;
        let mut types = Vec::new();
        let mut targets = BTreeSet::new();
        for ty in el["type"].as_array().into_iter().flatten() {
            let code = str_of(ty, "code")?;
            let code = if let Some(system) = code.strip_prefix("http://hl7.org/fhirpath/System.") {
                system_type(&name, &kind, &path, system, ty)
            } else {
                code.to_string()
            };
            if !types.contains(&code) {
                types.push(code);
            }
            for t in ty["targetProfile"].as_array().into_iter().flatten() {
                if let Some(t) = t.as_str().and_then(|t| t.rsplit('/').next()) {
                    targets.insert(t.to_string());
                }
            }
        }
        let content_ref = el["contentReference"]
            .as_str()
            .map(|r| r.trim_start_matches('#').to_string());
        let binding = if el["binding"]["strength"] == "required" {
            el["binding"]["valueSet"]
                .as_str()
                .map(|vs| vs.split('|').next().unwrap_or(vs).to_string())
        } else {
            None
        };
        elements.push(Element {
            path,
            min,
            max,
            types,
            targets: targets.into_iter().collect(),
            content_ref,
            binding,
            summary: el["isSummary"] == true,
            modifier: el["isModifier"] == true,
        });
    }
    Ok(TypeDef {
        name,
        kind,
        base,
        is_abstract: sd["abstract"] == true,
        elements,
    })
}

/// Maps the FHIRPath System types used by a few elements to their FHIR type.
/// `Resource.id` is typed `id` (resource.html), although the 4.0.1 snapshot says `string`.
fn system_type(type_name: &str, kind: &str, path: &str, system: &str, ty: &Value) -> String {
    if kind == "resource" && path == format!("{type_name}.id") {
        return "id".to_string();
    }
    for ext in ty["extension"].as_array().into_iter().flatten() {
        if ext["url"] == "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
            && let Some(t) = ext["valueUrl"].as_str()
        {
            return t.to_string();
        }
    }
    match system {
        "Boolean" => "boolean",
        "Integer" => "integer",
        "Decimal" => "decimal",
        "Date" => "date",
        "DateTime" => "dateTime",
        "Time" => "time",
        _ => "string",
    }
    .to_string()
}

/// Required value sets: url → (codes or None when not expandable, systems).
type ValueSets = BTreeMap<String, (Option<Vec<String>>, Vec<String>)>;

fn value_sets_of(bindings: &Value) -> GenResult<ValueSets> {
    let mut out = ValueSets::new();
    for list in bindings["bindings"]
        .as_object()
        .ok_or("required-bindings.json: no bindings")?
        .values()
    {
        for b in list.as_array().into_iter().flatten() {
            let vs = str_of(b, "valueSet")?;
            let vs = vs.split('|').next().unwrap_or(vs).to_string();
            let codes = b["codes"].as_array().map(|c| {
                let mut c: Vec<String> = c
                    .iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect();
                c.sort();
                c.dedup();
                c
            });
            let mut systems: Vec<String> = b["systems"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect();
            systems.sort();
            systems.dedup();
            out.insert(vs, (codes, systems));
        }
    }
    Ok(out)
}

/// `code-systems.json`: the codes of every R4 code system whose content is complete (to check
/// `Coding.code` against its system) and the canonical URL of every R4 value set (which is
/// never a `Coding.system`).
fn code_systems_json(bundle: &Value) -> GenResult<String> {
    fn codes_of(concepts: &Value, out: &mut BTreeSet<String>) {
        for c in concepts.as_array().into_iter().flatten() {
            if let Some(code) = c["code"].as_str() {
                out.insert(code.to_string());
            }
            codes_of(&c["concept"], out);
        }
    }
    let mut systems: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut value_sets: BTreeSet<String> = BTreeSet::new();
    for entry in bundle["entry"].as_array().ok_or("valuesets: no entry")? {
        let r = &entry["resource"];
        match r["resourceType"].as_str() {
            Some("CodeSystem") if r["content"] == "complete" => {
                let mut codes = BTreeSet::new();
                codes_of(&r["concept"], &mut codes);
                if !codes.is_empty() {
                    systems.insert(str_of(r, "url")?.to_string(), codes);
                }
            }
            Some("ValueSet") => {
                value_sets.insert(str_of(r, "url")?.to_string());
            }
            _ => {}
        }
    }
    // a URL that names both (none in R4) is a code system
    value_sets.retain(|u| !systems.contains_key(u));
    let mut s = String::from("{\n\"codeSystems\": {\n");
    let lines: Vec<String> = systems
        .iter()
        .map(|(url, codes)| format!("  {}: {}", json!(url), json!(codes)))
        .collect();
    s.push_str(&lines.join(",\n"));
    s.push_str("\n},\n\"valueSets\": [\n");
    let lines: Vec<String> = value_sets
        .iter()
        .map(|u| format!("  {}", json!(u)))
        .collect();
    s.push_str(&lines.join(",\n"));
    s.push_str("\n]\n}\n");
    Ok(s)
}

fn element_json(e: &Element) -> Value {
    let mut m = Map::new();
    m.insert("path".into(), json!(e.path));
    m.insert("min".into(), json!(e.min));
    m.insert("max".into(), json!(e.max));
    if !e.types.is_empty() {
        m.insert("types".into(), json!(e.types));
    }
    if !e.targets.is_empty() {
        m.insert("targets".into(), json!(e.targets));
    }
    if let Some(r) = &e.content_ref {
        m.insert("ref".into(), json!(r));
    }
    if let Some(b) = &e.binding {
        m.insert("binding".into(), json!(b));
    }
    if e.summary {
        m.insert("summary".into(), json!(true));
    }
    if e.modifier {
        m.insert("modifier".into(), json!(true));
    }
    Value::Object(m)
}

/// `elements.json`: one line per element so diffs stay readable.
fn elements_json(
    primitives: &BTreeMap<String, (String, Option<String>)>,
    types: &[TypeDef],
    value_sets: &ValueSets,
) -> String {
    let mut s = String::from("{\n\"fhirVersion\": \"4.0.1\",\n\"primitives\": {\n");
    let prims: Vec<String> = primitives
        .iter()
        .map(|(name, (json, regex))| {
            format!(
                "  {}: {}",
                json!(name),
                json!({"json": json, "regex": regex})
            )
        })
        .collect();
    s.push_str(&prims.join(",\n"));
    s.push_str("\n},\n\"types\": {\n");
    let mut sorted: Vec<&TypeDef> = types.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let ts: Vec<String> = sorted
        .iter()
        .map(|t| {
            let els: Vec<String> = t
                .elements
                .iter()
                .map(|e| format!("    {}", element_json(e)))
                .collect();
            format!(
                "  {}: {{\"kind\": {}, \"base\": {}, \"abstract\": {}, \"elements\": [\n{}\n  ]}}",
                json!(t.name),
                json!(t.kind),
                json!(t.base),
                json!(t.is_abstract),
                els.join(",\n")
            )
        })
        .collect();
    s.push_str(&ts.join(",\n"));
    s.push_str("\n},\n\"valueSets\": {\n");
    let vss: Vec<String> = value_sets
        .iter()
        .map(|(url, (codes, systems))| {
            format!(
                "  {}: {}",
                json!(url),
                json!({"codes": codes, "systems": systems})
            )
        })
        .collect();
    s.push_str(&vss.join(",\n"));
    s.push_str("\n}\n}\n");
    s
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Where the JSON Schema of a type lives, seen from a schema of `from`.
fn type_ref(type_name: &str, in_datatypes: bool) -> String {
    if in_datatypes {
        format!("#/$defs/{type_name}")
    } else {
        format!("datatypes.schema.json#/$defs/{type_name}")
    }
}

struct SchemaCtx<'a> {
    primitives: &'a BTreeMap<String, (String, Option<String>)>,
    value_sets: &'a ValueSets,
    /// true when writing datatypes.schema.json (refs are local there)
    in_datatypes: bool,
    /// the type whose backbone elements are local definitions
    owner: &'a TypeDef,
}

impl SchemaCtx<'_> {
    fn has_children(&self, path: &str) -> bool {
        let prefix = format!("{path}.");
        self.owner
            .elements
            .iter()
            .any(|e| e.path.starts_with(&prefix))
    }

    /// Schema of one value of element `e` with type `ty`.
    fn value_schema(&self, e: &Element, ty: &str) -> Value {
        if let Some(r) = &e.content_ref {
            return json!({"$ref": format!("#/$defs/{r}")});
        }
        if self.has_children(&e.path) {
            return json!({"$ref": format!("#/$defs/{}", e.path)});
        }
        if ty == "Resource" {
            // the validator checks contained/entry resources against their own type
            return json!({"$ref": type_ref("Resource", self.in_datatypes)});
        }
        if ty == "code"
            && let Some(vs) = &e.binding
            && let Some((Some(codes), _)) = self.value_sets.get(vs)
        {
            return json!({"enum": codes});
        }
        json!({"$ref": type_ref(ty, self.in_datatypes)})
    }

    /// Adds the JSON properties for element `e` (name, `_name`, or every choice variant).
    fn add_properties(
        &self,
        e: &Element,
        props: &mut Map<String, Value>,
        required: &mut Vec<String>,
    ) {
        let name = e.path.rsplit('.').next().unwrap_or(&e.path);
        let many = e.max != "1";
        let variants: Vec<(String, &str)> = if let Some(stem) = name.strip_suffix("[x]") {
            e.types
                .iter()
                .map(|t| (format!("{stem}{}", capitalize(t)), t.as_str()))
                .collect()
        } else {
            let ty = e
                .types
                .first()
                .map(String::as_str)
                .unwrap_or("BackboneElement");
            vec![(name.to_string(), ty)]
        };
        let choice = name.ends_with("[x]");
        for (prop, ty) in variants {
            let is_primitive = self.primitives.contains_key(ty) && e.content_ref.is_none();
            let value = self.value_schema(e, ty);
            let schema = if many {
                let mut arr = json!({"type": "array", "minItems": 1});
                if let Ok(n) = e.max.parse::<u64>() {
                    arr["maxItems"] = json!(n);
                }
                if e.min > 1 {
                    arr["minItems"] = json!(e.min);
                }
                // null items are how FHIR JSON aligns a primitive array with its `_name` array
                arr["items"] = if is_primitive { nullable(value) } else { value };
                arr
            } else {
                value
            };
            props.insert(prop.clone(), schema);
            if is_primitive {
                let ext = json!({"$ref": type_ref("Element", self.in_datatypes)});
                let ext_schema = if many {
                    json!({"type": "array", "minItems": 1, "items": nullable(ext)})
                } else {
                    ext
                };
                props.insert(format!("_{prop}"), ext_schema);
            }
            if !choice && e.min >= 1 && !is_primitive {
                required.push(prop);
            }
        }
    }

    /// Object schema for the children of `path` (a type root or a backbone element).
    fn object_schema(&self, path: &str, resource_type: Option<&str>) -> Value {
        let depth = path.matches('.').count() + 1;
        let mut props = Map::new();
        let mut required = Vec::new();
        if let Some(rt) = resource_type {
            props.insert("resourceType".into(), json!({"const": rt}));
            required.push("resourceType".to_string());
        }
        let prefix = format!("{path}.");
        for e in self
            .owner
            .elements
            .iter()
            .filter(|e| e.path.starts_with(&prefix) && e.path.matches('.').count() == depth)
        {
            self.add_properties(e, &mut props, &mut required);
        }
        let mut schema = json!({"type": "object", "properties": Value::Object(props), "additionalProperties": false});
        if !required.is_empty() {
            schema["required"] = json!(required);
        }
        schema
    }

    /// Local definitions for every backbone element of the owner type.
    fn backbone_defs(&self, defs: &mut Map<String, Value>) {
        for e in &self.owner.elements {
            if e.content_ref.is_none() && self.has_children(&e.path) {
                defs.insert(e.path.clone(), self.object_schema(&e.path, None));
            }
        }
    }
}

/// The array-item form of a primitive schema: the same value, or JSON null.
fn nullable(schema: Value) -> Value {
    if let Some(codes) = schema["enum"].as_array() {
        let mut codes = codes.clone();
        codes.push(Value::Null);
        return json!({"enum": codes});
    }
    match schema["$ref"].as_str() {
        Some(r) => json!({"$ref": format!("{r}.item")}),
        None => schema,
    }
}

fn anchored(regex: &str) -> String {
    format!("^(?:{regex})$")
}

fn datatypes_schema(
    primitives: &BTreeMap<String, (String, Option<String>)>,
    types: &[TypeDef],
    value_sets: &ValueSets,
) -> GenResult<Value> {
    let mut defs = Map::new();
    for (name, (json_type, regex)) in primitives {
        let mut s = json!({"type": json_type});
        match (json_type.as_str(), regex) {
            ("string", Some(r)) => s["pattern"] = json!(anchored(r)),
            ("string", None) => s["minLength"] = json!(1),
            _ => {}
        }
        match name.as_str() {
            "positiveInt" => {
                s["minimum"] = json!(1);
                s["maximum"] = json!(2147483647)
            }
            "unsignedInt" => {
                s["minimum"] = json!(0);
                s["maximum"] = json!(2147483647)
            }
            "integer" => {
                s["minimum"] = json!(-2147483648i64);
                s["maximum"] = json!(2147483647)
            }
            _ => {}
        }
        let mut item = s.clone();
        item["type"] = json!([json_type, "null"]);
        defs.insert(format!("{name}.item"), item);
        defs.insert(name.clone(), s);
    }
    // A resource nested in another (contained, Bundle.entry.resource, Parameters): only its
    // shape is checked here; the validator checks it against its own type's schema.
    defs.insert(
        "Resource".into(),
        json!({"type": "object", "required": ["resourceType"], "properties": {"resourceType": {"type": "string"}}}),
    );
    for t in types.iter().filter(|t| t.kind == "complex-type") {
        let ctx = SchemaCtx {
            primitives,
            value_sets,
            in_datatypes: true,
            owner: t,
        };
        let schema = ctx.object_schema(&t.name, None);
        if t.name == "Element" {
            let mut item = schema.clone();
            item["type"] = json!(["object", "null"]);
            defs.insert("Element.item".into(), item);
        }
        defs.insert(t.name.clone(), schema);
        ctx.backbone_defs(&mut defs);
    }
    Ok(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{SCHEMA_BASE}datatypes.schema.json"),
        "title": "FHIR R4 4.0.1 data types (generated by fhir-profiles/generate.rs)",
        "$defs": Value::Object(defs),
    }))
}

fn resource_schema(
    t: &TypeDef,
    primitives: &BTreeMap<String, (String, Option<String>)>,
    _types: &[TypeDef],
    value_sets: &ValueSets,
) -> GenResult<Value> {
    let ctx = SchemaCtx {
        primitives,
        value_sets,
        in_datatypes: false,
        owner: t,
    };
    let mut defs = Map::new();
    defs.insert(t.name.clone(), ctx.object_schema(&t.name, Some(&t.name)));
    ctx.backbone_defs(&mut defs);
    Ok(json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("{SCHEMA_BASE}{}.schema.json", t.name),
        "title": format!("FHIR R4 4.0.1 {} (generated by fhir-profiles/generate.rs)", t.name),
        "$ref": format!("#/$defs/{}", t.name),
        "$defs": Value::Object(defs),
    }))
}

/// Entry point of `cargo run --example gen-profiles -- <shared/fhir dir>`.
#[allow(dead_code)]
fn main() {
    let shared = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "../shared/fhir".to_string());
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fhir-profiles");
    let files = match generate(Path::new(&shared)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gen-profiles: {e}");
            std::process::exit(1);
        }
    };
    let schemas = out_dir.join("schemas");
    if schemas.exists()
        && let Err(e) = std::fs::remove_dir_all(&schemas)
    {
        eprintln!("gen-profiles: {}: {e}", schemas.display());
        std::process::exit(1);
    }
    for (rel, content) in &files {
        let path = out_dir.join(rel);
        if let Some(parent) = path.parent()
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            eprintln!("gen-profiles: {}: {e}", parent.display());
            std::process::exit(1);
        }
        if let Err(e) = std::fs::write(&path, content) {
            eprintln!("gen-profiles: {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    println!(
        "gen-profiles: wrote {} files to {}",
        files.len(),
        out_dir.display()
    );
}
