//! Unit tests for the FHIRPath engine: semantics that search extraction and PATCH rely on
//! (locations, choice types, primitive extensions, resolve, exact decimals), parse errors,
//! and robustness against hostile input (fuzzing, deep nesting).

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn patient() -> Value {
    serde_json::from_str(
        r##"{
      "resourceType": "Patient", "id": "p1",
      "contained": [{"resourceType": "Organization", "id": "org1", "name": "Acme"}],
      "identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}],
      "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
               {"use": "usual", "given": [null, "Jim"],
                "_given": [{"extension": [{"url": "http://x", "valueString": "syll"}]}]}],
      "birthDate": "1974-12-25",
      "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                                    "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
      "deceasedBoolean": false,
      "managingOrganization": {"reference": "#org1"},
      "generalPractitioner": [{"reference": "Practitioner/pr1"},
                              {"reference": "https://example.org/fhir/Organization/o2/_history/3"},
                              {"reference": "urn:uuid:123"}]
    }"##,
    )
    .unwrap_or(Value::Null)
}

fn eval_json(src: &str, root: &Value) -> Vec<Value> {
    match eval_str(src, root) {
        Ok(v) => v,
        Err(e) => panic!("{src}: {e}"),
    }
}

fn locs(src: &str, root: &Value) -> Vec<Option<Vec<Step>>> {
    let expr = parse(src).unwrap_or_else(|e| panic!("{e}"));
    let items = evaluate(&expr, root, &Env::new()).unwrap_or_else(|e| panic!("{e}"));
    items
        .iter()
        .map(|i| i.location().map(<[Step]>::to_vec))
        .collect()
}

fn k(s: &str) -> Step {
    Step::Key(s.to_string())
}

fn check(src: &str, root: &Value, expected: Value) {
    assert_eq!(Value::Array(eval_json(src, root)), expected, "{src}");
}

#[test]
fn navigation_and_locations() {
    let p = patient();
    // the first `given` of name[1] has only an extension: it is a node without a value
    check(
        "Patient.name.given",
        &p,
        json!(["Peter", "James", null, "Jim"]),
    );
    check(
        "Patient.name.given.where(hasValue())",
        &p,
        json!(["Peter", "James", "Jim"]),
    );
    assert_eq!(
        locs("Patient.name.given", &p),
        vec![
            Some(vec![k("name"), Step::Index(0), k("given"), Step::Index(0)]),
            Some(vec![k("name"), Step::Index(0), k("given"), Step::Index(1)]),
            Some(vec![k("name"), Step::Index(1), k("given"), Step::Index(0)]),
            Some(vec![k("name"), Step::Index(1), k("given"), Step::Index(1)]),
        ]
    );
    // where/first/indexer keep locations; computed values have none
    assert_eq!(
        locs("identifier.where(system = 'urn:b').value", &p),
        vec![Some(vec![k("identifier"), Step::Index(1), k("value")])]
    );
    assert_eq!(
        locs("name[1].use", &p),
        vec![Some(vec![k("name"), Step::Index(1), k("use")])]
    );
    assert_eq!(
        locs("name.first().family", &p),
        vec![Some(vec![k("name"), Step::Index(0), k("family")])]
    );
    assert_eq!(locs("name.count()", &p), vec![None]);
    assert_eq!(locs("'x'.upper()", &p), vec![None]);
}

#[test]
fn primitive_extensions() {
    let p = patient();
    check(
        "Patient.birthDate.extension('http://hl7.org/fhir/StructureDefinition/patient-birthTime').value",
        &p,
        json!(["1974-12-25T14:35:45-05:00"]),
    );
    assert_eq!(
        locs("birthDate.extension.url", &p),
        vec![Some(vec![
            k("_birthDate"),
            k("extension"),
            Step::Index(0),
            k("url")
        ])]
    );
    check(
        "name[1].given.select($this.hasValue())",
        &p,
        json!([false, true]),
    );
    assert_eq!(
        locs("name[1].given[0].extension.value", &p),
        vec![Some(vec![
            k("name"),
            Step::Index(1),
            k("_given"),
            Step::Index(0),
            k("extension"),
            Step::Index(0),
            k("valueString")
        ])]
    );
}

