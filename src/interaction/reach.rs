//! Which patients a role sees, resolved when a request starts: the user's own Patient (or,
//! for a caregiver whose account is a RelatedPerson, the patient of that RelatedPerson while
//! it is active); a
//! practitioner's care relationships (general practitioner, CareTeam, Encounter, Appointment,
//! EpisodeOfCare — as the practitioner, one of their PractitionerRoles or their organizations)
//! and break-glass grants; the patients with prescriptions for a pharmacist's pharmacy; an
//! insurer's members. The answer is a filter on Patient resources, evaluated in the query of
//! every request, so a new relationship gives access at once and a removed one takes it away.

use super::reader::{Src, nothing};
use crate::auth::{Patients, Policy, Principal};
use crate::fhir::outcome::Outcome;
use crate::search::query::{Filter, Pred};
use crate::store::{Store, StoredVersion};
use serde_json::Value;

/// The patients a principal's role sees, as a filter on Patient (None: no confinement).
pub(super) async fn reach_of(store: &dyn Store, p: &Principal) -> Result<Option<Filter>, Outcome> {
    let Some(role) = p.role else {
        return Ok(None);
    };
    let Some(rp) = Policy::get().role(role) else {
        return Ok(Some(nothing()));
    };
    let mut alts: Vec<Vec<Filter>> = Vec::new();
    let refs = |keys: &[(String, String)]| -> Vec<Pred> {
        keys.iter()
            .map(|(t, id)| Pred::Ref {
                target_type: Some(t.clone()),
                id: id.clone(),
            })
            .collect()
    };
    let param = |code: &str, preds: Vec<Pred>| Filter::Param {
        param: code.to_string(),
        preds,
        negate: false,
    };
    let has = |source: &str, link: &str, f: Filter| Filter::Has {
        source_type: source.to_string(),
        param: link.to_string(),
        filter: Box::new(f),
    };
    match rp.patients {
        Patients::All => return Ok(None),
        Patients::Own => {
            let user = p.fhir_user.as_deref().unwrap_or("");
            return Ok(Some(if let Some(id) = user.strip_prefix("Patient/") {
                Filter::Id {
                    ids: vec![id.to_string()],
                    negate: false,
                }
            } else if let Some(id) = user.strip_prefix("RelatedPerson/") {
                // a caregiver: the patient of their RelatedPerson while it is active
                has(
                    "RelatedPerson",
                    "patient",
                    Filter::Any(vec![vec![
                        Filter::Id {
                            ids: vec![id.to_string()],
                            negate: false,
                        },
                        param(
                            "active",
                            vec![Pred::Token {
                                system: None,
                                code: Some("true".to_string()),
                            }],
                        ),
                    ]]),
                )
            } else {
                nothing()
            }));
        }
        Patients::Care => {
            let (actors, orgs) = actors(store, p.fhir_user.as_deref()).await?;
            if !actors.is_empty() {
                let mut gp = actors.clone();
                gp.extend(orgs.iter().cloned());
                alts.push(vec![param("general-practitioner", refs(&gp))]);
                alts.push(vec![has(
                    "CareTeam",
                    "patient",
                    param("participant", refs(&actors)),
                )]);
                alts.push(vec![has(
                    "Encounter",
                    "patient",
                    param("participant", refs(&actors)),
                )]);
                alts.push(vec![has(
                    "Appointment",
                    "patient",
                    param("actor", refs(&actors)),
                )]);
                alts.push(vec![has(
                    "EpisodeOfCare",
                    "patient",
                    param("care-manager", refs(&actors)),
                )]);
            }
            if !orgs.is_empty() {
                alts.push(vec![param("organization", refs(&orgs))]);
                alts.push(vec![has(
                    "Encounter",
                    "patient",
                    param("service-provider", refs(&orgs)),
                )]);
                alts.push(vec![has(
                    "EpisodeOfCare",
                    "patient",
                    param("organization", refs(&orgs)),
                )]);
            }
        }
        Patients::Pharmacy => {
            let (_, orgs) = actors(store, p.fhir_user.as_deref()).await?;
            if !orgs.is_empty() {
                alts.push(vec![has(
                    "MedicationRequest",
                    "patient",
                    param("intended-dispenser", refs(&orgs)),
                )]);
            }
        }
        Patients::Members => {
            let (_, orgs) = actors(store, p.fhir_user.as_deref()).await?;
            if !orgs.is_empty() {
                alts.push(vec![has(
                    "Coverage",
                    "beneficiary",
                    param("payor", refs(&orgs)),
                )]);
            }
        }
    }
    if rp.break_glass
        && let Some(user) = &p.user
    {
        let granted = store
            .auth()
            .access_grants(user, crate::fhir::types::Instant::now().millis())
            .await?;
        if !granted.is_empty() {
            alts.push(vec![Filter::Id {
                ids: granted,
                negate: false,
            }]);
        }
    }
    Ok(Some(if alts.is_empty() {
        nothing()
    } else {
        Filter::Any(alts)
    }))
}

