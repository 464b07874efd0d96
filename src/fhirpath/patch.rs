//! FHIRPath Patch (http://hl7.org/fhir/R4/fhirpatch.html): applies the `operation`
//! parameters of a `Parameters` resource (add, insert, delete, replace, move) to FHIR JSON,
//! locating targets with the FHIRPath engine and keeping primitive `_name` siblings aligned.

use serde_json::{Map, Value};

use super::parser::Expr;
use super::{Env, Step, evaluate, parse};

/// Why a patch could not be applied; `operation` names the offending parameter
/// (`Parameters.parameter[2]`) when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", operation.as_ref().map(|o| format!(" (at {o})")).unwrap_or_default())]
pub struct PatchError {
    pub message: String,
    pub operation: Option<String>,
}

fn perr(message: impl Into<String>) -> PatchError {
    PatchError {
        message: message.into(),
        operation: None,
    }
}

/// The decoded parts of one `operation` parameter.
struct Op<'p> {
    kind: String,
    path: String,
    name: Option<String>,
    value: Option<&'p Value>,
    index: Option<i64>,
    source: Option<i64>,
    destination: Option<i64>,
}

/// Returns the `value[x]` key and value of a Parameters part, if any.
fn value_x(part: &Value) -> Option<(&str, &Value)> {
    part.as_object()?.iter().find_map(|(k, v)| {
        let rest = k.strip_prefix("value")?;
        rest.starts_with(|c: char| c.is_ascii_uppercase())
            .then_some((k.as_str(), v))
    })
}

fn part_name(part: &Value) -> Option<&str> {
    part.get("name").and_then(Value::as_str)
}

fn parse_op(param: &Value) -> Result<Op<'_>, PatchError> {
    if part_name(param) != Some("operation") {
        return Err(perr(format!(
            "unexpected parameter '{}' (only 'operation' is allowed)",
            part_name(param).unwrap_or("")
        )));
    }
    let mut op = Op {
        kind: String::new(),
        path: String::new(),
        name: None,
        value: None,
        index: None,
        source: None,
        destination: None,
    };
    let parts = param
        .get("part")
        .and_then(Value::as_array)
        .ok_or_else(|| perr("operation has no parts"))?;
    let text = |p: &Value| -> Result<String, PatchError> {
        value_x(p)
            .and_then(|(_, v)| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                perr(format!(
                    "part '{}' needs a string value",
                    part_name(p).unwrap_or("")
                ))
            })
    };
    let int = |p: &Value| -> Result<i64, PatchError> {
        value_x(p).and_then(|(_, v)| v.as_i64()).ok_or_else(|| {
            perr(format!(
                "part '{}' needs an integer value",
                part_name(p).unwrap_or("")
            ))
        })
    };
    for p in parts {
        match part_name(p) {
            Some("type") => op.kind = text(p)?,
            Some("path") => op.path = text(p)?,
            Some("name") => op.name = Some(text(p)?),
            Some("value") => op.value = Some(p),
            Some("index") => op.index = Some(int(p)?),
            Some("source") => op.source = Some(int(p)?),
            Some("destination") => op.destination = Some(int(p)?),
            other => {
                return Err(perr(format!(
                    "unknown operation part '{}'",
                    other.unwrap_or("")
                )));
            }
        }
    }
    if op.kind.is_empty() {
        return Err(perr("operation has no type"));
    }
    if op.path.is_empty() {
        return Err(perr("operation has no path"));
    }
    Ok(op)
}

/// Applies a FHIRPath Patch `Parameters` resource to `resource` in place. `is_list` answers
/// whether an element (path of keys from the root, indices stripped) repeats in FHIR JSON;
/// `None` means unknown (then an existing JSON array decides). On error the resource may be
/// partly modified: callers should patch a copy.
pub fn apply_fhirpath_patch(
    resource: &mut Value,
    params: &Value,
    is_list: &dyn Fn(&[&str]) -> Option<bool>,
) -> Result<(), PatchError> {
    if params.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(perr("patch body must be a Parameters resource"));
    }
    let Some(list) = params.get("parameter") else {
        return Ok(());
    };
    let list = list
        .as_array()
        .ok_or_else(|| perr("Parameters.parameter must be an array"))?;
    for (i, param) in list.iter().enumerate() {
        let at = format!("Parameters.parameter[{i}]");
        let r = parse_op(param).and_then(|op| apply_op(resource, &op, is_list));
        r.map_err(|mut e| {
            e.operation = Some(at);
            e
        })?;
    }
    Ok(())
}

