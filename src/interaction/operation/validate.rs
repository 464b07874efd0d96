//! `$validate` (`POST [base]/[type]/$validate`, `POST|GET [base]/[type]/[id]/$validate`):
//! the write validator without the write. Modes create, update and delete (would the delete be
//! allowed by referential integrity?), and `profile` (the base profile only). Always 200 with
//! an OperationOutcome listing every issue, unless the request itself is malformed.

use super::OperationRequest;
use crate::fhir::outcome::{ErrorKind, Issue, Outcome, Severity, operation_outcome};
use crate::fhir::references::parse_local;
use crate::interaction::guard::Src;
use crate::interaction::{Body, Context, FhirResponse, Status, resource_type};
use serde_json::Value;

pub(super) async fn validate(
    ctx: &Context,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    let rt = resource_type(ctx, op.resource_type.as_deref().unwrap_or(""))?;
    // validating is no access to stored data beyond what a write of the type would do
    if ctx.guard.require(crate::auth::Perm::Create, rt).is_err() {
        ctx.guard.require(crate::auth::Perm::Update, rt)?;
    }
    // A Parameters body is the operation's input wrapper when it carries a `resource`
    // parameter or when the type validated is not Parameters; otherwise (Parameters/$validate
    // with a Parameters body and no `resource`) it is the resource to validate, and the
    // operation's own parameters come from the query only.
    let body_is_parameters = op
        .body
        .as_ref()
        .and_then(|b| b.get("resourceType"))
        .and_then(Value::as_str)
        == Some("Parameters");
    let wrapper = body_is_parameters
        && (rt != "Parameters"
            || op
                .body
                .as_ref()
                .and_then(|b| b.get("parameter"))
                .and_then(Value::as_array)
                .is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p.get("name").and_then(Value::as_str) == Some("resource"))
                }));
    let param = |name: &str| {
        if wrapper || !body_is_parameters {
            op.param(name)
        } else {
            op.query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Value::String(v.clone()))
        }
    };
    // existence of referenced resources is checked only when a mode asks for it (the
    // validator's default judges references by their form)
    let (mode, explicit_mode) = match param("mode") {
        None => ("create".to_string(), false),
        Some(Value::String(m)) => (m, true),
        Some(_) => return Err(Outcome::bad_request("mode must be a code")),
    };
    let mut issues = Vec::new();
    if let Some(profile) = param("profile") {
        let base_profile = format!("http://hl7.org/fhir/StructureDefinition/{rt}");
        if profile.as_str() != Some(base_profile.as_str()) {
            issues.push(Issue::error(
                "not-supported",
                format!("Only the base profile {base_profile} can be validated against"),
            ));
        }
    }
    let resource = match (&op.body, param("resource")) {
        (_, Some(r @ Value::Object(_))) if wrapper => Some(r),
        (Some(b), _) if !wrapper => Some(b.clone()),
        _ => None,
    };
    match mode.as_str() {
        "create" | "update" => {
            let Some(resource) = resource else {
                return Err(Outcome::bad_request(
                    "$validate needs a resource to validate",
                ));
            };
            if resource.get("resourceType").and_then(Value::as_str) != Some(rt) {
                issues.push(
                    Issue::error("invalid", format!("The resource is not a {rt}"))
                        .at("resourceType"),
                );
            }
            if mode == "update" {
                let body_id = resource.get("id").and_then(Value::as_str);
                match (body_id, op.id.as_deref()) {
                    (None, _) => issues.push(
                        Issue::error("required", "An update needs the resource id")
                            .at(format!("{rt}.id")),
                    ),
                    (Some(b), Some(url)) if b != url => issues.push(
                        Issue::error("invalid", "The resource id does not match the URL")
                            .at(format!("{rt}.id")),
                    ),
                    _ => {}
                }
            }
            // the id is checked in every mode (a create ignores it, but an invalid one makes
            // the resource invalid)
            let checked = &resource;
            if let Err(o) = ctx.validator.validate_strict(checked) {
                issues.extend(o.issues);
            }
            issues.extend(held_definitions(ctx, checked, rt).await?);
            if mode == "update"
                && let Some(id) = op.id.as_deref().or(body_id_of(&resource))
                && crate::fhir::types::is_valid_id(id)
            {
                // validating an update of what the token may not see answers as for an
                // unknown resource
                ctx.guard
                    .check_stored(ctx, crate::auth::Perm::Update, rt, id)
                    .await?;
            }
            if ctx.integrity && explicit_mode {
                let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
                for (expr, reference) in crate::fhir::references::collect(checked, rt) {
                    let Some(l) = parse_local(&reference, None) else {
                        continue;
                    };
                    if resolved_in_bundle(checked, &expr, &reference) {
                        continue;
                    }
                    let key = vec![(l.resource_type.clone(), l.id.clone())];
                    let live = ctx
                        .store
                        .read(&l.resource_type, &l.id)
                        .await?
                        .is_some_and(|v| !v.deleted)
                        && (ctx.guard.is_open()
                            || !ctx
                                .guard
                                .readable(&mut Src::Store(ctx.store.as_ref()), &registry, &key)
                                .await?
                                .is_empty());
                    if !live {
                        issues.push(
                            Issue::error(
                                "not-found",
                                format!("The reference {reference} does not resolve"),
                            )
                            .at(expr),
                        );
                    }
                }
            }
        }
        "delete" => {
            let Some(id) = op.id.as_deref() else {
                return Err(Outcome::bad_request(
                    "mode=delete needs an instance ($validate on Type/id)",
                ));
            };
            let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
            let mut src = Src::Store(ctx.store.as_ref());
            let current = ctx.store.read(rt, id).await?;
            let visible = current.is_none()
                || ctx
                    .guard
                    .current_visible(&mut src, &registry, crate::auth::Perm::Delete, rt, id)
                    .await?;
            match current {
                Some(v) if !v.deleted && visible => {
                    if ctx.integrity {
                        let referrers: Vec<(String, String)> = ctx
                            .store
                            .referrers(rt, id, 100)
                            .await?
                            .into_iter()
                            .filter(|(t, rid)| !(t == rt && rid == id))
                            .collect();
                        // referrers the token may not read are neither named nor counted
                        let readable = ctx.guard.readable(&mut src, &registry, &referrers).await?;
                        let open = ctx.guard.is_open();
                        for (t, rid) in referrers
                            .iter()
                            .filter(|k| open || readable.contains(*k))
                            .take(20)
                        {
                            issues.push(Issue::error(
                                "conflict",
                                format!(
                                    "{t}/{rid} references {rt}/{id}: the delete would be refused"
                                ),
                            ));
                        }
                        if !open && referrers.iter().any(|k| !readable.contains(k)) {
                            issues.push(Issue::error(
                                "conflict",
                                format!(
                                    "Resources outside what this token may access reference \
                                     {rt}/{id}: the delete would be refused"
                                ),
                            ));
                        }
                    }
                }
                _ => issues.push(Issue::error(
                    "not-found",
                    format!("{rt}/{id} does not exist"),
                )),
            }
        }
        other => {
            return Err(Outcome::new(
                ErrorKind::BadRequest,
                format!(
                    "Unknown mode '{}' (create, update or delete)",
                    other.chars().take(20).collect::<String>()
                ),
            ));
        }
    }
    if !issues
        .iter()
        .any(|i| matches!(i.severity, Severity::Error | Severity::Fatal))
    {
        issues.push(Issue::information(
            "informational",
            "Validation successful: no errors",
        ));
    }
    let mut r = FhirResponse::new(Status::Ok);
    r.body = Some(Body::Json(operation_outcome(&issues)));
    Ok(r)
}

