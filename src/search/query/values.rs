//! Parsers of search values: escapes and `,`/`|`/`$` splits, tokens, references, and the
//! prefixed dates, numbers and quantities with their implicit precision ranges.

use super::tree::{Pred, Prefix};
use super::{bad, clip};
use crate::fhir::outcome::Outcome;
use crate::search::dates;
use crate::search::ucum;

/// Splits on unescaped `sep` and removes FHIR search escapes (`\,` `\|` `\$` `\\`).
pub fn split(value: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) if n == sep => cur.push(n),
                Some(n @ (',' | '$' | '|' | '\\')) => {
                    // still escaped for a later split on another separator
                    cur.push('\\');
                    cur.push(n);
                }
                Some(n) => {
                    cur.push('\\');
                    cur.push(n);
                }
                None => cur.push('\\'),
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n @ (',' | '$' | '|' | '\\')) => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `[system|]code`: `a|b` system a code b; `|b` no system; `b` any system; `a|` any code.
pub fn token_pred(v: &str) -> Pred {
    let parts = split(v, '|');
    match parts.as_slice() {
        [code] => Pred::Token {
            system: None,
            code: Some(unescape(code)),
        },
        [system, code, ..] => Pred::Token {
            system: Some((!system.is_empty()).then(|| unescape(system))),
            code: (!code.is_empty()).then(|| unescape(code)),
        },
        [] => Pred::Token {
            system: None,
            code: None,
        },
    }
}

/// `Type/id`, `id`, an absolute URL (this server's are made local by the caller), with an
/// optional `:Type` modifier.
pub(super) fn reference_pred(
    v: &str,
    type_modifier: Option<&str>,
    targets: &[String],
) -> Result<Pred, Outcome> {
    let v = unescape(v);
    let defs = crate::fhir::definitions::Definitions::r4();
    let v = v.split("/_history/").next().unwrap_or_default().to_string();
    if v.contains("://") || v.starts_with("urn:") {
        return Ok(Pred::Uri(v));
    }
    let (ty, id) = match v.split_once('/') {
        Some((t, id)) => match defs.resource_type(t) {
            Some(t) => (Some(t.to_string()), id.to_string()),
            None => return Err(bad(format!("'{}' is not a resource type", clip(t)))),
        },
        None => (type_modifier.map(str::to_string), v.clone()),
    };
    if let (Some(t), Some(m)) = (&ty, type_modifier)
        && t != m
    {
        return Err(bad(format!(
            "Reference '{}' contradicts the :{m} modifier",
            clip(&v)
        )));
    }
    if let Some(t) = &ty
        && !targets.is_empty()
        && !targets.iter().any(|x| x == t)
    {
        return Err(bad(format!("The parameter cannot reference a {t}")));
    }
    if !crate::fhir::types::is_valid_id(&id) {
        return Err(bad(format!("'{}' is not a valid resource id", clip(&id))));
    }
    Ok(Pred::Ref {
        target_type: ty,
        id,
    })
}

fn prefix(v: &str) -> (Prefix, &str) {
    let table = [
        ("eq", Prefix::Eq),
        ("ne", Prefix::Ne),
        ("gt", Prefix::Gt),
        ("lt", Prefix::Lt),
        ("ge", Prefix::Ge),
        ("le", Prefix::Le),
        ("sa", Prefix::Sa),
        ("eb", Prefix::Eb),
        ("ap", Prefix::Ap),
    ];
    for (p, kind) in table {
        if let Some(rest) = v.strip_prefix(p) {
            return (kind, rest);
        }
    }
    (Prefix::Eq, v)
}

pub(super) fn date_pred(name: &str, v: &str) -> Result<Pred, Outcome> {
    let (p, rest) = prefix(v);
    let (low, high) = dates::range(rest).ok_or_else(|| {
        bad(format!(
            "'{}' of '{}' is not a date, dateTime or instant",
            clip(v),
            clip(name)
        ))
    })?;
    Ok(Pred::Date(p, low, high))
}

/// A number with its implicit precision range: `100` is [99.5, 100.5). The bounds are
/// computed in decimal, so `0.8` gives exactly 0.85 as its upper bound.
fn number_range(s: &str) -> Option<(f64, f64, f64)> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b".-+eE".contains(&b))
    {
        return None;
    }
    let value: f64 = s.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    let (mantissa, exp) = match s.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (s, 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len()) as i32;
    if exp == 0
        && let Some(d) = crate::fhirpath::Decimal::parse(mantissa)
    {
        let half = crate::fhirpath::Decimal::new(5, u32::try_from(decimals + 1).ok()?);
        let bound =
            |x: Option<crate::fhirpath::Decimal>| -> Option<f64> { x?.to_string().parse().ok() };
        return Some((
            value,
            bound(d.checked_sub(half))?,
            bound(d.checked_add(half))?,
        ));
    }
    let half = 0.5 * 10f64.powi(exp - decimals);
    Some((value, value - half, value + half))
}

pub(super) fn number_pred(name: &str, v: &str) -> Result<Pred, Outcome> {
    let (p, rest) = prefix(v);
    let (value, low, high) = number_range(rest)
        .ok_or_else(|| bad(format!("'{}' of '{}' is not a number", clip(v), clip(name))))?;
    Ok(Pred::Number(p, value, low, high))
}

pub(super) fn quantity_pred(name: &str, v: &str) -> Result<Pred, Outcome> {
    let parts = split(v, '|');
    // split yields at least one part
    let (p, rest) = prefix(parts.first().map_or("", String::as_str));
    let (value, low, high) = number_range(rest).ok_or_else(|| {
        bad(format!(
            "'{}' of '{}' is not a quantity",
            clip(v),
            clip(name)
        ))
    })?;
    let system = parts.get(1).filter(|s| !s.is_empty()).map(|s| unescape(s));
    let code = parts.get(2).filter(|s| !s.is_empty()).map(|s| unescape(s));
    if parts.len() > 3 {
        return Err(bad(format!("'{}' is not number|system|code", clip(v))));
    }
    // UCUM units compare in their base unit
    if system.as_deref() == Some(ucum::UCUM)
        && let Some(c) = &code
    {
        let (cv, cc) = ucum::canonical(value, c);
        let factor = if value == 0.0 { 1.0 } else { cv / value };
        return Ok(Pred::Quantity {
            prefix: p,
            value: cv,
            low: low * factor,
            high: high * factor,
            system,
            code: Some(cc),
            canonical: true,
        });
    }
    Ok(Pred::Quantity {
        prefix: p,
        value,
        low,
        high,
        system,
        code,
        canonical: false,
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_escapes() {
        assert_eq!(split("a\\,b,c", ','), ["a,b", "c"]);
        assert_eq!(
            token_pred("a\\|b|c"),
            Pred::Token {
                system: Some(Some("a|b".into())),
                code: Some("c".into())
            }
        );
        assert_eq!(
            token_pred("|c"),
            Pred::Token {
                system: Some(None),
                code: Some("c".into())
            }
        );
        assert_eq!(
            token_pred("s|"),
            Pred::Token {
                system: Some(Some("s".into())),
                code: None
            }
        );
    }
}
