//! The FHIRPath function library (existence, filtering, subsetting, combining, conversion,
//! string, math, tree navigation, utility and FHIR-specific functions) used by `eval`. It
//! reaches the evaluator only through the [`Evaluator`] trait and never imports `eval`.

use std::cmp::Ordering;
use std::rc::Rc;

use regex::{Regex, RegexBuilder};
use serde_json::Value;

use super::context::{Evaluator, MAX_ITEMS, R, Scope};
use super::parser::{BinOp, Expr, TypeSpec};
use super::system::{
    Sys, arith, as_bool, bool_item, cmp_sys, eq_item, push_distinct, single, str_item, sys,
    sys_to_value,
};
use super::types::is_resource_type;
use super::value::{Decimal, Quantity, Temporal, TemporalKind, parse_quantity_text};
use super::{EvalError, FpValue, Item, Json, Node, Step};

type Items<'a> = Vec<Item<'a>>;

fn err(msg: impl Into<String>) -> EvalError {
    EvalError::new(msg)
}

fn arity(name: &str, args: &[Expr], min: usize, max: usize) -> R<()> {
    if args.len() < min || args.len() > max {
        return Err(err(format!(
            "{name}() takes {min}..={max} arguments, got {}",
            args.len()
        )));
    }
    Ok(())
}

fn computed<'a>(v: FpValue<'a>) -> Items<'a> {
    vec![Item::computed(v)]
}

fn type_spec(e: &Expr) -> R<TypeSpec> {
    match e {
        Expr::Ident(n) => Ok(TypeSpec {
            namespace: None,
            name: n.clone(),
        }),
        Expr::Member(ns, n) => match &**ns {
            Expr::Ident(ns) => Ok(TypeSpec {
                namespace: Some(ns.clone()),
                name: n.clone(),
            }),
            _ => Err(err("expected a type name")),
        },
        _ => Err(err("expected a type name")),
    }
}

fn regex(pattern: &str, full: bool) -> R<Regex> {
    let p = if full {
        format!("^(?:{pattern})$")
    } else {
        pattern.to_string()
    };
    RegexBuilder::new(&p)
        .dot_matches_new_line(true)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| err(format!("invalid regular expression: {e}")))
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn b64_encode(data: &[u8], alpha: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0);
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(b0) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(alpha.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn b64_decode(s: &str, alpha: &[u8; 64]) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = u32::try_from(alpha.iter().position(|a| *a == c)?).ok()?;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push(u8::try_from((bits >> nbits) & 0xff).ok()?);
        }
    }
    Some(out)
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn html_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn json_escape(s: &str) -> String {
    let quoted = Value::String(s.to_string()).to_string();
    quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or("")
        .to_string()
}

fn json_unescape(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next()? {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'b' => out.push('\u{8}'),
            'f' => out.push('\u{c}'),
            'u' => {
                let hex: String = it.by_ref().take(4).collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

fn parse_bool_text(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" | "1.0" => Some(true),
        "false" | "f" | "no" | "n" | "0" | "0.0" => Some(false),
        _ => None,
    }
}

fn is_integer_text(s: &str) -> bool {
    let d = s.strip_prefix(['+', '-']).unwrap_or(s);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

fn is_decimal_text(s: &str) -> bool {
    let d = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (i, f) = match d.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (d, None),
    };
    !i.is_empty()
        && i.bytes().all(|b| b.is_ascii_digit())
        && f.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// Conversion functions; `Ok(None)` when the value does not convert.
fn convert(kind: &str, s: &Sys, unit: Option<&str>) -> Option<Sys> {
    match kind {
        "Boolean" => match s {
            Sys::Bool(b) => Some(Sys::Bool(*b)),
            Sys::Int(1) => Some(Sys::Bool(true)),
            Sys::Int(0) => Some(Sys::Bool(false)),
            Sys::Dec(d) => match d.to_i64() {
                Some(1) => Some(Sys::Bool(true)),
                Some(0) => Some(Sys::Bool(false)),
                _ => None,
            },
            Sys::Str(t, _) => parse_bool_text(t).map(Sys::Bool),
            _ => None,
        },
        "Integer" => match s {
            Sys::Int(i) => Some(Sys::Int(*i)),
            Sys::Bool(b) => Some(Sys::Int(i64::from(*b))),
            Sys::Str(t, _) if is_integer_text(t) => t.parse().ok().map(Sys::Int),
            _ => None,
        },
        "Decimal" => match s {
            Sys::Int(i) => Some(Sys::Dec(Decimal::from_i64(*i))),
            Sys::Dec(d) => Some(Sys::Dec(*d)),
            Sys::Bool(b) => Some(Sys::Dec(Decimal::new(i128::from(*b) * 10, 1))),
            Sys::Str(t, _) if is_decimal_text(t) => Decimal::parse(t).map(Sys::Dec),
            _ => None,
        },
        "String" => Some(Sys::Str(
            Rc::from(match s {
                Sys::Str(t, _) => t.to_string(),
                Sys::Int(i) => i.to_string(),
                Sys::Dec(d) => d.to_string(),
                Sys::Bool(b) => b.to_string(),
                Sys::Tmp(t) => t.to_string(),
                Sys::Qty(q) => q.to_string(),
                _ => return None,
            }),
            false,
        )),
        "Date" => match s {
            Sys::Tmp(t) if t.kind != TemporalKind::Time => Some(Sys::Tmp(t.date_part())),
            Sys::Str(t, _) => Temporal::parse_date_or_datetime(t).map(|t| Sys::Tmp(t.date_part())),
            _ => None,
        },
        "DateTime" => match s {
            Sys::Tmp(t) if t.kind != TemporalKind::Time => Some(Sys::Tmp(Temporal {
                kind: TemporalKind::DateTime,
                ..*t
            })),
            Sys::Str(t, _) => Temporal::parse_datetime(t).map(Sys::Tmp),
            _ => None,
        },
        "Time" => match s {
            Sys::Tmp(t) if t.kind == TemporalKind::Time => Some(Sys::Tmp(*t)),
            Sys::Str(t, _) => Temporal::parse_time(t).map(Sys::Tmp),
            _ => None,
        },
        "Quantity" => {
            let q = match s {
                Sys::Int(i) => Some(Quantity::new(Decimal::from_i64(*i), "1")),
                Sys::Dec(d) => Some(Quantity::new(*d, "1")),
                Sys::Bool(b) => Some(Quantity::new(Decimal::new(i128::from(*b) * 10, 1), "1")),
                Sys::Qty(q) => Some(q.clone()),
                Sys::Str(t, _) => parse_quantity_text(t),
                _ => None,
            }?;
            match unit {
                None => Some(Sys::Qty(q)),
                Some(u) => {
                    let target = Quantity::new(Decimal::from_i64(1), u);
                    let v = target.convert_value(&q)?;
                    Some(Sys::Qty(Quantity { value: v, ..target }))
                }
            }
        }
        _ => None,
    }
}

/// Argument `i` evaluated in `sc`; empty when it is absent.
fn arg<'a>(ev: &dyn Evaluator<'a>, args: &[Expr], i: usize, sc: &Scope<'a>) -> R<Items<'a>> {
    match args.get(i) {
        Some(e) => ev.eval(e, sc),
        None => Ok(Vec::new()),
    }
}

/// Argument `i` as a single String, `None` when empty.
fn arg_str<'a>(
    ev: &dyn Evaluator<'a>,
    args: &[Expr],
    i: usize,
    sc: &Scope<'a>,
    f: &str,
) -> R<Option<Rc<str>>> {
    let v = arg(ev, args, i, sc)?;
    match single(&v, f)? {
        None => Ok(None),
        Some(it) => match sys(it) {
            Some(Sys::Str(s, _)) => Ok(Some(s)),
            _ => Err(err(format!("{f}() expects a string argument"))),
        },
    }
}

/// Argument `i` as a single Integer, `None` when empty.
fn arg_int<'a>(
    ev: &dyn Evaluator<'a>,
    args: &[Expr],
    i: usize,
    sc: &Scope<'a>,
    f: &str,
) -> R<Option<i64>> {
    let v = arg(ev, args, i, sc)?;
    match single(&v, f)? {
        None => Ok(None),
        Some(it) => match sys(it) {
            Some(Sys::Int(n)) => Ok(Some(n)),
            _ => Err(err(format!("{f}() expects an integer argument"))),
        },
    }
}

/// Evaluates `e` with `it` as `$this` and `idx` as `$index`.
fn lambda<'a>(
    ev: &dyn Evaluator<'a>,
    e: &Expr,
    it: &Item<'a>,
    idx: usize,
    sc: &Scope<'a>,
) -> R<Items<'a>> {
    ev.eval(e, &sc.with_this(it.clone(), Some(idx)))
}

