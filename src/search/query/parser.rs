//! The query parser: `name=value` pairs, with their modifiers, chains and `_has`, become a
//! [`SearchQuery`], each parameter read by its definition in the registry; the result
//! parameters (`_sort`, `_count`, `_include`, …) are read here too.

use super::tree::{
    Filter, Include, MAX_COUNT, Pred, SearchQuery, Sort, SortKey, StrMatch, Summary, Table, Total,
};
use super::values::{date_pred, number_pred, quantity_pred, reference_pred, split, token_pred};
use super::{bad, clip};
use crate::fhir::limits::Limits;
use crate::fhir::outcome::Outcome;
use crate::search::parameters::{ParamType, SearchParam, SearchParameters};
use crate::search::text::normalize;

/// Parameters that shape the result rather than filter it.
const RESULT_PARAMS: &[&str] = &[
    "_sort",
    "_count",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "_format",
    "_pretty",
    "_type",
    "_page",
];

/// Parses `pairs` for a search over `types` (empty: a system search without `_type`).
pub fn parse(
    registry: &SearchParameters,
    types: &[String],
    pairs: &[(String, String)],
    strict: bool,
) -> Result<SearchQuery, Outcome> {
    parse_at(registry, types, pairs, strict, None)
}

/// Like [`parse`]; reference values under `base` (this server's URL) are local references.
pub fn parse_at(
    registry: &SearchParameters,
    types: &[String],
    pairs: &[(String, String)],
    strict: bool,
    base: Option<&str>,
) -> Result<SearchQuery, Outcome> {
    parse_limited(registry, types, pairs, strict, base, &Limits::default())
}

/// Like [`parse_at`], refusing a query over `limits` (too many parameters, OR'ed values,
/// sort keys, includes, or chains too deep) before any of it is planned.
pub fn parse_limited(
    registry: &SearchParameters,
    types: &[String],
    pairs: &[(String, String)],
    strict: bool,
    base: Option<&str>,
    limits: &Limits,
) -> Result<SearchQuery, Outcome> {
    check_limits(pairs, limits)?;
    let mut q = SearchQuery {
        types: types.to_vec(),
        ..SearchQuery::default()
    };
    let mut p = Parser {
        registry,
        base: base.map(|b| format!("{}/", b.trim_end_matches('/'))),
        strict,
        warnings: Vec::new(),
        used: Vec::new(),
    };
    for (name, value) in pairs {
        let (base, modifier) = match name.split_once(':') {
            Some((b, m)) if !name.starts_with("_has:") => (b, Some(m)),
            _ => (name.as_str(), None),
        };
        if RESULT_PARAMS.contains(&base) {
            p.result_param(&mut q, base, modifier, name, value)?;
            continue;
        }
        let filter = if name.starts_with("_has:") {
            p.has(types, name, value)?
        } else {
            p.filter(types, name, value)?
        };
        if let Some(f) = filter {
            p.used.push((name.clone(), value.clone()));
            q.filters.push(f);
            if let Some(code) = name.split(['.', ':']).next() {
                for t in types {
                    q.params_used.push((t.clone(), code.to_string()));
                }
            }
        }
    }
    q.warnings = p.warnings;
    q.used = p.used;
    Ok(q)
}

/// The shape of a query against `limits`, before anything is parsed or planned.
fn check_limits(pairs: &[(String, String)], limits: &Limits) -> Result<(), Outcome> {
    if pairs.len() > limits.search_params {
        return Err(Limits::exceeded(
            "search-params",
            limits.search_params,
            &format!("A search with {} parameters", pairs.len()),
        ));
    }
    let mut includes = 0;
    for (name, value) in pairs {
        let base = name.split(':').next().unwrap_or("");
        if base == "_include" || base == "_revinclude" {
            includes += 1;
            if includes > limits.includes {
                return Err(Limits::exceeded(
                    "includes",
                    limits.includes,
                    "The number of _include and _revinclude parameters",
                ));
            }
            continue;
        }
        if base == "_sort" {
            let keys = value.split(',').filter(|k| !k.is_empty()).count();
            if keys > limits.sort_keys {
                return Err(Limits::exceeded(
                    "sort-keys",
                    limits.sort_keys,
                    &format!("_sort with {keys} keys"),
                )
                .at("_sort"));
            }
            continue;
        }
        let depth = name.matches("_has:").count() + name.matches('.').count();
        if depth > limits.chain_depth {
            return Err(Limits::exceeded(
                "chain-depth",
                limits.chain_depth,
                &format!("'{}' with {depth} chained levels", clip(name)),
            )
            .at(clip(name)));
        }
        let values = split(value, ',').len();
        if values > limits.or_values {
            return Err(Limits::exceeded(
                "or-values",
                limits.or_values,
                &format!("'{}' with {values} values", clip(name)),
            )
            .at(clip(name)));
        }
    }
    Ok(())
}

