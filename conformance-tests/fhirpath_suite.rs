//! The official FHIRPath R4 suite (../shared/fhir/fhirpath/tests-fhir-r4.xml) against the
//! engine, with the definitions registry as type information: prints the pass counts and
//! asserts floors so regressions are caught (run with `--nocapture` to see the failures).

use std::collections::BTreeMap;

use crate::common::fhir_xml::{XmlElement, parse as parse_xml, resource_to_json};
use crate::common::shared;
use healporium::fhir::definitions::Definitions;
use healporium::fhirpath::{Env, FpValue, Item, evaluate, parse};
use serde_json::Value;

fn suite_path() -> std::path::PathBuf {
    shared().join("fhirpath/tests-fhir-r4.xml")
}

fn inputs() -> String {
    shared().join("fhirpath/inputs").display().to_string()
}

fn official_json() -> String {
    shared()
        .join("fhirpath/inputs-json-official")
        .display()
        .to_string()
}

/// Floors: achieved counts minus a small margin.
const FLOOR_OFFICIAL_JSON: usize = 910;
const FLOOR_XML_CONVERTED: usize = 922;

struct Case {
    name: String,
    group: String,
    input: String,
    expr: String,
    invalid: bool,
    predicate: bool,
    outputs: Vec<(String, String)>,
}

fn load_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(suite_path()).expect("suite");
    let roots = parse_xml(&text);
    let root = roots.iter().find(|r| r.name == "tests").expect("<tests>");
    let mut out = Vec::new();
    for g in root.children.iter().filter(|e| e.name == "group") {
        let group = g.attr("name").unwrap_or("").to_string();
        for t in g.children.iter().filter(|e| e.name == "test") {
            let Some(e) = t.child("expression") else {
                continue;
            };
            out.push(Case {
                name: t.attr("name").unwrap_or("").to_string(),
                group: group.clone(),
                input: t.attr("inputfile").unwrap_or("").to_string(),
                expr: e.text.clone(),
                invalid: e.attr("invalid").is_some(),
                predicate: t.attr("predicate") == Some("true"),
                outputs: t
                    .children
                    .iter()
                    .filter(|o| o.name == "output")
                    .map(|o: &XmlElement| {
                        (o.attr("type").unwrap_or("").to_string(), o.text.clone())
                    })
                    .collect(),
            });
        }
    }
    out
}

fn official_json_name(input: &str) -> Option<String> {
    let n = match input {
        "patient-example.xml" => "Patient-example.json",
        "observation-example.xml" => "Observation-example.json",
        "questionnaire-example.xml" => "Questionnaire-3141.json",
        "valueset-example-expansion.xml" => "ValueSet-example-expansion.json",
        "codesystem-example.xml" => "CodeSystem-example.json",
        _ => return None,
    };
    Some(format!("{}/{n}", official_json()))
}

fn load_json(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("input")).expect("json")
}

/// Renders an item the way the suite writes expected outputs.
fn render(it: &Item<'_>) -> String {
    match it.value() {
        FpValue::Node(n) => match n.json() {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Number(x)) => x.to_string(),
            Some(v) => v.to_string(),
            None => "<no value>".into(),
        },
        FpValue::Boolean(b) => b.to_string(),
        FpValue::Integer(i) => i.to_string(),
        FpValue::Decimal(d) => d.to_string(),
        FpValue::String(s) => s.to_string(),
        FpValue::Temporal(t) => t.to_string(),
        FpValue::Quantity(q) => q.to_string(),
        FpValue::Type { namespace, name } => format!("{namespace}.{name}"),
    }
}

fn matches(expected: &(String, String), it: &Item<'_>) -> bool {
    let (ty, text) = expected;
    let got = render(it);
    let want = text.trim();
    match ty.as_str() {
        "decimal" | "integer" => {
            use healporium::fhirpath::Decimal;
            match (Decimal::parse(want), Decimal::parse(&got)) {
                (Some(a), Some(b)) => a.cmp_value(b) == std::cmp::Ordering::Equal,
                _ => false,
            }
        }
        _ => {
            let want = want
                .strip_prefix("@T")
                .or_else(|| want.strip_prefix('@'))
                .unwrap_or(want);
            got == want
        }
    }
}