/// `resolve()` of one reference: a contained resource, a Bundle entry, the root, or a stub.
fn resolve<'a>(ev: &dyn Evaluator<'a>, it: &Item<'a>) -> Option<Item<'a>> {
    let FpValue::Node(n) = &it.value else {
        return None;
    };
    let reference = match n.json()? {
        Value::Object(o) => o.get("reference")?.as_str()?,
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    let root_json = match &ev.root().value {
        FpValue::Node(Node {
            json: Some(Json::Borrowed(v)),
            ..
        }) => Some(*v),
        _ => None,
    };
    let found = |json: &'a Value, loc: Vec<Step>| {
        let ty = json
            .get("resourceType")
            .and_then(Value::as_str)
            .map(Rc::from);
        Item {
            value: FpValue::Node(Node {
                json: Some(Json::Borrowed(json)),
                ext: None,
                ty,
            }),
            loc: Some(Rc::from(loc)),
        }
    };
    if let Some(local) = reference.strip_prefix('#') {
        let root = root_json?;
        if local.is_empty() {
            return Some(ev.root().clone());
        }
        let contained = root.get("contained")?.as_array()?;
        let (i, c) = contained
            .iter()
            .enumerate()
            .find(|(_, c)| c.get("id").and_then(Value::as_str) == Some(local))?;
        return Some(found(
            c,
            vec![Step::Key("contained".into()), Step::Index(i)],
        ));
    }
    let no_hist = reference.split("/_history/").next().unwrap_or(reference);
    let no_hist = no_hist.split(['?', '#']).next().unwrap_or(no_hist);
    let segs: Vec<&str> = no_hist.split('/').collect();
    let type_id = match segs.as_slice() {
        [.., t, id] if is_resource_type(t) && !id.is_empty() => Some((*t, *id)),
        _ => None,
    };
    if let Some(root) = root_json {
        if root.get("resourceType").and_then(Value::as_str) == Some("Bundle")
            && let Some(entries) = root.get("entry").and_then(Value::as_array)
        {
            for (i, e) in entries.iter().enumerate() {
                let full = e.get("fullUrl").and_then(Value::as_str);
                let res = e.get("resource");
                let by_url = full.is_some_and(|f| {
                    f == reference
                        || type_id.is_some_and(|(t, id)| f.ends_with(&format!("/{t}/{id}")))
                });
                let by_id = res.is_some_and(|r| {
                    type_id.is_some_and(|(t, id)| {
                        r.get("resourceType").and_then(Value::as_str) == Some(t)
                            && r.get("id").and_then(Value::as_str) == Some(id)
                    })
                });
                if let (true, Some(r)) = (by_url || by_id, res) {
                    return Some(found(
                        r,
                        vec![
                            Step::Key("entry".into()),
                            Step::Index(i),
                            Step::Key("resource".into()),
                        ],
                    ));
                }
            }
        }
        if let Some((t, id)) = type_id
            && root.get("resourceType").and_then(Value::as_str) == Some(t)
            && root.get("id").and_then(Value::as_str) == Some(id)
        {
            return Some(ev.root().clone());
        }
    }
    let (t, id) = type_id?;
    let mut m = serde_json::Map::new();
    m.insert("resourceType".into(), Value::String(t.to_string()));
    m.insert("id".into(), Value::String(id.to_string()));
    Some(Item::computed(FpValue::Node(Node {
        json: Some(Json::Shared(Rc::new(Value::Object(m)))),
        ext: None,
        ty: Some(Rc::from(t)),
    })))
}

