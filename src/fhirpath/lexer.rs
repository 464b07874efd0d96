//! Splits FHIRPath source text into tokens with byte positions, skipping whitespace and comments.

use super::ParseError;

/// One lexical token.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    /// Plain identifier or keyword (`name`, `and`, `true`).
    Ident(String),
    /// Backtick-delimited identifier (never a keyword).
    Delimited(String),
    /// String literal with escapes resolved.
    Str(String),
    /// Number literal text (`12`, `3.50`).
    Number(String),
    /// Date or datetime literal text after `@`.
    DateTime(String),
    /// Time literal text after `@T`.
    Time(String),
    /// `%name`, `%\`name\`` or `%'name'`.
    Var(String),
    /// `$this`, `$index`, `$total` (without the `$`).
    Special(String),
    /// Operators and punctuation.
    Sym(&'static str),
    Eof,
}

/// A token and the byte offset where it starts.
#[derive(Clone, Debug)]
pub struct Token {
    pub tok: Tok,
    pub pos: usize,
}

const SYMS: [&str; 22] = [
    "<=", ">=", "!=", "!~", ".", ",", "(", ")", "[", "]", "{", "}", "+", "-", "*", "/", "&", "|",
    "=", "~", "<", ">",
];

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

fn err(pos: usize, msg: impl Into<String>) -> ParseError {
    ParseError {
        position: pos,
        message: msg.into(),
    }
}

impl<'s> Lexer<'s> {
    fn rest(&self) -> &'s str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.rest().chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_trivia(&mut self) -> Result<(), ParseError> {
        loop {
            let r = self.rest();
            if r.starts_with("//") {
                let n = r.find('\n').unwrap_or(r.len());
                self.pos += n;
            } else if r.starts_with("/*") {
                match r.get(2..).and_then(|t| t.find("*/")) {
                    Some(n) => self.pos += n + 4,
                    None => return Err(err(self.pos, "unterminated comment")),
                }
            } else if let Some(c) = self.peek().filter(|c| c.is_whitespace()) {
                self.pos += c.len_utf8();
            } else {
                return Ok(());
            }
        }
    }

    fn quoted(&mut self, quote: char) -> Result<String, ParseError> {
        let start = self.pos;
        self.bump();
        let mut out = String::new();
        loop {
            let Some(c) = self.bump() else {
                return Err(err(start, "unterminated string or identifier"));
            };
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let esc_pos = self.pos;
            let Some(e) = self.bump() else {
                return Err(err(start, "unterminated escape"));
            };
            match e {
                '\'' | '"' | '`' | '\\' | '/' => out.push(e),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex = self.rest().get(..4).unwrap_or("");
                    let code = u32::from_str_radix(hex, 16)
                        .ok()
                        .filter(|_| hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                        .ok_or_else(|| err(esc_pos, "bad \\u escape"))?;
                    self.pos += 4;
                    out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                }
                _ => return Err(err(esc_pos, format!("unknown escape \\{e}"))),
            }
        }
    }

    fn ident_chars(&mut self) -> String {
        let r = self.rest();
        let n = r
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
            .map_or(r.len(), |(i, _)| i);
        self.pos += n;
        r.get(..n).unwrap_or("").to_string()
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'s str {
        let r = self.rest();
        let n = r
            .char_indices()
            .find(|(_, c)| !f(*c))
            .map_or(r.len(), |(i, _)| i);
        self.pos += n;
        r.get(..n).unwrap_or("")
    }

    /// After `@`: date, datetime or time literal text.
    fn temporal(&mut self, start: usize) -> Result<Tok, ParseError> {
        if self.peek() == Some('T') {
            self.bump();
            let t = self.take_while(|c| c.is_ascii_digit() || c == ':');
            let mut text = t.to_string();
            if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
                text.push('.');
                text.push_str(self.take_while(|c| c.is_ascii_digit()));
            }
            if text.is_empty() {
                return Err(err(start, "empty time literal"));
            }
            return Ok(Tok::Time(text));
        }
        let mut text = self
            .take_while(|c| c.is_ascii_digit() || c == '-')
            .to_string();
        if self.peek() == Some('T') {
            self.bump();
            text.push('T');
            text.push_str(self.take_while(|c| c.is_ascii_digit() || c == ':'));
            if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
                self.bump();
                text.push('.');
                text.push_str(self.take_while(|c| c.is_ascii_digit()));
            }
            match self.peek() {
                Some('Z') => {
                    self.bump();
                    text.push('Z');
                }
                Some('+' | '-') if self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) => {
                    if let Some(c) = self.bump() {
                        text.push(c);
                    }
                    text.push_str(self.take_while(|c| c.is_ascii_digit() || c == ':'));
                }
                _ => {}
            }
        }
        if text.is_empty() {
            return Err(err(start, "empty date literal"));
        }
        Ok(Tok::DateTime(text))
    }

    fn next(&mut self) -> Result<Token, ParseError> {
        self.skip_trivia()?;
        let pos = self.pos;
        let Some(c) = self.peek() else {
            return Ok(Token { tok: Tok::Eof, pos });
        };
        let tok = match c {
            '\'' => Tok::Str(self.quoted('\'')?),
            '`' => Tok::Delimited(self.quoted('`')?),
            '@' => {
                self.bump();
                self.temporal(pos)?
            }
            '%' => {
                self.bump();
                match self.peek() {
                    Some('`') => Tok::Var(self.quoted('`')?),
                    Some('\'') => Tok::Var(self.quoted('\'')?),
                    Some(c) if c.is_ascii_alphabetic() || c == '_' => Tok::Var(self.ident_chars()),
                    _ => return Err(err(pos, "expected a variable name after %")),
                }
            }
            '$' => {
                self.bump();
                let name = self.ident_chars();
                match name.as_str() {
                    "this" | "index" | "total" => Tok::Special(name),
                    _ => return Err(err(pos, format!("unknown special variable ${name}"))),
                }
            }
            c if c.is_ascii_digit() => {
                let mut text = self.take_while(|c| c.is_ascii_digit()).to_string();
                if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
                    self.bump();
                    text.push('.');
                    text.push_str(self.take_while(|c| c.is_ascii_digit()));
                }
                Tok::Number(text)
            }
            c if c.is_ascii_alphabetic() || c == '_' => Tok::Ident(self.ident_chars()),
            _ => {
                let r = self.rest();
                let Some(sym) = SYMS.iter().find(|s| r.starts_with(**s)) else {
                    return Err(err(pos, format!("unexpected character {c:?}")));
                };
                self.pos += sym.len();
                Tok::Sym(sym)
            }
        };
        Ok(Token { tok, pos })
    }
}

/// Tokenizes the whole input; the last token is always `Eof`.
pub fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let mut lx = Lexer { src, pos: 0 };
    let mut out = Vec::new();
    loop {
        let t = lx.next()?;
        let eof = t.tok == Tok::Eof;
        out.push(t);
        if eof {
            return Ok(out);
        }
    }
}
