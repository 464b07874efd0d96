//! What the evaluator and the function library share about one evaluation: the result type,
//! the size limits, the `$this`/`$index`/`$total` scope, and the [`Evaluator`] trait through
//! which functions call back into the evaluator (so `functions` never names `eval`).

use super::parser::{Expr, TypeSpec};
use super::value::Temporal;
use super::{EvalError, Item, Node};

pub(super) type R<T> = Result<T, EvalError>;

/// Nested evaluation frames allowed (the parser already bounds the tree; this is a backstop).
pub(super) const MAX_EVAL_DEPTH: u32 = 160;
/// Largest collection `repeat()`/`descendants()` may build.
pub(super) const MAX_ITEMS: usize = 200_000;

/// Values of `$this`, `$index` and `$total` while evaluating an expression.
#[derive(Clone)]
pub(super) struct Scope<'a> {
    pub this: Option<Item<'a>>,
    pub index: Option<usize>,
    pub total: Option<Vec<Item<'a>>>,
}

impl<'a> Scope<'a> {
    pub fn with_this(&self, this: Item<'a>, index: Option<usize>) -> Scope<'a> {
        Scope {
            this: Some(this),
            index,
            total: self.total.clone(),
        }
    }
}

/// The evaluator as the function library sees it: evaluating argument expressions, the
/// document root and clock, navigation, and FHIR type knowledge.
pub(super) trait Evaluator<'a> {
    /// Evaluates `e` in scope `sc` (bounded by [`MAX_EVAL_DEPTH`]).
    fn eval(&self, e: &Expr, sc: &Scope<'a>) -> R<Vec<Item<'a>>>;

    /// The evaluated document (`%resource`, `%context`).
    fn root(&self) -> &Item<'a>;

    /// The instant `now()`, `today()` and `timeOfDay()` report.
    fn now(&self) -> Temporal;

    /// Member access `it.name`.
    fn navigate(&self, it: &Item<'a>, name: &str) -> Vec<Item<'a>>;

    /// All child nodes (`children()`).
    fn children(&self, it: &Item<'a>) -> Vec<Item<'a>>;

    /// The FHIR type name of a node (known type, resourceType, or JSON shape).
    fn node_type(&self, n: &Node<'a>) -> Option<String>;

    /// `ty` is `base` or specialises it.
    fn derives(&self, ty: &str, base: &str) -> bool;

    /// `it is ty`.
    fn is_type(&self, it: &Item<'a>, ty: &TypeSpec) -> R<bool>;

    /// Type test used by `as`/`ofType`: like [`Evaluator::is_type`], except that FHIR
    /// primitive type names must match exactly (`code` is not `as(string)`), as the R4 suite
    /// expects.
    fn is_type_exact(&self, it: &Item<'a>, ty: &TypeSpec) -> R<bool>;

    /// `(namespace, name)` for `type()`.
    fn type_of(&self, it: &Item<'a>) -> Option<(&'static str, String)>;
}
