//! System values (Boolean, Integer, Decimal, String, Date/DateTime/Time, Quantity) as FHIRPath
//! compares and computes with them: reducing items to them, equality, equivalence, ordering,
//! arithmetic, and the singleton and distinct-collection rules built on those. Both the
//! evaluator's operators and the function library need this, so it lives apart from both.

use std::cmp::Ordering;
use std::rc::Rc;

use serde_json::Value;

use super::context::R;
use super::parser::BinOp;
use super::types::is_quantity_type;
use super::value::{Decimal, Quantity, Temporal, TemporalKind, arithmetic_unit};
use super::{EvalError, FpValue, Item, Node};

/// A node or value reduced to a System value for comparisons and arithmetic.
#[derive(Clone, Debug)]
pub(super) enum Sys {
    Bool(bool),
    Int(i64),
    Dec(Decimal),
    /// String; the flag says it came from an untyped JSON node (may hold a date).
    Str(Rc<str>, bool),
    Tmp(Temporal),
    Qty(Quantity),
    /// A complex node (compared as JSON).
    Obj,
    Type(Rc<str>, Rc<str>),
}

/// A JSON number as a System Integer when it is whole and fits (and `as_decimal` is off),
/// otherwise as a Decimal.
pub(super) fn number_sys(n: &serde_json::Number, as_decimal: bool) -> Option<Sys> {
    let text = n.to_string();
    if !as_decimal
        && !text.contains(['.', 'e', 'E'])
        && let Ok(i) = text.parse::<i64>()
    {
        return Some(Sys::Int(i));
    }
    Decimal::parse(&text).map(Sys::Dec)
}

fn quantity_from_json(v: &Value) -> Option<Quantity> {
    let o = v.as_object()?;
    let value = match o.get("value")? {
        Value::Number(n) => Decimal::parse(&n.to_string())?,
        _ => return None,
    };
    let code = o.get("code").and_then(Value::as_str);
    let unit = o.get("unit").and_then(Value::as_str);
    let u = code.or(unit).unwrap_or("1");
    Some(Quantity {
        value,
        unit: Rc::from(u),
        calendar: false,
    })
}

/// Converts an item to its System form; `None` for a primitive that only has extensions.
pub(super) fn sys(it: &Item<'_>) -> Option<Sys> {
    match &it.value {
        FpValue::Boolean(b) => Some(Sys::Bool(*b)),
        FpValue::Integer(i) => Some(Sys::Int(*i)),
        FpValue::Decimal(d) => Some(Sys::Dec(*d)),
        FpValue::String(s) => Some(Sys::Str(s.clone(), false)),
        FpValue::Temporal(t) => Some(Sys::Tmp(*t)),
        FpValue::Quantity(q) => Some(Sys::Qty(q.clone())),
        FpValue::Type { namespace, name } => Some(Sys::Type(namespace.clone(), name.clone())),
        FpValue::Node(n) => node_sys(n),
    }
}

fn node_sys(n: &Node<'_>) -> Option<Sys> {
    let v = n.json()?;
    let ty = n.ty.as_deref();
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(Sys::Bool(*b)),
        Value::Number(num) => number_sys(num, ty == Some("decimal")),
        Value::String(s) => Some(match ty {
            Some("date") => Temporal::parse_date(s).map_or_else(|| str_sys(s, false), Sys::Tmp),
            Some("dateTime" | "instant") => {
                Temporal::parse_datetime(s).map_or_else(|| str_sys(s, false), Sys::Tmp)
            }
            Some("time") => Temporal::parse_time(s).map_or_else(|| str_sys(s, false), Sys::Tmp),
            Some("integer" | "positiveInt" | "unsignedInt") => {
                s.parse().map_or_else(|_| str_sys(s, false), Sys::Int)
            }
            Some("decimal") => Decimal::parse(s).map_or_else(|| str_sys(s, false), Sys::Dec),
            Some(_) => str_sys(s, false),
            None => str_sys(s, true),
        }),
        Value::Object(_) => {
            let is_qty = match ty {
                Some(t) => is_quantity_type(t),
                None => v.get("value").is_some_and(Value::is_number),
            };
            if is_qty {
                quantity_from_json(v).map(Sys::Qty).or(Some(Sys::Obj))
            } else {
                Some(Sys::Obj)
            }
        }
        Value::Array(_) => Some(Sys::Obj),
    }
}

