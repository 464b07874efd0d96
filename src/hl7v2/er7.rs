//! ER7 (the `|^~\&` encoding of HL7 v2): segments, fields, repetitions, components and
//! subcomponents, with the encoding characters each message declares in MSH-1/MSH-2.
//! Escape sequences are unescaped after splitting (`\F\ \S\ \T\ \R\ \E\ \Xhh…\`, `\.br\`;
//! highlighting `\H\ \N\` and locally defined `\Z…\` are dropped). Segment terminators are
//! lenient: `\r`, `\n` and `\r\n` all end a segment. Everything is bounded: a message over
//! [`MAX_MESSAGE_BYTES`], or with more than [`MAX_SEGMENTS`] segments, is an error, and
//! nothing here indexes without checking — a hostile message gets an error, never a panic.
//!
//! Positions are 1-based as in the standard: `PID-5.1` is field 5, component 1. In MSH,
//! field 1 is the field separator itself and field 2 the encoding characters.

use std::fmt;

/// The largest message accepted (ED attachments in ORU/MDM make messages of a few MB).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// The most segments one message may have.
pub const MAX_SEGMENTS: usize = 20_000;

/// Why a message could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    TooLarge(usize),
    TooManySegments,
    NoMsh,
    BadEncodingCharacters(String),
    BadSegmentName { index: usize, name: String },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooLarge(n) => write!(
                f,
                "the message is {n} bytes, over the limit of {MAX_MESSAGE_BYTES}"
            ),
            ParseError::TooManySegments => {
                write!(f, "the message has more than {MAX_SEGMENTS} segments")
            }
            ParseError::NoMsh => write!(f, "a message starts with an MSH segment"),
            ParseError::BadEncodingCharacters(s) => {
                write!(f, "MSH-1/MSH-2 encoding characters are not usable: {s}")
            }
            ParseError::BadSegmentName { index, name } => write!(
                f,
                "segment {} has no valid name ('{}'): a segment name is three letters or digits",
                index + 1,
                name.chars().take(10).collect::<String>()
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// The encoding characters of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Separators {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: Option<char>,
    pub subcomponent: char,
}

impl Default for Separators {
    fn default() -> Self {
        Separators {
            field: '|',
            component: '^',
            repetition: '~',
            escape: Some('\\'),
            subcomponent: '&',
        }
    }
}

impl Separators {
    /// MSH-2 as these separators write it.
    pub fn encoding_characters(&self) -> String {
        let mut s = String::new();
        s.push(self.component);
        s.push(self.repetition);
        s.extend(self.escape);
        s.push(self.subcomponent);
        s
    }

    /// Escapes a value so that it survives splitting (the inverse of unescaping).
    pub fn escape(&self, value: &str) -> String {
        let Some(e) = self.escape else {
            return value.to_string();
        };
        let mut out = String::with_capacity(value.len());
        for c in value.chars() {
            match c {
                c if c == e => out.extend([e, 'E', e]),
                c if c == self.field => out.extend([e, 'F', e]),
                c if c == self.component => out.extend([e, 'S', e]),
                c if c == self.subcomponent => out.extend([e, 'T', e]),
                c if c == self.repetition => out.extend([e, 'R', e]),
                '\r' => out.extend([e, 'X', '0', 'D', e]),
                '\n' => out.extend([e, 'X', '0', 'A', e]),
                c => out.push(c),
            }
        }
        out
    }

    /// Unescapes one subcomponent's text (already split, so separators in it are data).
    pub fn unescape(&self, raw: &str) -> String {
        let Some(e) = self.escape else {
            return raw.to_string();
        };
        if !raw.contains(e) {
            return raw.to_string();
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(start) = rest.find(e) {
            out.push_str(rest.get(..start).unwrap_or(""));
            let after = rest.get(start + e.len_utf8()..).unwrap_or("");
            let Some(end) = after.find(e) else {
                // an escape that is never closed is data
                out.push_str(rest.get(start..).unwrap_or(""));
                return out;
            };
            let seq = after.get(..end).unwrap_or("");
            match seq {
                "F" => out.push(self.field),
                "S" => out.push(self.component),
                "T" => out.push(self.subcomponent),
                "R" => out.push(self.repetition),
                "E" => out.push(e),
                ".br" => out.push('\n'),
                "H" | "N" => {}
                s if s.starts_with('X') => out.push_str(&hex(s.get(1..).unwrap_or(""))),
                s if s.starts_with('Z') => {}
                // unknown or malformed: kept as written
                s => {
                    out.push(e);
                    out.push_str(s);
                    out.push(e);
                }
            }
            rest = after.get(end + e.len_utf8()..).unwrap_or("");
        }
        out.push_str(rest);
        out
    }
}

/// `\Xhhhh\`: hex pairs as bytes, read as UTF-8 (lossily: invalid bytes become U+FFFD).
fn hex(digits: &str) -> String {
    let bytes: Vec<u8> = digits
        .as_bytes()
        .chunks(2)
        .filter_map(|pair| std::str::from_utf8(pair).ok())
        .filter_map(|p| u8::from_str_radix(p, 16).ok())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// One repetition of a field: components, each a list of subcomponents (unescaped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repetition {
    pub components: Vec<Vec<String>>,
}

impl Repetition {
    /// Component `c`, subcomponent `s` (1-based); "" when absent.
    pub fn get(&self, c: usize, s: usize) -> &str {
        c.checked_sub(1)
            .and_then(|c| self.components.get(c))
            .and_then(|subs| s.checked_sub(1).and_then(|s| subs.get(s)))
            .map_or("", String::as_str)
    }

