//! Validation of a resource against the R4 definitions: the one validator that create, update,
//! patch, `$validate` and (later) profiles share.
//!
//! Two passes, each reporting every problem it finds:
//! 1. the type's JSON Schema from fhir-profiles/schemas (element names, JSON types, patterns,
//!    required codes, cardinality of arrays and required complex elements);
//! 2. a walk over the definitions for what a JSON Schema cannot say: choice types (one variant,
//!    required choices), required primitives given only as `_name`, number formats in the raw
//!    decimal text, calendar dates, primitive/`_name` array alignment, required CodeableConcept
//!    bindings, empty objects, narrative XHTML, and contained resources (each validated as its
//!    own type, plus dom-2/dom-4).
//!
//! Issues carry the FHIRPath expression of the bad element, e.g. `Patient.contact[0].gender`
//! or `Observation.value.ofType(Quantity)`.

use crate::fhir::definitions::{Definitions, JsonKind, Profiles, Property};
use crate::fhir::outcome::{ErrorKind, Issue, Outcome};
use crate::fhir::types::is_calendar_valid;
use jsonschema::error::ValidationErrorKind;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

const SCHEMA_BASE: &str = "https://healporium.dev/fhir-profiles/schemas/";

/// The validator of the R4 base definitions.
pub struct Validator {
    defs: &'static Definitions,
    schemas: HashMap<String, OnceLock<Result<jsonschema::Validator, String>>>,
}

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| Validator::new(Definitions::r4()));

static DATATYPES: LazyLock<Result<jsonschema::Registry<'static>, String>> = LazyLock::new(|| {
    let file = Profiles::get("schemas/datatypes.schema.json").ok_or("datatypes schema missing")?;
    let schema: Value = serde_json::from_slice(&file.data).map_err(|e| e.to_string())?;
    jsonschema::Registry::new()
        .add(format!("{SCHEMA_BASE}datatypes.schema.json"), schema)
        .map_err(|e| e.to_string())?
        .prepare()
        .map_err(|e| e.to_string())
});

/// Nested resources (contained, Bundle entries, Parameters) deeper than this are refused.
const MAX_RESOURCE_NESTING: usize = 8;

