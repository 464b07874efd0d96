//! The enforcement point. Every interaction — REST call, Bundle entry, operation, search,
//! chain, `_has`, include, history, version — asks the request's [`Guard`] before it reads or
//! writes. Three things decide, and each can only narrow what the others allow:
//!
//! - the token's **scopes** must grant the interaction on the type (403 otherwise);
//! - the user's **role** (auth/type-policy.json) must allow it on the type's class, and
//!   confines patient data to the patients the role sees: the user's own Patient, the
//!   practitioner's care relationships (and break-glass grants), the pharmacy's prescriptions,
//!   the insurer's members;
//! - a **patient-context** token is confined to that patient's compartment (through every
//!   patient link of the type, also those R4's CompartmentDefinition lacks), and a SMART v2
//!   scope query (`patient/Observation.rs?category=laboratory`) to what matches it.
//!
//! Confinement is a set of search filters that go into the very SQL that finds resources, so
//! nothing outside is matched, counted, included or chained through. Versions without index
//! rows (old versions, deleted resources, content about to be written) are judged in memory
//! by the same filters. What a confined token may not see answers exactly like what does not
//! exist (404). Without a principal (authorization switched off) the guard is open.

use super::Context;
pub use super::reader::{Src, nothing};
use crate::auth::{Perm, Policy, Principal, Role, ScopeContext};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::search::index::IndexRows;
use crate::search::matching;
use crate::search::parameters::SearchParameters;
use crate::search::query::{self, Filter, Owners, Pred};
use crate::store::{Store, StoredVersion, Transaction};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Guard {
    principal: Option<Principal>,
    /// The patients the principal's role sees, as a filter on Patient resources (None: the
    /// role is not confined to patients, or there is no role).
    reach: Option<Arc<Filter>>,
    /// An insurer's organizations: the payers its billing data must name (None: not an
    /// insurer).
    payers: Option<Arc<Vec<(String, String)>>>,
    /// The FHIR base, to read absolute references to this server in stored versions.
    base: String,
}

/// The billing types an insurer sees only when they name its organization, and through
/// which parameter (an ExplanationOfBenefit through its Coverage's payor).
const PAYER_LINKS: &[(&str, &str)] = &[
    ("Claim", "insurer"),
    ("ClaimResponse", "insurer"),
    ("Coverage", "payor"),
    ("CoverageEligibilityRequest", "insurer"),
    ("CoverageEligibilityResponse", "insurer"),
    ("ExplanationOfBenefit", "coverage"),
];

fn forbidden(msg: impl Into<String>) -> Outcome {
    Outcome::new(ErrorKind::Forbidden, msg)
}

/// What a confined token gets for a resource it may not see: the answer for one that does not
/// exist.
pub fn hidden(resource_type: &str, id: &str) -> Outcome {
    Outcome::not_found(format!("{resource_type}/{id} is not known"))
}

/// The parameters that tie `resource_type` to a patient: the policy's where it has its own,
/// else R4's Patient CompartmentDefinition.
pub fn patient_links<'a>(registry: &'a SearchParameters, resource_type: &str) -> &'a [String] {
    match Policy::get().via(resource_type) {
        Some(v) => v,
        None => registry.patient_compartment(resource_type),
    }
}

impl Guard {
    /// No restriction (authorization off, or the server's own work).
    pub fn open() -> Guard {
        Guard::default()
    }

    /// A guard for `principal` with no role reach resolved (scopes and patient context only);
    /// [`Guard::load`] resolves the role's patients.
    pub fn new(principal: Option<Principal>) -> Guard {
        Guard {
            principal,
            reach: None,
            payers: None,
            base: String::new(),
        }
    }

    /// The guard of a request: resolves which patients the principal's role sees (the
    /// practitioner's roles and organizations, break-glass grants, the pharmacy, the insurer).
    pub async fn load(
        store: &dyn Store,
        principal: Option<Principal>,
        base: &str,
    ) -> Result<Guard, Outcome> {
        let (reach, payers) = match principal.as_ref() {
            Some(p) => (
                super::reach::reach_of(store, p).await?.map(Arc::new),
                super::reach::payers_of(store, p).await?.map(Arc::new),
            ),
            None => (None, None),
        };
        Ok(Guard {
            principal,
            reach,
            payers,
            base: base.to_string(),
        })
    }

    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    pub fn is_open(&self) -> bool {
        self.principal.is_none()
    }

    /// The role of the principal (None: no principal, or a backend service).
    pub fn role(&self) -> Option<Role> {
        self.principal.as_ref().and_then(|p| p.role)
    }