/// The organizations an insurer's user pays for (their PractitionerRoles' organizations):
/// the `insurer`/`payor` their Claims, ClaimResponses, ExplanationOfBenefits and Coverages
/// must name. None: the role is not an insurer's.
pub(super) async fn payers_of(
    store: &dyn Store,
    p: &Principal,
) -> Result<Option<Vec<(String, String)>>, Outcome> {
    let Some(rp) = p.role.and_then(|r| Policy::get().role(r)) else {
        return Ok(None);
    };
    if !matches!(rp.patients, Patients::Members) {
        return Ok(None);
    }
    let (_, orgs) = actors(store, p.fhir_user.as_deref()).await?;
    Ok(Some(orgs))
}

/// The references that stand for a staff user (their Practitioner and its active
/// PractitionerRoles, or their PractitionerRole and its Practitioner) and the organizations
/// of those roles.
async fn actors(
    store: &dyn Store,
    fhir_user: Option<&str>,
) -> Result<(Vec<(String, String)>, Vec<(String, String)>), Outcome> {
    let mut actors: Vec<(String, String)> = Vec::new();
    let mut orgs: Vec<(String, String)> = Vec::new();
    let Some((t, id)) = fhir_user.and_then(|f| f.split_once('/')) else {
        return Ok((actors, orgs));
    };
    actors.push((t.to_string(), id.to_string()));
    let roles: Vec<StoredVersion> = match t {
        "Practitioner" => {
            let filters = [Filter::Param {
                param: "practitioner".to_string(),
                preds: vec![Pred::Ref {
                    target_type: Some("Practitioner".to_string()),
                    id: id.to_string(),
                }],
                negate: false,
            }];
            let ids = Src::Store(store)
                .find("PractitionerRole", &filters, 100)
                .await?;
            let keys: Vec<(String, String)> = ids
                .into_iter()
                .map(|i| ("PractitionerRole".to_string(), i))
                .collect();
            store.read_many(&keys).await?
        }
        "PractitionerRole" => store
            .read("PractitionerRole", id)
            .await?
            .filter(|v| !v.deleted)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    };
    for role in roles {
        let Some(body) = role.body.as_deref() else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(body) else {
            continue;
        };
        if v.get("active").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let key = ("PractitionerRole".to_string(), role.id.clone());
        if !actors.contains(&key) {
            actors.push(key);
        }
        let local = |path: &str, ty: &str| {
            v.pointer(path)
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(ty))
                .and_then(|r| r.strip_prefix('/'))
                .filter(|r| crate::fhir::types::is_valid_id(r))
                .map(|r| (ty.to_string(), r.to_string()))
        };
        if let Some(pr) = local("/practitioner/reference", "Practitioner")
            && !actors.contains(&pr)
        {
            actors.push(pr);
        }
        if let Some(o) = local("/organization/reference", "Organization")
            && !orgs.contains(&o)
        {
            orgs.push(o);
        }
    }
    Ok((actors, orgs))
}
