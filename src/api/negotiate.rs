//! Content negotiation and FHIR request headers, parsed once at the edge: `_format`, `Accept`,
//! `_pretty`, `Content-Type` (with the fhirVersion parameter), `Prefer`, `If-Match`,
//! `If-None-Match`, `If-Modified-Since`, `If-None-Exist`.

use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::{Instant, parse_etag};
use crate::interaction::{IfNoneMatch, Preconditions, PreferReturn};
use axum::http::HeaderMap;
use axum::http::header::{ACCEPT, CONTENT_TYPE, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH};

/// The response format a client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub pretty: bool,
    /// Answer with `application/json` instead of `application/fhir+json` (the client asked
    /// for plain JSON only).
    pub plain_json: bool,
    /// The client accepts only NDJSON (a Bulk Data file download): a JSON body is 406.
    pub ndjson: bool,
}

/// FHIR versions whose JSON we serve: R4, and R4B (its core resources are R4's), because
/// R4B clients such as fhir-sdk send `fhirVersion=4.3`.
const FHIR_VERSIONS: &[&str] = &["4.0", "4.0.1", "4.3", "4.3.0"];

#[derive(Debug, PartialEq, Eq)]
enum MediaKind {
    FhirJson,
    Json,
    Any,
    Ndjson,
    Other,
}

fn classify(essence: &str) -> MediaKind {
    match essence {
        "application/fhir+json" | "application/json+fhir" | "json" => MediaKind::FhirJson,
        "application/json" | "text/json" => MediaKind::Json,
        "*/*" | "application/*" => MediaKind::Any,
        "application/fhir+ndjson" | "application/ndjson" | "ndjson" => MediaKind::Ndjson,
        _ => MediaKind::Other,
    }
}

/// Splits `type/subtype; a=b` into the lowercased essence and its parameters.
fn parse_media(s: &str) -> (String, Vec<(String, String)>) {
    let mut parts = s.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            Some((
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_string(),
            ))
        })
        .collect();
    (essence, params)
}

fn version_ok(params: &[(String, String)]) -> bool {
    params
        .iter()
        .filter(|(k, _)| k == "fhirversion")
        .all(|(_, v)| FHIR_VERSIONS.contains(&v.as_str()))
}

/// Decides the response format from `_format`, `_pretty` and `Accept` (406 if impossible).
pub fn negotiate(headers: &HeaderMap, query: &[(String, String)]) -> Result<Format, Outcome> {
    let pretty = query.iter().any(|(k, v)| k == "_pretty" && v == "true");
    if let Some((_, f)) = query.iter().find(|(k, _)| k == "_format") {
        let (essence, params) = parse_media(f);
        return match classify(&essence) {
            MediaKind::FhirJson | MediaKind::Any if version_ok(&params) => Ok(Format {
                pretty,
                plain_json: false,
                ndjson: false,
            }),
            MediaKind::Json if version_ok(&params) => Ok(Format {
                pretty,
                plain_json: true,
                ndjson: false,
            }),
            _ => Err(Outcome::new(
                ErrorKind::NotAcceptable,
                "Only JSON is supported (_format=json or application/fhir+json)",
            )),
        };
    }
    let Some(accept) = headers.get(ACCEPT) else {
        return Ok(Format {
            pretty,
            plain_json: false,
            ndjson: false,
        });
    };
    let accept = accept.to_str().unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(Format {
            pretty,
            plain_json: false,
            ndjson: false,
        });
    }
    let mut best: Option<MediaKind> = None;
    for range in accept.split(',') {
        let (essence, params) = parse_media(range);
        let q_zero = params
            .iter()
            .any(|(k, v)| k == "q" && v.parse::<f32>().is_ok_and(|q| q == 0.0));
        if q_zero || !version_ok(&params) {
            continue;
        }
        match classify(&essence) {
            MediaKind::FhirJson | MediaKind::Any => {
                best = Some(MediaKind::FhirJson);
                break;
            }
            MediaKind::Json => best = Some(MediaKind::Json),
            MediaKind::Ndjson if best.is_none() => best = Some(MediaKind::Ndjson),
            MediaKind::Ndjson | MediaKind::Other => {}
        }
    }
    match best {
        Some(MediaKind::Json) => Ok(Format {
            pretty,
            plain_json: true,
            ndjson: false,
        }),
        Some(MediaKind::Ndjson) => Ok(Format {
            pretty: false,
            plain_json: false,
            ndjson: true,
        }),
        Some(_) => Ok(Format {
            pretty,
            plain_json: false,
            ndjson: false,
        }),
        None => Err(Outcome::new(
            ErrorKind::NotAcceptable,
            "None of the accepted media types can be produced; this server speaks \
             application/fhir+json (FHIR 4.0)",
        )),
    }
}

