//! Message-structure grammars (the abstract message syntax of the standard) and matching a
//! message's segments against one, so repeated segments attach to the right parent: an NTE
//! after an OBX belongs to that OBSERVATION, one after the OBR to the ORDER_OBSERVATION.
//!
//! The notation is the standard's: `[ … ]` optional, `{ … }` repeating, `( … )` a plain
//! group, and a group is named by `NAME:` right after its opening bracket —
//! `MSH [{SFT}] {PATIENT_RESULT: [PATIENT: PID [{NTE}]] {ORDER_OBSERVATION: OBR [{NTE}]
//! [{OBSERVATION: OBX [{NTE}]}]}}`. `[{ … }]` is one optional repeating group.
//!
//! Matching is greedy and linear: every step consumes a segment or ends, so it never loops.
//! Z-segments and segments the structure does not name are set aside with a warning (not
//! placed in the tree, so never mapped); segments the structure names but
//! in a place it does not allow, and missing required ones, are issues the caller turns
//! into an error ACK.

use std::collections::BTreeSet;
use std::fmt;

/// The deepest grammar nesting accepted.
const MAX_DEPTH: usize = 24;

/// One item of a structure: a segment or a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Segment {
        name: String,
        optional: bool,
        repeating: bool,
    },
    Group(Group),
}

/// A group: a named (or anonymous) sequence of items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: Option<String>,
    pub optional: bool,
    pub repeating: bool,
    pub items: Vec<Item>,
}

/// A grammar could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrammarError(pub String);

impl fmt::Display for GrammarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GrammarError {}

/// A message structure (`ADT_A01`, `ORU_R01`…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    pub name: String,
    pub root: Group,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Open(char),
    Close(char),
    Label(String),
    Segment(String),
}

fn tokens(text: &str) -> Result<Vec<Token>, GrammarError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '[' | '{' | '(' => {
                out.push(Token::Open(c));
                chars.next();
            }
            ']' | '}' | ')' => {
                out.push(Token::Close(c));
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '_' {
                        word.push(c);
                        chars.next();
                    } else {
                        break;
                    }
                }
                if chars.peek() == Some(&':') {
                    chars.next();
                    out.push(Token::Label(word));
                } else if word.len() == 3
                    && word
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                {
                    out.push(Token::Segment(word));
                } else {
                    return Err(GrammarError(format!(
                        "'{word}' is neither a segment (three capitals or digits) nor a group \
                         label (NAME:)"
                    )));
                }
            }
            other => return Err(GrammarError(format!("unexpected '{other}' in a grammar"))),
        }
    }
    Ok(out)
}

fn closer(open: char) -> char {
    match open {
        '[' => ']',
        '{' => '}',
        _ => ')',
    }
}

impl Structure {
    /// Reads a grammar in the standard's notation.
    pub fn parse(name: &str, text: &str) -> Result<Structure, GrammarError> {
        let toks = tokens(text)?;
        let mut pos = 0;
        let items = items(&toks, &mut pos, None, 0)?;
        if pos != toks.len() {
            return Err(GrammarError("unbalanced brackets in the grammar".into()));
        }
        if !matches!(items.first(), Some(Item::Segment { name, .. }) if name == "MSH") {
            return Err(GrammarError("a structure starts with MSH".into()));
        }
        Ok(Structure {
            name: name.to_string(),
            root: Group {
                name: Some(name.to_string()),
                optional: false,
                repeating: false,
                items,
            },
        })
    }