    /// 403 unless the scopes, the role and the patient context allow `perm` on
    /// `resource_type` at all (which resources is [`Guard::filters`]' business).
    pub fn require(&self, perm: Perm, resource_type: &str) -> Result<(), Outcome> {
        let Some(p) = &self.principal else {
            return Ok(());
        };
        p.require(perm, resource_type)
            .map_err(|d| forbidden(d.message()))?;
        let policy = Policy::get();
        let class = policy.class(resource_type);
        if let Some(role) = p.role
            && !policy.role_allows(role, perm, resource_type)
        {
            return Err(forbidden(format!(
                "The {} role may not {} {resource_type} ({} data)",
                role.as_str(),
                perm.describe(),
                class.as_str()
            )));
        }
        if resource_type != "*" && p.patient(perm, resource_type).is_some() {
            // a patient-context token reads shared data and changes only patient data
            let reads = matches!(perm, Perm::Read | Perm::Search);
            let allowed = class.confined() || (class.shared() && reads);
            if !allowed {
                return Err(forbidden(format!(
                    "A patient-context token may not {} {resource_type} ({} data)",
                    perm.describe(),
                    class.as_str()
                )));
            }
        }
        Ok(())
    }

    /// 403 unless the principal holds a `system/` scope granting `perm` on every type (server
    /// administration such as `$reindex`), or is an administrator with such a user scope.
    pub fn require_system(&self, perm: Perm) -> Result<(), Outcome> {
        match &self.principal {
            None => Ok(()),
            Some(p)
                if p.grants.iter().any(|g| {
                    g.resource_type.is_none()
                        && g.grants(perm, "*")
                        && (g.context == ScopeContext::System
                            || (g.context == ScopeContext::User && p.role == Some(Role::Admin)))
                }) =>
            {
                Ok(())
            }
            Some(_) => Err(forbidden(
                "This operation needs a system/*. scope (or an administrator's user/*.) \
                 granting it on every type",
            )),
        }
    }

    /// Whether the principal is confined for `resource_type` (patient context, role reach or
    /// v2 query); `*`: for some type.
    pub fn confined(&self, perm: Perm, resource_type: &str) -> bool {
        let Some(p) = &self.principal else {
            return false;
        };
        if resource_type == "*" {
            return self.reach.is_some()
                || p.patient(perm, "*").is_some()
                || p.grants.iter().any(|g| g.query.is_some());
        }
        let class = Policy::get().class(resource_type);
        (class.confined() && (p.patient(perm, resource_type).is_some() || self.reach.is_some()))
            || p.restrictions(perm, resource_type).is_some()
            || (self.payers.is_some() && PAYER_LINKS.iter().any(|(t, _)| *t == resource_type))
    }

    /// The filters a `resource_type` must satisfy for `perm`: the compartments of the patients
    /// in context and in the role's reach (patient and audit data only — shared data is
    /// nobody's), and v2 scope queries.
    pub fn filters(
        &self,
        registry: &SearchParameters,
        perm: Perm,
        resource_type: &str,
    ) -> Result<Vec<Filter>, Outcome> {
        let Some(p) = &self.principal else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        if Policy::get().class(resource_type).confined() {
            if let Some(patient) = p.patient(perm, resource_type) {
                out.push(if patient.is_empty() {
                    // a patient scope without a patient in context sees no patient data
                    nothing()
                } else {
                    compartment(registry, resource_type, &Owners::Id(patient.to_string()))
                });
            }
            if let Some(reach) = &self.reach {
                out.push(compartment(
                    registry,
                    resource_type,
                    &Owners::Matching(Box::new(reach.as_ref().clone())),
                ));
            }
        }
        if let Some(payers) = &self.payers
            && let Some((_, link)) = PAYER_LINKS.iter().find(|(t, _)| *t == resource_type)
        {
            // an insurer sees its members' billing data only where it is the payer
            let preds: Vec<Pred> = payers
                .iter()
                .map(|(t, id)| Pred::Ref {
                    target_type: Some(t.clone()),
                    id: id.clone(),
                })
                .collect();
            let by_payer = |param: &str| Filter::Param {
                param: param.to_string(),
                preds: preds.clone(),
                negate: false,
            };
            out.push(if preds.is_empty() {
                nothing()
            } else if resource_type == "ExplanationOfBenefit" {
                Filter::Chain {
                    param: (*link).to_string(),
                    targets: vec![("Coverage".to_string(), Box::new(by_payer("payor")))],
                }
            } else {
                by_payer(link)
            });
        }
        if let Some(alternatives) = p.restrictions(perm, resource_type) {
            let types = [resource_type.to_string()];
            let mut alts = Vec::new();
            for pairs in alternatives {
                let q = query::parse(registry, &types, &pairs, true).map_err(|_| {
                    forbidden(format!(
                        "A scope's query on {resource_type} cannot be applied by this server"
                    ))
                })?;
                alts.push(q.filters);
            }
            out.push(Filter::Any(alts));
        }
        Ok(out)
    }

