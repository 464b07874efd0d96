//! The HL7 validator's rules beyond what a write must pass, applied by `$validate` only
//! ([`crate::fhir::validation::Validator::validate_strict`]): narrative (txt-1, txt-2,
//! hyperlink schemes), markdown without HTML, Attachment `size` against `data`, element id
//! length, `Coding.system` that is a value set, codes unknown to R4's complete code systems,
//! and the Bundle rules (one `self` link, RESTful `fullUrl`s that match their resource,
//! document stylesheets and reachability). Writes keep the lenient rules because real
//! systems send data like this and refusing it would lose records; `$validate` says what the
//! reference validator says.

use crate::fhir::definitions::Definitions;
use crate::fhir::narrative;
use crate::fhir::outcome::Issue;
use serde_json::{Map, Value};

/// Element ids longer than this are refused (the `id` datatype's limit; an element id is
/// what a `#id` reference inside the resource names).
pub const MAX_ELEMENT_ID: usize = 64;

fn clip(s: &str) -> String {
    s.chars().take(100).collect()
}

/// txt-1, txt-2 and hyperlink schemes for a `Narrative.div` at `expr`.
pub fn xhtml(div: &str, expr: &str, issues: &mut Vec<Issue>) {
    let f = narrative::check(div);
    for m in f.invalid {
        issues.push(Issue::error("invariant", m).at(expr));
    }
    for m in f.bad_links {
        issues.push(Issue::error("invalid", m).at(expr));
    }
    if f.empty {
        issues.push(
            Issue::error(
                "invariant",
                "txt-2: the narrative must have some non-whitespace content",
            )
            .at(expr),
        );
    }
}

/// Markdown must not embed HTML tags (renderers show them as text or drop them).
pub fn markdown(text: &str, expr: &str, issues: &mut Vec<Issue>) {
    let bytes = text.as_bytes();
    let tag = bytes.windows(2).position(|w| {
        w.first() == Some(&b'<')
            && w.get(1)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'/' || *c == b'!')
    });
    if let Some(at) = tag {
        let shown: String = text.get(at..).unwrap_or("").chars().take(20).collect();
        issues.push(
            Issue::error(
                "invalid",
                format!("The markdown contains what looks like an HTML tag at '{shown}'"),
            )
            .at(expr),
        );
    }
}

/// Rules for one object whose definitions context is `context`.
pub fn object(
    defs: &Definitions,
    obj: &Map<String, Value>,
    context: &str,
    expr: &str,
    is_resource_root: bool,
    issues: &mut Vec<Issue>,
) {
    if !is_resource_root
        && let Some(Value::String(id)) = obj.get("id")
        && id.chars().count() > MAX_ELEMENT_ID
    {
        issues.push(
            Issue::error(
                "value",
                format!(
                    "An element id is at most {MAX_ELEMENT_ID} characters (this one has {})",
                    id.chars().count()
                ),
            )
            .at(format!("{expr}.id")),
        );
    }
    match context {
        "Attachment" => attachment(obj, expr, issues),
        "Coding" => coding(defs, obj, expr, issues),
        "Bundle" => bundle(obj, expr, issues),
        "Period" => period(obj, expr, issues),
        _ => {}
    }
}

/// per-1: a Period's start is not after its end (compared at the precision both have).
fn period(obj: &Map<String, Value>, expr: &str, issues: &mut Vec<Issue>) {
    let (Some(Value::String(start)), Some(Value::String(end))) = (obj.get("start"), obj.get("end"))
    else {
        return;
    };
    let after = match (
        start.parse::<jiff::Timestamp>(),
        end.parse::<jiff::Timestamp>(),
    ) {
        (Ok(s), Ok(e)) => s > e,
        _ => {
            // dates, or dateTimes without a zone: compared at the precision both have; equal
            // there but of different precisions is indeterminate in FHIRPath, and an empty
            // result fails the invariant
            let n = start.len().min(end.len()).min(19);
            let (s, e) = (start.get(..n), end.get(..n));
            s > e || (s == e && start.len() != end.len())
        }
    };
    if after {
        issues.push(
            Issue::error(
                "invariant",
                "per-1: a Period's start must not be after its end",
            )
            .at(expr),
        );
    }
}