/// Evaluates the operation's path and returns the locations of the matches.
fn locate(resource: &Value, path: &str) -> Result<Vec<Vec<Step>>, PatchError> {
    let expr = parse(path).map_err(|e| perr(format!("invalid path '{path}': {e}")))?;
    locate_expr(resource, &expr, path)
}

fn locate_expr(resource: &Value, expr: &Expr, path: &str) -> Result<Vec<Vec<Step>>, PatchError> {
    let items = evaluate(expr, resource, &Env::new())
        .map_err(|e| perr(format!("cannot evaluate path '{path}': {e}")))?;
    items
        .iter()
        .map(|it| {
            it.location().map(<[Step]>::to_vec).ok_or_else(|| {
                perr(format!(
                    "path '{path}' does not select an element of the resource"
                ))
            })
        })
        .collect()
}

fn keys_of(loc: &[Step]) -> Vec<&str> {
    loc.iter()
        .filter_map(|s| match s {
            Step::Key(k) => Some(k.strip_prefix('_').unwrap_or(k)),
            Step::Index(_) => None,
        })
        .collect()
}

fn get_mut<'v>(root: &'v mut Value, loc: &[Step]) -> Option<&'v mut Value> {
    let mut cur = root;
    for s in loc {
        cur = match s {
            Step::Key(k) => cur.as_object_mut()?.get_mut(k)?,
            Step::Index(i) => cur.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(cur)
}

fn get<'v>(root: &'v Value, loc: &[Step]) -> Option<&'v Value> {
    let mut cur = root;
    for s in loc {
        cur = match s {
            Step::Key(k) => cur.get(k.as_str())?,
            Step::Index(i) => cur.get(*i)?,
        };
    }
    Some(cur)
}

/// A value to write: the JSON for `name` and, for primitives, the `_name` object.
struct NewValue {
    json: Value,
    ext: Option<Value>,
}

/// Builds the JSON for an operation's `value` part (value[x], or nested parts for
/// anonymous/backbone types). `elem_path` is the element's key path, for `is_list`.
fn build_value(
    part: &Value,
    elem_path: &[&str],
    is_list: &dyn Fn(&[&str]) -> Option<bool>,
    depth: usize,
) -> Result<NewValue, PatchError> {
    if depth > 64 {
        return Err(perr("value nested too deeply"));
    }
    if let Some((key, v)) = value_x(part) {
        let ext = part.get(format!("_{key}")).cloned();
        return Ok(NewValue {
            json: v.clone(),
            ext,
        });
    }
    if let Some(r) = part.get("resource") {
        return Ok(NewValue {
            json: r.clone(),
            ext: None,
        });
    }
    if let Some(parts) = part.get("part").and_then(Value::as_array) {
        let mut obj = Map::new();
        for p in parts {
            let name = part_name(p).ok_or_else(|| perr("value part without a name"))?;
            let mut path: Vec<&str> = elem_path.to_vec();
            path.push(name);
            let nv = build_value(p, &path, is_list, depth + 1)?;
            let list =
                is_list(&path).unwrap_or(false) || obj.get(name).is_some_and(Value::is_array);
            write_child(&mut obj, name, nv, list, None)?;
        }
        return Ok(NewValue {
            json: Value::Object(obj),
            ext: None,
        });
    }
    Err(perr("value part has neither value[x] nor parts"))
}