    /// Every segment name the structure uses.
    pub fn alphabet(&self) -> BTreeSet<String> {
        fn walk(g: &Group, out: &mut BTreeSet<String>) {
            for i in &g.items {
                match i {
                    Item::Segment { name, .. } => {
                        out.insert(name.clone());
                    }
                    Item::Group(g) => walk(g, out),
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.root, &mut out);
        out
    }
}

/// Items up to the closing bracket `until` (or the end).
fn items(
    toks: &[Token],
    pos: &mut usize,
    until: Option<char>,
    depth: usize,
) -> Result<Vec<Item>, GrammarError> {
    if depth > MAX_DEPTH {
        return Err(GrammarError("the grammar nests too deeply".into()));
    }
    let mut out = Vec::new();
    while let Some(t) = toks.get(*pos) {
        match t {
            Token::Close(c) => {
                return if Some(*c) == until {
                    *pos += 1;
                    Ok(out)
                } else {
                    Err(GrammarError(format!("unexpected '{c}'")))
                };
            }
            Token::Segment(s) => {
                out.push(Item::Segment {
                    name: s.clone(),
                    optional: false,
                    repeating: false,
                });
                *pos += 1;
            }
            Token::Label(l) => {
                return Err(GrammarError(format!(
                    "the label '{l}:' must follow an opening bracket"
                )));
            }
            Token::Open(c) => {
                *pos += 1;
                let label = match toks.get(*pos) {
                    Some(Token::Label(l)) => {
                        *pos += 1;
                        Some(l.clone())
                    }
                    _ => None,
                };
                let inner = items(toks, pos, Some(closer(*c)), depth + 1)?;
                let (optional, repeating) = (*c == '[', *c == '{');
                out.push(bracket(label, optional, repeating, inner)?);
            }
        }
    }
    match until {
        None => Ok(out),
        Some(c) => Err(GrammarError(format!("missing '{c}'"))),
    }
}

/// The item a bracket makes: a single unlabelled segment or group inside takes on the
/// bracket's optionality and repetition (`[{NTE}]`, `[{OBSERVATION: …}]`).
fn bracket(
    label: Option<String>,
    optional: bool,
    repeating: bool,
    inner: Vec<Item>,
) -> Result<Item, GrammarError> {
    if inner.is_empty() {
        return Err(GrammarError("an empty bracket".into()));
    }
    if label.is_none() && inner.len() == 1 {
        let mut it = inner.into_iter();
        return match it.next() {
            Some(Item::Segment {
                name,
                optional: o,
                repeating: r,
            }) => Ok(Item::Segment {
                name,
                optional: optional || o,
                repeating: repeating || r,
            }),
            Some(Item::Group(mut g)) => {
                g.optional |= optional;
                g.repeating |= repeating;
                Ok(Item::Group(g))
            }
            None => Err(GrammarError("an empty bracket".into())),
        };
    }
    Ok(Item::Group(Group {
        name: label,
        optional,
        repeating,
        items: inner,
    }))
}

/// A node of a matched message: a segment (its index in the message) or a group instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Segment(usize),
    Group(Instance),
}

/// One occurrence of a group in a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: Option<String>,
    pub children: Vec<Node>,
}

impl Instance {
    /// The segment indexes directly in this instance named `name` (by `names`).
    pub fn segments<'a>(
        &'a self,
        names: &'a [String],
        name: &'a str,
    ) -> impl Iterator<Item = usize> + 'a {
        self.children.iter().filter_map(move |n| match n {
            Node::Segment(i) if names.get(*i).map(String::as_str) == Some(name) => Some(*i),
            _ => None,
        })
    }

    /// The group instances directly in this one named `name`.
    pub fn groups<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Instance> + 'a {
        self.children.iter().filter_map(move |n| match n {
            Node::Group(g) if g.name.as_deref() == Some(name) => Some(g),
            _ => None,
        })
    }
}

/// What matching found besides the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A Z-segment or one the structure does not name: kept, not mapped.
    Ignored { index: usize, name: String },
    /// A segment the structure names, where it does not allow it.
    Unexpected { index: usize, name: String },
    /// A required segment or group that is absent (`within` names the enclosing group).
    Missing { what: String, within: String },
}

impl Finding {
    pub fn is_error(&self) -> bool {
        !matches!(self, Finding::Ignored { .. })
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::Ignored { index, name } => {
                write!(
                    f,
                    "segment {} ({name}) is not part of the structure: ignored",
                    index + 1
                )
            }
            Finding::Unexpected { index, name } => write!(
                f,
                "segment {} ({name}) is not allowed where it occurs",
                index + 1
            ),
            Finding::Missing { what, within } => {
                write!(f, "the required {what} is missing in {within}")
            }
        }
    }
}

fn first_set(items: &[Item], out: &mut BTreeSet<String>) {
    for item in items {
        match item {
            Item::Segment { name, optional, .. } => {
                out.insert(name.clone());
                if !optional {
                    return;
                }
            }
            Item::Group(g) => {
                first_set(&g.items, out);
                if !g.optional {
                    return;
                }
            }
        }
    }
}

/// Whether a group may be empty (every item in it is optional or may be empty).
fn nullable(g: &Group) -> bool {
    g.items.iter().all(|i| match i {
        Item::Segment { optional, .. } => *optional,
        Item::Group(g) => g.optional || nullable(g),
    })
}