    /// Whether every component is empty.
    pub fn is_empty(&self) -> bool {
        self.components
            .iter()
            .all(|subs| subs.iter().all(String::is_empty))
    }
}

/// A field: its repetitions (one for a field that does not repeat; none when empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Field {
    pub repetitions: Vec<Repetition>,
}

impl Field {
    /// The first repetition's value at component `c`, subcomponent `s`.
    pub fn get(&self, c: usize, s: usize) -> &str {
        self.repetitions.first().map_or("", |r| r.get(c, s))
    }

    pub fn is_empty(&self) -> bool {
        self.repetitions.iter().all(Repetition::is_empty)
    }
}

/// A segment: its three-character name and its fields (index 0 is field 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub name: String,
    pub fields: Vec<Field>,
}

impl Segment {
    /// Field `n` (1-based), if present.
    pub fn field(&self, n: usize) -> Option<&Field> {
        n.checked_sub(1).and_then(|i| self.fields.get(i))
    }

    /// The text at `n.c.s` of the first repetition; "" when absent.
    pub fn get(&self, n: usize, c: usize, s: usize) -> &str {
        self.field(n).map_or("", |f| f.get(c, s))
    }
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub separators: Separators,
    pub segments: Vec<Segment>,
}

impl Message {
    /// The first segment named `name`.
    pub fn segment(&self, name: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.name == name)
    }

    /// MSH-9 as `(code, trigger, structure)`: `ADT`, `A01`, `ADT_A01` (the structure when
    /// MSH-9.3 is empty is `code_trigger`).
    pub fn message_type(&self) -> (String, String, String) {
        let msh = self.segment("MSH");
        let get = |c| msh.map_or("", |m| m.get(9, c, 1)).to_string();
        let (code, trigger, structure) = (get(1), get(2), get(3));
        let structure = if structure.is_empty() {
            format!("{code}_{trigger}")
        } else {
            structure
        };
        (code, trigger, structure)
    }

    /// MSH-10, the message control id.
    pub fn control_id(&self) -> &str {
        self.segment("MSH").map_or("", |m| m.get(10, 1, 1))
    }

    /// Writes the message back as ER7 (segments ended by `\r`).
    pub fn to_er7(&self) -> String {
        let sep = &self.separators;
        let mut out = String::new();
        for seg in &self.segments {
            out.push_str(&seg.name);
            let is_msh = seg.name == "MSH";
            for (i, f) in seg.fields.iter().enumerate() {
                if is_msh && i == 0 {
                    out.push(sep.field);
                    continue;
                }
                if is_msh && i == 1 {
                    out.push_str(&sep.encoding_characters());
                    continue;
                }
                out.push(sep.field);
                let reps: Vec<String> = f
                    .repetitions
                    .iter()
                    .map(|r| {
                        r.components
                            .iter()
                            .map(|subs| {
                                subs.iter()
                                    .map(|s| sep.escape(s))
                                    .collect::<Vec<_>>()
                                    .join(&sep.subcomponent.to_string())
                            })
                            .collect::<Vec<_>>()
                            .join(&sep.component.to_string())
                    })
                    .collect();
                out.push_str(&reps.join(&sep.repetition.to_string()));
            }
            out.push('\r');
        }
        out
    }
}