/// The nodes below a one-item `input`, depth first (bounded by [`MAX_ITEMS`]).
fn descendants<'a>(ev: &dyn Evaluator<'a>, input: &[Item<'a>]) -> R<Items<'a>> {
    let mut out = Vec::new();
    let mut stack: Vec<Item<'a>> = input.iter().rev().cloned().collect();
    let mut first = true;
    while let Some(it) = stack.pop() {
        if !first {
            out.push(it.clone());
            if out.len() > MAX_ITEMS {
                return Err(err("descendants() result too large"));
            }
        }
        let kids = ev.children(&it);
        if first && stack.is_empty() {
            first = false;
        }
        stack.extend(kids.into_iter().rev());
    }
    Ok(out)
}

fn input_str<'a>(input: &[Item<'a>], f: &str) -> R<Option<Rc<str>>> {
    match single(input, f)? {
        None => Ok(None),
        Some(it) => match sys(it) {
            Some(Sys::Str(s, _)) => Ok(Some(s)),
            None => Ok(None),
            Some(_) => Err(err(format!("{f}() expects a string input"))),
        },
    }
}

fn input_num(input: &[Item<'_>], f: &str) -> R<Option<Sys>> {
    match single(input, f)? {
        None => Ok(None),
        Some(it) => match sys(it) {
            Some(s @ (Sys::Int(_) | Sys::Dec(_) | Sys::Qty(_))) => Ok(Some(s)),
            None => Ok(None),
            Some(_) => Err(err(format!("{f}() expects a number"))),
        },
    }
}

fn f64_result<'a>(f: f64) -> Items<'a> {
    Decimal::from_f64(f)
        .map(|d| Item::computed(FpValue::Decimal(d)))
        .into_iter()
        .collect()
}

fn dec_of(s: &Sys) -> Option<Decimal> {
    match s {
        Sys::Int(i) => Some(Decimal::from_i64(*i)),
        Sys::Dec(d) => Some(*d),
        Sys::Qty(q) => Some(q.value),
        _ => None,
    }
}

fn boundary(d: Decimal, precision: Option<i64>, high: bool) -> Option<Decimal> {
    let p = precision.unwrap_or(8);
    if !(0..=28).contains(&p) {
        return None;
    }
    let p = u32::try_from(p).ok()?;
    // A value smaller than one unit at the target precision has both boundaries at zero
    // (matches the reference implementation: 0.0034.highBoundary(1) = 0.0).
    if p < d.scale() && d.abs().cmp_value(Decimal::new(1, p)) == Ordering::Less {
        return Some(Decimal::new(0, p));
    }
    let half = Decimal::new(5, d.scale() + 1);
    if high {
        d.checked_add(half)?.ceil_to(p)
    } else {
        d.checked_sub(half)?.floor_to(p)
    }
}

/// Evaluates function `name` on `input`; dispatches to one small function per family so
/// that deeply nested calls keep small stack frames.
pub(crate) fn call<'a>(
    ev: &dyn Evaluator<'a>,
    name: &str,
    input: Items<'a>,
    args: &[Expr],
    sc: &Scope<'a>,
    has_target: bool,
) -> R<Items<'a>> {
    let f = match name {
        "empty" | "exists" | "all" | "allTrue" | "anyTrue" | "allFalse" | "anyFalse"
        | "subsetOf" | "supersetOf" | "count" | "distinct" | "isDistinct" => f_existence,
        "where" | "select" | "repeat" | "ofType" | "as" | "is" => f_filtering_and_projection,
        "first" | "last" | "tail" | "skip" | "take" | "single" | "intersect" | "exclude"
        | "union" | "combine" | "iif" => f_subsetting,
        "toBoolean" | "toInteger" | "toDecimal" | "toString" | "toDate" | "toDateTime"
        | "toTime" | "toQuantity" | "convertsToBoolean" | "convertsToInteger"
        | "convertsToDecimal" | "convertsToString" | "convertsToDate" | "convertsToDateTime"
        | "convertsToTime" | "convertsToQuantity" => f_conversion,
        "indexOf" | "substring" | "startsWith" | "endsWith" | "contains" | "upper" | "lower"
        | "trim" | "length" | "toChars" | "replace" | "matches" | "matchesFull"
        | "replaceMatches" | "split" | "join" | "encode" | "decode" | "escape" | "unescape" => {
            f_strings
        }
        "children" | "descendants" => f_tree_navigation,
        "trace" | "now" | "today" | "timeOfDay" | "not" | "type" | "aggregate" | "sort" => {
            f_utility
        }
        "abs" | "ceiling" | "floor" | "truncate" | "exp" | "ln" | "sqrt" | "round" | "log"
        | "power" => f_math,
        "extension" | "hasValue" | "getValue" | "resolve" | "memberOf" | "subsumes"
        | "subsumedBy" | "htmlChecks" | "htmlchecks" | "conformsTo" | "lowBoundary"
        | "highBoundary" | "precision" | "comparable" | "sum" => f_fhir_specific,
        _ => return Err(err(format!("unknown function {name}()"))),
    };
    f(ev, name, input, args, sc, has_target)
}

