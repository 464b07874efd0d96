//! Evaluates an [`Expr`] over FHIR JSON: navigation that remembers locations, choice types and
//! primitive extensions, FHIRPath operators with three-valued logic, equality/equivalence and
//! ordering, and FHIR type tests. Function calls are delegated to `functions`, which calls
//! back through the [`Evaluator`] trait; System values live in `system`, type names in `types`.

use std::cell::Cell;
use std::cmp::Ordering;
use std::rc::Rc;

use serde_json::Value;

use super::context::{Evaluator, MAX_EVAL_DEPTH, R, Scope};
use super::functions;
use super::parser::{BinOp, Expr, Literal, TypeSpec};
use super::system::{
    Sys, arith, as_bool, bool_item, cmp_sys, eq_collections, eq_item, equiv_collections,
    number_sys, push_distinct, single, str_item, sys, sys_name, sys_to_value,
};
use super::types::{builtin_parent, choice_type, is_builtin_type, is_primitive, split_choice};
use super::value::{Decimal, Quantity, Temporal};
use super::{Env, EvalError, FpValue, Item, Json, Node, Step};

fn child_json<'a>(j: &Json<'a>, key: &str) -> Option<Json<'a>> {
    match j {
        Json::Borrowed(v) => v.get(key).map(Json::Borrowed),
        Json::Shared(v) => v.get(key).map(|c| Json::Shared(Rc::new(c.clone()))),
    }
}

fn elem_json<'a>(j: &Json<'a>, i: usize) -> Option<Json<'a>> {
    match j {
        Json::Borrowed(v) => v.get(i).map(Json::Borrowed),
        Json::Shared(v) => v.get(i).map(|c| Json::Shared(Rc::new(c.clone()))),
    }
}

fn non_null<'a>(j: Option<Json<'a>>) -> Option<Json<'a>> {
    j.filter(|v| !v.get().is_null())
}

pub(crate) fn extend_loc(loc: Option<&Rc<[Step]>>, steps: &[Step]) -> Option<Rc<[Step]>> {
    loc.map(|l| {
        let mut v: Vec<Step> = l.to_vec();
        v.extend_from_slice(steps);
        Rc::from(v)
    })
}

/// Location of a primitive's `_name` sibling: the last key step gains a leading underscore.
fn underscore_loc(loc: &Rc<[Step]>) -> Rc<[Step]> {
    let mut v: Vec<Step> = loc.to_vec();
    if let Some(Step::Key(k)) = v.iter_mut().rev().find(|s| matches!(s, Step::Key(_))) {
        *k = format!("_{k}");
    }
    Rc::from(v)
}

/// The evaluator: the document root, the environment and the recursion guard.
struct Ev<'a, 'e> {
    root: Item<'a>,
    env: &'e Env<'e>,
    depth: Cell<u32>,
    now: Temporal,
}

/// Evaluates a parsed expression against `root` (which is `%resource`, `%context` and `$this`).
pub fn evaluate<'a>(
    expr: &Expr,
    root: &'a Value,
    env: &Env<'_>,
) -> Result<Vec<Item<'a>>, EvalError> {
    let ty = root
        .get("resourceType")
        .and_then(Value::as_str)
        .map(Rc::from);
    let root_item = Item {
        value: FpValue::Node(Node {
            json: Some(Json::Borrowed(root)),
            ext: None,
            ty,
        }),
        loc: Some(Rc::from(Vec::new())),
    };
    let ev = Ev {
        root: root_item.clone(),
        env,
        depth: Cell::new(0),
        now: env.now.unwrap_or_else(Temporal::now),
    };
    let scope = Scope {
        this: Some(root_item),
        index: None,
        total: None,
    };
    ev.eval(expr, &scope)
}

impl<'a> Evaluator<'a> for Ev<'a, '_> {
    fn eval(&self, e: &Expr, sc: &Scope<'a>) -> R<Vec<Item<'a>>> {
        let d = self.depth.get();
        if d >= MAX_EVAL_DEPTH {
            return Err(EvalError::new("expression evaluation nested too deeply"));
        }
        self.depth.set(d + 1);
        let r = self.eval_inner(e, sc);
        self.depth.set(d);
        r
    }

    fn root(&self) -> &Item<'a> {
        &self.root
    }