impl Validator {
    pub fn r4() -> &'static Validator {
        &VALIDATOR
    }

    fn new(defs: &'static Definitions) -> Validator {
        let schemas = defs
            .resource_types()
            .iter()
            .map(|t| (t.clone(), OnceLock::new()))
            .collect();
        Validator { defs, schemas }
    }

    /// Builds every type's schema now instead of on first use.
    /// Builds every resource type's validator now (each is otherwise built on first use).
    pub fn warm_up(&self) -> Result<(), String> {
        self.check_datatypes()?;
        for t in self.defs.resource_types() {
            self.schema(t)?;
        }
        Ok(())
    }

    /// Loads the datatypes schema every resource schema refers to.
    pub fn check_datatypes(&self) -> Result<(), String> {
        DATATYPES.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    fn schema(&self, resource_type: &str) -> Result<&jsonschema::Validator, String> {
        let cell = self
            .schemas
            .get(resource_type)
            .ok_or_else(|| format!("no schema for {resource_type}"))?;
        cell.get_or_init(|| build_schema(resource_type))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Validates a resource; Ok when it has no error issues. The error is 400 (Structure)
    /// when any issue is structural (unknown elements, wrong JSON types), else 422 (Invalid).
    pub fn validate(&self, resource: &Value) -> Result<(), Outcome> {
        self.run(resource, false)
    }

    /// [`Self::validate`] plus the HL7 validator's further rules ([`crate::fhir::strict`]):
    /// what `$validate` judges, where writes stay lenient.
    pub fn validate_strict(&self, resource: &Value) -> Result<(), Outcome> {
        self.run(resource, true)
    }

    fn run(&self, resource: &Value, strict: bool) -> Result<(), Outcome> {
        let mut issues = Vec::new();
        let mut structural = false;
        let Some(resource_type) = self.check_resource_type(resource, &mut issues) else {
            return Err(Outcome::with_issues(ErrorKind::Structure, issues));
        };
        self.validate_resource(
            resource,
            &resource_type,
            &resource_type,
            (0, strict),
            &mut issues,
            &mut structural,
        );
        dedup(&mut issues);
        issues.sort_by(|a, b| a.expression.cmp(&b.expression));
        if issues
            .iter()
            .any(|i| matches!(i.severity, crate::fhir::outcome::Severity::Error))
        {
            let kind = if structural {
                ErrorKind::Structure
            } else {
                ErrorKind::Invalid
            };
            return Err(Outcome::with_issues(kind, issues));
        }
        Ok(())
    }

    /// Checks that `resource` is an object naming a known resource type.
    fn check_resource_type(&self, resource: &Value, issues: &mut Vec<Issue>) -> Option<String> {
        let Some(obj) = resource.as_object() else {
            issues.push(Issue::error(
                "structure",
                "A resource must be a JSON object",
            ));
            return None;
        };
        match obj.get("resourceType").and_then(Value::as_str) {
            None => {
                issues.push(Issue::error("structure", "Missing resourceType").at("resourceType"));
                None
            }
            Some(t) => match self.defs.resource_type(t) {
                Some(t) => Some(t.to_string()),
                None => {
                    issues.push(
                        Issue::error("structure", format!("Unknown resource type '{t}'"))
                            .at("resourceType"),
                    );
                    None
                }
            },
        }
    }

    /// Validates one resource (top-level or nested) whose FHIRPath is `expr`.
    fn validate_resource(
        &self,
        resource: &Value,
        resource_type: &str,
        expr: &str,
        (nesting, strict): (usize, bool),
        issues: &mut Vec<Issue>,
        structural: &mut bool,
    ) {
        unreferenced_contained(resource, expr, issues);
        dot_segment_references(resource, expr, issues);
        match self.schema(resource_type) {
            Ok(schema) => {
                for err in schema.iter_errors(resource) {
                    let (issue, is_structural) =
                        self.schema_issue(resource_type, expr, resource, &err);
                    *structural |= is_structural;
                    issues.push(issue);
                }
            }
            Err(e) => issues.push(Issue::error("exception", format!("schema unusable: {e}"))),
        }
        let mut walker = Walker {
            defs: self.defs,
            validator: self,
            issues,
            structural,
            nesting,
            strict,
        };
        walker.object(resource, resource_type, expr, true);
    }

    /// Turns one JSON Schema error into an issue with a FHIRPath expression.
    fn schema_issue(
        &self,
        resource_type: &str,
        base_expr: &str,
        resource: &Value,
        err: &jsonschema::ValidationError<'_>,
    ) -> (Issue, bool) {
        let pointer = err.instance_path().as_str().to_string();
        let (expr, element_type) = self.fhirpath_of(resource_type, base_expr, resource, &pointer);
        match err.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let names: Vec<String> = unexpected.clone();
                let mut issue = Issue::error(
                    "structure",
                    format!("Unknown element(s): {}", names.join(", ")),
                );
                for n in &names {
                    issue = issue.at(format!("{expr}.{}", n.trim_start_matches('_')));
                }
                (issue, true)
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or("?");
                (
                    Issue::error("required", format!("Missing required element '{name}'"))
                        .at(format!("{expr}.{name}")),
                    false,
                )
            }
            ValidationErrorKind::Type { kind } => (
                Issue::error(
                    "structure",
                    format!("Wrong JSON type: expected {kind:?}")
                        .replace("Single(", "")
                        .replace(')', ""),
                )
                .at(expr),
                true,
            ),
            ValidationErrorKind::Enum { .. } => {
                let value = pointer_value(resource, &pointer)
                    .and_then(Value::as_str)
                    .unwrap_or("");
                (
                    Issue::error(
                        "code-invalid",
                        format!("'{}' is not a code of the required value set", clip(value)),
                    )
                    .at(expr),
                    false,
                )
            }
            ValidationErrorKind::Pattern { .. } | ValidationErrorKind::MinLength { .. } => (
                Issue::error(
                    "value",
                    format!(
                        "Invalid {} value",
                        element_type.as_deref().unwrap_or("primitive")
                    ),
                )
                .at(expr),
                false,
            ),
            ValidationErrorKind::Minimum { .. } | ValidationErrorKind::Maximum { .. } => (
                Issue::error(
                    "value",
                    format!(
                        "{} value out of range",
                        element_type.as_deref().unwrap_or("integer")
                    ),
                )
                .at(expr),
                false,
            ),
            ValidationErrorKind::MinItems { .. } => (
                Issue::error("structure", "Arrays must not be empty").at(expr),
                true,
            ),
            ValidationErrorKind::MaxItems { limit } => (
                Issue::error(
                    "structure",
                    format!("Too many repetitions (at most {limit} allowed)"),
                )
                .at(expr),
                false,
            ),
            ValidationErrorKind::Constant { .. } => (
                Issue::error("structure", "Wrong resourceType").at(expr),
                true,
            ),
            _ => (Issue::error("structure", "Invalid content").at(expr), true),
        }
    }

    /// The FHIRPath of the node at JSON `pointer` inside `resource`, and its FHIR type.
    fn fhirpath_of(
        &self,
        resource_type: &str,
        base_expr: &str,
        resource: &Value,
        pointer: &str,
    ) -> (String, Option<String>) {
        let mut expr = base_expr.to_string();
        let mut context: Option<String> = Some(resource_type.to_string());
        let mut node = Some(resource);
        let mut element_type = None;
        for raw in pointer.split('/').skip(1) {
            let key = raw.replace("~1", "/").replace("~0", "~");
            node = node.and_then(|n| match n {
                Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
                Value::Object(o) => o.get(&key),
                _ => None,
            });
            if let Ok(i) = key.parse::<usize>() {
                expr.push_str(&format!("[{i}]"));
                continue;
            }
            let plain = key.strip_prefix('_').unwrap_or(&key);
            let prop = context
                .as_deref()
                .and_then(|c| self.defs.property(c, plain));
            match prop {
                Some(p) => {
                    push_segment(&mut expr, &p);
                    element_type = Some(p.type_name.to_string());
                    context = if key.starts_with('_') {
                        Some("Element".to_string())
                    } else {
                        self.defs.context_of(&p).map(str::to_string)
                    };
                }
                None => {
                    expr.push('.');
                    expr.push_str(plain);
                    element_type = None;
                    context = None;
                }
            }
        }
        (expr, element_type)
    }
}