/// Functions: existence.
#[inline(never)]
fn f_existence<'a>(
    ev: &dyn Evaluator<'a>,
    name: &str,
    input: Items<'a>,
    args: &[Expr],
    sc: &Scope<'a>,
    has_target: bool,
) -> R<Items<'a>> {
    let _ = (&ev, &args, &sc, has_target);
    match name {
        "empty" => {
            arity(name, args, 0, 0)?;
            Ok(vec![bool_item(input.is_empty())])
        }
        "exists" => {
            arity(name, args, 0, 1)?;
            match args.first() {
                None => Ok(vec![bool_item(!input.is_empty())]),
                Some(c) => {
                    for (i, it) in input.iter().enumerate() {
                        if as_bool(&lambda(ev, c, it, i, sc)?, name)? == Some(true) {
                            return Ok(vec![bool_item(true)]);
                        }
                    }
                    Ok(vec![bool_item(false)])
                }
            }
        }
        "all" => {
            arity(name, args, 1, 1)?;
            let c = args.first().ok_or_else(|| err("all() needs a criterion"))?;
            for (i, it) in input.iter().enumerate() {
                if as_bool(&lambda(ev, c, it, i, sc)?, name)? != Some(true) {
                    return Ok(vec![bool_item(false)]);
                }
            }
            Ok(vec![bool_item(true)])
        }
        "allTrue" | "anyTrue" | "allFalse" | "anyFalse" => {
            arity(name, args, 0, 0)?;
            let mut bools = Vec::new();
            for it in &input {
                match sys(it) {
                    Some(Sys::Bool(b)) => bools.push(b),
                    _ => return Err(err(format!("{name}() expects booleans"))),
                }
            }
            let r = match name {
                "allTrue" => bools.iter().all(|b| *b),
                "anyTrue" => bools.iter().any(|b| *b),
                "allFalse" => bools.iter().all(|b| !*b),
                _ => bools.iter().any(|b| !*b),
            };
            Ok(vec![bool_item(r)])
        }
        "subsetOf" | "supersetOf" => {
            arity(name, args, 1, 1)?;
            let other = arg(ev, args, 0, sc)?;
            let (small, big) = if name == "subsetOf" {
                (&input, &other)
            } else {
                (&other, &input)
            };
            let r = small
                .iter()
                .all(|a| big.iter().any(|b| eq_item(a, b) == Some(true)));
            Ok(vec![bool_item(r)])
        }
        "count" => {
            arity(name, args, 0, 0)?;
            Ok(computed(FpValue::Integer(
                i64::try_from(input.len()).unwrap_or(i64::MAX),
            )))
        }
        "distinct" => {
            arity(name, args, 0, 0)?;
            let mut out = Vec::new();
            for it in input {
                push_distinct(&mut out, it);
            }
            Ok(out)
        }
        "isDistinct" => {
            arity(name, args, 0, 0)?;
            let n = input.len();
            let mut out = Vec::new();
            for it in input {
                push_distinct(&mut out, it);
            }
            Ok(vec![bool_item(out.len() == n)])
        }
        _ => Err(err(format!("unknown function {name}()"))),
    }
}

/// Functions: filtering and projection.
#[inline(never)]
fn f_filtering_and_projection<'a>(
    ev: &dyn Evaluator<'a>,
    name: &str,
    input: Items<'a>,
    args: &[Expr],
    sc: &Scope<'a>,
    has_target: bool,
) -> R<Items<'a>> {
    let _ = (&ev, &args, &sc, has_target);
    match name {
        "where" => {
            arity(name, args, 1, 1)?;
            let c = args
                .first()
                .ok_or_else(|| err("where() needs a criterion"))?;
            let mut out = Vec::new();
            for (i, it) in input.into_iter().enumerate() {
                if as_bool(&lambda(ev, c, &it, i, sc)?, name)? == Some(true) {
                    out.push(it);
                }
            }
            Ok(out)
        }
        "select" => {
            arity(name, args, 1, 1)?;
            let c = args
                .first()
                .ok_or_else(|| err("select() needs a projection"))?;
            let mut out = Vec::new();
            for (i, it) in input.iter().enumerate() {
                out.extend(lambda(ev, c, it, i, sc)?);
            }
            Ok(out)
        }
        "repeat" => {
            arity(name, args, 1, 1)?;
            let c = args
                .first()
                .ok_or_else(|| err("repeat() needs a projection"))?;
            let mut out: Items<'a> = Vec::new();
            let mut queue = input;
            while !queue.is_empty() {
                let mut next = Vec::new();
                for (i, it) in queue.iter().enumerate() {
                    for r in lambda(ev, c, it, i, sc)? {
                        let seen = out.iter().any(|o| match (&o.loc, &r.loc) {
                            (Some(a), Some(b)) => a == b,
                            (None, None) => eq_item(o, &r) == Some(true),
                            _ => false,
                        });
                        if !seen {
                            out.push(r.clone());
                            next.push(r);
                        }
                    }
                    if out.len() > MAX_ITEMS {
                        return Err(err("repeat() result too large"));
                    }
                }
                queue = next;
            }
            Ok(out)
        }
        "ofType" | "as" => {
            arity(name, args, 1, 1)?;
            let ty = type_spec(args.first().ok_or_else(|| err("type expected"))?)?;
            if name == "as" && input.len() > 1 {
                // as() takes a single item (ofType() filters collections)
                return Err(err("as() applied to a collection of more than one item"));
            }
            let mut out = Vec::new();
            for it in input {
                if ev.is_type_exact(&it, &ty)? {
                    out.push(it);
                }
            }
            Ok(out)
        }
        "is" => {
            arity(name, args, 1, 1)?;
            let ty = type_spec(args.first().ok_or_else(|| err("type expected"))?)?;
            match single(&input, name)? {
                None => Ok(Vec::new()),
                Some(it) => Ok(vec![bool_item(ev.is_type(it, &ty)?)]),
            }
        }
        _ => Err(err(format!("unknown function {name}()"))),
    }
}