    fn now(&self) -> Temporal {
        self.now
    }

    fn navigate(&self, it: &Item<'a>, name: &str) -> Vec<Item<'a>> {
        let mut out = Vec::new();
        match &it.value {
            FpValue::Node(n) => self.nav_node(n, it.loc.as_ref(), name, &mut out),
            FpValue::Type {
                namespace,
                name: tn,
            } => match name {
                "namespace" => out.push(Item::computed(FpValue::String(namespace.clone()))),
                "name" => out.push(Item::computed(FpValue::String(tn.clone()))),
                _ => {}
            },
            FpValue::Quantity(q) => match name {
                "value" => out.push(Item::computed(FpValue::Decimal(q.value))),
                "unit" | "code" => out.push(Item::computed(FpValue::String(q.unit.clone()))),
                "system" if !q.calendar => out.push(str_item("http://unitsofmeasure.org")),
                _ => {}
            },
            _ => {}
        }
        out
    }

    fn children(&self, it: &Item<'a>) -> Vec<Item<'a>> {
        let mut out = Vec::new();
        let FpValue::Node(n) = &it.value else {
            return out;
        };
        let (obj, base_loc) = match n.json() {
            Some(Value::Object(_)) => match &n.json {
                Some(j) => (j.clone(), it.loc.clone()),
                None => return out,
            },
            _ => match &n.ext {
                Some(e) => (e.clone(), it.loc.as_ref().map(underscore_loc)),
                None => return out,
            },
        };
        let Some(map) = obj.get().as_object() else {
            return out;
        };
        for k in map.keys() {
            if k == "resourceType" {
                continue;
            }
            if let Some(base) = k.strip_prefix('_')
                && map.contains_key(base)
            {
                continue;
            }
            let key = k.strip_prefix('_').unwrap_or(k);
            let ty = self
                .type_of_child(n, key)
                .or_else(|| split_choice(key).map(|(_, t)| Rc::from(t.as_str())));
            self.expand(&obj, key, ty, base_loc.as_ref(), &mut out);
        }
        out
    }

    fn node_type(&self, n: &Node<'a>) -> Option<String> {
        if let Some(t) = &n.ty {
            return Some(t.to_string());
        }
        match n.json()? {
            Value::Bool(_) => Some("boolean".into()),
            Value::String(_) => Some("string".into()),
            Value::Number(num) => {
                if num.to_string().contains(['.', 'e', 'E']) {
                    Some("decimal".into())
                } else {
                    Some("integer".into())
                }
            }
            Value::Object(o) => o
                .get("resourceType")
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        }
    }

    fn derives(&self, ty: &str, base: &str) -> bool {
        let mut cur = ty;
        for _ in 0..8 {
            if cur == base {
                return true;
            }
            if let Some(ti) = self.env.type_info
                && ti.derives_from(cur, base)
            {
                return true;
            }
            match builtin_parent(cur) {
                Some(p) => cur = p,
                None => return false,
            }
        }
        false
    }

    fn is_type(&self, it: &Item<'a>, ty: &TypeSpec) -> R<bool> {
        let ns = ty.namespace.as_deref();
        let name = ty.name.as_str();
        match ns {
            None | Some("FHIR") if !self.known_type(name) => {
                return Err(EvalError::new(format!("unknown type {name}")));
            }
            Some("System" | "FHIR") | None => {}
            Some(other) => return Err(EvalError::new(format!("unknown namespace {other}"))),
        }
        match &it.value {
            FpValue::Node(n) => {
                if ns == Some("System") {
                    return Ok(false);
                }
                Ok(self.node_type(n).is_some_and(|t| self.derives(&t, name)))
            }
            other => {
                if ns == Some("FHIR") {
                    return Ok(false);
                }
                let s = sys(&Item::computed(other.clone()));
                Ok(s.is_some_and(|s| sys_name(&s) == name))
            }
        }
    }

    fn is_type_exact(&self, it: &Item<'a>, ty: &TypeSpec) -> R<bool> {
        if !self.is_type(it, ty)? {
            return Ok(false);
        }
        match &it.value {
            FpValue::Node(n) if is_primitive(&ty.name) => {
                Ok(self.node_type(n).as_deref() == Some(ty.name.as_str()))
            }
            _ => Ok(true),
        }
    }

    fn type_of(&self, it: &Item<'a>) -> Option<(&'static str, String)> {
        match &it.value {
            FpValue::Node(n) => self.node_type(n).map(|t| ("FHIR", t)),
            FpValue::Type { .. } => Some(("System", "TypeInfo".into())),
            _ => sys(it).map(|s| ("System", sys_name(&s).to_string())),
        }
    }
}

impl<'a> Ev<'a, '_> {
    fn eval_inner(&self, e: &Expr, sc: &Scope<'a>) -> R<Vec<Item<'a>>> {
        match e {
            Expr::Literal(l) => literal(l),
            Expr::Ident(name) => {
                let Some(this) = &sc.this else {
                    return Ok(Vec::new());
                };
                if name.starts_with(|c: char| c.is_ascii_uppercase())
                    && self.is_resource_of_type(this, name)
                {
                    return Ok(vec![this.clone()]);
                }
                self.check_choice_key(this, name)?;
                Ok(self.navigate(this, name))
            }
            Expr::Member(target, name) => {
                let input = self.eval(target, sc)?;
                let mut out = Vec::new();
                for it in &input {
                    self.check_choice_key(it, name)?;
                    out.extend(self.navigate(it, name));
                }
                Ok(out)
            }
            Expr::Call { target, name, args } => {
                let input = match target {
                    Some(t) => self.eval(t, sc)?,
                    None => sc.this.iter().cloned().collect(),
                };
                functions::call(self, name, input, args, sc, target.is_some())
            }
            Expr::Index(target, idx) => {
                let input = self.eval(target, sc)?;
                let idx = self.eval(idx, sc)?;
                let Some(i) = single(&idx, "indexer")? else {
                    return Ok(Vec::new());
                };
                let Some(Sys::Int(i)) = sys(i) else {
                    return Err(EvalError::new("indexer expects an integer"));
                };
                Ok(usize::try_from(i)
                    .ok()
                    .and_then(|i| input.into_iter().nth(i))
                    .into_iter()
                    .collect())
            }
            Expr::Neg(inner, neg) => {
                let items = self.eval(inner, sc)?;
                negate(items, *neg)
            }
            Expr::Binary(op, l, r) => self.binary(*op, l, r, sc),
            Expr::Is(inner, ty) => {
                let items = self.eval(inner, sc)?;
                match single(&items, "is")? {
                    None => Ok(Vec::new()),
                    Some(it) => Ok(vec![bool_item(self.is_type(it, ty)?)]),
                }
            }
            Expr::As(inner, ty) => {
                let items = self.eval(inner, sc)?;
                let mut out = Vec::new();
                for it in items {
                    if self.is_type_exact(&it, ty)? {
                        out.push(it);
                    }
                }
                Ok(out)
            }
            Expr::This => Ok(sc.this.iter().cloned().collect()),
            Expr::IndexVar => Ok(sc
                .index
                .and_then(|i| i64::try_from(i).ok())
                .map(|i| Item::computed(FpValue::Integer(i)))
                .into_iter()
                .collect()),
            Expr::Total => Ok(sc.total.clone().unwrap_or_default()),
            Expr::Var(name) => self.var(name),
        }
    }

    fn var(&self, name: &str) -> R<Vec<Item<'a>>> {
        if let Some(v) = self.env.vars.get(name) {
            return Ok(json_to_items(v));
        }
        let s = match name {
            "ucum" => "http://unitsofmeasure.org".to_string(),
            "sct" => "http://snomed.info/sct".to_string(),
            "loinc" => "http://loinc.org".to_string(),
            "context" | "resource" | "rootResource" => return Ok(vec![self.root.clone()]),
            n => {
                if let Some(rest) = n.strip_prefix("vs-") {
                    format!("http://hl7.org/fhir/ValueSet/{rest}")
                } else if let Some(rest) = n.strip_prefix("ext-") {
                    format!("http://hl7.org/fhir/StructureDefinition/{rest}")
                } else {
                    return Err(EvalError::new(format!("unknown variable %{n}")));
                }
            }
        };
        Ok(vec![str_item(&s)])
    }

    /// True when `it` is a resource whose type is `name` or specialises it.
    fn is_resource_of_type(&self, it: &Item<'a>, name: &str) -> bool {
        match &it.value {
            FpValue::Node(n) => {
                let rt = n
                    .json()
                    .and_then(|v| v.get("resourceType"))
                    .and_then(Value::as_str);
                rt.is_some_and(|rt| self.derives(rt, name))
            }
            _ => false,
        }
    }

    fn type_of_child(&self, parent: &Node<'a>, key: &str) -> Option<Rc<str>> {
        if let (Some(ti), Some(pt)) = (self.env.type_info, parent.ty.as_deref())
            && let Some(t) = ti.element_type(pt, key)
        {
            return Some(Rc::from(t));
        }
        match key {
            "extension" | "modifierExtension" => Some(Rc::from("Extension")),
            _ => None,
        }
    }

    /// Items for `obj[key]` (and its `_key` sibling), flattening arrays.
    fn expand(
        &self,
        obj: &Json<'a>,
        key: &str,
        ty: Option<Rc<str>>,
        loc: Option<&Rc<[Step]>>,
        out: &mut Vec<Item<'a>>,
    ) {
        let val = non_null(child_json(obj, key));
        let ext = non_null(child_json(obj, &format!("_{key}")));
        let mk = |json: Option<Json<'a>>, ext: Option<Json<'a>>, idx: Option<usize>| {
            let ty = json
                .as_ref()
                .and_then(|j| j.get().get("resourceType"))
                .and_then(Value::as_str)
                .map(Rc::from)
                .or_else(|| ty.clone());
            let mut steps = vec![Step::Key(key.to_string())];
            if let Some(i) = idx {
                steps.push(Step::Index(i));
            }
            Item {
                value: FpValue::Node(Node { json, ext, ty }),
                loc: extend_loc(loc, &steps),
            }
        };
        let len_of = |j: &Option<Json<'a>>| match j.as_ref().map(Json::get) {
            Some(Value::Array(a)) => Some(a.len()),
            _ => None,
        };
        match (len_of(&val), len_of(&ext)) {
            (None, None) => {
                if val.is_some() || ext.is_some() {
                    out.push(mk(val, ext, None));
                }
            }
            (a, b) => {
                let n = a.unwrap_or(0).max(b.unwrap_or(0));
                for i in 0..n {
                    let v = val.as_ref().and_then(|j| non_null(elem_json(j, i)));
                    let e = ext.as_ref().and_then(|j| non_null(elem_json(j, i)));
                    if v.is_some() || e.is_some() {
                        out.push(mk(v, e, Some(i)));
                    }
                }
            }
        }
    }