/// Writes `name` into `obj`: appended (or inserted at `at`) when it is a list, set otherwise.
fn write_child(
    obj: &mut Map<String, Value>,
    name: &str,
    nv: NewValue,
    list: bool,
    at: Option<usize>,
) -> Result<(), PatchError> {
    let ext_key = format!("_{name}");
    if !list {
        obj.insert(name.to_string(), nv.json);
        match nv.ext {
            Some(x) => {
                obj.insert(ext_key, x);
            }
            None => {
                obj.remove(&ext_key);
            }
        }
        return Ok(());
    }
    let len = match obj.get(name) {
        Some(Value::Array(a)) => a.len(),
        Some(_) => return Err(perr(format!("element '{name}' is not a list"))),
        None => obj
            .get(&ext_key)
            .and_then(Value::as_array)
            .map_or(0, Vec::len),
    };
    let at = at.unwrap_or(len);
    if at > len {
        return Err(perr(format!(
            "index {at} is out of range (list has {len} items)"
        )));
    }
    let arr = obj
        .entry(name.to_string())
        .or_insert_with(|| Value::Array(vec![Value::Null; len]));
    if let Value::Array(a) = arr {
        a.insert(at.min(a.len()), nv.json);
    }
    let has_ext_list = obj.get(&ext_key).is_some_and(Value::is_array);
    if nv.ext.is_some() || has_ext_list {
        let xa = obj
            .entry(ext_key.clone())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = xa {
            a.resize(len, Value::Null);
            a.insert(at, nv.ext.unwrap_or(Value::Null));
        }
    }
    tidy_pair(obj, name);
    Ok(())
}

/// Drops `_name` arrays that hold only nulls and value arrays/objects left empty.
fn tidy_pair(obj: &mut Map<String, Value>, name: &str) {
    let ext_key = format!("_{name}");
    if let Some(Value::Array(a)) = obj.get(&ext_key)
        && a.iter().all(Value::is_null)
    {
        obj.remove(&ext_key);
    }
    let value_empty = match obj.get(name) {
        Some(Value::Array(a)) => a.iter().all(Value::is_null),
        Some(Value::Object(o)) => o.is_empty(),
        Some(Value::Null) => true,
        _ => false,
    };
    if value_empty {
        let keep_nulls = obj.get(&ext_key).is_some();
        if !keep_nulls {
            obj.remove(name);
        }
    }
}

/// The object that holds children for the node at `loc`: the node itself when it is an
/// object, or the primitive's `_name` sibling (created on demand).
fn container_mut<'v>(
    root: &'v mut Value,
    loc: &[Step],
) -> Result<&'v mut Map<String, Value>, PatchError> {
    let is_object = get(root, loc).is_some_and(Value::is_object);
    if is_object {
        return get_mut(root, loc)
            .and_then(Value::as_object_mut)
            .ok_or_else(|| perr("target is not an element"));
    }
    // primitive: redirect to the `_name` sibling
    let (last_key_pos, key) = loc
        .iter()
        .enumerate()
        .rev()
        .find_map(|(i, s)| match s {
            Step::Key(k) => Some((i, k.clone())),
            Step::Index(_) => None,
        })
        .ok_or_else(|| perr("cannot add children to the root value"))?;
    let parent_loc = loc.get(..last_key_pos).unwrap_or(&[]);
    let index = match loc.get(last_key_pos + 1) {
        Some(Step::Index(i)) => Some(*i),
        _ => None,
    };
    let parent = get_mut(root, parent_loc)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| perr("target parent is not an element"))?;
    let ext_key = format!("_{key}");
    let slot = match index {
        None => parent
            .entry(ext_key)
            .or_insert_with(|| Value::Object(Map::new())),
        Some(i) => {
            let len = parent
                .get(&key)
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let arr = parent
                .entry(ext_key)
                .or_insert_with(|| Value::Array(Vec::new()));
            let a = arr
                .as_array_mut()
                .ok_or_else(|| perr("malformed primitive extension list"))?;
            if a.len() < len.max(i + 1) {
                a.resize(len.max(i + 1), Value::Null);
            }
            let s = a.get_mut(i).ok_or_else(|| perr("index out of range"))?;
            if s.is_null() {
                *s = Value::Object(Map::new());
            }
            s
        }
    };
    slot.as_object_mut()
        .ok_or_else(|| perr("malformed primitive extension"))
}