#[test]
fn choice_types_and_type_tests() {
    let p = patient();
    check("Patient.deceased", &p, json!([false]));
    check("Patient.deceased is boolean", &p, json!([true]));
    check("Patient.deceased.ofType(boolean)", &p, json!([false]));
    let obs: Value = serde_json::from_str(
        r#"{"resourceType":"Observation","valueQuantity":{"value":135.50,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"}}"#,
    )
    .unwrap_or(Value::Null);
    check("Observation.value is Quantity", &obs, json!([true]));
    // exact decimal text survives
    let out = eval_json("Observation.value.value", &obs);
    assert_eq!(out.first().map(Value::to_string).as_deref(), Some("135.50"));
    check("Observation.value > 0.135 'g'", &obs, json!([true]));
    check("(Observation.value as Quantity).unit", &obs, json!(["mg"]));
    check("Observation.value.as(Period)", &obs, json!([]));
}

#[test]
fn resolve_decides_by_reference_string() {
    let p = patient();
    check("managingOrganization.resolve().name", &p, json!(["Acme"]));
    assert_eq!(
        locs("managingOrganization.resolve()", &p),
        vec![Some(vec![k("contained"), Step::Index(0)])]
    );
    check(
        "generalPractitioner.resolve().ofType(Practitioner).id",
        &p,
        json!(["pr1"]),
    );
    check(
        "generalPractitioner.where(resolve() is Organization).reference",
        &p,
        json!(["https://example.org/fhir/Organization/o2/_history/3"]),
    );
    check("generalPractitioner[2].resolve()", &p, json!([]));
    let bundle = json!({"resourceType": "Bundle", "entry": [
        {"fullUrl": "urn:uuid:abc", "resource": {"resourceType": "Patient", "id": "x"}},
        {"fullUrl": "urn:uuid:def", "resource": {"resourceType": "Encounter",
            "subject": {"reference": "urn:uuid:abc"}}}]});
    check(
        "Bundle.entry.resource.ofType(Encounter).subject.resolve().id",
        &bundle,
        json!(["x"]),
    );
}

#[test]
fn operators_and_functions() {
    let p = patient();
    check("1 + 2 * 3", &p, json!([7]));
    check("(1 + 2) * 3", &p, json!([9]));
    check("10 / 4", &p, json!([2.5]));
    check("7 div 2 + 7 mod 2", &p, json!([4]));
    check("'a' & {} & 'b'", &p, json!(["ab"]));
    check("1 | 2 | 1", &p, json!([1, 2]));
    check("2 in (1 | 2)", &p, json!([true]));
    check("true implies {}", &p, json!([]));
    check(
        "@2019-01-01T10:00:00Z < @2019-01-01T11:00:00+00:30",
        &p,
        json!([true]),
    );
    check("@2019-01 = @2019-01-01", &p, json!([]));
    check("@2019-01-31 + 1 month", &p, json!(["2019-02-28"]));
    check("birthDate < @2000", &p, json!([true]));
    check("4 'mg' = 0.004 'g'", &p, json!([true]));
    check("1.50 + 1.25", &p, json!([2.75]));
    check(
        "name.given.where(hasValue()).distinct().count()",
        &p,
        json!([3]),
    );
    check("identifier.value.join(',')", &p, json!(["1,2"]));
    check("'abc'.substring(1)", &p, json!(["bc"]));
    check("'a1b2'.replaceMatches('[0-9]', '#')", &p, json!(["a#b#"]));
    check("%resource.id", &p, json!(["p1"]));
    check("descendants().where($this = 'Jim')", &p, json!(["Jim"]));
    check("iif(name.exists(), 'y', 'n')", &p, json!(["y"]));
}