    /// With type information, `valueQuantity` is not a FHIRPath name (the element is `value`).
    fn check_choice_key(&self, it: &Item<'a>, name: &str) -> R<()> {
        if let (Some(ti), FpValue::Node(n)) = (self.env.type_info, &it.value)
            && let Some(t) = n.ty.as_deref()
            && ti.is_choice_key(t, name)
        {
            return Err(EvalError::new(format!(
                "'{name}' is a choice element written with its type: use the element name \
                 and ofType()/as()"
            )));
        }
        Ok(())
    }

    fn nav_node(
        &self,
        n: &Node<'a>,
        loc: Option<&Rc<[Step]>>,
        name: &str,
        out: &mut Vec<Item<'a>>,
    ) {
        let (obj, base_loc) = match n.json() {
            Some(Value::Object(_)) => match &n.json {
                Some(j) => (j.clone(), loc.cloned()),
                None => return,
            },
            _ => match &n.ext {
                Some(e) => (e.clone(), loc.map(underscore_loc)),
                None => return,
            },
        };
        let Some(map) = obj.get().as_object() else {
            return;
        };
        if map.contains_key(name) || map.contains_key(&format!("_{name}")) {
            let ty = self.type_of_child(n, name);
            self.expand(&obj, name, ty, base_loc.as_ref(), out);
            return;
        }
        // choice type: name + TypeSuffix
        let keys: Vec<String> = map
            .keys()
            .filter_map(|k| {
                let k = k.strip_prefix('_').unwrap_or(k);
                let rest = k.strip_prefix(name)?;
                (rest.starts_with(|c: char| c.is_ascii_uppercase()) && choice_type(rest).is_some())
                    .then(|| k.to_string())
            })
            .collect();
        let mut seen: Vec<&str> = Vec::new();
        for k in &keys {
            if seen.contains(&k.as_str()) {
                continue;
            }
            seen.push(k);
            let ty = k
                .strip_prefix(name)
                .and_then(choice_type)
                .map(|t| Rc::from(t.as_str()));
            self.expand(&obj, k, ty, base_loc.as_ref(), out);
        }
    }

