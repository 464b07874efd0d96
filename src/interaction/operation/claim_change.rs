//! A claim adjudicated again after what the patient owed on it was deferred. Every stored
//! ClaimResponse enqueues the job `claim-adjudicated` in its own transaction (the outbox);
//! this is its handler. When an earlier ClaimResponse of the same Claim financed a draw:
//!
//! - the patient now owes **less**: the draw's principal is reduced by the difference in a
//!   ledger `adjustment` entry (what was already paid beyond the new share becomes credit),
//!   and the last installments shrink by it;
//! - the patient now owes **more**: nothing is added to the signed plan. A Contract with
//!   status `offered` proposes a new draw of the difference (accepted with `$credit-draw`
//!   on the new ClaimResponse with that `amount`);
//! - the same: nothing changes.
//!
//! Each (draw, new ClaimResponse) is handled once (a recorded command).

use super::command;
use super::credit_draw::{MEMBER_LIABILITY, credit_line_of};
use super::credit_payment::{Book, reproject};
use crate::fhir::money::Money;
use crate::fhir::outcome::Outcome;
use crate::fhir::types::{Id, Instant};
use crate::interaction::session::Session;
use crate::interaction::{Context, Target, create, integrity, update};
use crate::search::query::{Filter, Pred};
use crate::store::ledger::{NewEntry, Posting};
use serde_json::{Value, json};

/// The job a stored ClaimResponse enqueues.
pub use crate::interaction::write::CLAIM_ADJUDICATED_JOB as KIND;

/// What a re-adjudication did to a deferral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// No earlier adjudication of the claim was deferred (or this one was handled before).
    None,
    /// The draw's principal was reduced by this many minor units.
    Reduced {
        draw: String,
        by: i64,
    },
    /// A new draw of this many minor units is proposed in this Contract.
    Proposed {
        contract: String,
        amount: i64,
    },
    Unchanged,
}

async fn read(s: &mut Session, rt: &str, id: &str) -> Result<Option<Value>, Outcome> {
    Ok(s.tx()
        .current(rt, id)
        .await?
        .filter(|v| !v.deleted)
        .and_then(|v| v.body)
        .and_then(|b| serde_json::from_str(&b).ok()))
}

