//! `:missing` on parameters whose expression is a test rather than an element (R4's
//! `deceased`: `Patient.deceased.exists() and Patient.deceased != false`). Such a parameter
//! has a value — `false` — for every resource, so `:missing` cannot mean "no index row". It
//! means what the spec says: the element the parameter describes is absent. The elements a
//! test tests are the paths in it; a resource where any of them has a value gets a marker
//! row `{code}$present`, and `:missing` looks for that row.

use crate::fhirpath::{BinOp, Expr};

/// The index code of the presence marker of parameter `code`.
pub fn marker(code: &str) -> String {
    format!("{code}$present")
}

/// When `expr` is a boolean test: the element paths it tests (each evaluated on the
/// resource; any value means the element is present). None for an ordinary expression.
pub fn tested_elements(expr: &Expr) -> Option<Vec<&Expr>> {
    if !is_test(expr) {
        return None;
    }
    let mut out = Vec::new();
    collect(expr, &mut out);
    Some(out)
}

/// Whether the expression's value is computed by a boolean operator or function.
fn is_test(e: &Expr) -> bool {
    match e {
        Expr::Binary(op, _, _) => matches!(
            op,
            BinOp::Lt
                | BinOp::Gt
                | BinOp::Le
                | BinOp::Ge
                | BinOp::Eq
                | BinOp::Equiv
                | BinOp::Ne
                | BinOp::NotEquiv
                | BinOp::In
                | BinOp::Contains
                | BinOp::And
                | BinOp::Or
                | BinOp::Xor
                | BinOp::Implies
        ),
        Expr::Is(_, _) => true,
        Expr::Call { name, .. } => matches!(
            name.as_str(),
            "exists"
                | "empty"
                | "not"
                | "all"
                | "allTrue"
                | "anyTrue"
                | "allFalse"
                | "anyFalse"
                | "hasValue"
                | "subsetOf"
                | "supersetOf"
                | "isDistinct"
                | "matches"
                | "startsWith"
                | "endsWith"
                | "is"
        ),
        _ => false,
    }
}

/// Whether `e` navigates to elements (a path, possibly filtered by type or position).
fn is_path(e: &Expr) -> bool {
    match e {
        Expr::Ident(_) => true,
        Expr::Member(t, _) | Expr::As(t, _) | Expr::Index(t, _) => is_path(t),
        Expr::Call {
            target: Some(t),
            name,
            ..
        } => {
            matches!(
                name.as_str(),
                "ofType" | "as" | "first" | "last" | "single" | "where" | "select" | "resolve"
            ) && is_path(t)
        }
        _ => false,
    }
}

fn collect<'a>(e: &'a Expr, out: &mut Vec<&'a Expr>) {
    if is_path(e) {
        out.push(e);
        return;
    }
    match e {
        Expr::Binary(_, l, r) => {
            collect(l, out);
            collect(r, out);
        }
        Expr::Is(t, _) | Expr::As(t, _) | Expr::Neg(t, _) | Expr::Member(t, _) => collect(t, out),
        // the arguments of a function are relative to its items (criteria, lambdas)
        Expr::Call {
            target: Some(t), ..
        } => collect(t, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhirpath::parse;

    #[test]
    fn tests_name_the_elements_they_test() {
        let e = parse("Patient.deceased.exists() and Patient.deceased != false").unwrap();
        let paths = tested_elements(&e).unwrap();
        assert_eq!(paths.len(), 2);
        assert!(tested_elements(&parse("Patient.name").unwrap()).is_none());
        assert!(tested_elements(&parse("Observation.value.ofType(Quantity)").unwrap()).is_none());
        let e = parse("Patient.active = true").unwrap();
        assert_eq!(tested_elements(&e).unwrap().len(), 1);
    }
}