/// Functions: subsetting.
#[inline(never)]
fn f_subsetting<'a>(
    ev: &dyn Evaluator<'a>,
    name: &str,
    input: Items<'a>,
    args: &[Expr],
    sc: &Scope<'a>,
    has_target: bool,
) -> R<Items<'a>> {
    let _ = (&ev, &args, &sc, has_target);
    match name {
        "first" => Ok(input.into_iter().take(1).collect()),
        "last" => Ok(input.into_iter().last().into_iter().collect()),
        "tail" => Ok(input.into_iter().skip(1).collect()),
        "skip" | "take" => {
            arity(name, args, 1, 1)?;
            let n = arg_int(ev, args, 0, sc, name)?.unwrap_or(0);
            let n = usize::try_from(n.max(0)).unwrap_or(usize::MAX);
            Ok(if name == "skip" {
                input.into_iter().skip(n).collect()
            } else {
                input.into_iter().take(n).collect()
            })
        }
        "single" => {
            arity(name, args, 0, 0)?;
            Ok(single(&input, name)?.cloned().into_iter().collect())
        }
        "intersect" => {
            arity(name, args, 1, 1)?;
            let other = arg(ev, args, 0, sc)?;
            let mut out = Vec::new();
            for it in input {
                if other.iter().any(|o| eq_item(o, &it) == Some(true)) {
                    push_distinct(&mut out, it);
                }
            }
            Ok(out)
        }
        "exclude" => {
            arity(name, args, 1, 1)?;
            let other = arg(ev, args, 0, sc)?;
            Ok(input
                .into_iter()
                .filter(|it| !other.iter().any(|o| eq_item(o, it) == Some(true)))
                .collect())
        }
        "union" => {
            arity(name, args, 1, 1)?;
            let other = arg(ev, args, 0, sc)?;
            let mut out = Vec::new();
            for it in input.into_iter().chain(other) {
                push_distinct(&mut out, it);
            }
            Ok(out)
        }
        "combine" => {
            arity(name, args, 1, 1)?;
            let mut out = input;
            out.extend(arg(ev, args, 0, sc)?);
            Ok(out)
        }
        "iif" => {
            arity(name, args, 2, 3)?;
            let scope = if has_target {
                match input.as_slice() {
                    [] => sc.clone(),
                    [one] => sc.with_this(one.clone(), None),
                    _ => return Err(err("iif() input must be a single item")),
                }
            } else {
                sc.clone()
            };
            let crit = arg(ev, args, 0, &scope)?;
            let c = match crit.as_slice() {
                [] => false,
                [one] => match sys(one) {
                    Some(Sys::Bool(b)) => b,
                    _ => return Err(err("iif() criterion must be a boolean")),
                },
                _ => return Err(err("iif() criterion must be a single boolean")),
            };
            if c {
                arg(ev, args, 1, &scope)
            } else {
                arg(ev, args, 2, &scope)
            }
        }
        _ => Err(err(format!("unknown function {name}()"))),
    }
}

/// Functions: conversion.
#[inline(never)]
fn f_conversion<'a>(
    ev: &dyn Evaluator<'a>,
    name: &str,
    input: Items<'a>,
    args: &[Expr],
    sc: &Scope<'a>,
    has_target: bool,
) -> R<Items<'a>> {
    let _ = (&ev, &args, &sc, has_target);
    match name {
        "toBoolean" | "toInteger" | "toDecimal" | "toString" | "toDate" | "toDateTime"
        | "toTime" | "toQuantity" | "convertsToBoolean" | "convertsToInteger"
        | "convertsToDecimal" | "convertsToString" | "convertsToDate" | "convertsToDateTime"
        | "convertsToTime" | "convertsToQuantity" => {
            let (conv, kind) = match name.strip_prefix("convertsTo") {
                Some(k) => (true, k),
                None => (false, name.strip_prefix("to").unwrap_or(name)),
            };
            arity(name, args, 0, usize::from(kind == "Quantity"))?;
            let unit = if kind == "Quantity" {
                arg_str(ev, args, 0, sc, name)?
            } else {
                None
            };
            let Some(it) = single(&input, name)? else {
                return Ok(Vec::new());
            };
            let Some(s) = sys(it) else {
                return Ok(Vec::new());
            };
            let r = convert(kind, &s, unit.as_deref());
            if conv {
                Ok(vec![bool_item(r.is_some())])
            } else {
                Ok(r.map(|v| Item::computed(sys_to_value(v)))
                    .into_iter()
                    .collect())
            }
        }
        _ => Err(err(format!("unknown function {name}()"))),
    }
}

