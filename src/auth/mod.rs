//! L1: pure access decisions. A [`Principal`] is who is calling (client, user, fhirUser, the
//! patient in context) and what the token's SMART scopes grant; [`Principal::allows`] decides
//! one interaction on one resource type, [`Principal::patient`] says whose compartment a
//! patient-context token is confined to, and [`policy`] holds the type policy and the roles.
//! No I/O, no HTTP: the enforcement point in `interaction/` calls these for every path.

pub mod scopes;

pub mod discovery;
pub mod policy;

pub use policy::{Class, Patients, Policy, Role};
pub use scopes::{Perm, ScopeContext, ScopeGrant, parse_scope, parse_scopes};

/// Who is calling and what they may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The OAuth client.
    pub client_id: String,
    /// The signed-in user's account name (None for backend services).
    pub user: Option<String>,
    /// The user's role (None for backend services: their scopes alone decide).
    pub role: Option<Role>,
    /// The user's FHIR resource (`Patient/123`, `Practitioner/7`).
    pub fhir_user: Option<String>,
    /// The patient in context (launch context or the patient the user picked).
    pub patient_context: Option<String>,
    /// The granted scopes, parsed.
    pub grants: Vec<ScopeGrant>,
    /// The scope string as granted.
    pub scope: String,
    /// The access token's id (for audit and revocation).
    pub token_id: Option<String>,
}

/// Why access is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No scope grants this interaction on this type.
    Scope(String),
    /// The resource lies outside the patient's compartment.
    Compartment(String),
}

impl Denial {
    pub fn message(&self) -> &str {
        match self {
            Denial::Scope(m) | Denial::Compartment(m) => m,
        }
    }
}

impl Principal {
    /// A principal with every right (the server's own tasks, `--insecure-no-auth`).
    pub fn system() -> Principal {
        Principal {
            client_id: "healporium".to_string(),
            user: None,
            role: None,
            fhir_user: None,
            patient_context: None,
            grants: parse_scopes("system/*.cruds"),
            scope: "system/*.cruds".to_string(),
            token_id: None,
        }
    }

    /// Whether some scope grants `perm` on `resource_type`, ignoring v2 query restrictions
    /// (see [`Principal::restrictions`]).
    pub fn allows(&self, perm: Perm, resource_type: &str) -> bool {
        self.grants.iter().any(|g| g.grants(perm, resource_type))
    }

    /// Fails with a [`Denial::Scope`] unless a scope grants `perm` on `resource_type`.
    pub fn require(&self, perm: Perm, resource_type: &str) -> Result<(), Denial> {
        if self.allows(perm, resource_type) {
            Ok(())
        } else {
            Err(Denial::Scope(format!(
                "The token's scopes do not allow {} on {resource_type}",
                perm.describe()
            )))
        }
    }

    /// The patient whose compartment confines this principal for `resource_type`: when every
    /// scope granting access to the type is a `patient/` scope. None: not confined.
    pub fn patient(&self, perm: Perm, resource_type: &str) -> Option<&str> {
        let granting: Vec<&ScopeGrant> = self
            .grants
            .iter()
            .filter(|g| g.grants(perm, resource_type))
            .collect();
        let confined =
            !granting.is_empty() && granting.iter().all(|g| g.context == ScopeContext::Patient);
        if confined {
            // a patient scope without a patient in context confines to nothing readable
            Some(self.patient_context.as_deref().unwrap_or(""))
        } else {
            None
        }
    }

    /// v2 query restrictions (`patient/Observation.rs?category=laboratory`) of the scopes that
    /// grant `perm` on `resource_type`: None when one of them is unrestricted; otherwise the
    /// alternatives, each a list of (parameter, value) that must all hold.
    pub fn restrictions(
        &self,
        perm: Perm,
        resource_type: &str,
    ) -> Option<Vec<Vec<(String, String)>>> {
        let mut alts = Vec::new();
        for g in self.grants.iter().filter(|g| g.grants(perm, resource_type)) {
            match &g.query {
                None => return None,
                Some(q) => alts.push(q.clone()),
            }
        }
        Some(alts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scope: &str, patient: Option<&str>) -> Principal {
        Principal {
            client_id: "c".into(),
            user: None,
            role: None,
            fhir_user: None,
            patient_context: patient.map(str::to_string),
            grants: parse_scopes(scope),
            scope: scope.into(),
            token_id: None,
        }
    }

    #[test]
    fn decisions() {
        let p = principal(
            "patient/Observation.read launch/patient openid",
            Some("123"),
        );
        assert!(p.allows(Perm::Read, "Observation"));
        assert!(p.allows(Perm::Search, "Observation"));
        assert!(!p.allows(Perm::Create, "Observation"));
        assert!(!p.allows(Perm::Read, "Patient"));
        assert_eq!(p.patient(Perm::Read, "Observation"), Some("123"));
        let u = principal("user/*.read patient/Observation.rs", Some("9"));
        assert_eq!(
            u.patient(Perm::Read, "Observation"),
            None,
            "user scope wins"
        );
        assert_eq!(u.patient(Perm::Read, "Condition"), None);
        let v2 = principal("patient/Observation.rs?category=laboratory", Some("1"));
        assert_eq!(
            v2.restrictions(Perm::Search, "Observation"),
            Some(vec![vec![(
                "category".to_string(),
                "laboratory".to_string()
            )]])
        );
        assert!(v2.require(Perm::Update, "Observation").is_err());
        assert!(Principal::system().allows(Perm::Delete, "Account"));
    }
}
