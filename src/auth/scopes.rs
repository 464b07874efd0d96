//! SMART App Launch scopes, v1 (`patient/Observation.read`, `user/*.write`) and v2
//! (`patient/Observation.rs?category=laboratory`, `system/*.cruds`), parsed into grants.
//! Other scopes (`openid`, `fhirUser`, `launch/patient`, `offline_access`…) grant no data
//! access and are skipped here.

/// An interaction's permission letter (SMART v2: c r u d s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Perm {
    pub const ALL: [Perm; 5] = [
        Perm::Create,
        Perm::Read,
        Perm::Update,
        Perm::Delete,
        Perm::Search,
    ];

    pub(crate) fn bit(self) -> u8 {
        match self {
            Perm::Create => 1,
            Perm::Read => 2,
            Perm::Update => 4,
            Perm::Delete => 8,
            Perm::Search => 16,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Perm::Create => "create",
            Perm::Read => "read",
            Perm::Update => "update",
            Perm::Delete => "delete",
            Perm::Search => "search",
        }
    }

    /// The SMART v2 letter (c r u d s).
    pub fn letter(self) -> char {
        match self {
            Perm::Create => 'c',
            Perm::Read => 'r',
            Perm::Update => 'u',
            Perm::Delete => 'd',
            Perm::Search => 's',
        }
    }

    /// The permissions of a string of v2 letters (`cruds`, `rs`), as a bit mask; None when a
    /// letter is not one of c r u d s.
    pub fn mask(letters: &str) -> Option<u8> {
        letters.chars().try_fold(0u8, |m, ch| {
            Perm::ALL
                .iter()
                .find(|p| p.letter() == ch)
                .map(|p| m | p.bit())
        })
    }

    /// Whether `mask` holds this permission.
    pub fn in_mask(self, mask: u8) -> bool {
        mask & self.bit() != 0
    }
}

/// The context part of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeContext {
    Patient,
    User,
    System,
}

/// One data-access scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeGrant {
    pub context: ScopeContext,
    /// None: every type (`*`).
    pub resource_type: Option<String>,
    perms: u8,
    /// v2 query restriction: (parameter, value) pairs that must all hold.
    pub query: Option<Vec<(String, String)>>,
}

impl ScopeGrant {
    pub fn grants(&self, perm: Perm, resource_type: &str) -> bool {
        self.perms & perm.bit() != 0
            && self
                .resource_type
                .as_deref()
                .is_none_or(|t| t == resource_type)
    }
}

impl ScopeGrant {
    /// Whether this grant allows everything `other` asks for: same context, same or every
    /// type, a superset of the permissions, and no query restriction or the same one.
    pub fn covers(&self, other: &ScopeGrant) -> bool {
        self.context == other.context
            && self.perms & other.perms == other.perms
            && self
                .resource_type
                .as_ref()
                .is_none_or(|t| other.resource_type.as_ref() == Some(t))
            && self
                .query
                .as_ref()
                .is_none_or(|q| other.query.as_ref() == Some(q))
    }
}

/// Parses one scope; None for scopes that grant no data access (`openid`, `launch`…) and for
/// malformed ones.
pub fn parse_scope(scope: &str) -> Option<ScopeGrant> {
    parse_one(scope)
}

/// Parses a space-separated scope string; unknown or malformed scopes are skipped.
pub fn parse_scopes(scope: &str) -> Vec<ScopeGrant> {
    scope.split_whitespace().filter_map(parse_one).collect()
}