/// Removes empty objects/arrays from `loc` upwards (never the root).
fn prune(root: &mut Value, loc: &[Step]) {
    for d in (1..=loc.len()).rev() {
        let (Some(parent_loc), Some(step)) = (loc.get(..d - 1), loc.get(d - 1)) else {
            continue;
        };
        let empty = match get(root, loc.get(..d).unwrap_or(&[])) {
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Array(a)) => a.is_empty() || a.iter().all(Value::is_null),
            Some(Value::Null) => true,
            Some(_) => false,
            None => false,
        };
        if !empty {
            continue;
        }
        match step {
            Step::Key(k) => {
                if let Some(Value::Object(o)) = get_mut(root, parent_loc) {
                    o.remove(k);
                }
            }
            Step::Index(i) => remove_list_item(root, parent_loc, *i),
        }
    }
}

/// Removes element `i` of the array at `arr_loc`, keeping a `_name` sibling list aligned.
fn remove_list_item(root: &mut Value, arr_loc: &[Step], i: usize) {
    let Some((Step::Key(k), parent_loc)) = arr_loc.split_last() else {
        if let Some(Value::Array(a)) = get_mut(root, arr_loc)
            && i < a.len()
        {
            a.remove(i);
        }
        return;
    };
    let Some(Value::Object(obj)) = get_mut(root, parent_loc) else {
        return;
    };
    let base = k.strip_prefix('_').unwrap_or(k).to_string();
    for key in [base.clone(), format!("_{base}")] {
        if let Some(Value::Array(a)) = obj.get_mut(&key)
            && i < a.len()
        {
            a.remove(i);
        }
    }
    tidy_pair(obj, &base);
}

fn single_match(locs: Vec<Vec<Step>>, path: &str, what: &str) -> Result<Vec<Step>, PatchError> {
    let n = locs.len();
    match <[Vec<Step>; 1]>::try_from(locs) {
        Ok([one]) => Ok(one),
        Err(_) if n == 0 => Err(perr(format!("No content found at {path} when {what}"))),
        Err(_) => Err(perr(format!(
            "Multiple matches ({n}) found at {path} when {what}"
        ))),
    }
}

/// Location of the list the path designates: (container location, element name, length).
fn locate_list(resource: &Value, path: &str) -> Result<(Vec<Step>, String, usize), PatchError> {
    let locs = locate(resource, path)?;
    if let Some(first) = locs.first() {
        let split = match first.as_slice() {
            [rest @ .., Step::Key(k), Step::Index(_)] => Some((rest.to_vec(), k.clone())),
            [rest @ .., Step::Key(k)] => Some((rest.to_vec(), k.clone())),
            _ => None,
        };
        let (container, name) = split.ok_or_else(|| perr(format!("path {path} is not a list")))?;
        let same = locs.iter().all(|l| {
            l.len() > container.len()
                && l.get(..container.len()) == Some(container.as_slice())
                && l.get(container.len()) == Some(&Step::Key(name.clone()))
        });
        if !same {
            return Err(perr(format!("path {path} matches more than one list")));
        }
        let name = name.strip_prefix('_').unwrap_or(&name).to_string();
        let len = list_len(resource, &container, &name);
        return Ok((container, name, len));
    }
    Err(perr(format!("No content found at {path}")))
}

fn list_len(resource: &Value, container: &[Step], name: &str) -> usize {
    let obj = get(resource, container);
    let a = obj
        .and_then(|o| o.get(name))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let b = obj
        .and_then(|o| o.get(format!("_{name}")))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    a.max(b)
}

fn to_index(i: Option<i64>, what: &str) -> Result<usize, PatchError> {
    let i = i.ok_or_else(|| perr(format!("operation needs '{what}'")))?;
    usize::try_from(i).map_err(|_| perr(format!("'{what}' must not be negative")))
}