/// Where a definition is not needed: R4's own extensions and HL7's published ones.
fn is_hl7_extension(url: &str) -> bool {
    url.starts_with("http://hl7.org/fhir/StructureDefinition/")
        || url.starts_with("http://hl7.org/fhir/")
        || url.starts_with("http://terminology.hl7.org/")
}

/// The `extension` and `modifierExtension` URLs in a resource (nested and contained ones
/// too) that are not HL7's: (FHIRPath of the extension, url). The caller checks that the
/// server holds a StructureDefinition for each.
pub fn foreign_extensions(resource: &Value, expr: &str) -> Vec<(String, String)> {
    fn walk(v: &Value, expr: &str, depth: usize, out: &mut Vec<(String, String)>) {
        if depth > 64 {
            return;
        }
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    let here = format!("{expr}.{}", k.trim_start_matches('_'));
                    if (k == "extension" || k == "modifierExtension")
                        && let Value::Array(items) = x
                    {
                        for (i, e) in items.iter().enumerate() {
                            // a complex extension's parts have relative urls, defined by
                            // their parent
                            if let Some(Value::String(url)) = e.get("url")
                                && url.contains(':')
                                && !is_hl7_extension(url)
                            {
                                out.push((format!("{here}[{i}]"), url.clone()));
                            }
                        }
                    }
                    walk(x, &here, depth + 1, out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{expr}[{i}]"), depth + 1, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(resource, expr, 0, &mut out);
    out
}

/// `(FHIRPath, system, code)` of every coded value (an object with a `system` and a `code`)
/// in a resource, for checking against code systems stored on the server.
pub fn codings(resource: &Value, expr: &str) -> Vec<(String, String, String)> {
    fn walk(v: &Value, expr: &str, depth: usize, out: &mut Vec<(String, String, String)>) {
        if depth > 64 {
            return;
        }
        match v {
            Value::Object(o) => {
                if let (Some(Value::String(system)), Some(Value::String(code))) =
                    (o.get("system"), o.get("code"))
                {
                    out.push((format!("{expr}.code"), system.clone(), code.clone()));
                }
                for (k, x) in o {
                    if !k.starts_with('_') {
                        walk(x, &format!("{expr}.{k}"), depth + 1, out);
                    }
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, &format!("{expr}[{i}]"), depth + 1, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(resource, expr, 0, &mut out);
    out
}

/// Whether a CodeSystem resource with complete content defines `code` (at any depth).
pub fn defines_code(code_system: &Value, code: &str) -> bool {
    fn find(concepts: Option<&Value>, code: &str, depth: usize) -> bool {
        depth < 64
            && concepts
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| {
                    c.get("code").and_then(Value::as_str) == Some(code)
                        || find(c.get("concept"), code, depth + 1)
                })
    }
    find(code_system.get("concept"), code, 0)
}

fn attachment(obj: &Map<String, Value>, expr: &str, issues: &mut Vec<Issue>) {
    use base64::Engine;
    let (Some(Value::String(data)), Some(size)) = (obj.get("data"), obj.get("size")) else {
        return;
    };
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(compact) else {
        return; // the base64Binary pattern reports it
    };
    let declared = size.as_u64().or_else(|| size.to_string().parse().ok());
    if declared != Some(bytes.len() as u64) {
        issues.push(
            Issue::error(
                "value",
                format!(
                    "Attachment.size is {size} but the data is {} bytes",
                    bytes.len()
                ),
            )
            .at(format!("{expr}.size")),
        );
    }
}

fn coding(defs: &Definitions, obj: &Map<String, Value>, expr: &str, issues: &mut Vec<Issue>) {
    let Some(Value::String(system)) = obj.get("system") else {
        return;
    };
    if defs.is_value_set_url(system) {
        issues.push(
            Issue::error(
                "invalid",
                format!(
                    "{} is a value set, not a code system: Coding.system names a code system",
                    clip(system)
                ),
            )
            .at(format!("{expr}.system")),
        );
        return;
    }
    if let (Some(codes), Some(Value::String(code))) = (defs.code_system(system), obj.get("code"))
        && !codes.contains(code)
    {
        issues.push(
            Issue::error(
                "code-invalid",
                format!(
                    "Unknown code '{}' in the code system {}",
                    clip(code),
                    clip(system)
                ),
            )
            .at(format!("{expr}.code")),
        );
    }
}

/// `base/Type/id` of a RESTful absolute URL (`http(s)://…/Type/id`): (base, type, id).
fn restful(url: &str) -> Option<(&str, &str, &str)> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return None;
    }
    let (rest, id) = url.rsplit_once('/')?;
    let (base, rt) = rest.rsplit_once('/')?;
    Definitions::r4().resource_type(rt)?;
    Some((base, rt, id))
}

/// The entry a reference from the entry with `from` as fullUrl resolves to, per R4's rules
/// for resolving references in Bundles: absolute URLs (and `urn:`) match a fullUrl; a relative
/// `Type/id` is read against the RESTful base of the referring entry's fullUrl.
pub fn resolve_in_bundle(entries: &[Value], from: Option<&str>, reference: &str) -> Option<usize> {
    let full = |e: &Value| e.get("fullUrl").and_then(Value::as_str).map(str::to_string);
    let target = if reference.contains("://") || reference.starts_with("urn:") {
        reference.to_string()
    } else {
        let mut parts = reference.split('/');
        let (rt, id) = (parts.next()?, parts.next()?);
        match from.and_then(restful) {
            Some((base, _, _)) => format!("{base}/{rt}/{id}"),
            // no RESTful base: the HL7 validator matches `Type/x` to the entry `urn:uuid:x`
            None => format!("urn:uuid:{id}"),
        }
    };
    let target = match target.split_once("/_history/") {
        Some((t, _)) => t.to_string(),
        None => target,
    };
    entries
        .iter()
        .position(|e| full(e).as_deref() == Some(target.as_str()))
}

fn bundle(obj: &Map<String, Value>, expr: &str, issues: &mut Vec<Issue>) {
    let links = obj
        .get("link")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let relation = |l: &Value| {
        l.get("relation")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if links
        .iter()
        .filter(|l| relation(l).as_deref() == Some("self"))
        .count()
        > 1
    {
        issues.push(
            Issue::error("invariant", "A Bundle has at most one 'self' link")
                .at(format!("{expr}.link")),
        );
    }
    let entries = obj
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, e) in entries.iter().enumerate() {
        let (Some(url), Some(r)) = (e.get("fullUrl").and_then(Value::as_str), e.get("resource"))
        else {
            continue;
        };
        let Some((_, rt, id)) = restful(url) else {
            continue;
        };
        let actual_rt = r.get("resourceType").and_then(Value::as_str).unwrap_or("");
        let actual_id = r.get("id").and_then(Value::as_str).unwrap_or("");
        if rt != actual_rt || id != actual_id {
            issues.push(
                Issue::error(
                    "invalid",
                    format!(
                        "The fullUrl '{}' looks like a RESTful server URL, so it must end with \
                         the resource's type and id ({actual_rt}/{actual_id})",
                        clip(url)
                    ),
                )
                .at(format!("{expr}.entry[{i}].fullUrl")),
            );
        }
    }
    let is_document = obj.get("type").and_then(Value::as_str) == Some("document");
    entry_references(entries, expr, is_document, issues);
    if is_document {
        document(entries, links, expr, issues);
    }
}

/// References between entries: one that resolves names the type of the entry it reaches;
/// in a document (which must be self-contained) a relative or `urn:` reference resolves.
fn entry_references(entries: &[Value], expr: &str, is_document: bool, issues: &mut Vec<Issue>) {
    for (i, entry) in entries.iter().enumerate() {
        let from = entry.get("fullUrl").and_then(Value::as_str);
        let Some(resource) = entry.get("resource") else {
            continue;
        };
        let rt = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("Resource");
        for (at, reference) in crate::fhir::references::collect(resource, rt) {
            let at = format!(
                "{expr}.entry[{i}].resource{}",
                at.strip_prefix(rt).unwrap_or("")
            );
            let relative = !reference.contains("://") && !reference.starts_with('#');
            match resolve_in_bundle(entries, from, &reference) {
                Some(t) => {
                    let named = if reference.starts_with("urn:") {
                        None
                    } else {
                        let path = reference.split("/_history/").next().unwrap_or("");
                        path.rsplit('/').nth(1)
                    };
                    let found = entries
                        .get(t)
                        .and_then(|e| e.get("resource"))
                        .and_then(|r| r.get("resourceType"))
                        .and_then(Value::as_str);
                    if let (Some(named), Some(found)) = (named, found)
                        && named != found
                    {
                        issues.push(
                            Issue::error(
                                "invalid",
                                format!(
                                    "The reference {} reaches entry {t}, which is a {found}",
                                    clip(&reference)
                                ),
                            )
                            .at(at),
                        );
                    }
                }
                None if is_document && relative => issues.push(
                    Issue::error(
                        "not-found",
                        format!(
                            "The reference {} is not an entry of this document (a document \
                             is self-contained; relative references resolve against the \
                             entries' fullUrls)",
                            clip(&reference)
                        ),
                    )
                    .at(at),
                ),
                None => {}
            }
        }
    }
}

/// A document's stylesheet links resolve inside it, and every entry is reachable from the
/// Composition (entry 0) by following references (or is a stylesheet).
fn document(entries: &[Value], links: &[Value], expr: &str, issues: &mut Vec<Issue>) {
    let from = entries
        .first()
        .and_then(|e| e.get("fullUrl"))
        .and_then(Value::as_str);
    let mut reached = vec![false; entries.len()];
    for (i, l) in links.iter().enumerate() {
        if l.get("relation").and_then(Value::as_str) != Some("stylesheet") {
            continue;
        }
        let Some(url) = l.get("url").and_then(Value::as_str) else {
            continue;
        };
        if url.contains("://") {
            continue; // outside the document
        }
        match resolve_in_bundle(entries, from, url) {
            Some(t) => {
                if let Some(r) = reached.get_mut(t) {
                    *r = true;
                }
            }
            None => issues.push(
                Issue::error(
                    "not-found",
                    format!(
                        "The stylesheet {} is not an entry of this document",
                        clip(url)
                    ),
                )
                .at(format!("{expr}.link[{i}].url")),
            ),
        }
    }
    if entries.is_empty() {
        return;
    }
    let mut todo = vec![0usize];
    while let Some(i) = todo.pop() {
        if reached.get(i) == Some(&true) && i != 0 {
            continue;
        }
        if let Some(r) = reached.get_mut(i) {
            *r = true;
        }
        let Some(entry) = entries.get(i) else {
            continue;
        };
        let from = entry.get("fullUrl").and_then(Value::as_str);
        let Some(resource) = entry.get("resource") else {
            continue;
        };
        let rt = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("Resource");
        for (_, reference) in crate::fhir::references::collect(resource, rt) {
            if let Some(t) = resolve_in_bundle(entries, from, &reference)
                && reached.get(t) == Some(&false)
            {
                todo.push(t);
            }
        }
    }
    for (i, r) in reached.iter().enumerate() {
        if !r {
            let url = entries
                .get(i)
                .and_then(|e| e.get("fullUrl"))
                .and_then(Value::as_str)
                .unwrap_or("(no fullUrl)");
            issues.push(
                Issue::error(
                    "invalid",
                    format!(
                        "The entry {} is not reachable by following references from the \
                         Composition",
                        clip(url)
                    ),
                )
                .at(format!("{expr}.entry[{i}]")),
            );
        }
    }
}
