//! The credit extension over HTTP: `$credit-quote` at type and instance level with the design
//! note's golden values, its plans, its refusals (each an OperationOutcome naming the input),
//! and the calendar of its schedule. SQLite and PostgreSQL.

use crate::backends;
use crate::common::Server;
use serde_json::{Value, json};

backends!(
    quotes_match_the_golden_values,
    quotes_follow_the_repayment_plans,
    bad_quotes_are_refused_with_the_input_named,
    quotes_on_an_account_need_the_account,
);

fn quote_body(amount: Value, currency: &str, months: i64, extra: &[Value]) -> Value {
    let mut p = vec![
        json!({"name": "amount", "valueMoney": {"value": amount, "currency": currency}}),
        json!({"name": "termMonths", "valueInteger": months}),
    ];
    p.extend(extra.iter().cloned());
    json!({"resourceType": "Parameters", "parameter": p})
}

fn apr(v: &str) -> Value {
    json!({"name": "apr", "valueDecimal": v.parse::<serde_json::Number>().unwrap()})
}

fn out<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {p}"))
}

fn money(p: &Value, name: &str) -> String {
    let m = &out(p, name)["valueMoney"];
    format!("{} {}", m["value"], m["currency"].as_str().unwrap())
}

fn schedule(p: &Value) -> Vec<&Value> {
    p["parameter"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["name"] == "schedule")
        .collect()
}

fn part<'a>(s: &'a Value, name: &str) -> &'a Value {
    s["part"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == name)
        .unwrap()
}

async fn quotes_match_the_golden_values(s: Server) {
    // (amount, months, apr, level, last, interest)
    let cases = [
        ("100.00", 3, "0", "33.34", "33.32", "0.00"),
        ("1200.00", 24, "17.90", "59.86", "59.58", "236.36"),
        ("2500.00", 24, "14.90", "121.10", "121.03", "406.33"),
    ];
    for (amount, months, rate, level, last, interest) in cases {
        let body = quote_body(
            amount.parse::<serde_json::Number>().unwrap().into(),
            "USD",
            months,
            &[apr(rate)],
        );
        let p = s
            .post("Account/$credit-quote", &body)
            .await
            .expect(200)
            .json();
        assert_eq!(p["resourceType"], "Parameters");
        assert_eq!(money(&p, "installment"), format!("{level} USD"), "{p}");
        assert_eq!(money(&p, "finalInstallment"), format!("{last} USD"));
        assert_eq!(money(&p, "totalInterest"), format!("{interest} USD"));
        let rows = schedule(&p);
        assert_eq!(rows.len(), months as usize);
        // the schedule sums exactly, and its balance reaches zero
        let cents = |v: &Value| -> i64 {
            let t = v["valueMoney"]["value"].to_string();
            let (whole, frac) = t.split_once('.').unwrap_or((&t, "0"));
            whole.parse::<i64>().unwrap() * 100 + format!("{frac:0<2}").parse::<i64>().unwrap()
        };
        let sum: i64 = rows.iter().map(|r| cents(part(r, "amount"))).sum();
        assert_eq!(sum, cents(out(&p, "totalPayable")));
        assert_eq!(cents(part(rows.last().unwrap(), "balance")), 0);
        // installment k falls due k months from today (UTC)
        let today = jiff::Timestamp::now()
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        let first = part(rows[0], "dueDate")["valueDate"].as_str().unwrap();
        let expected = today.checked_add(jiff::Span::new().months(1)).unwrap();
        assert_eq!(first, expected.to_string());
    }
}