/// What a request body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    FhirJson,
    JsonPatch,
}

/// Checks the Content-Type of a request with a body (415 if unsupported).
pub fn body_kind(headers: &HeaderMap, allow_json_patch: bool) -> Result<BodyKind, Outcome> {
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return Err(Outcome::new(
            ErrorKind::UnsupportedMediaType,
            "A Content-Type is required: application/fhir+json",
        ));
    };
    let (essence, params) = parse_media(ct.to_str().unwrap_or(""));
    let charset_ok = params
        .iter()
        .filter(|(k, _)| k == "charset")
        .all(|(_, v)| v.eq_ignore_ascii_case("utf-8"));
    if !charset_ok {
        return Err(Outcome::new(
            ErrorKind::UnsupportedMediaType,
            "Only the utf-8 charset is supported",
        ));
    }
    if !version_ok(&params) {
        return Err(Outcome::new(
            ErrorKind::UnsupportedMediaType,
            "Unsupported fhirVersion: this server speaks FHIR 4.0",
        ));
    }
    match essence.as_str() {
        "application/fhir+json" | "application/json" | "application/json+fhir" => {
            Ok(BodyKind::FhirJson)
        }
        "application/json-patch+json" if allow_json_patch => Ok(BodyKind::JsonPatch),
        _ => Err(Outcome::new(
            ErrorKind::UnsupportedMediaType,
            if allow_json_patch {
                "Unsupported Content-Type: use application/json-patch+json or application/fhir+json"
            } else {
                "Unsupported Content-Type: use application/fhir+json"
            },
        )),
    }
}

/// `Prefer: return=…` (unknown preferences are ignored, as RFC 7240 says).
pub fn prefer_return(headers: &HeaderMap) -> PreferReturn {
    for value in headers.get_all("prefer") {
        for pref in value.to_str().unwrap_or("").split([',', ';']) {
            match pref.trim().to_ascii_lowercase().as_str() {
                "return=minimal" => return PreferReturn::Minimal,
                "return=representation" => return PreferReturn::Representation,
                "return=operationoutcome" => return PreferReturn::OperationOutcome,
                _ => {}
            }
        }
    }
    PreferReturn::Representation
}

/// `Prefer: handling=strict` (unknown search parameters are errors, not warnings).
pub fn prefer_strict(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().any(|value| {
        value
            .to_str()
            .unwrap_or("")
            .split([',', ';'])
            .any(|p| p.trim().eq_ignore_ascii_case("handling=strict"))
    })
}