/// The member's liability a ClaimResponse states, in minor units.
fn liability(cr: &Value) -> Option<Money> {
    cr.get("total")?
        .as_array()?
        .iter()
        .find(|t| {
            t.pointer("/category/coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c.get("code").and_then(Value::as_str) == Some(MEMBER_LIABILITY))
        })
        .and_then(|t| t.get("amount"))
        .and_then(|m| Money::parse(m).ok())
}

/// Handles a stored ClaimResponse (the `claim-adjudicated` job).
pub async fn on_adjudicated(
    ctx: &Context,
    base: &str,
    response_id: &str,
) -> Result<Change, Outcome> {
    let mut s = command::session(ctx, base).await?;
    let Some(cr) = read(&mut s, "ClaimResponse", response_id).await? else {
        return Ok(Change::None);
    };
    if cr.get("outcome").and_then(Value::as_str) == Some("queued") {
        return Ok(Change::None);
    }
    let Some(claim) = cr
        .pointer("/request/reference")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("Claim/"))
        .map(str::to_string)
    else {
        return Ok(Change::None);
    };
    let Some(new_share) = liability(&cr) else {
        return Ok(Change::None);
    };
    // the claim's other adjudications, and the draw one of them financed
    let filters = [Filter::Param {
        param: "request".into(),
        preds: vec![Pred::Ref {
            target_type: Some("Claim".into()),
            id: claim.clone(),
        }],
        negate: false,
    }];
    let earlier = s.tx().find("ClaimResponse", &filters, 1000).await?;
    let mut financed = None;
    for old in earlier.iter().filter(|id| id.as_str() != response_id) {
        if let Some(done) = s
            .tx()
            .ledger()
            .command(&format!("credit-source:ClaimResponse/{old}"), "draw")
            .await?
        {
            let draw = done
                .result
                .trim_matches('"')
                .trim_start_matches("Account/")
                .to_string();
            financed = Some((old.clone(), draw));
        }
    }
    let Some((old_response, draw_id)) = financed else {
        return Ok(Change::None);
    };
    let Some(draw) = read(&mut s, "Account", &draw_id).await? else {
        return Ok(Change::None);
    };
    let Some(line_id) = draw
        .pointer("/partOf/reference")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("Account/"))
        .map(str::to_string)
    else {
        return Ok(Change::None);
    };
    s.tx().lock_key(&format!("book:{line_id}")).await?;
    let scope = format!("claim-change:Account/{draw_id}");
    if s.tx()
        .ledger()
        .command(&scope, response_id)
        .await?
        .is_some()
    {
        return Ok(Change::None);
    }
    let Some(line) = read(&mut s, "Account", &line_id).await? else {
        return Ok(Change::None);
    };
    let Some((currency, _)) = credit_line_of(&ctx.finance, &line) else {
        return Ok(Change::None);
    };
    let entries = s.tx().ledger().entries(&line_id).await?;
    let principal_account = format!("receivable:{draw_id}:principal");
    let drawn: i64 = entries
        .iter()
        .filter(|e| e.kind == "draw" || e.kind == "adjustment")
        .flat_map(|e| e.postings.iter())
        .filter(|p| p.account == principal_account)
        .map(|p| p.amount)
        .sum();
    let new_minor = new_share.minor_units().unwrap_or(drawn);
    let now = Instant::now();
    let today = jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::UTC)
        .date();
    let change = if new_minor < drawn {
        let diff = drawn - new_minor;
        let owed: i64 = entries
            .iter()
            .flat_map(|e| e.postings.iter())
            .filter(|p| p.account == principal_account)
            .map(|p| p.amount)
            .sum();
        let reduce = diff.min(owed.max(0));
        let excess = diff - reduce;
        let mut postings = vec![Posting {
            account: "payable:provider".into(),
            currency: currency.code().into(),
            amount: diff,
        }];
        if reduce > 0 {
            postings.push(Posting {
                account: principal_account.clone(),
                currency: currency.code().into(),
                amount: -reduce,
            });
        }
        if excess > 0 {
            postings.push(Posting {
                account: "credit-balance".into(),
                currency: currency.code().into(),
                amount: -excess,
            });
        }
        s.tx()
            .ledger()
            .post(&NewEntry {
                book: line_id.clone(),
                kind: "adjustment".into(),
                request_id: format!("readjudicated:{response_id}"),
                effective: today.to_string(),
                created: now.millis(),
                reverses: None,
                memo: Some(format!(
                    "ClaimResponse/{response_id} replaces ClaimResponse/{old_response}"
                )),
                postings,
            })
            .await?;
        // the last installments shrink by the difference
        if let Some(terms) = super::credit_payment::terms_of(&ctx.finance, &draw)
            && let Some(mut contract) = read(&mut s, "Contract", &terms).await?
        {
            let mut left = diff;
            if let Some(items) = contract
                .pointer_mut("/term/0/asset/0/valuedItem")
                .and_then(Value::as_array_mut)
            {
                for item in items.iter_mut().rev() {
                    let net = item
                        .get("net")
                        .and_then(|m| Money::parse(m).ok())
                        .and_then(|m| m.minor_units().ok())
                        .unwrap_or(0);
                    let cut = left.min(net);
                    left -= cut;
                    if let Some(obj) = item.as_object_mut() {
                        obj.insert(
                            "net".into(),
                            Money::from_minor_units(net - cut, currency).to_fhir(),
                        );
                    }
                    if left == 0 {
                        break;
                    }
                }
            }
            if let Some(obj) = contract.as_object_mut() {
                obj.remove("meta");
            }
            update::prepare(ctx, "Contract", &Target::Id(terms.clone()), &contract)?;
            update::update_in(&mut s, "Contract", &terms, contract, None).await?;
        }
        let book = Book {
            id: &line_id,
            line,
            currency,
        };
        reproject(ctx, &mut s, book, now, std::slice::from_ref(&draw_id), None).await?;
        Change::Reduced {
            draw: draw_id.clone(),
            by: diff,
        }
    } else if new_minor > drawn {
        let amount = new_minor - drawn;
        let contract_id = Id::generate();
        let patient = super::credit_draw::line_patient(&line)?;
        let more = Money::from_minor_units(amount, currency);
        let proposal = json!({
            "resourceType": "Contract",
            "status": "offered",
            "type": {"coding": [{"system": ctx.finance.system("contract-type"),
                "code": "credit-draw-proposal"}]},
            "issued": now.to_fhir(),
            "subject": [{"reference": format!("Patient/{patient}")}],
            "title": format!("Proposed: defer the further {more} owed on Claim/{claim}"),
            "term": [{"offer": {"text": format!(
                "ClaimResponse/{response_id} says you owe {more} more than the plan you signed \
                 (Account/{draw_id}). Nothing was added to that plan. To defer it too, draw \
                 {more} on Account/{line_id} with $credit-draw (source ClaimResponse/{response_id}, \
                 amount {more})."
            )}}],
        });
        let (_, proposal) = create::prepare(ctx, "Contract", proposal)?;
        create::create_in(
            &mut s,
            "Contract",
            proposal,
            None,
            Some(contract_id.clone()),
        )
        .await?;
        Change::Proposed {
            contract: contract_id.as_str().to_string(),
            amount,
        }
    } else {
        Change::Unchanged
    };
    s.tx()
        .ledger()
        .record_command(&scope, response_id, "", "{}", now.millis())
        .await?;
    integrity::finish(s).await?;
    Ok(change)
}