fn run(case: &Case, root: &Value, env: &Env<'_>) -> Result<(), String> {
    let parsed = parse(&case.expr);
    let result = match parsed {
        Err(e) => {
            return if case.invalid {
                Ok(())
            } else {
                Err(format!("parse error: {e}"))
            };
        }
        Ok(expr) => evaluate(&expr, root, env),
    };
    let items = match result {
        Err(e) => {
            return if case.invalid {
                Ok(())
            } else {
                Err(format!("eval error: {e}"))
            };
        }
        Ok(items) => items,
    };
    if case.invalid {
        return Err(format!(
            "expected an error, got {:?}",
            items.iter().map(render).collect::<Vec<_>>()
        ));
    }
    let rendered: Vec<String>;
    let ok = if case.predicate {
        rendered = vec![(!items.is_empty()).to_string()];
        case.outputs.len() == 1
            && case.outputs.first().map(|o| o.1.trim()) == rendered.first().map(String::as_str)
    } else {
        rendered = items.iter().map(render).collect();
        case.outputs.len() == items.len()
            && case
                .outputs
                .iter()
                .zip(&items)
                .all(|(o, it)| matches(o, it))
    };
    if ok {
        Ok(())
    } else {
        Err(format!("expected {:?}, got {rendered:?}", case.outputs))
    }
}

struct Tally {
    pass: usize,
    run: usize,
    failures: Vec<String>,
    by_group: BTreeMap<String, (usize, usize)>,
}

fn run_all(cases: &[Case], input_for: &dyn Fn(&str) -> Option<Value>, env: &Env<'_>) -> Tally {
    let mut t = Tally {
        pass: 0,
        run: 0,
        failures: Vec::new(),
        by_group: BTreeMap::new(),
    };
    let mut cache: BTreeMap<String, Option<Value>> = BTreeMap::new();
    for c in cases {
        let root = cache
            .entry(c.input.clone())
            .or_insert_with(|| input_for(&c.input))
            .clone();
        let Some(root) = root else { continue };
        t.run += 1;
        let g = t.by_group.entry(c.group.clone()).or_insert((0, 0));
        g.1 += 1;
        match run(c, &root, env) {
            Ok(()) => {
                t.pass += 1;
                g.0 += 1;
            }
            Err(e) => t
                .failures
                .push(format!("{} [{}] `{}`: {e}", c.name, c.group, c.expr.trim())),
        }
    }
    t
}

fn report(label: &str, t: &Tally) {
    println!("== {label}: {} / {} passed", t.pass, t.run);
    for f in &t.failures {
        println!("  FAIL {f}");
    }
    let partial: Vec<String> = t
        .by_group
        .iter()
        .filter(|(_, (p, n))| p != n)
        .map(|(g, (p, n))| format!("{g} {p}/{n}"))
        .collect();
    println!("  groups with failures: {}", partial.join(", "));
}