fn build_schema(resource_type: &str) -> Result<jsonschema::Validator, String> {
    let registry = DATATYPES.as_ref().map_err(Clone::clone)?;
    let file = Profiles::get(&format!("schemas/{resource_type}.schema.json"))
        .ok_or_else(|| format!("no schema file for {resource_type}"))?;
    let schema: Value = serde_json::from_slice(&file.data).map_err(|e| e.to_string())?;
    jsonschema::options()
        .with_registry(registry)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(&schema)
        .map_err(|e| e.to_string())
}

fn pointer_value<'a>(root: &'a Value, pointer: &str) -> Option<&'a Value> {
    root.pointer(pointer)
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

fn push_segment(expr: &mut String, p: &Property<'_>) {
    expr.push('.');
    if p.element.is_choice() {
        expr.push_str(p.element.stem());
        expr.push_str(&format!(".ofType({})", p.type_name));
    } else {
        expr.push_str(&p.element.name);
    }
}

fn dedup(issues: &mut Vec<Issue>) {
    let mut seen = std::collections::HashSet::new();
    issues.retain(|i| seen.insert((i.code, i.expression.clone(), i.diagnostics.clone())));
    // a pattern error and a min-length error on the same empty string say the same thing
    let mut seen_expr = std::collections::HashSet::new();
    issues.retain(|i| i.code != "value" || seen_expr.insert(i.expression.clone()));
}

/// The second pass: walks a resource alongside its definitions.
struct Walker<'a> {
    defs: &'a Definitions,
    validator: &'a Validator,
    issues: &'a mut Vec<Issue>,
    structural: &'a mut bool,
    nesting: usize,
    /// also the HL7 validator's further rules ($validate)
    strict: bool,
}