/// Reads MSH-1 and MSH-2 from the start of a message.
fn separators_of(first: &str) -> Result<Separators, ParseError> {
    let mut chars = first.chars();
    let head: String = chars.by_ref().take(3).collect();
    if head != "MSH" {
        return Err(ParseError::NoMsh);
    }
    let field = chars
        .next()
        .ok_or_else(|| ParseError::BadEncodingCharacters("MSH has no field separator".into()))?;
    let enc: String = chars.take_while(|c| *c != field).collect();
    let enc: Vec<char> = enc.chars().collect();
    let pick = |i: usize| enc.get(i).copied();
    let (Some(component), Some(repetition)) = (pick(0), pick(1)) else {
        return Err(ParseError::BadEncodingCharacters(
            "MSH-2 needs at least the component and repetition characters".into(),
        ));
    };
    let escape = pick(2);
    let subcomponent = pick(3).unwrap_or('&');
    let sep = Separators {
        field,
        component,
        repetition,
        escape,
        subcomponent,
    };
    let mut all = vec![field, component, repetition, subcomponent];
    all.extend(escape);
    let distinct = {
        let mut d = all.clone();
        d.sort_unstable();
        d.dedup();
        d.len() == all.len()
    };
    if !distinct || all.iter().any(|c| c.is_alphanumeric() || c.is_whitespace()) {
        return Err(ParseError::BadEncodingCharacters(
            "the separators must be distinct punctuation".into(),
        ));
    }
    Ok(sep)
}

/// Parses an ER7 message. Blank lines between segments are skipped; an MLLP frame's bytes
/// are removed by the transport before this.
pub fn parse(text: &str) -> Result<Message, ParseError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ParseError::TooLarge(text.len()));
    }
    let text = text.trim_start_matches(['\u{feff}', '\r', '\n', ' ', '\t']);
    let separators = separators_of(text)?;
    let mut segments = Vec::new();
    for (index, line) in text
        .split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .enumerate()
    {
        if segments.len() >= MAX_SEGMENTS {
            return Err(ParseError::TooManySegments);
        }
        segments.push(parse_segment(line, index, &separators)?);
    }
    Ok(Message {
        separators,
        segments,
    })
}

fn parse_segment(line: &str, index: usize, sep: &Separators) -> Result<Segment, ParseError> {
    let mut parts = line.split(sep.field);
    let name = parts.next().unwrap_or("").to_string();
    if name.len() != 3
        || !name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return Err(ParseError::BadSegmentName { index, name });
    }
    let mut fields = Vec::new();
    if name == "MSH" {
        // MSH-1 is the field separator, MSH-2 the encoding characters, as written
        fields.push(literal(sep.field.to_string()));
        fields.push(literal(parts.next().unwrap_or("").to_string()));
    }
    for raw in parts {
        fields.push(parse_field(raw, sep));
    }
    Ok(Segment { name, fields })
}

fn literal(text: String) -> Field {
    Field {
        repetitions: vec![Repetition {
            components: vec![vec![text]],
        }],
    }
}