/// Functions: strings.
#[inline(never)]
fn f_strings<'a>(
    ev: &dyn Evaluator<'a>,
    name: &str,
    input: Items<'a>,
    args: &[Expr],
    sc: &Scope<'a>,
    has_target: bool,
) -> R<Items<'a>> {
    let _ = (&ev, &args, &sc, has_target);
    match name {
        "indexOf" => {
            arity(name, args, 1, 1)?;
            let (Some(s), Some(sub)) = (input_str(&input, name)?, arg_str(ev, args, 0, sc, name)?)
            else {
                return Ok(Vec::new());
            };
            let idx = s.find(&*sub).map_or(-1, |b| {
                i64::try_from(s.get(..b).unwrap_or("").chars().count()).unwrap_or(-1)
            });
            Ok(computed(FpValue::Integer(idx)))
        }
        "substring" => {
            arity(name, args, 1, 2)?;
            let Some(s) = input_str(&input, name)? else {
                return Ok(Vec::new());
            };
            let Some(start) = arg_int(ev, args, 0, sc, name)? else {
                return Ok(Vec::new());
            };
            let len = arg_int(ev, args, 1, sc, name)?;
            let chars: Vec<char> = s.chars().collect();
            let n = i64::try_from(chars.len()).unwrap_or(i64::MAX);
            if start < 0 || start >= n {
                return Ok(Vec::new());
            }
            let end = match len {
                Some(l) => start.saturating_add(l.max(0)).min(n),
                None => n,
            };
            let sub: String = chars
                .get(usize::try_from(start).unwrap_or(0)..usize::try_from(end).unwrap_or(0))
                .unwrap_or(&[])
                .iter()
                .collect();
            Ok(vec![str_item(&sub)])
        }
        "startsWith" | "endsWith" | "contains" => {
            arity(name, args, 1, 1)?;
            let (Some(s), Some(p)) = (input_str(&input, name)?, arg_str(ev, args, 0, sc, name)?)
            else {
                return Ok(Vec::new());
            };
            let r = match name {
                "startsWith" => s.starts_with(&*p),
                "endsWith" => s.ends_with(&*p),
                _ => s.contains(&*p),
            };
            Ok(vec![bool_item(r)])
        }
        "upper" | "lower" | "trim" | "length" | "toChars" => {
            arity(name, args, 0, 0)?;
            let Some(s) = input_str(&input, name)? else {
                return Ok(Vec::new());
            };
            Ok(match name {
                "upper" => vec![str_item(&s.to_uppercase())],
                "lower" => vec![str_item(&s.to_lowercase())],
                "trim" => vec![str_item(s.trim())],
                "length" => computed(FpValue::Integer(
                    i64::try_from(s.chars().count()).unwrap_or(i64::MAX),
                )),
                _ => s.chars().map(|c| str_item(&c.to_string())).collect(),
            })
        }
        "replace" => {
            arity(name, args, 2, 2)?;
            let (Some(s), Some(p), Some(r)) = (
                input_str(&input, name)?,
                arg_str(ev, args, 0, sc, name)?,
                arg_str(ev, args, 1, sc, name)?,
            ) else {
                return Ok(Vec::new());
            };
            if p.is_empty() && s.len() > 100_000 {
                return Err(err("replace() result too large"));
            }
            Ok(vec![str_item(&s.replace(&*p, &r))])
        }
        "matches" | "matchesFull" => {
            arity(name, args, 1, 1)?;
            let (Some(s), Some(p)) = (input_str(&input, name)?, arg_str(ev, args, 0, sc, name)?)
            else {
                return Ok(Vec::new());
            };
            Ok(vec![bool_item(
                regex(&p, name == "matchesFull")?.is_match(&s),
            )])
        }
        "replaceMatches" => {
            arity(name, args, 2, 2)?;
            let (Some(s), Some(p), Some(r)) = (
                input_str(&input, name)?,
                arg_str(ev, args, 0, sc, name)?,
                arg_str(ev, args, 1, sc, name)?,
            ) else {
                return Ok(Vec::new());
            };
            if p.is_empty() {
                return Ok(vec![str_item(&s)]);
            }
            Ok(vec![str_item(&regex(&p, false)?.replace_all(&s, &*r))])
        }
        "split" => {
            arity(name, args, 1, 1)?;
            let (Some(s), Some(sep)) = (input_str(&input, name)?, arg_str(ev, args, 0, sc, name)?)
            else {
                return Ok(Vec::new());
            };
            if sep.is_empty() {
                return Ok(s.chars().map(|c| str_item(&c.to_string())).collect());
            }
            Ok(s.split(&*sep).map(str_item).collect())
        }
        "join" => {
            arity(name, args, 0, 1)?;
            let sep = arg_str(ev, args, 0, sc, name)?.unwrap_or_else(|| Rc::from(""));
            let mut parts = Vec::new();
            for it in &input {
                match sys(it) {
                    Some(Sys::Str(s, _)) => parts.push(s.to_string()),
                    _ => return Err(err("join() expects strings")),
                }
            }
            Ok(vec![str_item(&parts.join(&sep))])
        }
        "encode" | "decode" | "escape" | "unescape" => {
            arity(name, args, 1, 1)?;
            let (Some(s), Some(fmt)) = (input_str(&input, name)?, arg_str(ev, args, 0, sc, name)?)
            else {
                return Ok(Vec::new());
            };
            let r = match (name, &*fmt) {
                ("encode", "base64") => Some(b64_encode(s.as_bytes(), B64)),
                ("encode", "urlbase64") => Some(b64_encode(s.as_bytes(), B64URL)),
                ("encode", "hex") => Some(s.bytes().map(|b| format!("{b:02x}")).collect()),
                ("decode", "base64") => b64_decode(&s, B64).and_then(|b| String::from_utf8(b).ok()),
                ("decode", "urlbase64") => {
                    b64_decode(&s, B64URL).and_then(|b| String::from_utf8(b).ok())
                }
                ("decode", "hex") => hex_decode(&s).and_then(|b| String::from_utf8(b).ok()),
                ("escape", "html") => Some(html_escape(&s)),
                ("escape", "json") => Some(json_escape(&s)),
                ("unescape", "html") => Some(html_unescape(&s)),
                ("unescape", "json") => json_unescape(&s),
                _ => return Err(err(format!("{name}(): unknown format {fmt}"))),
            };
            Ok(r.map(|r| str_item(&r)).into_iter().collect())
        }
        _ => Err(err(format!("unknown function {name}()"))),
    }
}

/// Functions: tree navigation.
#[inline(never)]
fn f_tree_navigation<'a>(
    ev: &dyn Evaluator<'a>,
    name: &str,
    input: Items<'a>,
    args: &[Expr],
    sc: &Scope<'a>,
    has_target: bool,
) -> R<Items<'a>> {
    let _ = (&ev, &args, &sc, has_target);
    match name {
        "children" => {
            arity(name, args, 0, 0)?;
            Ok(input.iter().flat_map(|it| ev.children(it)).collect())
        }
        "descendants" => {
            arity(name, args, 0, 0)?;
            let mut out = Vec::new();
            for it in &input {
                out.extend(descendants(ev, std::slice::from_ref(it))?);
            }
            Ok(out)
        }
        _ => Err(err(format!("unknown function {name}()"))),
    }
}