/// The conditional-request headers.
pub fn preconditions(headers: &HeaderMap) -> Result<Preconditions, Outcome> {
    let text = |name| {
        headers
            .get(name)
            .map(|v| v.to_str().map(str::trim).map_err(|_| ()))
    };
    let if_match = match text(IF_MATCH) {
        None => None,
        Some(Ok(v)) => Some(parse_etag(v).ok_or_else(|| {
            Outcome::bad_request("If-Match must be a version ETag such as W/\"3\"")
        })?),
        Some(Err(())) => return Err(Outcome::bad_request("If-Match is not readable")),
    };
    let if_none_match = match text(IF_NONE_MATCH) {
        None => None,
        Some(Ok("*")) => Some(IfNoneMatch::Any),
        Some(Ok(v)) => parse_etag(v).map(IfNoneMatch::Version),
        Some(Err(())) => None,
    };
    let if_modified_since = match text(IF_MODIFIED_SINCE) {
        Some(Ok(v)) => Instant::parse_http_date(v),
        _ => None,
    };
    let if_none_exist = match text(axum::http::HeaderName::from_static("if-none-exist")) {
        None => None,
        Some(Ok(v)) => {
            // Some clients send the full `Type?criteria`; only the query part is criteria.
            let v = v.rsplit_once('?').map_or(v, |(_, q)| q);
            Some(v.to_string())
        }
        Some(Err(())) => return Err(Outcome::bad_request("If-None-Exist is not readable")),
    };
    Ok(Preconditions {
        if_match,
        if_none_match,
        if_modified_since,
        if_none_exist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn negotiation() {
        let ok = |headers: HeaderMap, query: Vec<(String, String)>| negotiate(&headers, &query);
        assert!(ok(h(&[]), q(&[])).is_ok());
        assert!(
            ok(
                h(&[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")]),
                q(&[])
            )
            .is_ok()
        );
        assert!(
            ok(
                h(&[("accept", "application/fhir+json; fhirVersion=4.3")]),
                q(&[])
            )
            .is_ok()
        );
        assert!(
            ok(
                h(&[("accept", "application/fhir+json; fhirVersion=5.0")]),
                q(&[])
            )
            .is_err()
        );
        assert!(ok(h(&[("accept", "application/fhir+xml")]), q(&[])).is_err());
        assert!(
            ok(
                h(&[("accept", "application/fhir+xml")]),
                q(&[("_format", "json")])
            )
            .is_ok()
        );
        assert!(ok(h(&[]), q(&[("_format", "xml")])).is_err());
        let f = ok(
            h(&[("accept", "application/json")]),
            q(&[("_pretty", "true")]),
        )
        .unwrap();
        assert!(f.pretty && f.plain_json);
    }

    #[test]
    fn content_types() {
        assert_eq!(
            body_kind(
                &h(&[("content-type", "application/fhir+json; charset=UTF-8")]),
                false
            )
            .unwrap(),
            BodyKind::FhirJson
        );
        assert!(
            body_kind(
                &h(&[("content-type", "application/fhir+json; fhirVersion=4.3")]),
                false
            )
            .is_ok()
        );
        assert!(body_kind(&h(&[("content-type", "application/xml")]), false).is_err());
        assert!(body_kind(&h(&[]), false).is_err());
        assert!(
            body_kind(
                &h(&[("content-type", "application/json-patch+json")]),
                false
            )
            .is_err()
        );
        assert_eq!(
            body_kind(&h(&[("content-type", "application/json-patch+json")]), true).unwrap(),
            BodyKind::JsonPatch
        );
    }

    #[test]
    fn headers() {
        assert_eq!(
            prefer_return(&h(&[("prefer", "return=minimal")])),
            PreferReturn::Minimal
        );
        assert_eq!(
            prefer_return(&h(&[(
                "prefer",
                "handling=strict, return=OperationOutcome"
            )])),
            PreferReturn::OperationOutcome
        );
        let p = preconditions(&h(&[
            ("if-match", "W/\"2\""),
            ("if-none-match", "*"),
            ("if-none-exist", "Patient?identifier=a|b"),
        ]))
        .unwrap();
        assert_eq!(p.if_match, Some(2));
        assert_eq!(p.if_none_match, Some(IfNoneMatch::Any));
        assert_eq!(p.if_none_exist.as_deref(), Some("identifier=a|b"));
        assert!(preconditions(&h(&[("if-match", "nonsense")])).is_err());
    }
}