async fn quotes_follow_the_repayment_plans(s: Server) {
    let zero = json!({"name": "plan", "valueCode": "installments-0"});
    let p = s
        .post(
            "Account/$credit-quote",
            &quote_body(json!(100.00), "USD", 3, std::slice::from_ref(&zero)),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(money(&p, "totalInterest"), "0.00 USD");
    assert_eq!(out(&p, "plan")["valueCode"], "installments-0");
    // the reduced-APR plan takes the product's reduced APR
    let reduced = json!({"name": "plan", "valueCode": "installments-apr"});
    let p = s
        .post(
            "Account/$credit-quote",
            &quote_body(json!(1200.00), "USD", 12, std::slice::from_ref(&reduced)),
        )
        .await
        .expect(200)
        .json();
    assert_eq!(out(&p, "apr")["valueDecimal"], json!(9.9));
    // outside the plan's terms, a different APR, an unknown plan
    let r = s
        .post(
            "Account/$credit-quote",
            &quote_body(json!(100.00), "USD", 36, std::slice::from_ref(&zero)),
        )
        .await
        .expect(422);
    assert!(r.text.contains("3 to 24 months"), "{}", r.text);
    assert_eq!(
        r.json()["issue"][0]["expression"][0],
        "Parameters.parameter.where(name = 'termMonths')"
    );
    let r = s
        .post(
            "Account/$credit-quote",
            &quote_body(json!(100.00), "USD", 3, &[zero.clone(), apr("5")]),
        )
        .await
        .expect(422);
    assert!(r.text.contains("APR of 0"), "{}", r.text);
    let r = s
        .post(
            "Account/$credit-quote",
            &quote_body(
                json!(100.00),
                "USD",
                3,
                &[json!({"name": "plan", "valueCode": "balloon"})],
            ),
        )
        .await
        .expect(422);
    assert!(r.text.contains("installments-0"), "{}", r.text);
}

async fn bad_quotes_are_refused_with_the_input_named(s: Server) {
    let at = |n: &str| format!("Parameters.parameter.where(name = '{n}')");
    // (body, status, expression)
    let cases: Vec<(Value, u16, String)> = vec![
        // too many decimals for the currency: never rounded
        (
            quote_body(json!(100.001), "USD", 3, &[apr("0")]),
            422,
            format!("{}.valueMoney.value", at("amount")),
        ),
        (
            quote_body(json!(100.5), "JPY", 3, &[apr("0")]),
            422,
            format!("{}.valueMoney.value", at("amount")),
        ),
        // no currency
        (
            json!({"resourceType": "Parameters", "parameter": [
                {"name": "amount", "valueMoney": {"value": 100}},
                {"name": "termMonths", "valueInteger": 3}, apr("0")]}),
            422,
            format!("{}.valueMoney.currency", at("amount")),
        ),
        // $0.05 over 12 months: installments below a cent
        (
            quote_body(json!(0.05), "USD", 12, &[apr("0")]),
            422,
            at("termMonths"),
        ),
        (
            quote_body(json!(0), "USD", 12, &[apr("0")]),
            422,
            at("amount"),
        ),
        (
            quote_body(json!(100), "USD", 0, &[apr("0")]),
            422,
            at("termMonths"),
        ),
        (
            quote_body(json!(100), "USD", -3, &[apr("0")]),
            422,
            at("termMonths"),
        ),
        (
            quote_body(json!(100), "USD", 3, &[apr("101")]),
            422,
            at("apr"),
        ),
        // neither an APR nor a plan
        (quote_body(json!(100), "USD", 3, &[]), 400, at("apr")),
        (
            json!({"resourceType": "Parameters", "parameter": [
                {"name": "termMonths", "valueInteger": 3}, apr("0")]}),
            422,
            at("amount"),
        ),
    ];
    for (body, status, expression) in cases {
        let r = s.post("Account/$credit-quote", &body).await.expect(status);
        let v = r.json();
        assert_eq!(v["resourceType"], "OperationOutcome", "{body}");
        assert_eq!(v["issue"][0]["expression"][0], expression, "{body}: {v}");
    }
    // JPY and KWD quote in their own minor units
    let p = s
        .post(
            "Account/$credit-quote",
            &quote_body(json!(100000), "JPY", 12, &[apr("9.9")]),
        )
        .await
        .expect(200)
        .json();
    assert!(money(&p, "installment").ends_with(" JPY"));
    assert!(!money(&p, "installment").contains('.'), "{p}");
    s.post(
        "Account/$credit-quote",
        &quote_body(json!(100.125), "KWD", 6, &[apr("5")]),
    )
    .await
    .expect(200);
}

async fn quotes_on_an_account_need_the_account(s: Server) {
    let body = quote_body(json!(100.00), "USD", 3, &[apr("0")]);
    s.post("Account/nope/$credit-quote", &body)
        .await
        .expect(404);
    let id = s
        .create(&json!({"resourceType": "Account", "status": "active"}))
        .await;
    let p = s
        .post(&format!("Account/{id}/$credit-quote"), &body)
        .await
        .expect(200)
        .json();
    assert_eq!(money(&p, "installment"), "33.34 USD");
    // a credit line in USD does not quote in EUR
    let line = json!({"resourceType": "Account", "status": "active", "extension": [{
        "url": "https://healporium.example/fhir/StructureDefinition/credit-line",
        "extension": [{"url": "limit", "valueMoney": {"value": 1000, "currency": "USD"}}]}]});
    let line_id = s.create(&line).await;
    let eur = quote_body(json!(100.00), "EUR", 3, &[apr("0")]);
    let r = s
        .post(&format!("Account/{line_id}/$credit-quote"), &eur)
        .await
        .expect(422);
    assert!(r.text.contains("USD credit line"), "{}", r.text);
    // a quote writes nothing
    let before = s.get("Account?_total=accurate").await.expect(200).json()["total"].clone();
    s.post(&format!("Account/{id}/$credit-quote"), &body)
        .await
        .expect(200);
    let after = s.get("Account?_total=accurate").await.expect(200).json()["total"].clone();
    assert_eq!(before, after);
    let history = s
        .get(&format!("Account/{id}/_history"))
        .await
        .expect(200)
        .json();
    assert_eq!(history["total"], 1);
}
