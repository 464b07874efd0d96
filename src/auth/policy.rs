//! The access policy as data (`type-policy.json`, compiled in): every R4 resource type's class
//! — patient data, audit, shared reference data, the directory of who's who, conformance
//! definitions, server configuration, staff-only data — the parameters that tie a type to a
//! patient where R4's CompartmentDefinition does not (or should not), the types visible
//! through what they point at (Binary `securityContext`, Provenance `target`), and what each
//! role may do per class and type. Pure decisions; the Guard in `interaction/` turns them
//! into SQL filters.

use super::scopes::Perm;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::LazyLock;

/// What a signed-in person is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Patient,
    Practitioner,
    Pharmacist,
    Insurer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Patient,
        Role::Practitioner,
        Role::Pharmacist,
        Role::Insurer,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Practitioner => "practitioner",
            Role::Pharmacist => "pharmacist",
            Role::Insurer => "insurer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role '{s}' (patient, practitioner, pharmacist, insurer, admin)")
            })
    }
}

/// The class of a resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Data about a patient: confined to the patients a principal may see.
    Patient,
    /// AuditEvent: administrators, and a patient's own events.
    Audit,
    /// Shared reference data (Medication, Location, Slot…): readable by everyone, written by
    /// clinical staff and administrators.
    Reference,
    /// Who is who (Practitioner, PractitionerRole, Organization): readable by everyone,
    /// written by administrators — care relationships derive from it.
    Directory,
    /// Definitions and terminology (SearchParameter, StructureDefinition, ValueSet…):
    /// readable by everyone, written by administrators and backend services.
    Conformance,
    /// Server configuration (Subscription): administrators and backend services only.
    Config,
    /// Data without a patient to confine it by (Group, Linkage, MessageHeader…):
    /// administrators and backend services only.
    Staff,
}

impl Class {
    pub const ALL: [Class; 7] = [
        Class::Patient,
        Class::Audit,
        Class::Reference,
        Class::Directory,
        Class::Conformance,
        Class::Config,
        Class::Staff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Patient => "patient",
            Class::Audit => "audit",
            Class::Reference => "reference",
            Class::Directory => "directory",
            Class::Conformance => "conformance",
            Class::Config => "config",
            Class::Staff => "staff",
        }
    }

    /// Whether resources of the class belong to patients (and are confined to them).
    pub fn confined(self) -> bool {
        matches!(self, Class::Patient | Class::Audit)
    }

    /// Whether a patient-context token may read the class (unconfined, it is nobody's).
    pub fn shared(self) -> bool {
        matches!(
            self,
            Class::Reference | Class::Directory | Class::Conformance
        )
    }
}

/// Which patients a role sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Patients {
    /// Only the user's own Patient.
    #[serde(rename = "self")]
    Own,
    /// Patients with a care relationship to the practitioner (general practitioner, CareTeam,
    /// Encounter, Appointment, EpisodeOfCare, or their organization through PractitionerRole),
    /// plus break-glass grants.
    Care,
    /// Patients with a MedicationRequest to be dispensed by the pharmacist's organization.
    Pharmacy,
    /// Beneficiaries of a Coverage paid by the insurer's organization.
    Members,
    /// Every patient.
    All,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRole {
    patients: Patients,
    #[serde(default)]
    break_glass: bool,
    classes: HashMap<Class, String>,
    #[serde(default)]
    types: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPolicy {
    classes: HashMap<Class, Vec<String>>,
    via: HashMap<String, Vec<String>>,
    proxy: HashMap<String, String>,
    proxy_targets: Vec<String>,
    roles: HashMap<String, RawRole>,
}

/// What one role may do.
#[derive(Debug, Clone)]
pub struct RolePolicy {
    pub patients: Patients,
    /// Whether the role may break the glass (an audited, short-lived grant to one patient).
    pub break_glass: bool,
    classes: HashMap<Class, u8>,
    types: HashMap<String, u8>,
}

impl RolePolicy {
    /// The permissions on `resource_type` of class `class`, as a mask.
    pub fn mask(&self, class: Class, resource_type: &str) -> u8 {
        match self.types.get(resource_type) {
            Some(m) => *m,
            None => self.classes.get(&class).copied().unwrap_or(0),
        }
    }
}

/// The policy: classes, patient links and roles.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    class_of: HashMap<String, Class>,
    via: HashMap<String, Vec<String>>,
    proxy: HashMap<String, String>,
    proxy_targets: Vec<String>,
    roles: HashMap<Role, RolePolicy>,
}

static POLICY: LazyLock<Result<Policy, String>> =
    LazyLock::new(|| Policy::parse(include_str!("type-policy.json")));