#[test]
fn env_variables_and_type_hook() {
    struct Hook;
    impl TypeInfo for Hook {
        fn element_type(&self, parent: &str, element: &str) -> Option<String> {
            match (parent, element) {
                ("Patient", "birthDate") => Some("date".into()),
                ("Patient", "name") => Some("HumanName".into()),
                ("HumanName", "use") => Some("code".into()),
                _ => None,
            }
        }
    }
    let p = patient();
    let hook = Hook;
    let env = Env::new()
        .with_type_info(&hook)
        .with_var("limit", json!(2))
        .with_now("2020-06-01T00:00:00Z");
    let run = |src: &str| -> Vec<Value> {
        let e = parse(src).unwrap_or_else(|e| panic!("{e}"));
        evaluate(&e, &p, &env)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(Item::to_json)
            .collect()
    };
    assert_eq!(
        run("name.ofType(HumanName).count() = %limit"),
        vec![json!(true)]
    );
    assert_eq!(run("name.use.first().is(code)"), vec![json!(true)]);
    assert_eq!(run("name.use.first().is(string)"), vec![json!(true)]);
    assert_eq!(run("birthDate.type().name"), vec![json!("date")]);
    assert_eq!(run("today()"), vec![json!("2020-06-01")]);
}

#[test]
fn errors_are_reported_not_panics() {
    let p = patient();
    let e = parse("name.where(").err();
    assert!(matches!(e, Some(ParseError { .. })));
    let e = parse("1 + + ").err().map(|e| e.position);
    assert_eq!(e, Some(6));
    assert!(parse("'unterminated").is_err());
    assert!(parse("2 + 2 /* open").is_err());
    assert!(parse("a.b c").is_err());
    assert!(matches!(
        eval_str("name.frobnicate()", &p),
        Err(Error::Eval(_))
    ));
    assert!(matches!(
        eval_str("name.given + 1", &p),
        Err(Error::Eval(_))
    ));
    assert!(matches!(eval_str("%nope", &p), Err(Error::Eval(_))));
    assert!(matches!(
        eval_str("'a'.matches('(')", &p),
        Err(Error::Eval(_))
    ));
}

#[test]
fn deep_nesting_is_rejected_or_evaluated_without_overflow() {
    let p = patient();
    for n in [200usize, 5_000, 50_000] {
        for src in [
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            format!("{}1", "-".repeat(n)),
            format!("{}1", "1 + ".repeat(n)),
            format!("name{}", ".given".repeat(n)),
            format!("{}1{}", "name.where(".repeat(n), ")".repeat(n)),
            format!("1{}", "[0]".repeat(n)),
            "{".repeat(n),
        ] {
            let r = parse(&src);
            assert!(r.is_err(), "nesting {n} should be rejected");
        }
    }
    // The deepest accepted expressions must evaluate on a normal 2 MiB thread stack.
    let near = (MAX_DEPTH as usize) - 4;
    let srcs = vec![
        format!("{}1{}", "(".repeat(near), ")".repeat(near)),
        format!("{}1", "-".repeat(near)),
        format!("{}1", "1 + ".repeat(near)),
        format!("name{}", ".given".repeat(near)),
        format!(
            "{}true{}",
            "name.where(".repeat(near / 2),
            ")".repeat(near / 2)
        ),
        format!("{}1{}", "iif(true, ".repeat(near / 2), ")".repeat(near / 2)),
        format!("{}1{}", "(1 | ".repeat(near / 2), ")".repeat(near / 2)),
    ];
    let handle = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let p = patient();
            for s in &srcs {
                if let Ok(e) = parse(s) {
                    let _ = evaluate(&e, &p, &Env::new());
                }
            }
        });
    assert!(handle.is_ok_and(|h| h.join().is_ok()));
    let _ = p;
}

#[test]
fn deep_json_does_not_overflow() {
    let mut v = json!({"resourceType": "Basic"});
    for _ in 0..2000 {
        let mut m = serde_json::Map::new();
        m.insert("resourceType".into(), json!("Basic"));
        m.insert("x".into(), Value::Array(vec![v]));
        v = Value::Object(m);
    }
    let r = eval_str("descendants().count() > 10", &v);
    assert!(matches!(r.as_deref(), Ok([Value::Bool(true)])));
    let r = eval_str("repeat(x).count()", &v);
    assert!(r.is_ok());
    // dropping deeply nested serde values is serde's business; keep it shallow for drop
    std::mem::forget(v);
}

