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
    let mode = match op.param("mode") {
        None => "create".to_string(),
        Some(Value::String(m)) => m,
        Some(_) => return Err(Outcome::bad_request("mode must be a code")),
    };
    let mut issues = Vec::new();
    if let Some(profile) = op.param("profile") {
        let base_profile = format!("http://hl7.org/fhir/StructureDefinition/{rt}");
        if profile.as_str() != Some(base_profile.as_str()) {
            issues.push(Issue::error(
                "not-supported",
                format!("Only the base profile {base_profile} can be validated against"),
            ));
        }
    }
    let resource = match (&op.body, op.param("resource")) {
        (_, Some(r @ Value::Object(_))) => Some(r),
        (Some(b), _) if b.get("resourceType").and_then(Value::as_str) != Some("Parameters") => {
            Some(b.clone())
        }
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
            let mut checked = resource.clone();
            if mode == "create"
                && let Some(o) = checked.as_object_mut()
            {
                o.shift_remove("id");
            }
            if let Err(o) = ctx.validator.validate(&checked) {
                issues.extend(o.issues);
            }
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
            if ctx.integrity {
                let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
                for (expr, reference) in crate::fhir::references::collect(&checked, rt) {
                    let Some(l) = parse_local(&reference, None) else {
                        continue;
                    };
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

fn body_id_of(resource: &Value) -> Option<&str> {
    resource.get("id").and_then(Value::as_str)
}