    fn known_type(&self, name: &str) -> bool {
        is_builtin_type(name) || self.env.type_info.is_some_and(|t| t.is_known_type(name))
    }

    fn binary(&self, op: BinOp, l: &Expr, r: &Expr, sc: &Scope<'a>) -> R<Vec<Item<'a>>> {
        let lv = self.eval(l, sc)?;
        let rv = self.eval(r, sc)?;
        binary_values(op, lv, rv)
    }
}

/// Applies a binary operator to evaluated operands (kept out of the recursive path so the
/// evaluator's stack frames stay small).
#[inline(never)]
fn binary_values<'a>(op: BinOp, lv: Vec<Item<'a>>, rv: Vec<Item<'a>>) -> R<Vec<Item<'a>>> {
    {
        match op {
            BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies => {
                let a = as_bool(&lv, "boolean operator")?;
                let b = as_bool(&rv, "boolean operator")?;
                let res = match op {
                    BinOp::And => match (a, b) {
                        (Some(false), _) | (_, Some(false)) => Some(false),
                        (Some(true), Some(true)) => Some(true),
                        _ => None,
                    },
                    BinOp::Or => match (a, b) {
                        (Some(true), _) | (_, Some(true)) => Some(true),
                        (Some(false), Some(false)) => Some(false),
                        _ => None,
                    },
                    BinOp::Xor => match (a, b) {
                        (Some(x), Some(y)) => Some(x != y),
                        _ => None,
                    },
                    _ => match (a, b) {
                        (Some(false), _) | (_, Some(true)) => Some(true),
                        (Some(true), Some(false)) => Some(false),
                        _ => None,
                    },
                };
                Ok(res.map(bool_item).into_iter().collect())
            }
            BinOp::Union => {
                let mut out = Vec::new();
                for it in lv.into_iter().chain(rv) {
                    push_distinct(&mut out, it);
                }
                Ok(out)
            }
            BinOp::In | BinOp::Contains => {
                let (needle, hay) = if op == BinOp::In { (lv, rv) } else { (rv, lv) };
                let Some(n) = single(&needle, "membership operator")? else {
                    return Ok(Vec::new());
                };
                Ok(vec![bool_item(
                    hay.iter().any(|h| eq_item(n, h) == Some(true)),
                )])
            }
            BinOp::Eq | BinOp::Ne => {
                if lv.is_empty() || rv.is_empty() {
                    return Ok(Vec::new());
                }
                let res = eq_collections(&lv, &rv);
                Ok(res
                    .map(|b| bool_item(if op == BinOp::Eq { b } else { !b }))
                    .into_iter()
                    .collect())
            }
            BinOp::Equiv | BinOp::NotEquiv => {
                let b = equiv_collections(&lv, &rv);
                Ok(vec![bool_item(if op == BinOp::Equiv { b } else { !b })])
            }
            BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
                let (Some(a), Some(b)) = (single(&lv, "comparison")?, single(&rv, "comparison")?)
                else {
                    return Ok(Vec::new());
                };
                let (Some(sa), Some(sb)) = (sys(a), sys(b)) else {
                    return Ok(Vec::new());
                };
                let Some(o) = cmp_sys(&sa, &sb)? else {
                    return Ok(Vec::new());
                };
                let b = match op {
                    BinOp::Lt => o == Ordering::Less,
                    BinOp::Gt => o == Ordering::Greater,
                    BinOp::Le => o != Ordering::Greater,
                    _ => o != Ordering::Less,
                };
                Ok(vec![bool_item(b)])
            }
            BinOp::Concat => {
                let text = |v: &[Item<'a>]| -> R<String> {
                    match single(v, "&")? {
                        None => Ok(String::new()),
                        Some(it) => match sys(it) {
                            Some(Sys::Str(s, _)) => Ok(s.to_string()),
                            None => Ok(String::new()),
                            Some(o) => Err(EvalError::new(format!(
                                "& expects strings, got {}",
                                sys_name(&o)
                            ))),
                        },
                    }
                };
                let s = text(&lv)? + &text(&rv)?;
                Ok(vec![Item::computed(FpValue::String(Rc::from(s)))])
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => {
                let (Some(a), Some(b)) = (single(&lv, "arithmetic")?, single(&rv, "arithmetic")?)
                else {
                    return Ok(Vec::new());
                };
                let (Some(sa), Some(sb)) = (sys(a), sys(b)) else {
                    return Ok(Vec::new());
                };
                Ok(arith(op, sa, sb)?
                    .map(|v| Item::computed(sys_to_value(v)))
                    .into_iter()
                    .collect())
            }
        }
    }
}

/// Unary `+`/`-` on an evaluated operand.
#[inline(never)]
fn negate<'a>(items: Vec<Item<'a>>, neg: bool) -> R<Vec<Item<'a>>> {
    let Some(it) = single(&items, "unary sign")? else {
        return Ok(Vec::new());
    };
    let s = sys(it).ok_or_else(|| EvalError::new("unary sign on empty value"))?;
    if !neg {
        return match s {
            Sys::Int(_) | Sys::Dec(_) | Sys::Qty(_) => Ok(vec![Item::computed(sys_to_value(s))]),
            _ => Err(EvalError::new("unary + expects a number")),
        };
    }
    let v = match s {
        Sys::Int(i) => FpValue::Integer(
            i.checked_neg()
                .ok_or_else(|| EvalError::new("integer overflow"))?,
        ),
        Sys::Dec(d) => FpValue::Decimal(d.negated()),
        Sys::Qty(q) => FpValue::Quantity(Quantity {
            value: q.value.negated(),
            ..q
        }),
        other => {
            return Err(EvalError::new(format!(
                "cannot negate {}",
                sys_name(&other)
            )));
        }
    };
    Ok(vec![Item::computed(v)])
}