struct Parser<'r> {
    registry: &'r SearchParameters,
    /// `http://host/fhir/`: reference values starting with it are local.
    base: Option<String>,
    strict: bool,
    warnings: Vec<String>,
    used: Vec<(String, String)>,
}

impl<'r> Parser<'r> {
    /// Ignores (lenient) or rejects (strict) a parameter this server does not support.
    fn unknown(&mut self, name: &str, why: String) -> Result<Option<Filter>, Outcome> {
        if self.strict {
            return Err(bad(why));
        }
        let _ = name;
        self.warnings.push(why);
        Ok(None)
    }

    /// The definition of `code` shared by every type in `types` (system search: Resource's).
    fn lookup(&self, types: &[String], code: &str) -> Option<&'r SearchParam> {
        let registry: &'r SearchParameters = self.registry;
        let Some((first_type, rest)) = types.split_first() else {
            return registry.get("Resource", code);
        };
        let first = registry.get(first_type, code)?;
        rest.iter()
            .all(|t| registry.get(t, code).is_some_and(|p| p.kind == first.kind))
            .then_some(first)
    }

    fn result_param(
        &mut self,
        q: &mut SearchQuery,
        base: &str,
        modifier: Option<&str>,
        name: &str,
        value: &str,
    ) -> Result<(), Outcome> {
        let keep = |p: &mut Parser| p.used.push((name.to_string(), value.to_string()));
        match base {
            "_format" | "_pretty" | "_type" | "_page" => {}
            "_count" => {
                let n: u32 = value
                    .parse()
                    .map_err(|_| bad(format!("_count '{}' is not a number", clip(value))))?;
                q.count = Some(n.min(MAX_COUNT));
                keep(self);
            }
            "_total" => {
                q.total = match value {
                    "none" => Total::None,
                    "estimate" => Total::Estimate,
                    "accurate" => Total::Accurate,
                    _ => return Err(bad("_total must be none, estimate or accurate")),
                };
                keep(self);
            }
            "_summary" => {
                q.summary = Some(match value {
                    "true" => Summary::True,
                    "text" => Summary::Text,
                    "data" => Summary::Data,
                    "count" => Summary::Count,
                    "false" => Summary::False,
                    _ => return Err(bad("_summary must be true, text, data, count or false")),
                });
                keep(self);
            }
            "_elements" => {
                q.elements = Some(
                    value
                        .split(',')
                        .map(|e| e.trim().to_string())
                        .filter(|e| !e.is_empty())
                        .collect(),
                );
                keep(self);
            }
            "_sort" => {
                for key in value.split(',').filter(|k| !k.is_empty()) {
                    let (desc, code) = match key.strip_prefix('-') {
                        Some(c) => (true, c),
                        None => (false, key),
                    };
                    let key = match code {
                        "_id" => SortKey::Id,
                        "_lastUpdated" => SortKey::LastUpdated,
                        _ => match self.lookup(&q.types, code) {
                            Some(p) => match sort_table(p.kind) {
                                Some(table) => SortKey::Param {
                                    param: code.to_string(),
                                    table,
                                },
                                None => {
                                    return Err(bad(format!(
                                        "Search parameter '{}' cannot be sorted on",
                                        clip(code)
                                    )));
                                }
                            },
                            None => {
                                self.unknown(
                                    name,
                                    format!("Unknown sort parameter '{}' ignored", clip(code)),
                                )?;
                                continue;
                            }
                        },
                    };
                    if let SortKey::Param { param, .. } = &key {
                        for t in &q.types {
                            q.params_used.push((t.clone(), param.clone()));
                        }
                    }
                    q.sort.push(Sort { key, desc });
                }
                keep(self);
            }
            "_include" | "_revinclude" => {
                let iterate = match modifier {
                    None => false,
                    Some("iterate" | "recurse") => true,
                    Some(m) => return Err(bad(format!("Unknown modifier ':{}'", clip(m)))),
                };
                let include = self.include(base == "_revinclude", value, iterate)?;
                if let Some(i) = include {
                    if base == "_include" {
                        q.includes.push(i);
                    } else {
                        q.revincludes.push(i);
                    }
                    keep(self);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn include(
        &mut self,
        reverse: bool,
        value: &str,
        iterate: bool,
    ) -> Result<Option<Include>, Outcome> {
        let name = if reverse { "_revinclude" } else { "_include" };
        if value == "*" {
            return Ok(Some(Include {
                source_type: "*".to_string(),
                param: None,
                target_type: None,
                iterate,
            }));
        }
        let mut parts = value.split(':');
        let source = parts.next().unwrap_or("");
        let param = parts.next();
        let target = parts.next();
        let Some(source_type) = crate::fhir::definitions::Definitions::r4().resource_type(source)
        else {
            return Err(bad(format!(
                "{name} '{}': '{}' is not a resource type",
                clip(value),
                clip(source)
            )));
        };
        if let Some(t) = target
            && crate::fhir::definitions::Definitions::r4()
                .resource_type(t)
                .is_none()
        {
            return Err(bad(format!(
                "{name} '{}': '{}' is not a resource type",
                clip(value),
                clip(t)
            )));
        }
        let param = match param {
            None | Some("*") => None,
            Some(code) => match self.registry.get(source_type, code) {
                Some(p) if p.kind == ParamType::Reference => Some(code.to_string()),
                Some(_) => {
                    return Err(bad(format!(
                        "{name} '{}': '{}' is not a reference parameter",
                        clip(value),
                        clip(code)
                    )));
                }
                None => {
                    self.unknown(
                        name,
                        format!(
                            "{name} '{}': unknown parameter '{}' ignored",
                            clip(value),
                            clip(code)
                        ),
                    )?;
                    return Ok(None);
                }
            },
        };
        Ok(Some(Include {
            source_type: source_type.to_string(),
            param,
            target_type: target.map(str::to_string),
            iterate,
        }))
    }

    /// `_has:Type:param:[_has:…:]code[:modifier]=value`.
    fn has(
        &mut self,
        types: &[String],
        name: &str,
        value: &str,
    ) -> Result<Option<Filter>, Outcome> {
        let rest = &name["_has:".len()..];
        let mut parts = rest.splitn(3, ':');
        let (Some(source), Some(param), Some(inner)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(format!(
                "'{}' is not _has:Type:reference:parameter",
                clip(name)
            )));
        };
        let Some(source_type) = crate::fhir::definitions::Definitions::r4().resource_type(source)
        else {
            return Err(bad(format!(
                "_has: '{}' is not a resource type",
                clip(source)
            )));
        };
        match self.registry.get(source_type, param) {
            Some(p) if p.kind == ParamType::Reference => {
                if let [only] = types
                    && !p.targets.is_empty()
                    && !p.targets.iter().any(|t| t == only)
                {
                    return Err(bad(format!(
                        "_has: {source_type}.{param} does not reference {only}"
                    )));
                }
            }
            _ => {
                return self.unknown(
                    name,
                    format!(
                        "_has: '{}' is no reference parameter of {source_type}; ignored",
                        clip(param)
                    ),
                );
            }
        }
        let source_types = [source_type.to_string()];
        let inner_filter = if inner.starts_with("_has:") {
            self.has(&source_types, inner, value)?
        } else {
            self.filter(&source_types, inner, value)?
        };
        Ok(inner_filter.map(|f| Filter::Has {
            source_type: source_type.to_string(),
            param: param.to_string(),
            filter: Box::new(f),
        }))
    }

    /// One `name=value` criterion (possibly chained).
    fn filter(
        &mut self,
        types: &[String],
        name: &str,
        value: &str,
    ) -> Result<Option<Filter>, Outcome> {
        let (head, chain) = match name.split_once('.') {
            Some((h, c)) => (h, Some(c)),
            None => (name, None),
        };
        let (code, modifier) = match head.split_once(':') {
            Some((c, m)) => (c, Some(m)),
            None => (head, None),
        };
        if value.is_empty() && chain.is_none() {
            return Err(bad(format!("Parameter '{}' has no value", clip(name))));
        }
        match code {
            "_id" => return self.id_filter(name, modifier, value),
            "_lastUpdated" => {
                if modifier == Some("missing") {
                    // every resource has a lastUpdated
                    return Ok(Some(Filter::Id {
                        ids: Vec::new(),
                        negate: value != "false",
                    }));
                }
                if let Some(m) = modifier {
                    return Err(bad(format!(
                        "Unknown modifier ':{}' on _lastUpdated",
                        clip(m)
                    )));
                }
                let preds = split(value, ',')
                    .iter()
                    .map(|v| date_pred(name, v))
                    .collect::<Result<_, _>>()?;
                return Ok(Some(Filter::LastUpdated(preds)));
            }
            "_list" => {
                if types.is_empty() {
                    return self.unknown(name, "_list needs a resource type".to_string());
                }
                return Ok(Some(Filter::List(value.to_string())));
            }
            "_text" | "_content" | "_query" | "_filter" | "_containedType" | "_contained"
            | "near" => {
                return self.unknown(
                    name,
                    format!("Parameter '{}' is not supported; ignored", clip(code)),
                );
            }
            _ => {}
        }
        let Some(param) = self.lookup(types, code) else {
            let on = if types.is_empty() {
                "every resource type".to_string()
            } else {
                types.join(", ")
            };
            return self.unknown(
                name,
                format!(
                    "Unknown search parameter '{}' for {on}; ignored",
                    clip(code)
                ),
            );
        };
        if param.parsed.is_none() && param.kind != ParamType::Composite {
            return self.unknown(
                name,
                format!("Parameter '{}' is not supported; ignored", clip(code)),
            );
        }
        if let Some(chain) = chain {
            return self.chain(types, param, modifier, chain, name, value);
        }
        if modifier == Some("missing") {
            let missing = match value {
                "true" => true,
                "false" => false,
                _ => return Err(bad(format!("{}:missing must be true or false", clip(code)))),
            };
            let tables = if param.kind == ParamType::Composite {
                // a composite's first component exists whenever the composite does
                let first = param
                    .components
                    .first()
                    .and_then(|c| types.first().and_then(|t| self.registry.get(t, &c.param)))
                    .map_or(ParamType::Special, |p| p.kind);
                return Ok(Some(Filter::Missing {
                    param: format!("{code}$0"),
                    tables: Table::of(first).to_vec(),
                    missing,
                }));
            } else if param
                .parsed
                .as_ref()
                .is_some_and(|e| crate::search::presence::tested_elements(e).is_some())
            {
                // a test has a value always: missing means the tested element is absent
                return Ok(Some(Filter::Missing {
                    param: crate::search::presence::marker(code),
                    tables: vec![Table::Token],
                    missing,
                }));
            } else {
                Table::of(param.kind).to_vec()
            };
            return Ok(Some(Filter::Missing {
                param: code.to_string(),
                tables,
                missing,
            }));
        }
        let values = split(value, ',');
        let kind = param.kind;
        let targets = param.targets.clone();
        match kind {
            ParamType::String => {
                let m = match modifier {
                    None => StrMatch::Starts,
                    Some("exact") => StrMatch::Exact,
                    Some("contains") => StrMatch::Contains,
                    Some(m) => return Err(unknown_modifier(code, m)),
                };
                let preds = values
                    .iter()
                    .map(|v| {
                        Pred::Str(
                            m,
                            if m == StrMatch::Exact {
                                v.clone()
                            } else {
                                normalize(v)
                            },
                        )
                    })
                    .collect();
                Ok(Some(Filter::Param {
                    param: code.to_string(),
                    preds,
                    negate: false,
                }))
            }
            ParamType::Token => self.token_filter(code, modifier, &values),
            ParamType::Reference => {
                let type_modifier = match modifier {
                    None => None,
                    Some("identifier") => {
                        let preds = values.iter().map(|v| token_pred(v)).collect();
                        return Ok(Some(Filter::Param {
                            param: format!("{code}:identifier"),
                            preds,
                            negate: false,
                        }));
                    }
                    Some(m) => match crate::fhir::definitions::Definitions::r4().resource_type(m) {
                        Some(t) => Some(t.to_string()),
                        None => return Err(unknown_modifier(code, m)),
                    },
                };
                let base = self.base.clone();
                let preds = values
                    .iter()
                    .map(|v| {
                        let local = base.as_deref().and_then(|b| v.strip_prefix(b)).unwrap_or(v);
                        reference_pred(local, type_modifier.as_deref(), &targets)
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Some(Filter::Param {
                    param: code.to_string(),
                    preds,
                    negate: false,
                }))
            }
            ParamType::Date | ParamType::Number | ParamType::Quantity => {
                if let Some(m) = modifier {
                    return Err(unknown_modifier(code, m));
                }
                let preds = values
                    .iter()
                    .map(|v| match kind {
                        ParamType::Date => date_pred(name, v),
                        ParamType::Number => number_pred(name, v),
                        _ => quantity_pred(name, v),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Some(Filter::Param {
                    param: code.to_string(),
                    preds,
                    negate: false,
                }))
            }
            ParamType::Uri => {
                let preds = values
                    .iter()
                    .map(|v| match modifier {
                        None => Ok(Pred::Uri(v.clone())),
                        Some("below") => Ok(Pred::UriBelow(v.clone())),
                        Some("above") => Ok(Pred::UriAbove(v.clone())),
                        Some(m) => Err(unknown_modifier(code, m)),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Some(Filter::Param {
                    param: code.to_string(),
                    preds,
                    negate: false,
                }))
            }
            ParamType::Composite => {
                if let Some(m) = modifier {
                    return Err(unknown_modifier(code, m));
                }
                let Some(rt) = types.first() else {
                    return self.unknown(name, format!("Composite '{code}' needs a type"));
                };
                let mut out = Vec::new();
                for v in &values {
                    let parts = split(v, '$');
                    if parts.len() != param.components.len() {
                        return Err(bad(format!(
                            "'{}' needs {} $-separated parts",
                            clip(code),
                            param.components.len()
                        )));
                    }
                    let mut preds = Vec::new();
                    for (part, c) in parts.iter().zip(&param.components) {
                        let kind = self
                            .registry
                            .get(rt, &c.param)
                            .map_or(ParamType::Special, |p| p.kind);
                        preds.push(match kind {
                            ParamType::Token => token_pred(part),
                            ParamType::Date => date_pred(name, part)?,
                            ParamType::Number => number_pred(name, part)?,
                            ParamType::Quantity => quantity_pred(name, part)?,
                            ParamType::String => Pred::Str(StrMatch::Starts, normalize(part)),
                            ParamType::Uri => Pred::Uri(part.clone()),
                            ParamType::Reference => reference_pred(part, None, &[])?,
                            _ => {
                                return Err(bad(format!(
                                    "Composite '{}' has an unsupported component",
                                    clip(code)
                                )));
                            }
                        });
                    }
                    out.push(preds);
                }
                Ok(Some(Filter::Composite {
                    param: code.to_string(),
                    values: out,
                }))
            }
            ParamType::Special => self.unknown(
                name,
                format!("Parameter '{}' is not supported; ignored", clip(code)),
            ),
        }
    }

    fn id_filter(
        &mut self,
        name: &str,
        modifier: Option<&str>,
        value: &str,
    ) -> Result<Option<Filter>, Outcome> {
        let negate = match modifier {
            None | Some("exact") => false,
            Some("not") => true,
            Some("missing") => {
                // every resource has an id: missing=true matches nothing
                return Ok(Some(Filter::Id {
                    ids: Vec::new(),
                    negate: value != "false",
                }));
            }
            Some(m) => return Err(unknown_modifier("_id", m)),
        };
        let _ = name;
        Ok(Some(Filter::Id {
            ids: split(value, ','),
            negate,
        }))
    }

    fn token_filter(
        &mut self,
        code: &str,
        modifier: Option<&str>,
        values: &[String],
    ) -> Result<Option<Filter>, Outcome> {
        let filter = |preds, negate| {
            Ok(Some(Filter::Param {
                param: code.to_string(),
                preds,
                negate,
            }))
        };
        match modifier {
            None => filter(values.iter().map(|v| token_pred(v)).collect(), false),
            Some("not") => filter(values.iter().map(|v| token_pred(v)).collect(), true),
            Some("text") => Ok(Some(Filter::Param {
                param: format!("{code}:text"),
                preds: values
                    .iter()
                    .map(|v| Pred::Str(StrMatch::Starts, normalize(v)))
                    .collect(),
                negate: false,
            })),
            Some("of-type") => {
                // type-system|type-code|value: the identifier value; the type is matched on
                // its text index where coded types are unavailable
                let preds = values
                    .iter()
                    .map(|v| {
                        let parts = split(v, '|');
                        match parts.as_slice() {
                            [_, _, value] if !value.is_empty() => Ok(Pred::Token {
                                system: None,
                                code: Some(value.clone()),
                            }),
                            _ => Err(bad(format!(
                                "{code}:of-type needs system|code|value, got '{}'",
                                clip(v)
                            ))),
                        }
                    })
                    .collect::<Result<_, _>>()?;
                filter(preds, false)
            }
            Some(m @ ("in" | "not-in")) => {
                // resolved against the store's ValueSets by the interaction layer
                let preds = values
                    .iter()
                    .map(|v| Pred::Uri(v.clone()))
                    .collect::<Vec<_>>();
                Ok(Some(Filter::Param {
                    param: format!("{code}:{m}"),
                    preds,
                    negate: m == "not-in",
                }))
            }
            Some(m @ ("above" | "below")) => {
                // system|code, resolved against the store's CodeSystems (their concept
                // hierarchy) by the interaction layer
                let preds = values
                    .iter()
                    .map(|v| match token_pred(v) {
                        p @ Pred::Token {
                            system: Some(Some(_)),
                            code: Some(_),
                        } => Ok(p),
                        _ => Err(bad(format!(
                            "{code}:{m} needs system|code (the system names a CodeSystem \
                             stored on this server), got '{}'",
                            clip(v)
                        ))),
                    })
                    .collect::<Result<_, _>>()?;
                Ok(Some(Filter::Param {
                    param: format!("{code}:{m}"),
                    preds,
                    negate: false,
                }))
            }
            Some(m) => Err(unknown_modifier(code, m)),
        }
    }

    fn chain(
        &mut self,
        types: &[String],
        param: &SearchParam,
        modifier: Option<&str>,
        chain: &str,
        name: &str,
        value: &str,
    ) -> Result<Option<Filter>, Outcome> {
        if param.kind != ParamType::Reference {
            return Err(bad(format!(
                "'{}' is not a reference parameter and cannot be chained",
                param.code
            )));
        }
        let defs = crate::fhir::definitions::Definitions::r4();
        let candidates: Vec<String> = match modifier {
            Some(m) => match defs.resource_type(m) {
                Some(t) => vec![t.to_string()],
                None => return Err(unknown_modifier(&param.code, m)),
            },
            None if param.targets.is_empty() => defs.resource_types().to_vec(),
            None => param.targets.clone(),
        };
        let inner_code = chain
            .split(['.', ':'])
            .next()
            .unwrap_or_default()
            .to_string();
        let mut targets = Vec::new();
        let strict = std::mem::replace(&mut self.strict, true);
        for t in candidates {
            let known = matches!(inner_code.as_str(), "_id" | "_lastUpdated")
                || self.registry.get(&t, &inner_code).is_some();
            if !known {
                continue;
            }
            let one = [t.clone()];
            match self.filter(&one, chain, value) {
                Ok(Some(f)) => targets.push((t, Box::new(f))),
                Ok(None) => {}
                Err(e) => {
                    self.strict = strict;
                    return Err(e);
                }
            }
        }
        self.strict = strict;
        if targets.is_empty() {
            return self.unknown(
                name,
                format!(
                    "Chain '{}': no target of '{}' has a parameter '{}'; ignored",
                    clip(name),
                    param.code,
                    clip(&inner_code)
                ),
            );
        }
        let _ = types;
        Ok(Some(Filter::Chain {
            param: param.code.clone(),
            targets,
        }))
    }
}

fn unknown_modifier(code: &str, m: &str) -> Outcome {
    bad(format!(
        "Unknown or unsupported modifier ':{}' on '{}'",
        clip(m),
        clip(code)
    ))
}

/// The index table a parameter type sorts on.
fn sort_table(kind: ParamType) -> Option<Table> {
    match kind {
        ParamType::String => Some(Table::String),
        ParamType::Token => Some(Table::Token),
        ParamType::Reference => Some(Table::Reference),
        ParamType::Date => Some(Table::Date),
        ParamType::Number => Some(Table::Number),
        ParamType::Quantity => Some(Table::Quantity),
        ParamType::Uri => Some(Table::Uri),
        _ => None,
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::query::Prefix;

    fn q(rt: &str, query: &str) -> Result<SearchQuery, Outcome> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
        parse(SearchParameters::r4(), &[rt.to_string()], &pairs, false)
    }

    #[test]
    fn parses_values_by_type() {
        let s = q(
            "Patient",
            "name=Zoë&birthdate=ge1970-01&gender=male,female&_id=a",
        )
        .unwrap();
        assert_eq!(
            s.filters[0],
            Filter::Param {
                param: "name".into(),
                preds: vec![Pred::Str(StrMatch::Starts, "zoe".into())],
                negate: false
            }
        );
        assert!(
            matches!(s.filters[1], Filter::Param { ref preds, .. } if matches!(preds[0], Pred::Date(Prefix::Ge, _, _)))
        );
        assert!(matches!(&s.filters[2], Filter::Param { preds, .. } if preds.len() == 2));
        let n = q("RiskAssessment", "probability=gt0.8").unwrap();
        assert!(
            matches!(&n.filters[0], Filter::Param { preds, .. } if preds[0] == Pred::Number(Prefix::Gt, 0.8, 0.75, 0.85))
        );
        let qty = q(
            "Observation",
            "value-quantity=5.4|http://unitsofmeasure.org|mg",
        )
        .unwrap();
        assert!(
            matches!(&qty.filters[0], Filter::Param { preds, .. } if matches!(&preds[0], Pred::Quantity { code: Some(c), canonical: true, .. } if c == "g"))
        );
        let chain = q("Observation", "subject:Patient.name=x").unwrap();
        assert!(matches!(&chain.filters[0], Filter::Chain { targets, .. } if targets.len() == 1));
        let has = q("Patient", "_has:Observation:patient:code=1234").unwrap();
        assert!(
            matches!(&has.filters[0], Filter::Has { source_type, .. } if source_type == "Observation")
        );
        let comp = q(
            "Observation",
            "code-value-quantity=http://loinc.org|8480-6$lt60",
        )
        .unwrap();
        assert!(
            matches!(&comp.filters[0], Filter::Composite { values, .. } if values[0].len() == 2)
        );
    }

    #[test]
    fn lenient_and_strict() {
        let s = q("Patient", "foo=bar&name=x").unwrap();
        assert_eq!(s.filters.len(), 1);
        assert_eq!(s.warnings.len(), 1);
        assert_eq!(s.used, vec![("name".to_string(), "x".to_string())]);
        let pairs = vec![("foo".to_string(), "bar".to_string())];
        assert!(parse(SearchParameters::r4(), &["Patient".into()], &pairs, true).is_err());
        for bad in [
            "name:nope=x",
            "birthdate=notadate",
            "_count=x",
            "gender:above=x",
            "general-practitioner=Bogus/1",
            "_summary=maybe",
            "name=",
            "_include=Nope:x",
        ] {
            assert!(q("Patient", bad).is_err(), "{bad}");
        }
    }
}