/// At most this many distinct extension URLs and code systems are looked up per request
/// (a `$validate` body must not turn into thousands of searches).
const MAX_LOOKUPS: usize = 50;

/// What the server's own definitions say: every extension that is not HL7's has a
/// StructureDefinition stored here, and codes of the code systems stored here (complete
/// content) are codes of those systems. R4's built-in code systems are checked by the
/// validator itself.
async fn held_definitions(
    ctx: &Context,
    resource: &Value,
    rt: &str,
) -> Result<Vec<Issue>, Outcome> {
    use crate::interaction::search::stored_by_url;
    use std::collections::HashMap;
    let clip = |s: &str| s.chars().take(100).collect::<String>();
    let mut issues = Vec::new();
    let mut known: HashMap<String, bool> = HashMap::new();
    for (expr, url) in crate::fhir::strict::foreign_extensions(resource, rt) {
        let held = match known.get(&url) {
            Some(h) => *h,
            None if known.len() >= MAX_LOOKUPS => continue,
            None => {
                let h = stored_by_url(ctx, "StructureDefinition", &url)
                    .await?
                    .is_some();
                known.insert(url.clone(), h);
                h
            }
        };
        if !held {
            issues.push(
                Issue::error(
                    "structure",
                    format!(
                        "The extension {} is not defined on this server (no StructureDefinition \
                         with that url), so it is not allowed here",
                        clip(&url)
                    ),
                )
                .at(expr),
            );
        }
    }
    let mut systems: HashMap<String, Option<Value>> = HashMap::new();
    for (expr, system, code) in crate::fhir::strict::codings(resource, rt) {
        if crate::fhir::definitions::Definitions::r4()
            .code_system(&system)
            .is_some()
        {
            continue;
        }
        let cs = match systems.get(&system) {
            Some(cs) => cs.clone(),
            None if systems.len() >= MAX_LOOKUPS => continue,
            None => {
                let cs = stored_by_url(ctx, "CodeSystem", &system)
                    .await?
                    .filter(|cs| cs.get("content").and_then(Value::as_str) == Some("complete"));
                systems.insert(system.clone(), cs.clone());
                cs
            }
        };
        if let Some(cs) = cs
            && !crate::fhir::strict::defines_code(&cs, &code)
        {
            issues.push(
                Issue::error(
                    "code-invalid",
                    format!(
                        "Unknown code '{}' in the code system {} (held on this server)",
                        clip(&code),
                        clip(&system)
                    ),
                )
                .at(expr),
            );
        }
    }
    Ok(issues)
}

/// Whether a reference at `expr` inside a Bundle resolves to one of its entries (R4's rules
/// for references in Bundles: against the entries' `fullUrl`s).
fn resolved_in_bundle(bundle: &Value, expr: &str, reference: &str) -> bool {
    let Some(entries) = bundle.get("entry").and_then(Value::as_array) else {
        return false;
    };
    let Some(index) = expr
        .strip_prefix("Bundle.entry[")
        .and_then(|r| r.split_once(']'))
        .and_then(|(i, _)| i.parse::<usize>().ok())
    else {
        return false;
    };
    let from = entries
        .get(index)
        .and_then(|e| e.get("fullUrl"))
        .and_then(Value::as_str);
    crate::fhir::strict::resolve_in_bundle(entries, from, reference).is_some()
}

fn body_id_of(resource: &Value) -> Option<&str> {
    resource.get("id").and_then(Value::as_str)
}