impl Walker<'_> {
    fn error(&mut self, code: &'static str, msg: impl Into<String>, expr: String) {
        self.issues.push(Issue::error(code, msg).at(expr));
    }

    /// Checks an object whose children are described by `context`.
    fn object(&mut self, value: &Value, context: &str, expr: &str, is_resource_root: bool) {
        let Some(obj) = value.as_object() else {
            return; // the schema reports the wrong type
        };
        if self.strict {
            crate::fhir::strict::object(
                self.defs,
                obj,
                context,
                expr,
                is_resource_root,
                self.issues,
            );
        }
        if obj.is_empty() || (obj.len() == 1 && obj.contains_key("id")) {
            self.error(
                "structure",
                "An element must have a value or children (ele-1)",
                expr.to_string(),
            );
        }
        for (key, child) in obj {
            if is_resource_root && key == "resourceType" {
                continue;
            }
            if let Some(plain) = key.strip_prefix('_') {
                if let Some(p) = self.defs.property(context, plain)
                    && self.defs.is_primitive(p.type_name)
                {
                    self.primitive_extensions(obj, plain, child, &p, expr);
                }
                continue;
            }
            let Some(p) = self.defs.property(context, key) else {
                continue; // unknown: reported by the schema
            };
            let mut child_expr = expr.to_string();
            push_segment(&mut child_expr, &p);
            match child {
                Value::Array(items) if p.element.is_array() => {
                    for (i, item) in items.iter().enumerate() {
                        let item_expr = format!("{child_expr}[{i}]");
                        if item.is_null() {
                            self.null_item(obj, key, i, &item_expr);
                        } else {
                            self.value(item, &p, &item_expr);
                        }
                    }
                }
                v => self.value(v, &p, &child_expr),
            }
        }
        self.required_and_choices(obj, context, expr);
        self.required_codeable_concepts(obj, context, expr);
    }

    /// A null in a primitive array is allowed only opposite a non-null `_name` item.
    fn null_item(&mut self, obj: &serde_json::Map<String, Value>, key: &str, i: usize, expr: &str) {
        let ext = obj
            .get(&format!("_{key}"))
            .and_then(Value::as_array)
            .and_then(|a| a.get(i));
        if !matches!(ext, Some(Value::Object(_))) {
            self.error(
                "structure",
                "null is only allowed where the matching _ array item has content",
                expr.to_string(),
            );
            *self.structural = true;
        }
    }

    fn value(&mut self, v: &Value, p: &Property<'_>, expr: &str) {
        if self.defs.is_primitive(p.type_name) {
            self.primitive(v, p.type_name, expr);
        } else if p.type_name == "Resource" && p.element.content_ref.is_none() {
            self.nested_resource(v, p, expr);
        } else if let Some(ctx) = self.defs.context_of(p) {
            let ctx = ctx.to_string();
            self.object(v, &ctx, expr, false);
        }
    }

    fn primitive(&mut self, v: &Value, type_name: &str, expr: &str) {
        let Some(prim) = self.defs.primitives.get(type_name) else {
            return;
        };
        match (prim.json, v) {
            (JsonKind::Number | JsonKind::Integer, Value::Number(n)) => {
                // arbitrary_precision keeps the text exactly as sent
                let text = n.to_string();
                if let Some(re) = &prim.regex
                    && !re.is_match(&text)
                {
                    self.error(
                        "value",
                        format!("Invalid {type_name} value '{}'", clip(&text)),
                        expr.to_string(),
                    );
                }
            }
            (JsonKind::String, Value::String(s)) => {
                if matches!(type_name, "date" | "dateTime" | "instant") && !is_calendar_valid(s) {
                    self.error(
                        "value",
                        format!("'{}' is not a valid calendar date", clip(s)),
                        expr.to_string(),
                    );
                }
                if type_name == "xhtml" && !s.trim_start().starts_with("<div") {
                    self.error(
                        "value",
                        "Narrative div must be an XHTML <div> element",
                        expr.to_string(),
                    );
                } else if self.strict && type_name == "xhtml" {
                    crate::fhir::strict::xhtml(s, expr, self.issues);
                }
                if self.strict && type_name == "markdown" {
                    crate::fhir::strict::markdown(s, expr, self.issues);
                }
            }
            _ => {}
        }
    }

    /// `_name` for a primitive: Element content, aligned with the value array.
    fn primitive_extensions(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        plain: &str,
        ext: &Value,
        p: &Property<'_>,
        expr: &str,
    ) {
        let mut base = expr.to_string();
        push_segment(&mut base, p);
        match ext {
            Value::Array(items) => {
                if let Some(values) = obj.get(plain).and_then(Value::as_array)
                    && values.len() != items.len()
                {
                    self.error(
                        "structure",
                        format!("_{plain} must have as many items as {plain}"),
                        base.clone(),
                    );
                    *self.structural = true;
                }
                for (i, item) in items.iter().enumerate() {
                    if !item.is_null() {
                        self.object(item, "Element", &format!("{base}[{i}]"), false);
                    } else if obj
                        .get(plain)
                        .and_then(Value::as_array)
                        .and_then(|a| a.get(i))
                        .is_none_or(Value::is_null)
                    {
                        self.error(
                            "structure",
                            "A primitive array item needs a value or an extension",
                            format!("{base}[{i}]"),
                        );
                        *self.structural = true;
                    }
                }
            }
            v => self.object(v, "Element", &base, false),
        }
    }

    fn nested_resource(&mut self, v: &Value, p: &Property<'_>, expr: &str) {
        if self.nesting >= MAX_RESOURCE_NESTING {
            self.error(
                "too-costly",
                "Resources nested too deeply",
                expr.to_string(),
            );
            return;
        }
        let mut local = Vec::new();
        let Some(rt) = self.validator.check_resource_type(v, &mut local) else {
            for mut i in local {
                i.expression = vec![format!("{expr}.resourceType")];
                self.issues.push(i);
            }
            *self.structural = true;
            return;
        };
        let is_contained = p.element.name == "contained";
        if is_contained {
            self.contained_rules(v, expr);
        }
        self.validator.validate_resource(
            v,
            &rt,
            expr,
            (self.nesting + 1, self.strict),
            self.issues,
            self.structural,
        );
    }

    /// dom-2 (no nested contained) and dom-4 (no versionId/lastUpdated) for a contained resource.
    fn contained_rules(&mut self, v: &Value, expr: &str) {
        if v.get("contained").is_some() {
            self.issues.push(
                Issue::error(
                    "invariant",
                    "dom-2: a contained resource must not contain resources",
                )
                .at(format!("{expr}.contained")),
            );
        }
        let meta = v.get("meta");
        for key in ["versionId", "lastUpdated"] {
            if meta.and_then(|m| m.get(key)).is_some() {
                self.issues.push(
                    Issue::error(
                        "invariant",
                        format!("dom-4: a contained resource must not have meta.{key}"),
                    )
                    .at(format!("{expr}.meta.{key}")),
                );
            }
        }
    }

    /// Minimum cardinality of primitives (value or `_name`) and choices, and one choice variant.
    fn required_and_choices(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        context: &str,
        expr: &str,
    ) {
        let children: Vec<_> = self.defs.children(context).collect();
        for e in children {
            if e.is_choice() {
                let stem = e.stem();
                let present: Vec<&String> = obj
                    .keys()
                    .filter(|k| {
                        let k = k.strip_prefix('_').unwrap_or(k);
                        k.len() > stem.len()
                            && k.starts_with(stem)
                            && k[stem.len()..].starts_with(|c: char| c.is_ascii_uppercase())
                            && self.defs.property(context, k).is_some()
                    })
                    .map(|k| k.strip_prefix('_').map(|_| k).unwrap_or(k))
                    .collect();
                let mut variants: Vec<&str> = present
                    .iter()
                    .map(|k| k.strip_prefix('_').unwrap_or(k))
                    .collect();
                variants.sort();
                variants.dedup();
                if variants.len() > 1 {
                    self.error(
                        "structure",
                        format!(
                            "Only one of {} may be present ({} found)",
                            e.name,
                            variants.join(", ")
                        ),
                        format!("{expr}.{stem}"),
                    );
                }
                if e.min >= 1 && variants.is_empty() {
                    self.error(
                        "required",
                        format!("Missing required element '{}'", e.name),
                        format!("{expr}.{stem}"),
                    );
                }
            } else if e.min >= 1
                && e.types.first().is_some_and(|t| self.defs.is_primitive(t))
                && e.content_ref.is_none()
                && !obj.contains_key(&e.name)
                && !obj.contains_key(&format!("_{}", e.name))
            {
                self.error(
                    "required",
                    format!("Missing required element '{}'", e.name),
                    format!("{expr}.{}", e.name),
                );
            }
        }
    }

    /// Required bindings on CodeableConcept: some coding must come from the value set.
    fn required_codeable_concepts(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        context: &str,
        expr: &str,
    ) {
        let bound: Vec<_> = self
            .defs
            .children(context)
            .filter(|e| e.binding.is_some() && e.types.iter().any(|t| t == "CodeableConcept"))
            .collect();
        for e in bound {
            let Some(vs) = e.binding.as_deref().and_then(|u| self.defs.value_set(u)) else {
                continue;
            };
            let Some(codes) = &vs.codes else { continue };
            let concepts: Vec<&Value> = match obj.get(&e.name) {
                Some(Value::Array(a)) => a.iter().collect(),
                Some(v) => vec![v],
                None => continue,
            };
            for (i, cc) in concepts.iter().enumerate() {
                let ok = cc
                    .get("coding")
                    .and_then(Value::as_array)
                    .is_some_and(|codings| {
                        codings.iter().any(|c| {
                            let system_ok = match c.get("system").and_then(Value::as_str) {
                                Some(s) => {
                                    vs.systems.is_empty() || vs.systems.iter().any(|x| x == s)
                                }
                                None => true,
                            };
                            system_ok
                                && c.get("code")
                                    .and_then(Value::as_str)
                                    .is_some_and(|code| codes.contains(code))
                        })
                    });
                if !ok {
                    let at = if e.is_array() {
                        format!("{expr}.{}[{i}]", e.name)
                    } else {
                        format!("{expr}.{}", e.name)
                    };
                    self.error("code-invalid", "No coding from the required value set", at);
                }
            }
        }
    }
}

