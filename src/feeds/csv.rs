//! CSV feeds, pure: a CSV file and a `CsvMap` give one Bundle entry per row (a conditional
//! update by identifier, a PUT to a UUIDv5 id over the key columns, or an explicit request
//! such as an operation call), or that row's errors by row and column. Rows are independent:
//! a bad row never stops the others.

use super::map::{ID_NAMESPACE, set};
use super::mapping_set::MappingSet;
use super::maps::{CsvColumn, CsvMap};
use crate::hl7v2::dtm;
use serde_json::{Map, Value, json};

/// The largest CSV file read.
pub const MAX_CSV_BYTES: usize = 256 * 1024 * 1024;

/// One row's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvRow {
    /// The row number as a spreadsheet shows it (the header is row 1).
    pub row: usize,
    /// The key columns' values, joined by `|`.
    pub key: String,
    /// The batch entry (None when the row has errors).
    pub entry: Option<Value>,
    /// (column, message) per problem.
    pub errors: Vec<(String, String)>,
}

/// Why a whole file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvError(pub String);

impl std::fmt::Display for CsvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cell's value as FHIR JSON, or why not.
fn value(set_: &MappingSet, c: &CsvColumn, raw: &str) -> Result<Value, String> {
    let mut text = raw.trim().to_string();
    if let Some(v) = &c.vocab {
        let vm = set_.vocab(v).ok_or_else(|| format!("no vocabulary {v}"))?;
        match vm.map.get(&text) {
            Some(code) => text = code.clone(),
            None if vm.unmapped.as_deref() == Some("keep") => {}
            None => {
                return Err(format!(
                    "'{}' is not a code of {}",
                    text.chars().take(40).collect::<String>(),
                    vm.name
                ));
            }
        }
    }
    if let Some(template) = &c.reference {
        return Ok(json!({"reference": template.replace("{}", &text)}));
    }
    let shown = || text.chars().take(40).collect::<String>();
    match c.value_type.as_deref() {
        Some("date") => {
            // ISO (1980-02-14, 1980-02, 1980) or compact (19800214)
            let compact = text.replace('-', "");
            match dtm::to_date(&compact) {
                Ok(d) if !text.contains('-') || d == text => Ok(Value::String(d)),
                _ => Err(format!("'{}' is not a date (YYYY-MM-DD)", shown())),
            }
        }
        Some("dateTime") => {
            let rfc = time::format_description::well_known::Rfc3339;
            if time::OffsetDateTime::parse(&text, &rfc).is_ok() {
                Ok(Value::String(text))
            } else {
                Err(format!(
                    "'{}' is not a date-time with an offset (2024-01-05T08:30:00+01:00)",
                    shown()
                ))
            }
        }
        Some("decimal") | Some("integer") => {
            let integer = c.value_type.as_deref() == Some("integer");
            let ok = text.parse::<rust_decimal::Decimal>().is_ok()
                && (!integer || text.parse::<i64>().is_ok());
            match (ok, serde_json::from_str::<Value>(&text)) {
                (true, Ok(n @ Value::Number(_))) => Ok(n),
                _ => Err(format!("'{}' is not a number", shown())),
            }
        }
        Some("boolean") => match text.to_ascii_lowercase().as_str() {
            "true" | "y" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "n" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("'{}' is not true or false", shown())),
        },
        _ => Ok(Value::String(text)),
    }
}

