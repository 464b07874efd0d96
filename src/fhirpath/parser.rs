//! Turns FHIRPath tokens into an [`Expr`] tree by precedence climbing, with a hard nesting
//! limit so hostile input yields a [`ParseError`] instead of a stack overflow.

use super::ParseError;
use super::lexer::{Tok, Token, tokenize};

/// Deepest expression tree accepted; keeps parsing, evaluation and drop recursion bounded.
pub const MAX_DEPTH: u32 = 96;

/// A literal value written in the expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// `{}`
    Empty,
    Boolean(bool),
    String(String),
    /// Integer literal text.
    Integer(i64),
    /// Decimal literal text, kept exactly.
    Decimal(String),
    /// Date or datetime text after `@`.
    DateTime(String),
    /// Time text after `@T`.
    Time(String),
    /// Number text plus unit; `calendar` is true for unquoted calendar keywords.
    Quantity {
        value: String,
        unit: String,
        calendar: bool,
    },
}

/// Binary operators, named after their FHIRPath spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Equiv,
    Ne,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

/// A type name as written after `is`/`as` or inside `ofType()`: optional namespace plus name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeSpec {
    pub namespace: Option<String>,
    pub name: String,
}

/// FHIRPath abstract syntax tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Literal(Literal),
    /// An identifier at the start of a path (member of `$this`, or a type name).
    Ident(String),
    /// `target.name`
    Member(Box<Expr>, String),
    /// `target.name(args)` or `name(args)` when `target` is `None`.
    Call {
        target: Option<Box<Expr>>,
        name: String,
        args: Vec<Expr>,
    },
    /// `target[index]`
    Index(Box<Expr>, Box<Expr>),
    /// Unary minus (`true`) or plus (`false`).
    Neg(Box<Expr>, bool),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `expr is Type`
    Is(Box<Expr>, TypeSpec),
    /// `expr as Type`
    As(Box<Expr>, TypeSpec),
    This,
    IndexVar,
    Total,
    /// `%name`
    Var(String),
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    nesting: u32,
}

fn err(pos: usize, msg: impl Into<String>) -> ParseError {
    ParseError {
        position: pos,
        message: msg.into(),
    }
}

/// Binary operator for a token, with its precedence (higher binds tighter).
fn binop(t: &Tok) -> Option<(BinOp, u8)> {
    Some(match t {
        Tok::Sym("*") => (BinOp::Mul, 10),
        Tok::Sym("/") => (BinOp::Div, 10),
        Tok::Ident(s) if s == "div" => (BinOp::IntDiv, 10),
        Tok::Ident(s) if s == "mod" => (BinOp::Mod, 10),
        Tok::Sym("+") => (BinOp::Add, 9),
        Tok::Sym("-") => (BinOp::Sub, 9),
        Tok::Sym("&") => (BinOp::Concat, 9),
        // 8: is / as (handled specially)
        Tok::Sym("|") => (BinOp::Union, 7),
        Tok::Sym("<") => (BinOp::Lt, 6),
        Tok::Sym(">") => (BinOp::Gt, 6),
        Tok::Sym("<=") => (BinOp::Le, 6),
        Tok::Sym(">=") => (BinOp::Ge, 6),
        Tok::Sym("=") => (BinOp::Eq, 5),
        Tok::Sym("~") => (BinOp::Equiv, 5),
        Tok::Sym("!=") => (BinOp::Ne, 5),
        Tok::Sym("!~") => (BinOp::NotEquiv, 5),
        Tok::Ident(s) if s == "in" => (BinOp::In, 4),
        Tok::Ident(s) if s == "contains" => (BinOp::Contains, 4),
        Tok::Ident(s) if s == "and" => (BinOp::And, 3),
        Tok::Ident(s) if s == "or" => (BinOp::Or, 2),
        Tok::Ident(s) if s == "xor" => (BinOp::Xor, 2),
        Tok::Ident(s) if s == "implies" => (BinOp::Implies, 1),
        _ => return None,
    })
}

const TYPE_PREC: u8 = 8;