/// Converts an environment variable to items.
fn json_to_items<'a>(v: &Value) -> Vec<Item<'a>> {
    match v {
        Value::Null => Vec::new(),
        Value::Bool(b) => vec![bool_item(*b)],
        Value::String(s) => vec![str_item(s)],
        Value::Number(n) => number_sys(n, false)
            .map(|s| Item::computed(sys_to_value(s)))
            .into_iter()
            .collect(),
        Value::Array(a) => a.iter().flat_map(json_to_items).collect(),
        Value::Object(o) => {
            let ty = o.get("resourceType").and_then(Value::as_str).map(Rc::from);
            vec![Item::computed(FpValue::Node(Node {
                json: Some(Json::Shared(Rc::new(v.clone()))),
                ext: None,
                ty,
            }))]
        }
    }
}

fn literal<'a>(l: &Literal) -> R<Vec<Item<'a>>> {
    let v = match l {
        Literal::Empty => return Ok(Vec::new()),
        Literal::Boolean(b) => FpValue::Boolean(*b),
        Literal::String(s) => FpValue::String(Rc::from(s.as_str())),
        Literal::Integer(i) => FpValue::Integer(*i),
        Literal::Decimal(d) => FpValue::Decimal(
            Decimal::parse(d).ok_or_else(|| EvalError::new(format!("bad decimal {d}")))?,
        ),
        Literal::DateTime(s) => FpValue::Temporal(
            Temporal::parse_date_or_datetime(s)
                .ok_or_else(|| EvalError::new(format!("invalid date/time literal @{s}")))?,
        ),
        Literal::Time(s) => FpValue::Temporal(
            Temporal::parse_time(s)
                .ok_or_else(|| EvalError::new(format!("invalid time literal @T{s}")))?,
        ),
        Literal::Quantity {
            value,
            unit,
            calendar,
        } => FpValue::Quantity(Quantity {
            value: Decimal::parse(value)
                .ok_or_else(|| EvalError::new(format!("bad quantity value {value}")))?,
            unit: Rc::from(unit.as_str()),
            calendar: *calendar,
        }),
    };
    Ok(vec![Item::computed(v)])
}