fn apply_op(
    resource: &mut Value,
    op: &Op<'_>,
    is_list: &dyn Fn(&[&str]) -> Option<bool>,
) -> Result<(), PatchError> {
    let path = op.path.as_str();
    match op.kind.as_str() {
        "add" => {
            let name = op.name.as_deref().ok_or_else(|| perr("add needs 'name'"))?;
            let vpart = op.value.ok_or_else(|| perr("add needs 'value'"))?;
            let loc = single_match(locate(resource, path)?, path, "adding")?;
            let mut elem_path: Vec<&str> = keys_of(&loc);
            elem_path.push(name);
            let nv = build_value(vpart, &elem_path, is_list, 0)?;
            let existing_array = get(resource, &loc)
                .and_then(|o| o.get(name))
                .is_some_and(Value::is_array);
            let list = is_list(&elem_path).unwrap_or(existing_array);
            let obj = container_mut(resource, &loc)?;
            write_child(obj, name, nv, list, None)
        }
        "insert" => {
            let vpart = op.value.ok_or_else(|| perr("insert needs 'value'"))?;
            let index = to_index(op.index, "index")?;
            let (container, name, len) = locate_list(resource, path)?;
            if index > len {
                return Err(perr(format!(
                    "index {index} is out of range (list has {len} items)"
                )));
            }
            let mut elem_path: Vec<&str> = keys_of(&container);
            elem_path.push(&name);
            let nv = build_value(vpart, &elem_path, is_list, 0)?;
            let obj = container_mut(resource, &container)?;
            write_child(obj, &name, nv, true, Some(index))
        }
        "delete" => {
            let locs = locate(resource, path)?;
            if locs.is_empty() {
                return Ok(());
            }
            let loc = single_match(locs, path, "deleting")?;
            match loc.split_last() {
                Some((Step::Index(i), arr_loc)) => remove_list_item(resource, arr_loc, *i),
                Some((Step::Key(k), parent_loc)) => {
                    if let Some(Value::Object(o)) = get_mut(resource, parent_loc) {
                        let base = k.strip_prefix('_').unwrap_or(k).to_string();
                        o.remove(&base);
                        o.remove(&format!("_{base}"));
                    }
                }
                None => return Err(perr("cannot delete the whole resource")),
            }
            let parent = loc.get(..loc.len().saturating_sub(1)).unwrap_or(&[]);
            prune(resource, parent);
            Ok(())
        }
        "replace" => {
            let vpart = op.value.ok_or_else(|| perr("replace needs 'value'"))?;
            let loc = single_match(locate(resource, path)?, path, "replacing")?;
            let nv = build_value(vpart, &keys_of(&loc), is_list, 0)?;
            match loc.split_last() {
                Some((Step::Index(i), arr_loc)) => {
                    let Some((Step::Key(k), parent_loc)) = arr_loc.split_last() else {
                        return Err(perr("cannot replace this element"));
                    };
                    let base = k.strip_prefix('_').unwrap_or(k).to_string();
                    let obj = get_mut(resource, parent_loc)
                        .and_then(Value::as_object_mut)
                        .ok_or_else(|| perr("cannot replace this element"))?;
                    remove_at(obj, &base, *i);
                    write_child(obj, &base, nv, true, Some(*i))
                }
                Some((Step::Key(k), parent_loc)) => {
                    let base = k.strip_prefix('_').unwrap_or(k).to_string();
                    let obj = get_mut(resource, parent_loc)
                        .and_then(Value::as_object_mut)
                        .ok_or_else(|| perr("cannot replace this element"))?;
                    write_child(obj, &base, nv, false, None)
                }
                None => Err(perr("cannot replace the whole resource")),
            }
        }
        "move" => {
            let source = to_index(op.source, "source")?;
            let dest = to_index(op.destination, "destination")?;
            let (container, name, len) = locate_list(resource, path)?;
            if source >= len || dest >= len {
                return Err(perr(format!(
                    "move from {source} to {dest} is out of range (list has {len} items)"
                )));
            }
            let obj = get_mut(resource, &container)
                .and_then(Value::as_object_mut)
                .ok_or_else(|| perr(format!("path {path} is not a list")))?;
            let nv = remove_at(obj, &name, source);
            write_child(obj, &name, nv, true, Some(dest))
        }
        other => Err(perr(format!("unknown operation type '{other}'"))),
    }
}

/// Takes element `i` (and its `_name` entry) out of the list `name` of `obj`.
fn remove_at(obj: &mut Map<String, Value>, name: &str, i: usize) -> NewValue {
    let mut take = |key: &str| -> Option<Value> {
        match obj.get_mut(key) {
            Some(Value::Array(a)) if i < a.len() => Some(a.remove(i)),
            _ => None,
        }
    };
    let json = take(name).unwrap_or(Value::Null);
    let ext = take(&format!("_{name}")).filter(|v| !v.is_null());
    NewValue { json, ext }
}