/// Keywords that can never start a term (`as`, `is`, `in`, `contains` may be identifiers).
const KEYWORDS: [&str; 6] = ["and", "or", "xor", "implies", "div", "mod"];

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.i).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn peek_at(&self, n: usize) -> &Tok {
        self.toks.get(self.i + n).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.toks
            .get(self.i)
            .or(self.toks.last())
            .map_or(0, |t| t.pos)
    }

    fn advance(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.toks.len() {
            self.i += 1;
        }
        t
    }

    fn expect(&mut self, sym: &'static str) -> Result<(), ParseError> {
        if *self.peek() == Tok::Sym(sym) {
            self.advance();
            Ok(())
        } else {
            Err(err(self.pos(), format!("expected '{sym}'")))
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.nesting += 1;
        if self.nesting > MAX_DEPTH {
            Err(err(self.pos(), "expression is nested too deeply"))
        } else {
            Ok(())
        }
    }

    fn check_depth(&self, d: u32) -> Result<u32, ParseError> {
        if d > MAX_DEPTH {
            Err(err(self.pos(), "expression is nested too deeply"))
        } else {
            Ok(d)
        }
    }

    /// Parses a binary expression whose operators bind at least as tight as `min`.
    fn expr(&mut self, min: u8) -> Result<(Expr, u32), ParseError> {
        self.enter()?;
        let (mut lhs, mut depth) = self.unary()?;
        loop {
            let t = self.peek().clone();
            if let Tok::Ident(k) = &t
                && (k == "is" || k == "as")
                && TYPE_PREC >= min
            {
                self.advance();
                let ty = self.type_spec()?;
                depth = self.check_depth(depth + 1)?;
                lhs = if k == "is" {
                    Expr::Is(Box::new(lhs), ty)
                } else {
                    Expr::As(Box::new(lhs), ty)
                };
                continue;
            }
            let Some((op, prec)) = binop(&t) else { break };
            if prec < min {
                break;
            }
            self.advance();
            let (rhs, rd) = self.expr(prec + 1)?;
            depth = self.check_depth(depth.max(rd) + 1)?;
            lhs = Expr::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        self.nesting -= 1;
        Ok((lhs, depth))
    }

    fn type_spec(&mut self) -> Result<TypeSpec, ParseError> {
        let first = self.ident_any()?;
        if *self.peek() == Tok::Sym(".")
            && matches!(self.peek_at(1), Tok::Ident(_) | Tok::Delimited(_))
        {
            self.advance();
            let name = self.ident_any()?;
            return Ok(TypeSpec {
                namespace: Some(first),
                name,
            });
        }
        Ok(TypeSpec {
            namespace: None,
            name: first,
        })
    }

    fn ident_any(&mut self) -> Result<String, ParseError> {
        match self.advance() {
            Tok::Ident(s) | Tok::Delimited(s) => Ok(s),
            _ => Err(err(self.pos(), "expected an identifier")),
        }
    }

    fn unary(&mut self) -> Result<(Expr, u32), ParseError> {
        match self.peek() {
            Tok::Sym(s @ ("+" | "-")) => {
                let neg = *s == "-";
                self.enter()?;
                self.advance();
                let (e, d) = self.unary()?;
                self.nesting -= 1;
                let d = self.check_depth(d + 1)?;
                Ok((Expr::Neg(Box::new(e), neg), d))
            }
            _ => self.postfix(),
        }
    }

    fn postfix(&mut self) -> Result<(Expr, u32), ParseError> {
        let (mut e, mut depth) = self.term()?;
        loop {
            match self.peek() {
                Tok::Sym(".") => {
                    self.advance();
                    let name = match self.advance() {
                        Tok::Ident(s) | Tok::Delimited(s) => s,
                        _ => return Err(err(self.pos(), "expected a name after '.'")),
                    };
                    if *self.peek() == Tok::Sym("(") {
                        let (args, ad) = self.args()?;
                        depth = self.check_depth(depth.max(ad) + 1)?;
                        e = Expr::Call {
                            target: Some(Box::new(e)),
                            name,
                            args,
                        };
                    } else {
                        depth = self.check_depth(depth + 1)?;
                        e = Expr::Member(Box::new(e), name);
                    }
                }
                Tok::Sym("[") => {
                    self.advance();
                    let (idx, id) = self.expr(0)?;
                    self.expect("]")?;
                    depth = self.check_depth(depth.max(id) + 1)?;
                    e = Expr::Index(Box::new(e), Box::new(idx));
                }
                _ => return Ok((e, depth)),
            }
        }
    }

    fn args(&mut self) -> Result<(Vec<Expr>, u32), ParseError> {
        self.expect("(")?;
        let mut args = Vec::new();
        let mut depth = 0;
        if *self.peek() == Tok::Sym(")") {
            self.advance();
            return Ok((args, depth));
        }
        loop {
            let (a, d) = self.expr(0)?;
            depth = depth.max(d);
            args.push(a);
            match self.advance() {
                Tok::Sym(",") => {}
                Tok::Sym(")") => return Ok((args, depth)),
                _ => return Err(err(self.pos(), "expected ',' or ')' in argument list")),
            }
        }
    }

    fn term(&mut self) -> Result<(Expr, u32), ParseError> {
        let pos = self.pos();
        let t = self.advance();
        let e = match t {
            Tok::Number(text) => self.number(text, pos)?,
            Tok::Str(s) => Expr::Literal(Literal::String(s)),
            Tok::DateTime(s) => Expr::Literal(Literal::DateTime(s)),
            Tok::Time(s) => Expr::Literal(Literal::Time(s)),
            Tok::Var(v) => Expr::Var(v),
            Tok::Special(s) => match s.as_str() {
                "this" => Expr::This,
                "index" => Expr::IndexVar,
                _ => Expr::Total,
            },
            Tok::Sym("(") => {
                let (e, d) = self.expr(0)?;
                self.expect(")")?;
                return Ok((e, d));
            }
            Tok::Sym("{") => {
                self.expect("}")?;
                Expr::Literal(Literal::Empty)
            }
            Tok::Ident(name) => {
                if name == "true" || name == "false" {
                    Expr::Literal(Literal::Boolean(name == "true"))
                } else if *self.peek() == Tok::Sym("(") {
                    let (args, d) = self.args()?;
                    let d = self.check_depth(d + 1)?;
                    return Ok((
                        Expr::Call {
                            target: None,
                            name,
                            args,
                        },
                        d,
                    ));
                } else if KEYWORDS.contains(&name.as_str()) {
                    return Err(err(pos, format!("unexpected keyword '{name}'")));
                } else {
                    Expr::Ident(name)
                }
            }
            Tok::Delimited(name) => {
                if *self.peek() == Tok::Sym("(") {
                    let (args, d) = self.args()?;
                    let d = self.check_depth(d + 1)?;
                    return Ok((
                        Expr::Call {
                            target: None,
                            name,
                            args,
                        },
                        d,
                    ));
                }
                Expr::Ident(name)
            }
            Tok::Eof => return Err(err(pos, "unexpected end of expression")),
            other => return Err(err(pos, format!("unexpected token {other:?}"))),
        };
        Ok((e, 1))
    }

    fn number(&mut self, text: String, pos: usize) -> Result<Expr, ParseError> {
        let unit = match self.peek().clone() {
            Tok::Str(u) => Some((u, false)),
            Tok::Ident(w) if super::value::calendar_keyword(&w).is_some() => Some((w, true)),
            _ => None,
        };
        if let Some((unit, calendar)) = unit {
            self.advance();
            return Ok(Expr::Literal(Literal::Quantity {
                value: text,
                unit,
                calendar,
            }));
        }
        if text.contains('.') {
            return Ok(Expr::Literal(Literal::Decimal(text)));
        }
        match text.parse::<i64>() {
            Ok(i) => Ok(Expr::Literal(Literal::Integer(i))),
            Err(_) => {
                if text.len() > 38 {
                    Err(err(pos, "number literal too large"))
                } else {
                    Ok(Expr::Literal(Literal::Decimal(text)))
                }
            }
        }
    }
}

/// Parses a FHIRPath expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    if src.len() > 100_000 {
        return Err(err(0, "expression too long"));
    }
    let toks = tokenize(src)?;
    let mut p = Parser {
        toks,
        i: 0,
        nesting: 0,
    };
    let (e, _) = p.expr(0)?;
    if *p.peek() != Tok::Eof {
        return Err(err(p.pos(), format!("unexpected {:?}", p.peek())));
    }
    Ok(e)
}