/// Functions: utility.
#[inline(never)]
fn f_utility<'a>(
    ev: &dyn Evaluator<'a>,
    name: &str,
    input: Items<'a>,
    args: &[Expr],
    sc: &Scope<'a>,
    has_target: bool,
) -> R<Items<'a>> {
    let _ = (&ev, &args, &sc, has_target);
    match name {
        "trace" => {
            arity(name, args, 1, 2)?;
            Ok(input)
        }
        "now" => {
            arity(name, args, 0, 0)?;
            Ok(computed(FpValue::Temporal(ev.now())))
        }
        "today" => {
            arity(name, args, 0, 0)?;
            Ok(computed(FpValue::Temporal(ev.now().date_part())))
        }
        "timeOfDay" => {
            arity(name, args, 0, 0)?;
            Ok(computed(FpValue::Temporal(ev.now().time_part())))
        }
        "not" => {
            arity(name, args, 0, 0)?;
            Ok(as_bool(&input, name)?
                .map(|b| bool_item(!b))
                .into_iter()
                .collect())
        }
        "type" => {
            arity(name, args, 0, 0)?;
            Ok(input
                .iter()
                .filter_map(|it| ev.type_of(it))
                .map(|(ns, n)| {
                    Item::computed(FpValue::Type {
                        namespace: Rc::from(ns),
                        name: Rc::from(n.as_str()),
                    })
                })
                .collect())
        }
        "aggregate" => {
            arity(name, args, 1, 2)?;
            let agg = args
                .first()
                .ok_or_else(|| err("aggregate() needs an expression"))?;
            let mut total = arg(ev, args, 1, sc)?;
            for (i, it) in input.iter().enumerate() {
                let scope = Scope {
                    this: Some(it.clone()),
                    index: Some(i),
                    total: Some(total),
                };
                total = ev.eval(agg, &scope)?;
            }
            Ok(total)
        }
        "sort" => {
            let mut keyed = Vec::new();
            for (i, it) in input.into_iter().enumerate() {
                let mut keys = Vec::new();
                for a in args {
                    let (e, desc) = match a {
                        Expr::Neg(inner, true) => (&**inner, true),
                        e => (e, false),
                    };
                    let v = lambda(ev, e, &it, i, sc)?;
                    keys.push((single(&v, name)?.and_then(sys), desc));
                }
                if args.is_empty() {
                    keys.push((sys(&it), false));
                }
                keyed.push((keys, it));
            }
            let mut failed = None;
            keyed.sort_by(|(ka, _), (kb, _)| {
                for ((a, desc), (b, _)) in ka.iter().zip(kb) {
                    // empty keys sort first in both directions
                    let o = match (a, b) {
                        (None, None) => Ordering::Equal,
                        (None, Some(_)) => Ordering::Less,
                        (Some(_), None) => Ordering::Greater,
                        (Some(x), Some(y)) => {
                            let o = match cmp_sys(x, y) {
                                Ok(o) => o.unwrap_or(Ordering::Equal),
                                Err(e) => {
                                    failed = Some(e);
                                    Ordering::Equal
                                }
                            };
                            if *desc { o.reverse() } else { o }
                        }
                    };
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            });
            if let Some(e) = failed {
                return Err(e);
            }
            Ok(keyed.into_iter().map(|(_, it)| it).collect())
        }
        _ => Err(err(format!("unknown function {name}()"))),
    }
}

/// Functions: math.
#[inline(never)]
fn f_math<'a>(
    ev: &dyn Evaluator<'a>,
    name: &str,
    input: Items<'a>,
    args: &[Expr],
    sc: &Scope<'a>,
    has_target: bool,
) -> R<Items<'a>> {
    let _ = (&ev, &args, &sc, has_target);
    match name {
        "abs" | "ceiling" | "floor" | "truncate" | "exp" | "ln" | "sqrt" => {
            arity(name, args, 0, 0)?;
            let Some(n) = input_num(&input, name)? else {
                return Ok(Vec::new());
            };
            if let Sys::Qty(q) = &n {
                if name == "abs" {
                    return Ok(computed(FpValue::Quantity(Quantity {
                        value: q.value.abs(),
                        ..q.clone()
                    })));
                }
                return Err(err(format!("{name}() not defined for quantities")));
            }
            let d = dec_of(&n).ok_or_else(|| err("number expected"))?;
            let int = |d: Option<Decimal>| -> Items<'a> {
                d.and_then(Decimal::to_i64)
                    .map(|i| Item::computed(FpValue::Integer(i)))
                    .into_iter()
                    .collect()
            };
            Ok(match name {
                "abs" => match n {
                    Sys::Int(i) => computed(FpValue::Integer(
                        i.checked_abs().ok_or_else(|| err("integer overflow"))?,
                    )),
                    _ => computed(FpValue::Decimal(d.abs())),
                },
                "ceiling" => int(d.ceil_to(0)),
                "floor" => int(d.floor_to(0)),
                "truncate" => int(d.trunc_to(0)),
                "exp" => f64_result(d.to_f64().exp()),
                "ln" => f64_result(d.to_f64().ln()),
                _ => {
                    if d.is_negative() {
                        Vec::new()
                    } else {
                        f64_result(d.to_f64().sqrt())
                    }
                }
            })
        }
        "round" => {
            arity(name, args, 0, 1)?;
            let Some(n) = input_num(&input, name)? else {
                return Ok(Vec::new());
            };
            let p = arg_int(ev, args, 0, sc, name)?.unwrap_or(0);
            let p = u32::try_from(p).map_err(|_| err("round() precision must be >= 0"))?;
            let d = dec_of(&n).ok_or_else(|| err("number expected"))?;
            Ok(computed(FpValue::Decimal(d.round(p))))
        }
        "log" | "power" => {
            arity(name, args, 1, 1)?;
            let Some(n) = input_num(&input, name)? else {
                return Ok(Vec::new());
            };
            let a = arg(ev, args, 0, sc)?;
            let Some(arg) = single(&a, name)?.and_then(sys) else {
                return Ok(Vec::new());
            };
            let (Some(x), Some(y)) = (dec_of(&n), dec_of(&arg)) else {
                return Err(err(format!("{name}() expects numbers")));
            };
            if name == "power" {
                if let (Sys::Int(b), Sys::Int(e)) = (&n, &arg)
                    && let Ok(e) = u32::try_from(*e)
                {
                    return Ok(b
                        .checked_pow(e)
                        .map(|v| Item::computed(FpValue::Integer(v)))
                        .into_iter()
                        .collect());
                }
                return Ok(f64_result(x.to_f64().powf(y.to_f64())));
            }
            Ok(f64_result(x.to_f64().ln() / y.to_f64().ln()))
        }
        _ => Err(err(format!("unknown function {name}()"))),
    }
}