const TOKENS: &[&str] = &[
    "name",
    "given",
    "Patient",
    ".",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "+",
    "-",
    "*",
    "/",
    "|",
    "&",
    "=",
    "!=",
    "~",
    "!~",
    "<",
    "<=",
    ">",
    ">=",
    "and",
    "or",
    "xor",
    "implies",
    "is",
    "as",
    "in",
    "contains",
    "div",
    "mod",
    "true",
    "false",
    "1",
    "2.5",
    "'str'",
    "'a\\'b'",
    "@2020-01-01",
    "@T10:00",
    "@2020-01-01T10:00:00Z",
    "4 'mg'",
    "3 days",
    "$this",
    "$index",
    "$total",
    "%resource",
    "%ucum",
    "`given`",
    ",",
    "where",
    "select",
    "exists",
    "first",
    "iif",
    "ofType",
    "resolve",
    "extension",
    "count",
    "descendants",
    "repeat",
    "substring",
    "matches",
    "//c\n",
    "/*c*/",
    "\"",
    "'",
    "@",
    "%",
    "$",
    "`",
    "\\",
    "aggregate",
    "sort",
    "combine",
    "toString",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_random_text(s in "\\PC{0,120}") {
        let _ = parse(&s);
    }

    #[test]
    fn parser_and_evaluator_never_panic_on_token_soup(
        toks in proptest::collection::vec(proptest::sample::select(TOKENS), 0..40)
    ) {
        let src = toks.join(" ");
        if let Ok(e) = parse(&src) {
            let p = patient();
            let _ = evaluate(&e, &p, &Env::new());
        }
        let glued = toks.concat();
        if let Ok(e) = parse(&glued) {
            let p = patient();
            let _ = evaluate(&e, &p, &Env::new());
        }
    }
}

fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        "[0-9]{1,40}(\\.[0-9]{1,30})?",
        Just("9223372036854775807".to_string()),
        Just("170141183460469231731687303715884105727".to_string()),
        Just("0.00000001".to_string()),
    ]
}

fn literal_text() -> impl Strategy<Value = String> {
    prop_oneof![
        number_text(),
        number_text().prop_map(|n| format!("(-{n})")),
        number_text().prop_map(|n| format!("{n} 'mg'")),
        (
            number_text(),
            proptest::sample::select(&["days", "years", "'a'", "'s'", "'ms'", "months"][..])
        )
            .prop_map(|(n, u)| format!("{n} {u}")),
        "@[0-9]{4}(-[01][0-9](-[0-3][0-9](T[0-2][0-9](:[0-5][0-9](:[0-5][0-9](\\.[0-9]{1,4})?)?)?(Z|[+-][01][0-9]:[0-5][0-9])?)?)?)?",
        "@T[0-2][0-9](:[0-5][0-9](:[0-5][0-9])?)?",
        "'[^'\\\\]{0,8}'",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    #[test]
    fn arithmetic_and_conversions_never_panic(
        a in literal_text(),
        b in literal_text(),
        op in proptest::sample::select(&["+", "-", "*", "/", "div", "mod", "=", "~", "<", ">=", "&", "|", "!="][..]),
        f in proptest::sample::select(&["abs()", "ceiling()", "floor()", "round(3)", "truncate()",
            "sqrt()", "exp()", "ln()", "log(10)", "power(3)", "toString()", "toInteger()",
            "toDecimal()", "toQuantity()", "toDate()", "toDateTime()", "lowBoundary()",
            "highBoundary(4)", "precision()", "toChars().count()", "not()", "type().name"][..]),
    ) {
        let p = patient();
        for src in [format!("{a} {op} {b}"), format!("({a}).{f}"), format!("({a} {op} {b}).{f}")] {
            if let Ok(e) = parse(&src) {
                let _ = evaluate(&e, &p, &Env::new());
            }
        }
    }
}