impl MappingSet {
    /// Maps a CSV file (with a header row) to one outcome per data row.
    pub fn map_csv(&self, map: &CsvMap, bytes: &[u8]) -> Result<Vec<CsvRow>, CsvError> {
        if bytes.len() > MAX_CSV_BYTES {
            return Err(CsvError(format!(
                "the file is over the limit of {MAX_CSV_BYTES} bytes"
            )));
        }
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .trim(csv::Trim::Headers)
            .from_reader(bytes);
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| CsvError(format!("the header row cannot be read: {e}")))?
            .iter()
            .map(str::to_string)
            .collect();
        for c in map.columns.iter().filter_map(|c| c.column.as_deref()) {
            if !headers.iter().any(|h| h == c) {
                return Err(CsvError(format!(
                    "the file has no column '{c}' (map {} needs it; the header has {})",
                    map.name,
                    headers.join(", ")
                )));
            }
        }
        let col = |name: &str| headers.iter().position(|h| h == name);
        let mut out = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let row = i + 2;
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    out.push(CsvRow {
                        row,
                        key: String::new(),
                        entry: None,
                        errors: vec![("-".into(), format!("the row cannot be read: {e}"))],
                    });
                    continue;
                }
            };
            let cell = |name: &str| -> String {
                col(name)
                    .and_then(|i| record.get(i))
                    .unwrap_or("")
                    .trim()
                    .to_string()
            };
            let key = map
                .key
                .iter()
                .map(|k| cell(k))
                .collect::<Vec<_>>()
                .join("|");
            let mut resource = Map::new();
            resource.insert("resourceType".into(), Value::String(map.resource.clone()));
            let mut errors = Vec::new();
            for c in &map.columns {
                let raw = match (&c.constant, c.column.as_deref()) {
                    (Some(v), _) => {
                        set(&mut resource, &c.to, v.clone());
                        continue;
                    }
                    (None, Some(name)) => cell(name),
                    (None, None) => continue,
                };
                let name = c.column.clone().unwrap_or_default();
                if raw.is_empty() {
                    if c.required {
                        errors.push((name, "a required value is empty".to_string()));
                    }
                    continue;
                }
                match value(self, c, &raw) {
                    Ok(v) => set(&mut resource, &c.to, v),
                    Err(e) => errors.push((name, e)),
                }
            }
            if key.split('|').all(str::is_empty) {
                errors.push((map.key.join("+"), "the row's key is empty".to_string()));
            }
            let entry = if errors.is_empty() {
                match self.csv_request(map, &mut resource, &cell) {
                    Ok((method, url)) => Some(json!({
                        "resource": Value::Object(resource),
                        "request": {"method": method, "url": url},
                    })),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                }
            } else {
                None
            };
            out.push(CsvRow {
                row,
                key,
                entry,
                errors,
            });
        }
        Ok(out)
    }

    /// Where a row's resource goes: (method, url).
    fn csv_request(
        &self,
        map: &CsvMap,
        resource: &mut Map<String, Value>,
        cell: &dyn Fn(&str) -> String,
    ) -> Result<(String, String), (String, String)> {
        if let Some(r) = &map.request {
            // `{column}` placeholders: the cell, kept to id characters (no path or query tricks)
            let mut url = String::new();
            let mut rest = r.url.as_str();
            while let Some((before, after)) = rest.split_once('{') {
                url.push_str(before);
                let Some((name, tail)) = after.split_once('}') else {
                    break;
                };
                let v: String = cell(name)
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || "-.".contains(*c))
                    .collect();
                if v.is_empty() {
                    return Err((name.to_string(), "a required value is empty".into()));
                }
                url.push_str(&v);
                rest = tail;
            }
            url.push_str(rest);
            return Ok((r.method.clone(), url));
        }
        if map.identity.identifier {
            let found = resource
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find_map(|i| {
                    let sys = i.get("system").and_then(Value::as_str)?;
                    let val = i.get("value").and_then(Value::as_str)?;
                    Some(format!("{sys}|{val}"))
                });
            return match found {
                Some(token) => Ok(("PUT".into(), format!("{}?identifier={token}", map.resource))),
                None => Err((
                    "identifier".into(),
                    "the row gives no identifier with a system and a value".into(),
                )),
            };
        }
        let tuple = map
            .identity
            .uuid
            .iter()
            .map(|c| cell(c))
            .collect::<Vec<_>>()
            .join("|");
        let id = uuid::Uuid::new_v5(
            &ID_NAMESPACE,
            format!("{}|csv:{}|{tuple}", map.resource, map.name).as_bytes(),
        )
        .to_string();
        resource.insert("id".into(), Value::String(id.clone()));
        Ok(("PUT".into(), format!("{}/{id}", map.resource)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> MappingSet {
        MappingSet::embedded().unwrap()
    }

    #[test]
    fn rows_become_conditional_updates_or_row_errors() {
        let s = set();
        let m = s.csv_map("patients").unwrap();
        let csv = "mrn,family,given,birth_date,sex,phone\n\
                   100,Doe,Jane,1980-02-14,F,555-1234\n\
                   101,Roe,Rick,1980-13-01,X,\n\
                   ,Nobody,,,,\n";
        let rows = s.map_csv(m, csv.as_bytes()).unwrap();
        assert_eq!(rows.len(), 3);
        let e = rows[0].entry.as_ref().unwrap();
        assert_eq!(
            e["request"]["url"],
            "Patient?identifier=https://healporium.dev/fhir/sid/mrn|100"
        );
        assert_eq!(e["resource"]["birthDate"], "1980-02-14");
        assert_eq!(e["resource"]["gender"], "female");
        assert_eq!(rows[1].row, 3);
        let cols: Vec<&str> = rows[1].errors.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(cols, ["birth_date", "sex"], "{:?}", rows[1].errors);
        assert!(rows[2].entry.is_none());
        assert!(rows[2].errors.iter().any(|(c, _)| c == "mrn"));
    }

    #[test]
    fn payments_become_credit_payment_calls() {
        let s = set();
        let m = s.csv_map("payments").unwrap();
        let csv = "payment_id,line,amount,currency,transaction_id,paid_on
                   P-1,line-7,25.50,USD,tx-991,2024-03-01
                   P-2,../etc?x=1,10,USD,tx-992,2024-03-01
";
        let rows = s.map_csv(m, csv.as_bytes()).unwrap();
        let e = rows[0].entry.as_ref().unwrap();
        assert_eq!(e["request"]["method"], "POST");
        assert_eq!(e["request"]["url"], "Account/line-7/$credit-payment");
        let p = &e["resource"];
        assert_eq!(p["resourceType"], "Parameters");
        assert_eq!(
            p["parameter"][0],
            json!({"name": "requestId", "valueString": "P-1"})
        );
        assert_eq!(
            p["parameter"][1]["valueMoney"]["value"].to_string(),
            "25.50"
        );
        assert_eq!(
            p["parameter"][3],
            json!({"name": "paidOn", "valueDate": "2024-03-01"})
        );
        // a cell cannot steer the URL elsewhere
        assert_eq!(
            rows[1].entry.as_ref().unwrap()["request"]["url"],
            "Account/..etcx1/$credit-payment"
        );
    }

    #[test]
    fn a_missing_column_is_one_error_for_the_file() {
        let s = set();
        let e = s
            .map_csv(s.csv_map("patients").unwrap(), b"mrn,family\n1,Doe\n")
            .unwrap_err();
        assert!(e.0.contains("no column 'given'"), "{e}");
    }

    #[test]
    fn uuid_identities_are_stable_per_row_key() {
        let s = set();
        let m = s.csv_map("appointments").unwrap();
        let csv = "appointment_id,mrn,start,end,status,description\n\
                   A1,100,2024-01-10T09:30:00+01:00,2024-01-10T10:00:00+01:00,booked,Check-up\n";
        let a = s.map_csv(m, csv.as_bytes()).unwrap();
        let b = s.map_csv(m, csv.as_bytes()).unwrap();
        assert_eq!(a, b);
        let url = a[0].entry.as_ref().unwrap()["request"]["url"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(url.starts_with("Appointment/"), "{url}");
    }
}
