//! Test support: FHIR XML → FHIR JSON, driven by the definitions registry (which elements
//! repeat, which are primitives of which JSON kind), so the official XML test cases
//! (FHIRPath Patch, FHIRPath) can be run against a JSON server.

use healporium::fhir::definitions::{Definitions, JsonKind};
use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value};

/// An XML element, with the raw text of xhtml `div`s kept as is.
#[derive(Debug, Clone)]
pub struct XmlElement {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<XmlElement>,
    pub raw_xhtml: Option<String>,
    /// Character content (entities resolved), for non-FHIR XML such as test-case files.
    pub text: String,
}

impl XmlElement {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&XmlElement> {
        self.children.iter().find(|c| c.name == name)
    }
}

fn local(name: impl AsRef<[u8]>) -> String {
    let s = String::from_utf8_lossy(name.as_ref()).to_string();
    match s.rsplit_once(':') {
        Some((_, l)) => l.to_string(),
        None => s,
    }
}

/// Parses XML text into element trees (the top-level elements).
pub fn parse(xml: &str) -> Vec<XmlElement> {
    let mut reader = Reader::from_str(xml);
    let mut stack: Vec<XmlElement> = Vec::new();
    let mut roots = Vec::new();
    let mut div_depth = 0usize;
    let mut div_start = 0usize;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event().expect("well-formed XML");
        match event {
            Event::Start(e) => {
                let name = local(e.name().as_ref().as_bytes());
                if div_depth > 0 {
                    div_depth += 1;
                    continue;
                }
                let attrs = e
                    .attributes()
                    .filter_map(Result::ok)
                    .map(|a| {
                        (
                            local(a.key.as_ref().as_bytes()),
                            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .map(|v| v.to_string())
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                if name == "div" {
                    div_depth = 1;
                    div_start = before;
                }
                stack.push(XmlElement {
                    name,
                    attrs,
                    children: Vec::new(),
                    raw_xhtml: None,
                    text: String::new(),
                });
            }
            Event::Empty(e) => {
                if div_depth > 0 {
                    continue;
                }
                let name = local(e.name().as_ref().as_bytes());
                let attrs = e
                    .attributes()
                    .filter_map(Result::ok)
                    .map(|a| {
                        (
                            local(a.key.as_ref().as_bytes()),
                            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                                .map(|v| v.to_string())
                                .unwrap_or_default(),
                        )
                    })
                    .collect();
                let el = XmlElement {
                    name,
                    attrs,
                    children: Vec::new(),
                    raw_xhtml: None,
                    text: String::new(),
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => roots.push(el),
                }
            }
            Event::End(_) => {
                if div_depth > 1 {
                    div_depth -= 1;
                    continue;
                }
                let mut el = stack.pop().expect("balanced XML");
                if div_depth == 1 {
                    div_depth = 0;
                    let end = reader.buffer_position() as usize;
                    el.raw_xhtml = Some(xml[div_start..end].to_string());
                }
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => roots.push(el),
                }
            }
            Event::Text(t) if div_depth == 0 => {
                if let Some(top) = stack.last_mut() {
                    top.text
                        .push_str(&t.xml_content(quick_xml::XmlVersion::Implicit1_0));
                }
            }
            Event::CData(t) if div_depth == 0 => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.into_inner());
                }
            }
            Event::GeneralRef(r) if div_depth == 0 => {
                if let Some(top) = stack.last_mut() {
                    let c = match r.resolve_char_ref() {
                        Ok(Some(c)) => Some(c),
                        _ => match r.xml_content(quick_xml::XmlVersion::Implicit1_0).as_ref() {
                            "lt" => Some('<'),
                            "gt" => Some('>'),
                            "amp" => Some('&'),
                            "quot" => Some('"'),
                            "apos" => Some('\''),
                            _ => None,
                        },
                    };
                    top.text.extend(c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    roots
}

/// Converts a resource element (`<Patient>…</Patient>`) to FHIR JSON.
pub fn resource_to_json(el: &XmlElement) -> Value {
    let defs = Definitions::r4();
    let mut obj = Map::new();
    obj.insert("resourceType".into(), Value::String(el.name.clone()));
    children_into(defs, el, &el.name, &mut obj);
    Value::Object(obj)
}

fn children_into(defs: &Definitions, el: &XmlElement, context: &str, obj: &mut Map<String, Value>) {
    if let Some(id) = el.attr("id") {
        obj.insert("id".into(), Value::String(id.to_string()));
    }
    if let Some(url) = el.attr("url") {
        obj.insert("url".into(), Value::String(url.to_string()));
    }
    for child in &el.children {
        let Some(prop) = defs.property(context, &child.name) else {
            // kept, so that a validator sees the element FHIR does not define
            let v = child
                .attr("value")
                .map_or_else(|| Value::Object(Map::new()), |v| Value::String(v.into()));
            obj.insert(child.name.clone(), v);
            continue;
        };
        let is_array = prop.element.is_array();
        let ty = prop.type_name;
        if defs.is_primitive(ty) && prop.element.content_ref.is_none() {
            let value = match (&child.raw_xhtml, child.attr("value")) {
                (Some(x), _) => Some(Value::String(x.clone())),
                (None, Some(v)) => Some(primitive(defs, ty, v)),
                (None, None) => None,
            };
            let mut ext = Map::new();
            if child.raw_xhtml.is_none() {
                children_into(
                    defs,
                    &XmlElement {
                        attrs: child
                            .attrs
                            .iter()
                            .filter(|(k, _)| k == "id")
                            .cloned()
                            .collect(),
                        ..child.clone()
                    },
                    "Element",
                    &mut ext,
                );
            }
            let ext = (!ext.is_empty()).then_some(Value::Object(ext));
            push(obj, &child.name, value, is_array);
            if ext.is_some() || obj.contains_key(&format!("_{}", child.name)) {
                push_ext(obj, &child.name, ext, is_array);
            }
        } else if ty == "Resource" && prop.element.content_ref.is_none() {
            let inner = child.children.first().expect("a resource inside");
            push(obj, &child.name, Some(resource_to_json(inner)), is_array);
        } else {
            let ctx = defs.context_of(&prop).unwrap_or("Element").to_string();
            let mut m = Map::new();
            children_into(defs, child, &ctx, &mut m);
            push(obj, &child.name, Some(Value::Object(m)), is_array);
        }
    }
    // `_name` arrays are as long as their value arrays
    let keys: Vec<String> = obj.keys().filter(|k| k.starts_with('_')).cloned().collect();
    for k in keys {
        let len = obj
            .get(&k[1..])
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        if let Some(Value::Array(a)) = obj.get_mut(&k) {
            while a.len() < len {
                a.push(Value::Null);
            }
        }
    }
}

fn primitive(defs: &Definitions, ty: &str, text: &str) -> Value {
    match defs.primitives.get(ty).map(|p| p.json) {
        Some(JsonKind::Boolean) => Value::Bool(text == "true"),
        Some(JsonKind::Number | JsonKind::Integer) => {
            serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
        }
        _ => Value::String(text.to_string()),
    }
}

fn push(obj: &mut Map<String, Value>, name: &str, value: Option<Value>, is_array: bool) {
    if is_array {
        let arr = obj
            .entry(name.to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = arr {
            a.push(value.unwrap_or(Value::Null));
        }
    } else if let Some(v) = value {
        // a non-repeating element given twice becomes an array, the JSON shape a validator
        // refuses (merging would hide the error)
        match obj.get_mut(name) {
            Some(Value::Array(a)) => a.push(v),
            Some(prev) => *prev = Value::Array(vec![prev.take(), v]),
            None => {
                obj.insert(name.to_string(), v);
            }
        }
    }
}

fn push_ext(obj: &mut Map<String, Value>, name: &str, ext: Option<Value>, is_array: bool) {
    let key = format!("_{name}");
    if is_array {
        let len = obj.get(name).and_then(Value::as_array).map_or(0, Vec::len);
        let arr = obj.entry(key).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(a) = arr {
            while a.len() + 1 < len {
                a.push(Value::Null);
            }
            a.push(ext.unwrap_or(Value::Null));
        }
    } else if let Some(e) = ext {
        obj.insert(key, e);
    }
}
