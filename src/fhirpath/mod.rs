//! FHIRPath (N1, as profiled by FHIR R4): parse expressions, evaluate them over FHIR JSON while
//! remembering where every result node lives, and apply FHIRPath Patch documents.
//!
//! Entry points: [`parse`] → [`Expr`]; [`evaluate`] → [`Item`]s (value + location);
//! [`eval_str`] for one-shot use; [`patch::apply_fhirpath_patch`] for `PATCH` with Parameters.
//! Nothing here panics on any input: recursion is bounded by [`MAX_DEPTH`] and by an
//! evaluation depth guard, and JSON walks that can go deep use explicit stacks.

mod context;
mod eval;
mod functions;
mod lexer;
mod parser;
pub mod patch;
mod system;
mod types;
mod value;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::rc::Rc;

use serde_json::Value;

pub use eval::evaluate;
pub use parser::{BinOp, Expr, Literal, MAX_DEPTH, TypeSpec, parse};
pub use patch::{PatchError, apply_fhirpath_patch};
pub use value::{Decimal, Quantity, Temporal, TemporalKind};

/// A syntax error, with the byte offset in the source where it was noticed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath syntax error at offset {position}: {message}")]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

/// An error raised while evaluating a well-formed expression (wrong types, unknown function…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath evaluation error: {message}")]
pub struct EvalError {
    pub message: String,
}

impl EvalError {
    pub(crate) fn new(message: impl Into<String>) -> EvalError {
        EvalError {
            message: message.into(),
        }
    }
}

/// Either kind of failure, for [`eval_str`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Eval(#[from] EvalError),
}

/// One step of a location inside the root JSON document.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A JSON node either borrowed from the evaluated document or owned (variables, `resolve()`).
#[derive(Debug, Clone)]
pub enum Json<'a> {
    Borrowed(&'a Value),
    Shared(Rc<Value>),
}

impl Json<'_> {
    pub fn get(&self) -> &Value {
        match self {
            Json::Borrowed(v) => v,
            Json::Shared(v) => v,
        }
    }
}

/// A FHIR element: its JSON value (absent for a primitive carrying only extensions), the
/// `_name` sibling holding a primitive's `id`/`extension`, and its FHIR type when known.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    pub(crate) json: Option<Json<'a>>,
    pub(crate) ext: Option<Json<'a>>,
    pub(crate) ty: Option<Rc<str>>,
}

impl Node<'_> {
    /// The element's JSON value (`None` when only `_name` extensions exist).
    pub fn json(&self) -> Option<&Value> {
        self.json.as_ref().map(Json::get)
    }

    /// The primitive's `_name` sibling object, if any.
    pub fn primitive_extension(&self) -> Option<&Value> {
        self.ext.as_ref().map(Json::get)
    }

    /// The FHIR type name when it is known (resourceType, choice suffix, or the [`TypeInfo`] hook).
    pub fn fhir_type(&self) -> Option<&str> {
        self.ty.as_deref()
    }
}

/// A FHIRPath value: a FHIR node from the document or a System value computed by the expression.
#[derive(Debug, Clone)]
pub enum FpValue<'a> {
    Node(Node<'a>),
    Boolean(bool),
    Integer(i64),
    Decimal(Decimal),
    String(Rc<str>),
    Temporal(Temporal),
    Quantity(Quantity),
    /// Result of `type()`.
    Type {
        namespace: Rc<str>,
        name: Rc<str>,
    },
}

/// One result: a value plus, for nodes of the evaluated document, the path to where it lives.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    pub(crate) value: FpValue<'a>,
    pub(crate) loc: Option<Rc<[Step]>>,
}

fn decimal_json(d: Decimal) -> Value {
    serde_json::from_str::<Value>(&d.to_string()).unwrap_or(Value::Null)
}

impl<'a> Item<'a> {
    pub(crate) fn computed(value: FpValue<'a>) -> Item<'a> {
        Item { value, loc: None }
    }

    pub fn value(&self) -> &FpValue<'a> {
        &self.value
    }