fn str_sys(s: &str, untyped: bool) -> Sys {
    Sys::Str(Rc::from(s), untyped)
}

pub(super) fn sys_to_value<'a>(s: Sys) -> FpValue<'a> {
    match s {
        Sys::Bool(b) => FpValue::Boolean(b),
        Sys::Int(i) => FpValue::Integer(i),
        Sys::Dec(d) => FpValue::Decimal(d),
        Sys::Str(s, _) => FpValue::String(s),
        Sys::Tmp(t) => FpValue::Temporal(t),
        Sys::Qty(q) => FpValue::Quantity(q),
        Sys::Type(ns, n) => FpValue::Type {
            namespace: ns,
            name: n,
        },
        Sys::Obj => FpValue::Boolean(true),
    }
}

fn to_dec(s: &Sys) -> Option<Decimal> {
    match s {
        Sys::Int(i) => Some(Decimal::from_i64(*i)),
        Sys::Dec(d) => Some(*d),
        _ => None,
    }
}

/// Parses an untyped string against the kind of temporal it is compared with.
fn coerce_temporal(s: &str, like: &Temporal) -> Option<Temporal> {
    match like.kind {
        TemporalKind::Time => Temporal::parse_time(s),
        _ => Temporal::parse_date_or_datetime(s),
    }
}

fn eq_sys(a: &Sys, b: &Sys) -> Option<bool> {
    match (a, b) {
        (Sys::Bool(x), Sys::Bool(y)) => Some(x == y),
        (Sys::Int(x), Sys::Int(y)) => Some(x == y),
        (Sys::Str(x, _), Sys::Str(y, _)) => Some(x == y),
        (Sys::Tmp(x), Sys::Tmp(y)) => match x.compare(*y) {
            Ok(Some(o)) => Some(o == Ordering::Equal),
            Ok(None) => None,
            Err(()) => Some(false),
        },
        (Sys::Str(s, true), Sys::Tmp(t)) | (Sys::Tmp(t), Sys::Str(s, true)) => {
            match coerce_temporal(s, t) {
                Some(p) => eq_sys(&Sys::Tmp(p), &Sys::Tmp(*t)),
                None => Some(false),
            }
        }
        (Sys::Qty(x), Sys::Qty(y)) => x.compare(y).map(|o| o == Ordering::Equal),
        (Sys::Type(a1, a2), Sys::Type(b1, b2)) => Some(a1 == b1 && a2 == b2),
        _ => match (to_dec(a), to_dec(b)) {
            (Some(x), Some(y)) => Some(x.cmp_value(y) == Ordering::Equal),
            _ => Some(false),
        },
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn equiv_sys(a: &Sys, b: &Sys) -> bool {
    match (a, b) {
        (Sys::Str(x, _), Sys::Str(y, _)) => normalize_ws(x) == normalize_ws(y),
        (Sys::Tmp(x), Sys::Tmp(y)) => matches!(x.compare(*y), Ok(Some(Ordering::Equal))),
        (Sys::Str(s, true), Sys::Tmp(t)) | (Sys::Tmp(t), Sys::Str(s, true)) => {
            coerce_temporal(s, t).is_some_and(|p| equiv_sys(&Sys::Tmp(p), &Sys::Tmp(*t)))
        }
        (Sys::Qty(x), Sys::Qty(y)) => x.equivalent(y).unwrap_or(false),
        _ => match (to_dec(a), to_dec(b)) {
            (Some(x), Some(y)) => x.equivalent(y),
            _ => eq_sys(a, b).unwrap_or(false),
        },
    }
}

/// Deepest JSON compared structurally; deeper trees compare unequal instead of overflowing.
const MAX_JSON_CMP_DEPTH: u32 = 200;

fn json_equiv(a: &Value, b: &Value, depth: u32) -> bool {
    if depth > MAX_JSON_CMP_DEPTH {
        return false;
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => normalize_ws(x) == normalize_ws(y),
        (Value::Number(x), Value::Number(y)) => {
            match (
                Decimal::parse(&x.to_string()),
                Decimal::parse(&y.to_string()),
            ) {
                (Some(p), Some(q)) => p.equivalent(q),
                _ => x == y,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equiv(p, q, depth + 1))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equiv(v, w, depth + 1)))
        }
        _ => a == b,
    }
}