fn parse_field(raw: &str, sep: &Separators) -> Field {
    if raw.is_empty() {
        return Field::default();
    }
    let repetitions = raw
        .split(sep.repetition)
        .map(|rep| Repetition {
            components: rep
                .split(sep.component)
                .map(|c| c.split(sep.subcomponent).map(|s| sep.unescape(s)).collect())
                .collect(),
        })
        .collect();
    Field { repetitions }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ADT: &str = "MSH|^~\\&|EPIC|HOSP|HP|HP|20240105083000+0100||ADT^A01^ADT_A01|MSG0001|P|2.5.1\r\
        EVN|A01|20240105083000\r\
        PID|1||12345^^^HOSP^MR~999-99-9999^^^SSA^SS||Doe^Jane^Q\\S\\R||19800214|F|||1 Main St^^Town^ST^12345\r\
        PV1|1|I|W1^101^A\r";

    #[test]
    fn fields_components_repetitions_and_msh_numbering() {
        let m = parse(ADT).unwrap();
        let msh = m.segment("MSH").unwrap();
        assert_eq!(msh.get(1, 1, 1), "|");
        assert_eq!(msh.get(2, 1, 1), "^~\\&");
        assert_eq!(msh.get(3, 1, 1), "EPIC");
        assert_eq!(
            m.message_type(),
            ("ADT".into(), "A01".into(), "ADT_A01".into())
        );
        assert_eq!(m.control_id(), "MSG0001");
        let pid = m.segment("PID").unwrap();
        let ids = pid.field(3).unwrap();
        assert_eq!(ids.repetitions.len(), 2);
        assert_eq!(ids.repetitions[1].get(1, 1), "999-99-9999");
        assert_eq!(ids.repetitions[0].get(4, 1), "HOSP");
        // escapes are undone after splitting: \S\ is a literal ^ inside component 3
        assert_eq!(pid.get(5, 3, 1), "Q^R");
        assert_eq!(pid.get(8, 1, 1), "F");
        assert_eq!(pid.get(99, 1, 1), "");
        assert_eq!(m.segments.len(), 4);
    }

    #[test]
    fn every_escape_sequence() {
        let s = Separators::default();
        assert_eq!(
            s.unescape(r"a\F\b\S\c\T\d\R\e\E\f\X0D0A\g\.br\h\H\i\N\j\Zx\k"),
            "a|b^c&d~e\\f\r\ng\nhijk"
        );
        assert_eq!(s.unescape(r"\XC3A9\"), "é");
        assert_eq!(s.unescape(r"éé\F\ü"), "éé|ü");
        assert_eq!(s.unescape(r"open \F"), "open \\F");
        assert_eq!(s.unescape(r"\Q\"), "\\Q\\");
    }

    #[test]
    fn subcomponents_split_before_unescaping() {
        let m = parse("MSH|^~\\&|A\rOBX|1|CE|a&b\\T\\c^x\r").unwrap();
        let obx = m.segment("OBX").unwrap();
        assert_eq!(obx.get(3, 1, 1), "a");
        assert_eq!(obx.get(3, 1, 2), "b&c");
        assert_eq!(obx.get(3, 2, 1), "x");
    }

    #[test]
    fn other_encoding_characters_are_read_from_msh() {
        let m = parse("MSH#*@!%#A#B\nPID#1##x*y@z%w!F!\n").unwrap();
        let pid = m.segment("PID").unwrap();
        assert_eq!(pid.get(3, 1, 1), "x");
        assert_eq!(pid.get(3, 2, 1), "y");
        assert_eq!(pid.field(3).unwrap().repetitions[1].get(1, 1), "z");
        assert_eq!(pid.field(3).unwrap().repetitions[1].get(1, 2), "w#");
    }

    #[test]
    fn lenient_terminators() {
        for t in ["\r", "\n", "\r\n"] {
            let text = format!("MSH|^~\\&|A{t}PID|1{t}{t}PV1|1{t}");
            let m = parse(&text).unwrap();
            let names: Vec<&str> = m.segments.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["MSH", "PID", "PV1"], "{t:?}");
        }
    }

    #[test]
    fn malformed_and_oversized_messages_are_errors() {
        assert_eq!(parse("PID|1"), Err(ParseError::NoMsh));
        assert_eq!(parse(""), Err(ParseError::NoMsh));
        assert!(matches!(
            parse("MSH"),
            Err(ParseError::BadEncodingCharacters(_))
        ));
        assert!(matches!(
            parse("MSH|^^~\\&|"),
            Err(ParseError::BadEncodingCharacters(_))
        ));
        assert!(matches!(
            parse("MSH|^~\\&|A\rpid|1"),
            Err(ParseError::BadSegmentName { index: 1, .. })
        ));
        let big = format!("MSH|^~\\&|A\rOBX|1|ED|{}", "A".repeat(10 * 1024 * 1024));
        assert!(matches!(parse(&big), Err(ParseError::TooLarge(_))));
        let many = format!("MSH|^~\\&|A\r{}", "NTE|1\r".repeat(MAX_SEGMENTS + 1));
        assert_eq!(parse(&many), Err(ParseError::TooManySegments));
    }

    #[test]
    fn writing_back_round_trips() {
        let m = parse(ADT).unwrap();
        assert_eq!(parse(&m.to_er7()).unwrap(), m);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,300}") {
            let _ = parse(&s);
            let _ = parse(&format!("MSH|^~\\&|{s}"));
            let _ = Separators::default().unescape(&s);
        }

        #[test]
        fn hl7_shaped_text_never_panics(s in "(MSH|PID|OBX|[A-Z0-9]{3})?[|^~\\\\&\\r\\nA-Za-z0-9 éX.]{0,200}") {
            let _ = parse(&format!("MSH|^~\\&|{s}"));
            let _ = parse(&s);
        }

        #[test]
        fn escaped_values_survive_a_round_trip(v in "\\PC{0,60}") {
            let sep = Separators::default();
            let v = v.replace(['\r', '\n'], "");
            let text = format!("MSH|^~\\&|A\rNTE|1||{}\r", sep.escape(&v));
            let m = parse(&text).unwrap();
            prop_assert_eq!(m.segment("NTE").unwrap().get(3, 1, 1), v.as_str());
        }
    }
}