    /// Path from the root JSON to this node; `None` for computed values.
    pub fn location(&self) -> Option<&[Step]> {
        self.loc.as_deref()
    }

    /// The item as FHIR-style JSON: nodes as they are, System values as JSON primitives,
    /// quantities as FHIR Quantity objects.
    pub fn to_json(&self) -> Value {
        match &self.value {
            FpValue::Node(n) => n.json().cloned().unwrap_or(Value::Null),
            FpValue::Boolean(b) => Value::Bool(*b),
            FpValue::Integer(i) => Value::from(*i),
            FpValue::Decimal(d) => decimal_json(*d),
            FpValue::String(s) => Value::String(s.to_string()),
            FpValue::Temporal(t) => Value::String(t.to_string()),
            FpValue::Quantity(q) => {
                let mut m = serde_json::Map::new();
                m.insert("value".into(), decimal_json(q.value));
                m.insert("unit".into(), Value::String(q.unit.to_string()));
                if !q.calendar {
                    m.insert(
                        "system".into(),
                        Value::String("http://unitsofmeasure.org".into()),
                    );
                    m.insert("code".into(), Value::String(q.unit.to_string()));
                }
                Value::Object(m)
            }
            FpValue::Type { namespace, name } => {
                let mut m = serde_json::Map::new();
                m.insert("namespace".into(), Value::String(namespace.to_string()));
                m.insert("name".into(), Value::String(name.to_string()));
                Value::Object(m)
            }
        }
    }
}

/// Type knowledge the caller can plug in (for example from the R4 StructureDefinitions).
/// Without it the engine knows resource types, choice-type suffixes and JSON shapes only.
pub trait TypeInfo {
    /// FHIR type of child `element` of a node typed `parent` (a type name such as `HumanName`,
    /// or whatever key this hook returned earlier for a backbone element). `None` = unknown.
    fn element_type(&self, parent: &str, element: &str) -> Option<String>;

    /// Extra specialisation facts beyond the built-in R4 ones (e.g. profiles). Default: none.
    fn derives_from(&self, _ty: &str, _base: &str) -> bool {
        false
    }

    /// Whether `key` is a choice element written with its type suffix (`valueQuantity` on
    /// Observation): FHIRPath names the element `value`, so such a path is an error.
    fn is_choice_key(&self, _parent: &str, _key: &str) -> bool {
        false
    }

    /// Extra type names to accept in `is`/`as`/`ofType` beyond the built-in R4 ones.
    fn is_known_type(&self, _name: &str) -> bool {
        false
    }
}

/// Evaluation environment: extra `%variables`, the optional [`TypeInfo`] hook and a clock.
#[derive(Default)]
pub struct Env<'e> {
    vars: HashMap<String, Value>,
    type_info: Option<&'e dyn TypeInfo>,
    now: Option<Temporal>,
}

impl<'e> Env<'e> {
    pub fn new() -> Env<'e> {
        Env::default()
    }

    /// Supplies element-type knowledge used by `is`, `as`, `ofType`, `type()` and comparisons.
    pub fn with_type_info(mut self, ti: &'e dyn TypeInfo) -> Env<'e> {
        self.type_info = Some(ti);
        self
    }

    /// Defines `%name` (JSON primitives become System values, objects stay nodes).
    pub fn with_var(mut self, name: &str, value: Value) -> Env<'e> {
        self.vars.insert(name.to_string(), value);
        self
    }

    /// Fixes `now()`/`today()`/`timeOfDay()`; `when` is a FHIR dateTime such as
    /// `2024-01-02T03:04:05.000Z`. Ignored when it does not parse.
    pub fn with_now(mut self, when: &str) -> Env<'e> {
        self.now = Temporal::parse_datetime(when).filter(|t| t.prec >= value::P_SECOND);
        self
    }
}

/// Parses and evaluates `src` against `root` with a default environment, returning JSON values.
pub fn eval_str(src: &str, root: &Value) -> Result<Vec<Value>, Error> {
    let expr = parse(src)?;
    let items = evaluate(&expr, root, &Env::new())?;
    Ok(items.iter().map(Item::to_json).collect())
}