fn parse_one(s: &str) -> Option<ScopeGrant> {
    let (context, rest) = s.split_once('/')?;
    let context = match context {
        "patient" => ScopeContext::Patient,
        "user" => ScopeContext::User,
        "system" => ScopeContext::System,
        _ => return None,
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (ty, access) = rest.split_once('.')?;
    if ty.is_empty() || !(ty == "*" || ty.chars().all(|c| c.is_ascii_alphanumeric())) {
        return None;
    }
    let perms = match access {
        // v1
        "read" => Perm::Read.bit() | Perm::Search.bit(),
        "write" => Perm::Create.bit() | Perm::Update.bit() | Perm::Delete.bit(),
        "*" => 31,
        // v2: letters in the order c r u d s, each at most once
        v2 => {
            let mut bits = 0u8;
            let mut last = None;
            for ch in v2.chars() {
                let (pos, bit) = match ch {
                    'c' => (0, Perm::Create.bit()),
                    'r' => (1, Perm::Read.bit()),
                    'u' => (2, Perm::Update.bit()),
                    'd' => (3, Perm::Delete.bit()),
                    's' => (4, Perm::Search.bit()),
                    _ => return None,
                };
                if last.is_some_and(|l| l >= pos) {
                    return None;
                }
                last = Some(pos);
                bits |= bit;
            }
            if bits == 0 {
                return None;
            }
            bits
        }
    };
    let query = match query {
        None => None,
        Some(q) => Some(serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok()?),
    };
    Some(ScopeGrant {
        context,
        resource_type: (ty != "*").then(|| ty.to_string()),
        perms,
        query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2() {
        let g =
            parse_scopes("patient/Observation.read user/*.write openid fhirUser launch/patient");
        assert_eq!(g.len(), 2);
        assert!(g[0].grants(Perm::Read, "Observation") && g[0].grants(Perm::Search, "Observation"));
        assert!(!g[0].grants(Perm::Read, "Patient"));
        assert!(g[1].grants(Perm::Delete, "Account") && !g[1].grants(Perm::Read, "Account"));
        let v2 = parse_scopes(
            "patient/Observation.rs?category=laboratory system/*.cruds user/Patient.cu",
        );
        assert_eq!(v2.len(), 3);
        assert!(
            v2[0].grants(Perm::Search, "Observation") && !v2[0].grants(Perm::Create, "Observation")
        );
        assert_eq!(v2[0].query.as_ref().unwrap()[0].1, "laboratory");
        assert!(v2[1].grants(Perm::Create, "X"));
        assert!(v2[2].grants(Perm::Update, "Patient") && !v2[2].grants(Perm::Read, "Patient"));
        let all = parse_scope("patient/*.*").unwrap();
        assert!(all.covers(&parse_scope("patient/Observation.rs?category=laboratory").unwrap()));
        assert!(all.covers(&parse_scope("patient/Observation.read").unwrap()));
        assert!(!all.covers(&parse_scope("user/Observation.read").unwrap()));
        let read = parse_scope("user/Observation.rs").unwrap();
        assert!(read.covers(&parse_scope("user/Observation.read").unwrap()));
        assert!(!read.covers(&parse_scope("user/Observation.cruds").unwrap()));
        assert!(!read.covers(&parse_scope("user/Patient.r").unwrap()));
        for bad in [
            "patient/Observation.sr",
            "patient/Observation.rr",
            "patient/Obs-x.read",
            "foo/Patient.read",
            "patient/.read",
            "patient/Patient.x",
            "patient/Patient",
        ] {
            assert!(parse_scopes(bad).is_empty(), "{bad}");
        }
    }
}

/// What a scope grants, in words a person reads on a consent page ("See and search your
/// observations (results, vital signs and health logs)"); the scope string itself is shown
/// beside it for those who want it.
pub fn plain_words(scope: &str) -> String {
    match scope {
        "openid" | "fhirUser" | "profile" => {
            return "Know who you are: your name and which record is yours".to_string();
        }
        "launch" | "launch/patient" | "launch/encounter" => {
            return "Know which patient or visit you are working on".to_string();
        }
        "offline_access" => return "Stay connected until you take access back".to_string(),
        "online_access" => return "Stay connected while you use it".to_string(),
        _ => {}
    }
    let Some(g) = parse_one(scope) else {
        return "An access the server does not recognise (it will not be granted)".to_string();
    };
    let verbs: Vec<&str> = [
        (Perm::Read, "see"),
        (Perm::Search, "search"),
        (Perm::Create, "add to"),
        (Perm::Update, "change"),
        (Perm::Delete, "delete"),
    ]
    .iter()
    .filter(|(p, _)| g.perms & p.bit() != 0)
    .map(|(_, w)| *w)
    .collect();
    let verbs = match verbs.as_slice() {
        [] => "use".to_string(),
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    };
    let whose = match g.context {
        ScopeContext::Patient => "your",
        ScopeContext::User => "the",
        ScopeContext::System => "all",
    };
    let what = match g.resource_type.as_deref() {
        None => "health and billing records".to_string(),
        Some(t) => type_in_words(t),
    };
    let mut text = format!("{verbs} {whose} {what}");
    if g.context == ScopeContext::User {
        text.push_str(" you may see in your role");
    }
    if g.query.is_some() {
        text.push_str(", of one kind only");
    }
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default()
}

/// A resource type in words: the common ones by name, the rest split at capitals.
fn type_in_words(t: &str) -> String {
    let known = match t {
        "Observation" => "results, vital signs and health logs",
        "MedicationRequest" => "prescriptions",
        "MedicationDispense" => "dispensed medicines",
        "AllergyIntolerance" => "allergies",
        "Condition" => "conditions and problems",
        "Encounter" => "visits",
        "Appointment" => "appointments",
        "Patient" => "patient details",
        "Claim" => "insurance claims",
        "ClaimResponse" => "insurance decisions",
        "ExplanationOfBenefit" => "explanations of benefits",
        "Account" => "accounts and credit lines",
        "Immunization" => "immunizations",
        "Communication" => "messages",
        _ => "",
    };
    if !known.is_empty() {
        return known.to_string();
    }
    let mut words = String::new();
    for (i, c) in t.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words.push_str(" records");
    words
}

#[cfg(test)]
mod plain_words_tests {
    use super::plain_words;

    #[test]
    fn scopes_read_as_sentences() {
        for (scope, words) in [
            (
                "patient/Observation.rs",
                "See and search your results, vital signs and health logs",
            ),
            (
                "user/*.cruds",
                "See, search, add to, change and delete the health and billing records you may see in your role",
            ),
            (
                "patient/Account.read",
                "See and search your accounts and credit lines",
            ),
            (
                "system/DeviceRequest.c",
                "Add to all device request records",
            ),
            (
                "offline_access",
                "Stay connected until you take access back",
            ),
            (
                "nonsense",
                "An access the server does not recognise (it will not be granted)",
            ),
        ] {
            assert_eq!(plain_words(scope), words, "{scope}");
        }
    }
}