impl Policy {
    /// The compiled-in policy (an unreadable one denies everything to every role; a unit test
    /// proves the file parses).
    pub fn get() -> &'static Policy {
        static EMPTY: LazyLock<Policy> = LazyLock::new(Policy::default);
        POLICY.as_ref().unwrap_or(&EMPTY)
    }

    pub fn parse(text: &str) -> Result<Policy, String> {
        let raw: RawPolicy = serde_json::from_str(text).map_err(|e| format!("type policy: {e}"))?;
        let mut class_of = HashMap::new();
        for (class, types) in raw.classes {
            for t in types {
                if class_of.insert(t.clone(), class).is_some() {
                    return Err(format!("type policy: {t} is in two classes"));
                }
            }
        }
        let mut roles = HashMap::new();
        for (name, r) in raw.roles {
            let role = Role::parse(&name)?;
            let letters =
                |s: &str| Perm::mask(s).ok_or_else(|| format!("type policy: '{s}' of role {name}"));
            let mut classes = HashMap::new();
            for (c, l) in &r.classes {
                classes.insert(*c, letters(l)?);
            }
            let mut types = HashMap::new();
            for (t, l) in &r.types {
                types.insert(t.clone(), letters(l)?);
            }
            roles.insert(
                role,
                RolePolicy {
                    patients: r.patients,
                    break_glass: r.break_glass,
                    classes,
                    types,
                },
            );
        }
        Ok(Policy {
            class_of,
            via: raw.via,
            proxy: raw.proxy,
            proxy_targets: raw.proxy_targets,
            roles,
        })
    }

    /// The class of a resource type; a type the policy does not name is staff-only.
    pub fn class(&self, resource_type: &str) -> Class {
        self.class_of
            .get(resource_type)
            .copied()
            .unwrap_or(Class::Staff)
    }

    /// Every type the policy classifies, with its class.
    pub fn types(&self) -> impl Iterator<Item = (&str, Class)> {
        self.class_of.iter().map(|(t, c)| (t.as_str(), *c))
    }

    /// The parameters tying `resource_type` to a patient when they differ from R4's Patient
    /// CompartmentDefinition (None: use R4's).
    pub fn via(&self, resource_type: &str) -> Option<&[String]> {
        self.via.get(resource_type).map(Vec::as_slice)
    }

    /// The reference parameter through which `resource_type` is visible when its target is.
    pub fn proxy(&self, resource_type: &str) -> Option<&str> {
        self.proxy.get(resource_type).map(String::as_str)
    }

    /// The types a proxy parameter may make visible through.
    pub fn proxy_targets(&self) -> &[String] {
        &self.proxy_targets
    }

    pub fn role(&self, role: Role) -> Option<&RolePolicy> {
        self.roles.get(&role)
    }

    /// Whether `role` may do `perm` on `resource_type`.
    pub fn role_allows(&self, role: Role, perm: Perm, resource_type: &str) -> bool {
        self.role(role)
            .is_some_and(|r| perm.in_mask(r.mask(self.class(resource_type), resource_type)))
    }

    /// The letters `role` has on a class, before per-type exceptions (`` for nothing).
    pub fn class_letters(&self, role: Role, class: Class) -> String {
        let mask = self
            .role(role)
            .and_then(|r| r.classes.get(&class).copied())
            .unwrap_or(0);
        Perm::ALL
            .iter()
            .filter(|p| p.in_mask(mask))
            .map(|p| p.letter())
            .collect()
    }

    /// The letters `role` has on `resource_type` (`cruds`, `rs`, `` for nothing).
    pub fn letters(&self, role: Role, resource_type: &str) -> String {
        let mask = self
            .role(role)
            .map_or(0, |r| r.mask(self.class(resource_type), resource_type));
        Perm::ALL
            .iter()
            .filter(|p| p.in_mask(mask))
            .map(|p| p.letter())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiled_policy_parses_and_decides() {
        let text = include_str!("type-policy.json");
        let p = Policy::parse(text).expect("type-policy.json parses");
        assert_eq!(p.class("Observation"), Class::Patient);
        assert_eq!(p.class("SearchParameter"), Class::Conformance);
        assert_eq!(p.class("NoSuchType"), Class::Staff);
        assert!(p.role_allows(Role::Patient, Perm::Create, "Observation"));
        assert!(!p.role_allows(Role::Patient, Perm::Create, "Encounter"));
        assert!(!p.role_allows(Role::Patient, Perm::Create, "SearchParameter"));
        assert!(!p.role_allows(Role::Patient, Perm::Update, "Practitioner"));
        assert!(p.role_allows(Role::Pharmacist, Perm::Create, "MedicationDispense"));
        assert!(!p.role_allows(Role::Pharmacist, Perm::Delete, "Observation"));
        assert!(!p.role_allows(Role::Insurer, Perm::Read, "Observation"));
        assert!(!p.role_allows(Role::Insurer, Perm::Read, "AuditEvent"));
        assert!(p.role_allows(Role::Admin, Perm::Read, "AuditEvent"));
        assert!(!p.role_allows(Role::Practitioner, Perm::Update, "PractitionerRole"));
        assert_eq!(p.letters(Role::Patient, "Patient"), "rus");
        for t in p.proxy_targets() {
            assert!(p.proxy(t).is_none(), "a proxy target is never a proxy: {t}");
        }
        assert!(Policy::parse(&text.replace("\"cruds\"", "\"crux\"")).is_err());
    }
}
