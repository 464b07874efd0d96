//! The credit extension's operations. `Account/$credit-quote` and `Account/[id]/$credit-quote`:
//! the schedule, level installment, total interest and total payable of an amount over a term
//! at an APR (or a repayment plan's APR), changing nothing. See docs/finance.md.

use super::OperationRequest;
use super::params::{at, code, decimal, integer, invalid, money};
use crate::auth::Perm;
use crate::fhir::money::{Currency, Money};
use crate::fhir::outcome::{ErrorKind, Outcome};
use crate::fhir::types::Id;
use crate::finance::amortize::{self, Schedule};
use crate::finance::products::{self, Plan};
use crate::interaction::{Body, Context, FhirResponse, Status};
use rust_decimal::Decimal;
use serde_json::{Value, json};

/// What a quote is for: the amount, its term and its APR, checked against the plan.
struct QuoteInput<'a> {
    amount: Money,
    months: u32,
    apr: Decimal,
    plan: Option<&'a Plan>,
}

fn quote_input<'a>(
    fin: &'a crate::finance::catalog::Catalog,
    op: &OperationRequest,
) -> Result<QuoteInput<'a>, Outcome> {
    let amount =
        money(op, "amount")?.ok_or_else(|| invalid("amount", "amount (Money) is required"))?;
    let months = integer(op, "termMonths")?
        .ok_or_else(|| invalid("termMonths", "termMonths (integer) is required"))?;
    let months = u32::try_from(months).map_err(|_| {
        invalid(
            "termMonths",
            format!(
                "The term must be between 1 and {} months",
                amortize::MAX_TERM_MONTHS
            ),
        )
    })?;
    let apr = decimal(op, "apr")?;
    let plan = match code(op, "plan")? {
        None => None,
        Some(c) => Some(fin.plan(&c).ok_or_else(|| {
            Outcome::new(
                ErrorKind::Invalid,
                format!(
                    "'{}' is not a repayment plan of this server (known: {})",
                    c.chars().take(64).collect::<String>(),
                    fin.plan_codes().join(", ")
                ),
            )
            .at(at("plan"))
        })?),
    };
    let apr = match (plan, apr) {
        (Some(p), given) => {
            let plan_apr = fin.plan_apr(p, None);
            if given.is_some_and(|a| a != plan_apr) {
                return Err(invalid(
                    "apr",
                    format!(
                        "The plan {} has an APR of {plan_apr} %; leave apr out or give that",
                        p.code
                    ),
                ));
            }
            if months < p.min_term || months > p.max_term {
                return Err(invalid(
                    "termMonths",
                    format!(
                        "The plan {} runs {} to {} months",
                        p.code, p.min_term, p.max_term
                    ),
                ));
            }
            plan_apr
        }
        (None, Some(a)) => a,
        (None, None) => {
            return Err(Outcome::bad_request(
                "Give an apr (decimal, percent) or a repayment plan (code)",
            )
            .at(at("apr")));
        }
    };
    Ok(QuoteInput {
        amount,
        months,
        apr,
        plan,
    })
}

/// `$credit-quote`: no state change; a token that may read Accounts may quote (and at
/// instance level, only on an Account it may see).
pub(super) async fn quote(
    ctx: &Context,
    _base: &str,
    op: &OperationRequest,
) -> Result<FhirResponse, Outcome> {
    ctx.guard.require(Perm::Read, "Account")?;
    let input = quote_input(&ctx.finance, op)?;
    if let Some(id) = op.id.as_deref() {
        let id = Id::parse(id)?;
        let current = ctx.store.read("Account", id.as_str()).await?;
        if current.is_some() {
            ctx.guard
                .check_stored(ctx, Perm::Read, "Account", id.as_str())
                .await?;
        }
        let account = match current {
            Some(v) if !v.deleted => v,
            _ => return Err(Outcome::not_found(format!("Account/{id} is not known"))),
        };
        let body: Value = account
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        if let Some(line) = ctx.finance.line_currency(&body)
            && line != input.amount.currency()
        {
            return Err(Outcome::new(
                ErrorKind::Invalid,
                format!(
                    "Account/{id} is a {line} credit line; the amount is in {}",
                    input.amount.currency()
                ),
            )
            .at(format!("{}.valueMoney.currency", at("amount"))));
        }
    }
    let minor = input
        .amount
        .minor_units()
        .map_err(|e| e.to_outcome(&format!("{}.valueMoney", at("amount"))))?;
    let schedule = amortize::schedule(minor, input.amount.currency(), input.months, input.apr)
        .map_err(|e| invalid(e.parameter(), e.to_string()))?;
    let start = today();
    let mut response = FhirResponse::new(Status::Ok);
    response.body = Some(Body::Json(parameters(
        &schedule, input.apr, input.plan, start,
    )?));
    Ok(response)
}

/// Today's date in UTC: a schedule's first installment falls due a month from it.
fn today() -> jiff::civil::Date {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date()
}

fn money_json(minor: i64, currency: Currency) -> Value {
    Money::from_minor_units(minor, currency).to_fhir()
}

/// The quote as a Parameters resource.
fn parameters(
    s: &Schedule,
    apr: Decimal,
    plan: Option<&Plan>,
    start: jiff::civil::Date,
) -> Result<Value, Outcome> {
    let c = s.currency;
    let apr_value: Value = apr
        .normalize()
        .to_string()
        .parse::<serde_json::Number>()
        .map(Value::Number)
        .map_err(|_| Outcome::internal("Cannot render the APR"))?;
    let mut out = vec![
        json!({"name": "installment", "valueMoney": money_json(s.installment, c)}),
        json!({"name": "finalInstallment", "valueMoney": money_json(s.final_installment, c)}),
        json!({"name": "totalInterest", "valueMoney": money_json(s.total_interest, c)}),
        json!({"name": "totalPayable", "valueMoney": money_json(s.total_payable(), c)}),
        json!({"name": "apr", "valueDecimal": apr_value}),
        json!({"name": "termMonths", "valueInteger": s.installments.len()}),
    ];
    if let Some(p) = plan {
        out.push(json!({"name": "plan", "valueCode": p.code}));
    }
    for i in &s.installments {
        let due = products::due_date(start, i.number)
            .ok_or_else(|| Outcome::internal("A due date is out of range"))?;
        out.push(json!({
            "name": "schedule",
            "part": [
                {"name": "number", "valueInteger": i.number},
                {"name": "dueDate", "valueDate": due.to_string()},
                {"name": "amount", "valueMoney": money_json(i.amount, c)},
                {"name": "principal", "valueMoney": money_json(i.principal, c)},
                {"name": "interest", "valueMoney": money_json(i.interest, c)},
                {"name": "balance", "valueMoney": money_json(i.balance, c)},
            ]
        }));
    }
    Ok(json!({"resourceType": "Parameters", "parameter": out}))
}