/// Matches segment names (in message order) against a structure.
pub fn match_segments(structure: &Structure, names: &[String]) -> (Instance, Vec<Finding>) {
    let alphabet = structure.alphabet();
    let mut findings = Vec::new();
    // set aside what the structure cannot place
    let placeable: Vec<usize> = names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| {
            if alphabet.contains(n) {
                Some(i)
            } else {
                findings.push(Finding::Ignored {
                    index: i,
                    name: n.clone(),
                });
                None
            }
        })
        .collect();
    let mut m = Matcher {
        names,
        order: &placeable,
        pos: 0,
        findings: Vec::new(),
    };
    let mut root = Instance {
        name: structure.root.name.clone(),
        children: Vec::new(),
    };
    m.sequence(&structure.root, &mut root.children, 0);
    while let Some(&i) = m.order.get(m.pos) {
        m.findings.push(Finding::Unexpected {
            index: i,
            name: names.get(i).cloned().unwrap_or_default(),
        });
        root.children.push(Node::Segment(i));
        m.pos += 1;
    }
    findings.extend(m.findings);
    findings.sort_by_key(|f| match f {
        Finding::Ignored { index, .. } | Finding::Unexpected { index, .. } => *index,
        Finding::Missing { .. } => usize::MAX,
    });
    (root, findings)
}

struct Matcher<'a> {
    names: &'a [String],
    order: &'a [usize],
    pos: usize,
    findings: Vec<Finding>,
}

