//! Acknowledgements (ACK, original mode): `AA` accepted, `AE` error (with an ERR segment per
//! problem), `AR` rejected (unsupported structure or processing id, or a message that cannot
//! be read). The ACK answers the sender: MSH-3/4 and MSH-5/6 are swapped, MSA-2 echoes the
//! message control id, and the ACK's own control id is derived from it so that the same
//! message always gets the same ACK.

use super::er7::{Field, Message, Repetition, Segment, Separators};

/// The acknowledgement code (MSA-1, table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    Accept,
    Error,
    Reject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }
}

/// One ERR segment: where (`PID-3`, optional), the HL7 error code (table 0357: 100 segment
/// sequence error, 101 required field missing, 102 data type error, 103 table value not
/// found, 200 unsupported message type, 207 application internal error) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    pub location: Option<String>,
    pub code: &'static str,
    pub text: String,
}

fn field(values: &[&str]) -> Field {
    if values.iter().all(|v| v.is_empty()) {
        return Field::default();
    }
    Field {
        repetitions: vec![Repetition {
            components: values.iter().map(|v| vec![v.to_string()]).collect(),
        }],
    }
}

/// Builds the ACK for `original` (None when it could not be parsed at all: then a minimal
/// ACK with empty routing fields), stamped `timestamp` (`YYYYMMDDHHMMSS±ZZZZ`).
pub fn ack(
    original: Option<&Message>,
    code: AckCode,
    errors: &[AckError],
    timestamp: &str,
) -> Message {
    let msh = original.and_then(|m| m.segment("MSH"));
    let get = |n: usize| msh.map_or("", |m| m.get(n, 1, 1)).to_string();
    let control = original.map_or(String::new(), |m| m.control_id().to_string());
    let (_, trigger, _) = original.map(Message::message_type).unwrap_or_default();
    let version = match get(12) {
        v if v.is_empty() => "2.5.1".to_string(),
        v => v,
    };
    let separators = original.map_or_else(Separators::default, |m| m.separators);
    let mut fields = vec![
        field(&[&separators.field.to_string()]),
        field(&[&separators.encoding_characters()]),
        field(&[&get(5)]),
        field(&[&get(6)]),
        field(&[&get(3)]),
        field(&[&get(4)]),
        field(&[timestamp]),
        Field::default(),
        field(&["ACK", &trigger, "ACK"]),
        field(&[&format!(
            "ACK{}",
            control.chars().take(17).collect::<String>()
        )]),
        field(&[&match get(11) {
            p if p.is_empty() => "P".to_string(),
            p => p,
        }]),
        field(&[&version]),
    ];
    fields.truncate(12);
    let mut segments = vec![
        Segment {
            name: "MSH".into(),
            fields,
        },
        Segment {
            name: "MSA".into(),
            fields: vec![field(&[code.as_str()]), field(&[&control])],
        },
    ];
    for e in errors {
        let severity = if code == AckCode::Accept { "W" } else { "E" };
        let loc = e.location.clone().unwrap_or_default();
        let (seg, pos) = loc.split_once('-').unwrap_or((loc.as_str(), ""));
        segments.push(Segment {
            name: "ERR".into(),
            fields: vec![
                Field::default(),
                field(&[seg, "", pos]),
                field(&[e.code, "", "HL70357"]),
                field(&[severity]),
                Field::default(),
                Field::default(),
                Field::default(),
                field(&[&e.text.chars().take(250).collect::<String>()]),
            ],
        });
    }
    Message {
        separators,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hl7v2::er7::parse;

    #[test]
    fn an_ack_answers_the_sender_with_the_control_id() {
        let m = parse("MSH|^~\\&|EPIC|HOSP|HP|HPF|20240105||ADT^A01^ADT_A01|MSG1|P|2.5.1\rPID|1\r")
            .unwrap();
        let a = ack(Some(&m), AckCode::Accept, &[], "20240105083001+0000");
        let text = a.to_er7();
        assert_eq!(
            text,
            "MSH|^~\\&|HP|HPF|EPIC|HOSP|20240105083001+0000||ACK^A01^ACK|ACKMSG1|P|2.5.1\rMSA|AA|MSG1\r"
        );
        assert_eq!(parse(&text).unwrap(), a);
    }

    #[test]
    fn errors_become_err_segments() {
        let m = parse("MSH|^~\\&|A|B|C|D|x||ORU^R01|9|P|2.5\r").unwrap();
        let e = AckError {
            location: Some("PID-3".into()),
            code: "103",
            text: "unknown authority X|Y".into(),
        };
        let a = ack(Some(&m), AckCode::Error, &[e], "20240101000000+0000");
        let text = a.to_er7();
        assert!(text.contains("MSA|AE|9\r"), "{text}");
        assert!(
            text.contains("ERR||PID^^3|103^^HL70357|E||||unknown authority X\\F\\Y\r"),
            "{text}"
        );
        let unreadable = ack(None, AckCode::Reject, &[], "20240101000000+0000");
        assert!(unreadable.to_er7().contains("MSA|AR|\r"));
    }
}