fn json_eq(a: &Value, b: &Value, depth: u32) -> bool {
    if depth > MAX_JSON_CMP_DEPTH {
        return false;
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (
                Decimal::parse(&x.to_string()),
                Decimal::parse(&y.to_string()),
            ) {
                (Some(p), Some(q)) => p.cmp_value(q) == Ordering::Equal,
                _ => x == y,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q, depth + 1))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w, depth + 1)))
        }
        _ => a == b,
    }
}

fn node_parts<'x>(it: &'x Item<'_>) -> Option<(Option<&'x Value>, Option<&'x Value>)> {
    match &it.value {
        FpValue::Node(n) => Some((n.json(), n.primitive_extension())),
        _ => None,
    }
}

/// FHIRPath `=` on two single items; `None` means "unknown" (empty result).
pub(super) fn eq_item(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    match (sys(a), sys(b)) {
        (Some(Sys::Obj), Some(Sys::Obj)) => {
            let (Some((Some(x), _)), Some((Some(y), _))) = (node_parts(a), node_parts(b)) else {
                return Some(false);
            };
            Some(json_eq(x, y, 0))
        }
        (Some(x), Some(y)) => eq_sys(&x, &y),
        (None, None) => match (node_parts(a), node_parts(b)) {
            (Some((_, x)), Some((_, y))) => Some(x == y),
            _ => Some(false),
        },
        _ => Some(false),
    }
}

/// FHIRPath `~` on two single items.
pub(super) fn equiv_item(a: &Item<'_>, b: &Item<'_>) -> bool {
    match (sys(a), sys(b)) {
        (Some(Sys::Obj), Some(Sys::Obj)) => match (node_parts(a), node_parts(b)) {
            (Some((Some(x), _)), Some((Some(y), _))) => json_equiv(x, y, 0),
            _ => false,
        },
        (Some(x), Some(y)) => equiv_sys(&x, &y),
        (None, None) => true,
        _ => false,
    }
}

/// The System type name of a value, for `is` and error messages.
pub(super) fn sys_name(s: &Sys) -> &'static str {
    match s {
        Sys::Bool(_) => "Boolean",
        Sys::Int(_) => "Integer",
        Sys::Dec(_) => "Decimal",
        Sys::Str(..) => "String",
        Sys::Tmp(t) => match t.kind {
            TemporalKind::Date => "Date",
            TemporalKind::DateTime => "DateTime",
            TemporalKind::Time => "Time",
        },
        Sys::Qty(_) => "Quantity",
        Sys::Obj => "complex element",
        Sys::Type(..) => "TypeInfo",
    }
}

/// Ordering for `<`, `>`, `<=`, `>=` and `sort()`; `Ok(None)` = unknown (precision).
pub(super) fn cmp_sys(a: &Sys, b: &Sys) -> R<Option<Ordering>> {
    let mismatch = || {
        EvalError::new(format!(
            "cannot compare {} with {}",
            sys_name(a),
            sys_name(b)
        ))
    };
    match (a, b) {
        (Sys::Str(x, _), Sys::Str(y, _)) => Ok(Some(x.cmp(y))),
        (Sys::Tmp(x), Sys::Tmp(y)) => x.compare(*y).map_err(|()| mismatch()),
        (Sys::Str(s, true), Sys::Tmp(t)) => {
            let p = coerce_temporal(s, t).ok_or_else(mismatch)?;
            p.compare(*t).map_err(|()| mismatch())
        }
        (Sys::Tmp(t), Sys::Str(s, true)) => {
            let p = coerce_temporal(s, t).ok_or_else(mismatch)?;
            t.compare(p).map_err(|()| mismatch())
        }
        (Sys::Qty(x), Sys::Qty(y)) => x
            .compare(y)
            .map(Some)
            .ok_or_else(|| EvalError::new("quantities with incomparable units")),
        _ => match (to_dec(a), to_dec(b)) {
            (Some(x), Some(y)) => Ok(Some(x.cmp_value(y))),
            _ => Err(mismatch()),
        },
    }
}