#[test]
fn official_suite() {
    let cases = load_cases();
    assert!(cases.len() >= 900, "suite has {} tests", cases.len());
    let defs = Definitions::r4();

    // 1. Official JSON examples (and the suite's own .json inputs), typed by the registry.
    let env = Env::new().with_type_info(defs);
    let official = |input: &str| -> Option<Value> {
        if input.is_empty() {
            return Some(Value::Null);
        }
        if input.ends_with(".json") {
            return Some(load_json(&format!("{}/{input}", inputs())));
        }
        official_json_name(input).map(|p| load_json(&p))
    };
    let t1 = run_all(&cases, &official, &env);
    report("official JSON inputs", &t1);

    // 2. The suite's exact XML inputs converted to JSON with the registry.
    let converted = |input: &str| -> Option<Value> {
        if input.is_empty() {
            return Some(Value::Null);
        }
        let path = format!("{}/{input}", inputs());
        if input.ends_with(".json") {
            return Some(load_json(&path));
        }
        let text = std::fs::read_to_string(&path).ok()?;
        let roots = parse_xml(&text);
        Some(resource_to_json(roots.first()?))
    };
    let t2 = run_all(&cases, &converted, &env);
    report("XML inputs converted to JSON", &t2);

    println!(
        "SUMMARY official-json {}/{}, xml-converted {}/{}",
        t1.pass, t1.run, t2.pass, t2.run
    );
    assert!(
        t1.pass >= FLOOR_OFFICIAL_JSON,
        "official JSON regression: {} < {FLOOR_OFFICIAL_JSON}",
        t1.pass
    );
    assert!(
        t2.pass >= FLOOR_XML_CONVERTED,
        "XML-converted regression: {} < {FLOOR_XML_CONVERTED}",
        t2.pass
    );
}

/// Every official test that calls a function used by an R4 search-parameter expression
/// passes (the functions indexing depends on are fully conformant).
#[test]
fn search_parameter_functions_pass() {
    let table: Value = load_json(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fhir-profiles/search-parameters.json")
            .to_string_lossy(),
    );
    let call = regex::Regex::new(r"([A-Za-z]+)\(").unwrap();
    let mut functions: std::collections::BTreeSet<String> = Default::default();
    for params in table.as_object().unwrap().values() {
        for p in params.as_array().unwrap() {
            let exprs = std::iter::once(p["expression"].as_str())
                .chain(
                    p["components"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| c["expression"].as_str()),
                )
                .flatten();
            for e in exprs {
                for c in call.captures_iter(e) {
                    functions.insert(c[1].to_string());
                }
            }
        }
    }
    assert!(functions.contains("where") && functions.contains("resolve"));
    let cases = load_cases();
    let defs = Definitions::r4();
    let env = Env::new().with_type_info(defs);
    let converted = |input: &str| -> Option<Value> {
        if input.is_empty() {
            return Some(Value::Null);
        }
        let path = format!("{}/{input}", inputs());
        if input.ends_with(".json") {
            return Some(load_json(&path));
        }
        let text = std::fs::read_to_string(&path).ok()?;
        let roots = parse_xml(&text);
        Some(resource_to_json(roots.first()?))
    };
    let relevant: Vec<Case> = cases
        .into_iter()
        .filter(|c| {
            call.captures_iter(&c.expr)
                .any(|m| functions.contains(&m[1]))
        })
        .collect();
    let t = run_all(&relevant, &converted, &env);
    println!(
        "SUMMARY search-parameter functions {:?}: {}/{} official tests pass",
        functions, t.pass, t.run
    );
    assert!(t.run >= 30, "only {} tests exercise them", t.run);
    assert!(t.failures.is_empty(), "{:#?}", t.failures);
}

/// Every R4 search-parameter expression evaluates without error on every official example of
/// its base type: an error would silently drop that parameter's index rows.
#[test]
fn search_parameter_expressions_evaluate_on_every_example() {
    use healporium::search::index::indexed_params;
    use healporium::search::parameters::SearchParameters;
    let env = Env::new().with_type_info(Definitions::r4());
    let registry = SearchParameters::r4();
    let mut evaluated = 0;
    let mut errors = Vec::new();
    for (name, example) in crate::common::official_examples() {
        let rt = example["resourceType"].as_str().unwrap_or("").to_string();
        for p in indexed_params(registry, &rt) {
            let Some(expr) = &p.parsed else { continue };
            evaluated += 1;
            if let Err(e) = evaluate(expr, &example, &env) {
                errors.push(format!("{name} {rt}.{}: {e:?}", p.code));
            }
        }
    }
    println!("SUMMARY {evaluated} parameter evaluations on the official examples");
    assert!(evaluated > 5000, "{evaluated}");
    assert!(errors.is_empty(), "{:#?}", errors);
}
