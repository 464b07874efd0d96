//! HL7 v2 dates and timestamps (DT, DTM, and TS's first component) as FHIR `date`,
//! `dateTime` and `instant`, keeping their precision: `1980` stays a year, `198002` a month;
//! a time keeps its fractional seconds; an offset is never lost. A timestamp with a time
//! but no offset takes the channel's declared default zone (`+01:00`); with neither, it is
//! an error rather than a guess.

use std::fmt;

/// Why a v2 timestamp cannot become a FHIR one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtmError(pub String);

impl fmt::Display for DtmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DtmError {}

fn bad(text: &str, why: &str) -> DtmError {
    DtmError(format!(
        "'{}' is not an HL7 v2 timestamp: {why}",
        text.chars().take(40).collect::<String>()
    ))
}

/// A parsed timestamp: the digits it had, split by precision.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts<'a> {
    date: &'a str,           // 4, 6 or 8 digits
    time: &'a str,           // "", 2, 4 or 6 digits
    fraction: &'a str,       // digits after '.', maybe ""
    offset: Option<&'a str>, // "+HHMM" / "-HHMM"
}

fn parts(text: &str) -> Result<Parts<'_>, DtmError> {
    let (body, offset) = match text.find(['+', '-']) {
        Some(i) => (text.get(..i).unwrap_or(""), text.get(i..)),
        None => (text, None),
    };
    let (digits, fraction) = match body.split_once('.') {
        Some((d, f)) => (d, f),
        None => (body, ""),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad(text, "digits expected"));
    }
    if !matches!(digits.len(), 4 | 6 | 8 | 10 | 12 | 14) {
        return Err(bad(text, "YYYY[MM[DD[HH[MM[SS]]]]] expected"));
    }
    if !fraction.is_empty() && digits.len() != 14 {
        return Err(bad(text, "fractional seconds need seconds"));
    }
    if body.ends_with('.') {
        return Err(bad(text, "a '.' needs digits after it"));
    }
    if let Some(o) = offset {
        let d = o.get(1..).unwrap_or("");
        if d.len() != 4 || !d.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad(text, "the offset is +HHMM or -HHMM"));
        }
    }
    let (date, time) = digits.split_at(digits.len().min(8));
    Ok(Parts {
        date,
        time,
        fraction,
        offset,
    })
}

fn range(s: &str, lo: u32, hi: u32) -> bool {
    s.parse::<u32>().is_ok_and(|v| (lo..=hi).contains(&v))
}

fn date_of(p: &Parts<'_>, text: &str) -> Result<String, DtmError> {
    let d = p.date;
    let year = d.get(..4).unwrap_or("");
    let month = d.get(4..6);
    let day = d.get(6..8);
    if month.is_some_and(|m| !range(m, 1, 12)) || day.is_some_and(|x| !range(x, 1, 31)) {
        return Err(bad(text, "month or day out of range"));
    }
    let mut out = year.to_string();
    for part in [month, day].into_iter().flatten() {
        out.push('-');
        out.push_str(part);
    }
    Ok(out)
}

/// DT or DTM → FHIR `date` (the date part, at its precision; a time is dropped).
pub fn to_date(text: &str) -> Result<String, DtmError> {
    let p = parts(text.trim())?;
    date_of(&p, text)
}

/// DTM → FHIR `dateTime`: a date at its precision, or a full time with an offset (the
/// timestamp's own, else `default_offset` such as `+01:00`). Minutes-only times get `:00`
/// seconds (FHIR needs seconds), which adds no precision a reader could mistake: R4 has no
/// minute precision.
pub fn to_datetime(text: &str, default_offset: Option<&str>) -> Result<String, DtmError> {
    let text = text.trim();
    let p = parts(text)?;
    let mut out = date_of(&p, text)?;
    if p.time.is_empty() {
        return Ok(out);
    }
    if p.date.len() != 8 {
        return Err(bad(text, "a time needs a full date"));
    }
    let hh = p.time.get(..2).unwrap_or("");
    let mm = p.time.get(2..4).unwrap_or("00");
    let ss = p.time.get(4..6).unwrap_or("00");
    if !range(hh, 0, 23) || !range(mm, 0, 59) || !range(ss, 0, 60) {
        return Err(bad(text, "time out of range"));
    }
    out.push_str(&format!("T{hh}:{mm}:{ss}"));
    if !p.fraction.is_empty() {
        out.push('.');
        out.push_str(p.fraction);
    }
    match (p.offset, default_offset) {
        (Some(o), _) => {
            let (sign, d) = o.split_at(1);
            let (oh, om) = d.split_at(2);
            if !range(oh, 0, 14) || !range(om, 0, 59) {
                return Err(bad(text, "offset out of range"));
            }
            out.push_str(&format!("{sign}{oh}:{om}"));
        }
        (None, Some(zone)) => out.push_str(zone),
        (None, None) => {
            return Err(bad(
                text,
                "a time without an offset, and the channel declares no default zone",
            ));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_is_kept() {
        assert_eq!(to_datetime("1980", None).unwrap(), "1980");
        assert_eq!(to_datetime("198002", None).unwrap(), "1980-02");
        assert_eq!(to_datetime("19800214", None).unwrap(), "1980-02-14");
        assert_eq!(
            to_datetime("198002141230", Some("Z")).unwrap(),
            "1980-02-14T12:30:00Z"
        );
        assert_eq!(
            to_datetime("20240105083000.1234+0100", None).unwrap(),
            "2024-01-05T08:30:00.1234+01:00"
        );
        assert_eq!(
            to_datetime("2024010508-0500", None).unwrap(),
            "2024-01-05T08:00:00-05:00"
        );
        assert_eq!(to_date("20240105083000+0100").unwrap(), "2024-01-05");
    }

    #[test]
    fn offsets_are_never_invented_or_lost() {
        assert!(to_datetime("20240105083000", None).is_err());
        assert_eq!(
            to_datetime("20240105083000", Some("+02:00")).unwrap(),
            "2024-01-05T08:30:00+02:00"
        );
        // the message's own offset wins over the channel's default
        assert_eq!(
            to_datetime("20240105083000-0300", Some("+02:00")).unwrap(),
            "2024-01-05T08:30:00-03:00"
        );
    }

    #[test]
    fn malformed_timestamps_are_errors() {
        for t in [
            "",
            "19",
            "1980021",
            "19801314",
            "20240105253000+0000",
            "2024010508+01",
            "2024.5",
            "20240105083000.",
            "abcd",
            "2024-01-05",
        ] {
            assert!(to_datetime(t, Some("Z")).is_err(), "{t}");
        }
    }
}