pub(super) fn bool_item<'a>(b: bool) -> Item<'a> {
    Item::computed(FpValue::Boolean(b))
}

pub(super) fn str_item<'a>(s: &str) -> Item<'a> {
    Item::computed(FpValue::String(Rc::from(s)))
}

/// Converts a collection used as a boolean (singleton evaluation): empty → `None`,
/// one Boolean → its value, one other item → `true`, several → error.
pub(super) fn as_bool(items: &[Item<'_>], what: &str) -> R<Option<bool>> {
    match items {
        [] => Ok(None),
        [one] => Ok(Some(match sys(one) {
            Some(Sys::Bool(b)) => b,
            _ => true,
        })),
        _ => Err(EvalError::new(format!(
            "{what} expects a single boolean, got {} items",
            items.len()
        ))),
    }
}

/// Returns the single item, `None` for empty, or an error for several items.
pub(super) fn single<'x, 'a>(items: &'x [Item<'a>], what: &str) -> R<Option<&'x Item<'a>>> {
    match items {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(EvalError::new(format!(
            "{what} expects a single item, got {}",
            items.len()
        ))),
    }
}

/// Appends `it` unless an equal item is already present.
pub(super) fn push_distinct<'a>(out: &mut Vec<Item<'a>>, it: Item<'a>) {
    if !out.iter().any(|o| eq_item(o, &it) == Some(true)) {
        out.push(it);
    }
}