impl Matcher<'_> {
    fn current(&self) -> Option<&str> {
        self.order
            .get(self.pos)
            .and_then(|&i| self.names.get(i))
            .map(String::as_str)
    }

    fn sequence(&mut self, group: &Group, out: &mut Vec<Node>, depth: usize) {
        let within = group.name.clone().unwrap_or_else(|| "a group".into());
        for item in &group.items {
            match item {
                Item::Segment {
                    name,
                    optional,
                    repeating,
                } => {
                    let mut count = 0;
                    while self.current() == Some(name.as_str()) {
                        if let Some(&i) = self.order.get(self.pos) {
                            out.push(Node::Segment(i));
                        }
                        self.pos += 1;
                        count += 1;
                        if !repeating {
                            break;
                        }
                    }
                    if count == 0 && !optional {
                        self.findings.push(Finding::Missing {
                            what: format!("segment {name}"),
                            within: within.clone(),
                        });
                    }
                }
                Item::Group(g) => {
                    let mut first = BTreeSet::new();
                    first_set(&g.items, &mut first);
                    let mut count = 0;
                    while depth < MAX_DEPTH && self.current().is_some_and(|c| first.contains(c)) {
                        let before = self.pos;
                        let mut inst = Instance {
                            name: g.name.clone(),
                            children: Vec::new(),
                        };
                        self.sequence(g, &mut inst.children, depth + 1);
                        if self.pos == before {
                            break; // consumed nothing: never loop
                        }
                        out.push(Node::Group(inst));
                        count += 1;
                        if !g.repeating {
                            break;
                        }
                    }
                    if count == 0 && !g.optional && !nullable(g) {
                        self.findings.push(Finding::Missing {
                            what: format!(
                                "group {}",
                                g.name.clone().unwrap_or_else(|| "(unnamed)".into())
                            ),
                            within: within.clone(),
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ORU: &str = "MSH [{SFT}] {PATIENT_RESULT: [PATIENT: PID [PD1] [{NTE}] [{NK1}] \
        [VISIT: PV1 [PV2]]] {ORDER_OBSERVATION: [ORC] OBR [{NTE}] [{TIMING_QTY: TQ1 [{TQ2}]}] \
        [CTD] [{OBSERVATION: OBX [{NTE}]}] [{FT1}] [{CTI}] [{SPECIMEN: SPM [{OBX}]}]}} [DSC]";

    fn names(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn notes_attach_to_their_parent() {
        let st = Structure::parse("ORU_R01", ORU).unwrap();
        let n = names("MSH PID NTE PV1 OBR NTE OBX NTE NTE OBX OBR OBX NTE");
        let (root, findings) = match_segments(&st, &n);
        assert!(findings.is_empty(), "{findings:?}");
        let pr: Vec<_> = root.groups("PATIENT_RESULT").collect();
        assert_eq!(pr.len(), 1);
        let patient = pr[0].groups("PATIENT").next().unwrap();
        assert_eq!(patient.segments(&n, "NTE").collect::<Vec<_>>(), [2]);
        assert_eq!(patient.groups("VISIT").count(), 1);
        let orders: Vec<_> = pr[0].groups("ORDER_OBSERVATION").collect();
        assert_eq!(orders.len(), 2);
        assert_eq!(orders[0].segments(&n, "NTE").collect::<Vec<_>>(), [5]);
        let obs: Vec<_> = orders[0].groups("OBSERVATION").collect();
        assert_eq!(obs.len(), 2);
        assert_eq!(obs[0].segments(&n, "NTE").collect::<Vec<_>>(), [7, 8]);
        assert_eq!(obs[1].segments(&n, "NTE").count(), 0);
        let obs2: Vec<_> = orders[1].groups("OBSERVATION").collect();
        assert_eq!(obs2[0].segments(&n, "NTE").collect::<Vec<_>>(), [12]);
    }

    #[test]
    fn optional_groups_absent_do_not_misplace_segments() {
        // no PATIENT group: the NTE after OBR is the order's, not a patient's
        let st = Structure::parse("ORU_R01", ORU).unwrap();
        let n = names("MSH OBR NTE OBX");
        let (root, findings) = match_segments(&st, &n);
        assert!(findings.is_empty(), "{findings:?}");
        let pr = root.groups("PATIENT_RESULT").next().unwrap();
        assert_eq!(pr.groups("PATIENT").count(), 0);
        let order = pr.groups("ORDER_OBSERVATION").next().unwrap();
        assert_eq!(order.segments(&n, "NTE").collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn z_segments_are_ignored_and_misplaced_or_missing_ones_reported() {
        let st = Structure::parse(
            "ADT_A01",
            "MSH [{SFT}] EVN PID [PD1] [{NK1}] PV1 [PV2] [{OBX}] [{AL1}]",
        )
        .unwrap();
        let (_, f) = match_segments(&st, &names("MSH EVN PID ZPI PV1"));
        assert_eq!(
            f,
            [Finding::Ignored {
                index: 3,
                name: "ZPI".into()
            }]
        );
        assert!(!f[0].is_error());
        let (_, f) = match_segments(&st, &names("MSH EVN PID PV1 NK1"));
        assert_eq!(
            f,
            [Finding::Unexpected {
                index: 4,
                name: "NK1".into()
            }]
        );
        let (_, f) = match_segments(&st, &names("MSH EVN PV1"));
        assert_eq!(
            f,
            [Finding::Missing {
                what: "segment PID".into(),
                within: "ADT_A01".into()
            }]
        );
    }

    #[test]
    fn bad_grammars_are_errors() {
        for g in [
            "",
            "PID",
            "MSH [PID",
            "MSH PID]",
            "MSH []",
            "MSH Pid",
            "MSH X: PID",
            "MSH [X:PID} ]",
            "MSH $",
        ] {
            assert!(Structure::parse("X", g).is_err(), "{g}");
        }
        let deep = format!("MSH {}PID{}", "[".repeat(40), "]".repeat(40));
        assert!(Structure::parse("X", &deep).is_err());
    }

    #[test]
    fn brackets_combine() {
        let st = Structure::parse("X", "MSH [{NTE}] {[PID]}").unwrap();
        assert_eq!(
            st.root.items[1],
            Item::Segment {
                name: "NTE".into(),
                optional: true,
                repeating: true
            }
        );
        assert_eq!(
            st.root.items[2],
            Item::Segment {
                name: "PID".into(),
                optional: true,
                repeating: true
            }
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn matching_any_segment_list_terminates_and_places_every_segment(
            seq in proptest::collection::vec(prop_oneof![
                Just("MSH"), Just("PID"), Just("NTE"), Just("OBR"), Just("OBX"), Just("PV1"),
                Just("ZXX"), Just("ORC"), Just("SPM"), Just("DSC")], 0..60)
        ) {
            let st = Structure::parse("ORU_R01", ORU).unwrap();
            let n: Vec<String> = seq.iter().map(|s| s.to_string()).collect();
            let (root, findings) = match_segments(&st, &n);
            fn count(i: &Instance) -> usize {
                i.children.iter().map(|c| match c { Node::Segment(_) => 1, Node::Group(g) => count(g) }).sum()
            }
            let ignored = findings.iter().filter(|f| matches!(f, Finding::Ignored { .. })).count();
            prop_assert_eq!(count(&root) + ignored, n.len());
        }

        #[test]
        fn arbitrary_grammar_text_never_panics(s in "[\\[\\]{}() A-Z0-9_:a-z]{0,80}") {
            let _ = Structure::parse("X", &format!("MSH {s}"));
        }
    }
}