/// Functions: FHIR specific.
#[inline(never)]
fn f_fhir_specific<'a>(
    ev: &dyn Evaluator<'a>,
    name: &str,
    input: Items<'a>,
    args: &[Expr],
    sc: &Scope<'a>,
    has_target: bool,
) -> R<Items<'a>> {
    let _ = (&ev, &args, &sc, has_target);
    match name {
        "extension" => {
            arity(name, args, 1, 1)?;
            let Some(url) = arg_str(ev, args, 0, sc, name)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for it in &input {
                for ext in ev.navigate(it, "extension") {
                    let matches = ev
                        .navigate(&ext, "url")
                        .iter()
                        .any(|u| matches!(sys(u), Some(Sys::Str(s, _)) if *s == *url));
                    if matches {
                        out.push(ext);
                    }
                }
            }
            Ok(out)
        }
        "hasValue" => {
            arity(name, args, 0, 0)?;
            let r = match input.as_slice() {
                [one] => match &one.value {
                    FpValue::Node(n) => {
                        matches!(n.json(), Some(v) if !v.is_object() && !v.is_array() && !v.is_null())
                    }
                    _ => true,
                },
                _ => false,
            };
            Ok(vec![bool_item(r)])
        }
        "getValue" => {
            arity(name, args, 0, 0)?;
            Ok(match input.as_slice() {
                [one] => match (&one.value, sys(one)) {
                    (FpValue::Node(_), Some(Sys::Obj)) | (_, None) => Vec::new(),
                    (_, Some(s)) => vec![Item::computed(sys_to_value(s))],
                },
                _ => Vec::new(),
            })
        }
        "resolve" => {
            arity(name, args, 0, 0)?;
            Ok(input.iter().filter_map(|it| resolve(ev, it)).collect())
        }
        "memberOf" | "subsumes" | "subsumedBy" => Ok(Vec::new()),
        "htmlChecks" | "htmlchecks" => Ok(vec![bool_item(true)]),
        "conformsTo" => {
            arity(name, args, 1, 1)?;
            let Some(url) = arg_str(ev, args, 0, sc, name)? else {
                return Ok(Vec::new());
            };
            let Some(base) = url.strip_prefix("http://hl7.org/fhir/StructureDefinition/") else {
                return Ok(Vec::new());
            };
            let Some(it) = single(&input, name)? else {
                return Ok(Vec::new());
            };
            let rt = match &it.value {
                FpValue::Node(n) => ev.node_type(n),
                _ => None,
            };
            Ok(rt
                .map(|t| bool_item(ev.derives(&t, base)))
                .into_iter()
                .collect())
        }
        "lowBoundary" | "highBoundary" => {
            arity(name, args, 0, 1)?;
            let high = name == "highBoundary";
            let p = arg_int(ev, args, 0, sc, name)?;
            let Some(it) = single(&input, name)? else {
                return Ok(Vec::new());
            };
            let v = match sys(it) {
                Some(s @ (Sys::Int(_) | Sys::Dec(_))) => dec_of(&s)
                    .and_then(|d| boundary(d, p, high))
                    .map(FpValue::Decimal),
                Some(Sys::Qty(q)) => boundary(q.value, p, high)
                    .map(|value| FpValue::Quantity(Quantity { value, ..q })),
                Some(Sys::Tmp(t)) => {
                    let default = match t.kind {
                        TemporalKind::Date => 8,
                        TemporalKind::DateTime => 17,
                        TemporalKind::Time => 9,
                    };
                    t.boundary(p.unwrap_or(default), high)
                        .map(FpValue::Temporal)
                }
                _ => None,
            };
            Ok(v.map(Item::computed).into_iter().collect())
        }
        "precision" => {
            arity(name, args, 0, 0)?;
            let Some(it) = single(&input, name)? else {
                return Ok(Vec::new());
            };
            let p = match sys(it) {
                Some(Sys::Dec(d)) => Some(i64::from(d.scale())),
                Some(Sys::Int(_)) => Some(0),
                Some(Sys::Tmp(t)) => Some(t.precision_digits()),
                _ => None,
            };
            Ok(p.map(|p| Item::computed(FpValue::Integer(p)))
                .into_iter()
                .collect())
        }
        "comparable" => {
            arity(name, args, 1, 1)?;
            let other = arg(ev, args, 0, sc)?;
            let (Some(a), Some(b)) = (single(&input, name)?, single(&other, name)?) else {
                return Ok(Vec::new());
            };
            match (sys(a), sys(b)) {
                (Some(Sys::Qty(x)), Some(Sys::Qty(y))) => Ok(vec![bool_item(x.comparable(&y))]),
                _ => Err(err("comparable() expects quantities")),
            }
        }
        "sum" => {
            let mut acc: Option<Sys> = None;
            for it in &input {
                let Some(s) = sys(it) else { continue };
                acc = Some(match acc {
                    None => s,
                    Some(a) => arith(BinOp::Add, a, s)?.ok_or_else(|| err("sum overflow"))?,
                });
            }
            Ok(acc
                .map(|s| Item::computed(sys_to_value(s)))
                .into_iter()
                .collect())
        }
        _ => Err(err(format!("unknown function {name}()"))),
    }
}