/// FHIRPath `=` on two collections: same length and pairwise equal; `None` = unknown.
pub(super) fn eq_collections(a: &[Item<'_>], b: &[Item<'_>]) -> Option<bool> {
    if a.len() != b.len() {
        return Some(false);
    }
    let mut unknown = false;
    for (x, y) in a.iter().zip(b) {
        match eq_item(x, y) {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown { None } else { Some(true) }
}

/// FHIRPath `~` on two collections: same length and equivalent in any order.
pub(super) fn equiv_collections(a: &[Item<'_>], b: &[Item<'_>]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut used = vec![false; b.len()];
    'outer: for x in a {
        for (y, u) in b.iter().zip(used.iter_mut()) {
            if !*u && equiv_item(x, y) {
                *u = true;
                continue 'outer;
            }
        }
        return false;
    }
    true
}

fn date_arith(t: Temporal, q: &Quantity, sub: bool) -> R<Option<Sys>> {
    let unit = arithmetic_unit(&q.unit).ok_or_else(|| {
        EvalError::new(format!(
            "cannot add a quantity in '{}' to a date/time",
            q.unit
        ))
    })?;
    let whole = q
        .value
        .trunc_to(0)
        .and_then(Decimal::to_i64)
        .ok_or_else(|| EvalError::new("date arithmetic amount out of range"))?;
    let amount = if sub { -whole } else { whole };
    Ok(t.add(amount, unit).map(Sys::Tmp))
}

fn overflow() -> EvalError {
    EvalError::new("arithmetic overflow")
}

/// Arithmetic on System values; `Ok(None)` is an empty result (division by zero).
pub(super) fn arith(op: BinOp, a: Sys, b: Sys) -> R<Option<Sys>> {
    let bad = |a: &Sys, b: &Sys| {
        EvalError::new(format!(
            "operator {op:?} not defined for {} and {}",
            sys_name(a),
            sys_name(b)
        ))
    };
    match (&a, &b) {
        (Sys::Int(x), Sys::Int(y)) => {
            let (x, y) = (*x, *y);
            Ok(match op {
                BinOp::Add => Some(Sys::Int(x.checked_add(y).ok_or_else(overflow)?)),
                BinOp::Sub => Some(Sys::Int(x.checked_sub(y).ok_or_else(overflow)?)),
                BinOp::Mul => Some(Sys::Int(x.checked_mul(y).ok_or_else(overflow)?)),
                BinOp::Div => Decimal::from_i64(x)
                    .checked_div(Decimal::from_i64(y))
                    .map(Sys::Dec),
                BinOp::IntDiv => x.checked_div(y).map(Sys::Int),
                BinOp::Mod => x.checked_rem(y).map(Sys::Int),
                _ => return Err(bad(&a, &b)),
            })
        }
        (Sys::Str(x, _), Sys::Str(y, _)) if op == BinOp::Add => {
            Ok(Some(Sys::Str(Rc::from(format!("{x}{y}")), false)))
        }
        (Sys::Tmp(t), Sys::Qty(q)) if matches!(op, BinOp::Add | BinOp::Sub) => {
            date_arith(*t, q, op == BinOp::Sub)
        }
        (Sys::Str(s, true), Sys::Qty(q)) if matches!(op, BinOp::Add | BinOp::Sub) => {
            let t = Temporal::parse_date_or_datetime(s).ok_or_else(|| bad(&a, &b))?;
            date_arith(t, q, op == BinOp::Sub)
        }
        (Sys::Qty(x), Sys::Qty(y)) => Ok(match op {
            BinOp::Add | BinOp::Sub => {
                let yv = x
                    .convert_value(y)
                    .ok_or_else(|| EvalError::new("quantities with incomparable units"))?;
                let v = if op == BinOp::Add {
                    x.value.checked_add(yv)
                } else {
                    x.value.checked_sub(yv)
                };
                Some(Sys::Qty(Quantity {
                    value: v.ok_or_else(overflow)?,
                    ..x.clone()
                }))
            }
            BinOp::Mul => Some(Sys::Qty(x.mul(y).ok_or_else(overflow)?)),
            BinOp::Div => x.div(y).map(Sys::Qty),
            _ => return Err(bad(&a, &b)),
        }),
        (Sys::Qty(x), other)
            if matches!(op, BinOp::Mul | BinOp::Div) && to_dec(other).is_some() =>
        {
            let d = to_dec(other).ok_or_else(|| bad(&a, &b))?;
            let v = if op == BinOp::Mul {
                Some(x.value.checked_mul(d).ok_or_else(overflow)?)
            } else {
                x.value.checked_div(d)
            };
            Ok(v.map(|value| Sys::Qty(Quantity { value, ..x.clone() })))
        }
        (other, Sys::Qty(y)) if op == BinOp::Mul && to_dec(other).is_some() => {
            let d = to_dec(other).ok_or_else(|| bad(&a, &b))?;
            Ok(Some(Sys::Qty(Quantity {
                value: y.value.checked_mul(d).ok_or_else(overflow)?,
                ..y.clone()
            })))
        }
        _ => {
            let (Some(x), Some(y)) = (to_dec(&a), to_dec(&b)) else {
                return Err(bad(&a, &b));
            };
            Ok(match op {
                BinOp::Add => Some(Sys::Dec(x.checked_add(y).ok_or_else(overflow)?)),
                BinOp::Sub => Some(Sys::Dec(x.checked_sub(y).ok_or_else(overflow)?)),
                BinOp::Mul => Some(Sys::Dec(x.checked_mul(y).ok_or_else(overflow)?)),
                BinOp::Div => x.checked_div(y).map(Sys::Dec),
                BinOp::IntDiv => match x.div_trunc(y) {
                    Some(q) => Some(Sys::Int(q.to_i64().ok_or_else(overflow)?)),
                    None => None,
                },
                BinOp::Mod => x.checked_rem(y).map(Sys::Dec),
                _ => return Err(bad(&a, &b)),
            })
        }
    }
}