    /// A search's filters, confined: chains and `_has` join the guard's filters of every
    /// type they reach (a type the token may not search matches nothing), and `_list` is as
    /// visible as its List.
    pub fn confine(
        &self,
        registry: &SearchParameters,
        filters: &mut [Filter],
    ) -> Result<(), Outcome> {
        if self.is_open() {
            return Ok(());
        }
        for f in filters.iter_mut() {
            self.confine_one(registry, f)?;
        }
        Ok(())
    }

    fn confine_one(&self, registry: &SearchParameters, f: &mut Filter) -> Result<(), Outcome> {
        match f {
            Filter::Chain { targets, .. } => {
                for (t, inner) in targets.iter_mut() {
                    self.confine_one(registry, inner)?;
                    let taken = std::mem::replace(inner.as_mut(), nothing());
                    **inner = self.restrict(registry, t, taken)?;
                }
            }
            Filter::Has {
                source_type,
                filter,
                ..
            } => {
                self.confine_one(registry, filter)?;
                let taken = std::mem::replace(filter.as_mut(), nothing());
                **filter = self.restrict(registry, source_type, taken)?;
            }
            Filter::List(id) => {
                // the List's items as `_has:List:item:_id=…`, so the List itself is confined
                let list = Filter::Has {
                    source_type: "List".to_string(),
                    param: "item".to_string(),
                    filter: Box::new(Filter::Id {
                        ids: vec![id.clone()],
                        negate: false,
                    }),
                };
                *f = list;
                self.confine_one(registry, f)?;
            }
            Filter::Any(alternatives) => {
                for alt in alternatives.iter_mut() {
                    for g in alt.iter_mut() {
                        self.confine_one(registry, g)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `inner` (a filter on `resource_type`) and the guard's filters for searching it.
    fn restrict(
        &self,
        registry: &SearchParameters,
        resource_type: &str,
        inner: Filter,
    ) -> Result<Filter, Outcome> {
        if self.require(Perm::Search, resource_type).is_err() {
            return Ok(nothing());
        }
        let mut g = self.filters(registry, Perm::Search, resource_type)?;
        if g.is_empty() {
            return Ok(inner);
        }
        g.insert(0, inner);
        Ok(Filter::Any(vec![g]))
    }

    /// Criteria of a conditional interaction or reference, confined for `perm`.
    pub fn criteria(
        &self,
        registry: &SearchParameters,
        perm: Perm,
        resource_type: &str,
        mut criteria: Vec<Filter>,
    ) -> Result<Vec<Filter>, Outcome> {
        self.confine(registry, &mut criteria)?;
        criteria.extend(self.filters(registry, perm, resource_type)?);
        Ok(criteria)
    }

    /// 404 (as if unknown) unless `resource_type/id`, as stored now, is within the
    /// principal's reach. A deleted resource is judged by its last live version.
    pub async fn check_stored(
        &self,
        ctx: &Context,
        perm: Perm,
        resource_type: &str,
        id: &str,
    ) -> Result<(), Outcome> {
        // the policy's parameters are built in: a loaded registry serves
        let registry = ctx.registry.cached(ctx.store.as_ref()).await?.params;
        let mut src = Src::Store(ctx.store.as_ref());
        if self
            .current_visible(&mut src, &registry, perm, resource_type, id)
            .await?
        {
            Ok(())
        } else {
            Err(hidden(resource_type, id))
        }
    }

    /// Like [`Guard::check_stored`], as a write transaction sees it.
    pub async fn check_in_tx(
        &self,
        tx: &mut dyn Transaction,
        registry: &SearchParameters,
        perm: Perm,
        resource_type: &str,
        id: &str,
    ) -> Result<(), Outcome> {
        let mut src = Src::Tx(tx);
        if self
            .current_visible(&mut src, registry, perm, resource_type, id)
            .await?
        {
            Ok(())
        } else {
            Err(hidden(resource_type, id))
        }
    }

    /// Whether the live resource `resource_type/id` matches the guard's filters (SQL on its
    /// index rows). False for a resource that is not live.
    pub async fn live_visible(
        &self,
        src: &mut Src<'_>,
        registry: &SearchParameters,
        perm: Perm,
        resource_type: &str,
        id: &str,
    ) -> Result<bool, Outcome> {
        let mut filters = self.filters(registry, perm, resource_type)?;
        filters.push(Filter::Id {
            ids: vec![id.to_string()],
            negate: false,
        });
        Ok(!src.find(resource_type, &filters, 1).await?.is_empty())
    }

    /// Whether the resource is visible as it stands: its live version through SQL, or for a
    /// deleted one the last live version in memory. Unknown resources are "visible" (the
    /// caller answers 404 for them anyway).
    pub async fn current_visible(
        &self,
        src: &mut Src<'_>,
        registry: &SearchParameters,
        perm: Perm,
        resource_type: &str,
        id: &str,
    ) -> Result<bool, Outcome> {
        if !self.confined(perm, resource_type) {
            return Ok(true);
        }
        match src.current(resource_type, id).await? {
            None => Ok(true),
            Some(c) if !c.deleted => {
                self.live_visible(src, registry, perm, resource_type, id)
                    .await
            }
            Some(c) => {
                let Some(last) = src.version(resource_type, id, c.version - 1).await? else {
                    return Ok(false);
                };
                self.version_visible(src, registry, perm, &last).await
            }
        }
    }

    /// Whether one stored version (with a body) lies within the principal's reach, judged on
    /// the version's own content: its patient links, proxies and scope queries. A deletion
    /// marker is judged by nothing and is visible.
    pub async fn version_visible(
        &self,
        src: &mut Src<'_>,
        registry: &SearchParameters,
        perm: Perm,
        v: &StoredVersion,
    ) -> Result<bool, Outcome> {
        if !self.confined(perm, &v.resource_type) {
            return Ok(true);
        }
        let Some(body) = &v.body else {
            return Ok(true);
        };
        let resource: Value = serde_json::from_str(body)
            .map_err(|_| Outcome::internal("A stored resource is not valid JSON"))?;
        let rows = crate::search::index::extract_with(&resource, Some(&self.base), registry);
        let filters = self.filters(registry, perm, &v.resource_type)?;
        let at = v.last_updated.millis();
        for f in &filters {
            if !self
                .holds(src, f, &v.resource_type, &v.id, at, &rows)
                .await?
            {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Evaluates a guard filter against one version's rows; what it reaches in other
    /// resources is looked up as `src` sees it now.
    async fn holds(
        &self,
        src: &mut Src<'_>,
        f: &Filter,
        resource_type: &str,
        id: &str,
        at: i64,
        rows: &IndexRows,
    ) -> Result<bool, Outcome> {
        if let Some(b) = matching::local_matches(f, resource_type, id, at, rows) {
            return Ok(b);
        }
        match f {
            Filter::Any(alternatives) => {
                for alt in alternatives {
                    let mut all = true;
                    for g in alt {
                        if !Box::pin(self.holds(src, g, resource_type, id, at, rows)).await? {
                            all = false;
                            break;
                        }
                    }
                    if all {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Filter::Compartment {
                owner_type,
                owners,
                params,
            } => {
                let mut candidates: BTreeSet<String> = BTreeSet::new();
                if let Some((_, codes)) = params.iter().find(|(t, _)| t == resource_type) {
                    if resource_type == owner_type {
                        candidates.insert(id.to_string());
                    }
                    for r in rows
                        .references
                        .iter()
                        .filter(|r| r.target_type == *owner_type && codes.contains(&r.param))
                    {
                        candidates.insert(r.target_id.clone());
                    }
                }
                if candidates.is_empty() {
                    return Ok(false);
                }
                match owners {
                    Owners::Id(o) => Ok(candidates.contains(o)),
                    Owners::Matching(m) => {
                        let filters = [
                            Filter::Id {
                                ids: candidates.into_iter().collect(),
                                negate: false,
                            },
                            m.as_ref().clone(),
                        ];
                        Ok(!src.find(owner_type, &filters, 1).await?.is_empty())
                    }
                }
            }
            Filter::Chain { param, targets } => {
                for r in matching::references(rows, param) {
                    let Some((t, inner)) = targets.iter().find(|(t, _)| *t == r.target_type) else {
                        continue;
                    };
                    let filters = [
                        Filter::Id {
                            ids: vec![r.target_id.clone()],
                            negate: false,
                        },
                        inner.as_ref().clone(),
                    ];
                    if !src.find(t, &filters, 1).await?.is_empty() {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Filter::Has {
                source_type,
                param,
                filter,
            } => {
                let filters = [
                    Filter::Param {
                        param: param.clone(),
                        preds: vec![Pred::Ref {
                            target_type: Some(resource_type.to_string()),
                            id: id.to_string(),
                        }],
                        negate: false,
                    },
                    filter.as_ref().clone(),
                ];
                Ok(!src.find(source_type, &filters, 1).await?.is_empty())
            }
            // a List's membership and composites are not judged in memory: not visible
            _ => Ok(false),
        }
    }

    /// Before a write of `resource` (a `resource_type`): every patient it names through the
    /// type's patient links must be one the principal sees — judged before the write, so a
    /// write cannot create its own care relationship — and what it names through a proxy
    /// must be visible. 403 otherwise (the same whether or not the patient exists).
    pub async fn check_content(
        &self,
        tx: &mut dyn Transaction,
        registry: &SearchParameters,
        perm: Perm,
        resource_type: &str,
        resource: &Value,
    ) -> Result<(), Outcome> {
        let Some(p) = &self.principal else {
            return Ok(());
        };
        if !Policy::get().class(resource_type).confined() || !self.confined(perm, resource_type) {
            return Ok(());
        }
        let rows = crate::search::index::extract_with(resource, Some(&self.base), registry);
        let links = patient_links(registry, resource_type);
        let named: BTreeSet<String> = rows
            .references
            .iter()
            .filter(|r| r.target_type == "Patient" && links.contains(&r.param))
            .map(|r| r.target_id.clone())
            .collect();
        let outside = || {
            forbidden(format!(
                "The {resource_type} names a patient outside what the token may access"
            ))
        };
        if let Some(patient) = p.patient(perm, resource_type)
            && named.iter().any(|n| n != patient)
        {
            return Err(outside());
        }
        let mut src = Src::Tx(tx);
        if let Some(reach) = &self.reach
            && !named.is_empty()
        {
            let filters = [
                Filter::Id {
                    ids: named.iter().cloned().collect(),
                    negate: false,
                },
                reach.as_ref().clone(),
            ];
            let limit = u32::try_from(named.len()).unwrap_or(u32::MAX);
            if src.find("Patient", &filters, limit).await?.len() != named.len() {
                return Err(outside());
            }
        }
        if let Some(proxy) = Policy::get().proxy(resource_type) {
            for r in matching::references(&rows, proxy) {
                if r.target_type == "Patient" {
                    continue; // judged above when the proxy is also a patient link
                }
                let visible = Policy::get().proxy_targets().contains(&r.target_type)
                    && self.require(Perm::Read, &r.target_type).is_ok()
                    && self
                        .current_visible(
                            &mut src,
                            registry,
                            Perm::Read,
                            &r.target_type,
                            &r.target_id,
                        )
                        .await?;
                if !visible {
                    return Err(forbidden(format!(
                        "The {resource_type} points at a resource outside what the token may \
                         access"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Which of `keys` (type, id; live resources) the principal may read, as one query per
    /// type.
    pub async fn readable(
        &self,
        src: &mut Src<'_>,
        registry: &SearchParameters,
        keys: &[(String, String)],
    ) -> Result<BTreeSet<(String, String)>, Outcome> {
        let mut out = BTreeSet::new();
        let mut types: Vec<&str> = keys.iter().map(|(t, _)| t.as_str()).collect();
        types.sort();
        types.dedup();
        for t in types {
            if self.require(Perm::Read, t).is_err() {
                continue;
            }
            let ids: Vec<String> = keys
                .iter()
                .filter(|(kt, _)| kt == t)
                .map(|(_, id)| id.clone())
                .collect();
            if !self.confined(Perm::Read, t) {
                out.extend(ids.into_iter().map(|id| (t.to_string(), id)));
                continue;
            }
            let mut filters = self.filters(registry, Perm::Read, t)?;
            filters.push(Filter::Id {
                ids: ids.clone(),
                negate: false,
            });
            let limit = u32::try_from(ids.len()).unwrap_or(u32::MAX);
            for id in src.find(t, &filters, limit).await? {
                out.insert((t.to_string(), id));
            }
        }
        Ok(out)
    }
}

/// The compartment filter of `resource_type` for `owners`: the patient itself for Patient,
/// its patient links, and what it is visible through (a proxy's targets).
pub fn compartment(registry: &SearchParameters, resource_type: &str, owners: &Owners) -> Filter {
    let policy = Policy::get();
    let mut alts: Vec<Vec<Filter>> = Vec::new();
    if resource_type == "Patient" {
        alts.push(vec![Filter::Compartment {
            owner_type: "Patient".to_string(),
            owners: owners.clone(),
            params: vec![("Patient".to_string(), Vec::new())],
        }]);
    } else {
        let links = patient_links(registry, resource_type);
        if !links.is_empty() {
            alts.push(vec![Filter::Compartment {
                owner_type: "Patient".to_string(),
                owners: owners.clone(),
                params: vec![(resource_type.to_string(), links.to_vec())],
            }]);
        }
    }
    if let Some(proxy) = policy.proxy(resource_type) {
        let targets = policy
            .proxy_targets()
            .iter()
            .filter(|t| policy.proxy(t).is_none())
            .map(|t| (t.clone(), Box::new(compartment(registry, t, owners))))
            .collect();
        alts.push(vec![Filter::Chain {
            param: proxy.to_string(),
            targets,
        }]);
    }
    match <[Vec<Filter>; 1]>::try_from(alts) {
        Ok([only]) => match <[Filter; 1]>::try_from(only) {
            Ok([filter]) => filter,
            Err(only) => Filter::Any(vec![only]),
        },
        Err(alts) if alts.is_empty() => nothing(),
        Err(alts) => Filter::Any(alts),
    }
}

/// The patients a resource belongs to, by its patient links (and proxy when it points at a
/// Patient), from its index rows; a Patient belongs to itself.
pub fn patients_of(
    registry: &SearchParameters,
    resource_type: &str,
    id: &str,
    rows: &IndexRows,
) -> Vec<String> {
    if resource_type == "Patient" {
        return vec![id.to_string()];
    }
    if !Policy::get().class(resource_type).confined() {
        return Vec::new();
    }
    let links = patient_links(registry, resource_type);
    let proxy = Policy::get().proxy(resource_type);
    let mut out: Vec<String> = Vec::new();
    for r in &rows.references {
        if r.target_type == "Patient"
            && (links.contains(&r.param) || proxy == Some(r.param.as_str()))
            && !out.contains(&r.target_id)
        {
            out.push(r.target_id.clone());
        }
    }
    out
}

/// The patients a resource (as JSON) belongs to, evaluating only its patient links and
/// proxy (the audit's per-patient split).
pub fn resource_patients(registry: &SearchParameters, base: &str, resource: &Value) -> Vec<String> {
    let Some(rt) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let id = resource.get("id").and_then(Value::as_str).unwrap_or("");
    if rt == "Patient" {
        return vec![id.to_string()];
    }
    if !Policy::get().class(rt).confined() {
        return Vec::new();
    }
    let links = patient_links(registry, rt);
    let proxy = Policy::get().proxy(rt);
    let rows = crate::search::index::extract_params(resource, Some(base), registry, |p| {
        links.contains(&p.code) || proxy == Some(p.code.as_str())
    });
    patients_of(registry, rt, id, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_filters_use_parameters_r4_defines() {
        let r = SearchParameters::r4();
        for (t, code) in [
            ("Patient", "general-practitioner"),
            ("Patient", "organization"),
            ("CareTeam", "participant"),
            ("CareTeam", "patient"),
            ("Encounter", "participant"),
            ("Encounter", "patient"),
            ("Encounter", "service-provider"),
            ("Appointment", "actor"),
            ("Appointment", "patient"),
            ("EpisodeOfCare", "care-manager"),
            ("EpisodeOfCare", "patient"),
            ("EpisodeOfCare", "organization"),
            ("MedicationRequest", "intended-dispenser"),
            ("MedicationRequest", "patient"),
            ("Coverage", "beneficiary"),
            ("Coverage", "payor"),
            ("PractitionerRole", "practitioner"),
            ("List", "item"),
        ] {
            assert!(r.get(t, code).is_some(), "{t}.{code}");
        }
        // every patient link and proxy of the policy is a reference parameter of its type
        let policy = Policy::get();
        for (t, class) in policy.types() {
            if class.confined() {
                for l in patient_links(r, t) {
                    let p = r.own(t).iter().find(|p| p.code == *l);
                    assert!(p.is_some(), "{t}.{l}");
                }
            }
            if let Some(proxy) = policy.proxy(t) {
                assert!(r.own(t).iter().any(|p| p.code == proxy), "{t}.{proxy}");
            }
        }
    }
}