/// References with `.` or `..` path segments (`Patient/../x`): never a FHIR reference, and
/// a way to make one id mean another to a client that resolves paths.
fn dot_segment_references(v: &Value, expr: &str, issues: &mut Vec<Issue>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "contained" {
                    continue; // validated as resources of their own
                }
                let here = format!("{expr}.{k}");
                if k == "reference"
                    && let Value::String(r) = x
                {
                    let path = r.split(['?', '#']).next().unwrap_or("");
                    if path.split('/').any(|seg| seg == "." || seg == "..") {
                        issues.push(
                            Issue::error(
                                "invariant",
                                "A reference must not have '.' or '..' path segments",
                            )
                            .at(here.clone()),
                        );
                    }
                }
                dot_segment_references(x, &here, issues);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                dot_segment_references(x, &format!("{expr}[{i}]"), issues);
            }
        }
        _ => {}
    }
}

/// dom-3: a contained resource is referred to from elsewhere in its container (`#id` as a
/// reference, canonical or URI anywhere), or itself refers to the container (`#`).
fn unreferenced_contained(resource: &Value, expr: &str, issues: &mut Vec<Issue>) {
    let Some(contained) = resource.get("contained").and_then(Value::as_array) else {
        return;
    };
    fn local_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) if s.starts_with('#') => out.push(s.clone()),
            // a narrative's `img src="#id"` and `a href="#id"` point at contained resources too
            Value::String(s) if s.starts_with("<div") => {
                out.extend(crate::fhir::narrative::local_links(s))
            }
            Value::Array(a) => a.iter().for_each(|x| local_refs(x, out)),
            Value::Object(o) => o.values().for_each(|x| local_refs(x, out)),
            _ => {}
        }
    }
    let mut refs = Vec::new();
    local_refs(resource, &mut refs);
    for (i, c) in contained.iter().enumerate() {
        let Some(id) = c.get("id").and_then(Value::as_str) else {
            continue;
        };
        let wanted = format!("#{id}");
        let mut own = Vec::new();
        local_refs(c, &mut own);
        if !refs.contains(&wanted) && !own.iter().any(|r| r == "#") {
            issues.push(
                Issue::error(
                    "invariant",
                    format!(
                        "dom-3: the contained resource '{id}' is not referenced from the \
                         resource (and does not refer to it)"
                    ),
                )
                .at(format!("{expr}.contained[{i}]")),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `serve` builds a type's validator on its first write: every one must build.
    #[test]
    fn every_resource_types_validator_builds() {
        assert_eq!(Validator::r4().warm_up(), Ok(()));
    }

    fn issues(v: Value) -> (ErrorKind, Vec<(String, String)>) {
        let o = Validator::r4().validate(&v).expect_err("should be invalid");
        (
            o.kind,
            o.issues
                .iter()
                .map(|i| (i.code.to_string(), i.expression.join("|")))
                .collect(),
        )
    }

    fn check(v: Value, kind: ErrorKind, expected: &[(&str, &str)]) {
        let (k, got) = issues(v);
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, expected);
        assert_eq!(k, kind);
    }

    #[test]
    fn valid_resources_pass() {
        let v = Validator::r4();
        v.validate(&json!({"resourceType": "Patient", "id": "a", "gender": "female",
            "name": [{"family": "X", "given": ["A", null], "_given": [null, {"extension": [{"url": "http://x", "valueString": "y"}]}]}],
            "birthDate": "2000-02-29",
            "contained": [{"resourceType": "Organization", "id": "o", "name": "Org"}],
            "managingOrganization": {"reference": "#o"}}))
            .unwrap();
        v.validate(&json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "x"}, "valueQuantity": {"value": 135.50, "unit": "mg"}}))
            .unwrap();
        v.validate(&json!({"resourceType": "Patient", "_birthDate": {"extension": [{"url": "http://x", "valueBoolean": true}]}}))
            .unwrap();
    }

    #[test]
    fn structure_errors_are_400() {
        check(
            json!({"resourceType": "Patient", "foo": 1, "name": [{"famly": "x"}]}),
            ErrorKind::Structure,
            &[
                ("structure", "Patient.foo"),
                ("structure", "Patient.name[0].famly"),
            ],
        );
        check(
            json!({"resourceType": "Patient", "name": {"family": "x"}}),
            ErrorKind::Structure,
            &[("structure", "Patient.name")],
        );
        check(
            json!({"resourceType": "Nope"}),
            ErrorKind::Structure,
            &[("structure", "resourceType")],
        );
        check(json!([1]), ErrorKind::Structure, &[("structure", "")]);
    }

    #[test]
    fn content_errors_are_422_with_every_issue() {
        check(
            json!({"resourceType": "Patient", "gender": "mail", "birthDate": "2023-02-30",
                   "contact": [{"gender": "x"}], "multipleBirthInteger": 1.0}),
            ErrorKind::Invalid,
            &[
                ("value", "Patient.birthDate"),
                ("code-invalid", "Patient.contact[0].gender"),
                ("code-invalid", "Patient.gender"),
                ("value", "Patient.multipleBirth.ofType(integer)"),
            ],
        );
        check(
            json!({"resourceType": "Observation", "code": {"text": "x"},
                   "valueString": "a", "valueBoolean": true}),
            ErrorKind::Invalid,
            &[
                ("required", "Observation.status"),
                ("structure", "Observation.value"),
            ],
        );
        check(
            json!({"resourceType": "Patient", "link": [{"type": "seealso"}]}),
            ErrorKind::Invalid,
            &[("required", "Patient.link[0].other")],
        );
    }

    #[test]
    fn contained_resources_are_validated_as_their_type() {
        check(
            json!({"resourceType": "Patient", "contained": [
                {"resourceType": "Organization", "meta": {"versionId": "1"}, "active": "yes"}]}),
            ErrorKind::Structure,
            &[
                ("structure", "Patient.contained[0].active"),
                ("invariant", "Patient.contained[0].meta.versionId"),
            ],
        );
    }

    #[test]
    fn numbers_are_checked_on_their_text() {
        let ok: Value = serde_json::from_str(
            r#"{"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "valueQuantity": {"value": 135.50, "unit": "mg"}}"#,
        )
        .unwrap();
        Validator::r4().validate(&ok).unwrap();
        let bad: Value = serde_json::from_str(
            r#"{"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "component": [{"code": {"text": "y"}, "valueInteger": 2.0}]}"#,
        )
        .unwrap();
        let o = Validator::r4().validate(&bad).unwrap_err();
        assert_eq!(o.kind, ErrorKind::Invalid);
        assert_eq!(
            o.issues[0].expression,
            vec!["Observation.component[0].value.ofType(integer)".to_string()]
        );
    }
}
