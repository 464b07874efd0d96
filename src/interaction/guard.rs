//! The enforcement point. Every interaction — REST call, Bundle entry, operation, search, include,
//! history — asks the request's [`Guard`] before it reads or writes: the token's scopes must
//! grant the interaction on the type (403 otherwise), and a patient-context token or a SMART v2
//! scope with a query (`patient/Observation.rs?category=laboratory`) confines what it sees to
//! resources matching filters, which go into the very SQL that finds them — so nothing outside
//! leaks through a search, a total, an include or a chain. Without a principal (authorization
//! switched off) the guard is open.

use super::Context;
use crate::auth::{Perm, Principal};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::search::parameters::SearchParameters;
use crate::search::query::{self, Filter};
use crate::store::{SearchSpec, Transaction};

#[derive(Debug, Clone, Default)]
pub struct Guard {
    principal: Option<Principal>,
}

fn forbidden(msg: impl Into<String>) -> Outcome {
    Outcome::new(ErrorKind::Forbidden, msg)
}

impl Guard {
    /// No restriction (authorization off, or the server's own work).
    pub fn open() -> Guard {
        Guard { principal: None }
    }

    pub fn new(principal: Option<Principal>) -> Guard {
        Guard { principal }
    }

    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_ref()
    }

    pub fn is_open(&self) -> bool {
        self.principal.is_none()
    }

    /// 403 unless the scopes grant `perm` on `resource_type`.
    pub fn require(&self, perm: Perm, resource_type: &str) -> Result<(), Outcome> {
        match &self.principal {
            None => Ok(()),
            Some(p) => p
                .require(perm, resource_type)
                .map_err(|d| forbidden(d.message())),
        }
    }

    /// 403 unless the principal holds a `system/` scope granting `perm` on every type (server
    /// administration such as `$reindex`).
    pub fn require_system(&self, perm: Perm) -> Result<(), Outcome> {
        match &self.principal {
            None => Ok(()),
            Some(p)
                if p.grants.iter().any(|g| {
                    g.context == crate::auth::ScopeContext::System
                        && g.resource_type.is_none()
                        && g.grants(perm, "*")
                }) =>
            {
                Ok(())
            }
            Some(_) => Err(forbidden(
                "This operation needs a system/*. scope granting it on every type",
            )),
        }
    }

    /// Whether the principal is confined for `resource_type` (patient context or v2 query).
    pub fn confined(&self, perm: Perm, resource_type: &str) -> bool {
        self.principal.as_ref().is_some_and(|p| {
            p.patient(perm, resource_type).is_some()
                || p.restrictions(perm, resource_type).is_some()
        })
    }

    /// The filters a `resource_type` must satisfy for `perm`: the patient's compartment for a
    /// patient-context token (types that can be in a Patient compartment; reference data such
    /// as Practitioner or Medication is not patient-specific), and v2 scope queries.
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
        if let Some(patient) = p.patient(perm, resource_type) {
            let params = registry.patient_compartment(resource_type).to_vec();
            if resource_type == "Patient" || !params.is_empty() {
                if patient.is_empty() {
                    // a patient scope without a patient in context sees no patient data
                    out.push(Filter::Id {
                        ids: Vec::new(),
                        negate: true,
                    });
                } else if resource_type == "Patient" {
                    // only the patient itself: R4 also puts Patients that `link` to it in its
                    // compartment, which would show another person's record
                    out.push(Filter::Id {
                        ids: vec![patient.to_string()],
                        negate: false,
                    });
                } else {
                    out.push(Filter::Compartment {
                        owner_type: "Patient".to_string(),
                        owner_id: patient.to_string(),
                        params: vec![(resource_type.to_string(), params)],
                    });
                }
            }
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

    /// 403 unless `resource_type/id` (live, as stored) satisfies the principal's confinement.
    pub async fn check_stored(
        &self,
        ctx: &Context,
        perm: Perm,
        resource_type: &str,
        id: &str,
    ) -> Result<(), Outcome> {
        if !self.confined(perm, resource_type) {
            return Ok(());
        }
        let registry = ctx.registry.current(ctx.store.as_ref()).await?.params;
        let mut filters = self.filters(&registry, perm, resource_type)?;
        filters.push(Filter::Id {
            ids: vec![id.to_string()],
            negate: false,
        });
        let types = [resource_type.to_string()];
        let hits = ctx
            .store
            .search(&SearchSpec {
                types: &types,
                filters: &filters,
                sort: &[],
                anchor: None,
                backwards: false,
                limit: 1,
                forms: &[],
            })
            .await?;
        if hits.is_empty() {
            return Err(outside(resource_type));
        }
        Ok(())
    }

    /// Like [`Guard::check_stored`], as a write transaction sees it (after or before a write).
    pub async fn check_in_tx(
        &self,
        tx: &mut dyn Transaction,
        registry: &SearchParameters,
        perm: Perm,
        resource_type: &str,
        id: &str,
    ) -> Result<(), Outcome> {
        if !self.confined(perm, resource_type) {
            return Ok(());
        }
        let mut filters = self.filters(registry, perm, resource_type)?;
        filters.push(Filter::Id {
            ids: vec![id.to_string()],
            negate: false,
        });
        if tx.find(resource_type, &filters, 1).await?.is_empty() {
            return Err(outside(resource_type));
        }
        Ok(())
    }
}

fn outside(resource_type: &str) -> Outcome {
    forbidden(format!(
        "This {resource_type} is outside what the token may access (patient compartment or \
         scope restriction)"
    ))
}
