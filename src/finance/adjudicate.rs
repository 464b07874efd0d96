//! Native claim adjudication, pure and exact in minor units: a plan's rules (allowed amount,
//! copay and coinsurance per service; deductible and out-of-pocket maximum per plan year;
//! pend rules) and what the member has met so far this plan year decide, per item, the
//! `submitted`, `eligible`, `deductible`, `copay`, `coinsurance`, `benefit` amounts and the
//! member's liability. The InsurancePlan encoding these rules come from is read in the
//! operation (docs/finance.md, *Benefit plans*).

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};

/// What a plan pays for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRule {
    /// `system|code` of the service (a Claim item's `productOrService`).
    pub code: String,
    /// The most the plan recognizes for one unit of it.
    pub allowed: i64,
    /// A fixed amount the member pays per item, after the deductible.
    pub copay: i64,
    /// The member's share of the rest, in percent.
    pub coinsurance: Decimal,
    /// Every claim with this service is queued for manual review.
    pub pend: bool,
}

/// A plan's rules, amounts in minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRules {
    pub currency: String,
    /// Per plan year.
    pub deductible: i64,
    /// Per plan year: the most a member pays (deductible, copays and coinsurance together).
    pub out_of_pocket_max: i64,
    /// Claims whose submitted total is above this are queued for manual review.
    pub pend_above: Option<i64>,
    pub services: Vec<ServiceRule>,
}

/// What the member has met this plan year, before a claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accumulated {
    pub deductible: i64,
    pub out_of_pocket: i64,
}

/// One item of a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemIn {
    pub sequence: u32,
    /// `system|code`.
    pub code: String,
    /// The amount claimed for the item (its `net`).
    pub submitted: i64,
    pub quantity: i64,
}

/// One adjudicated item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemOut {
    pub sequence: u32,
    pub submitted: i64,
    pub eligible: i64,
    pub deductible: i64,
    pub copay: i64,
    pub coinsurance: i64,
    /// What the member owes for it (deductible + copay + coinsurance, within the maximum).
    pub member: i64,
    /// What the plan pays.
    pub benefit: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Every item adjudicated.
    Complete,
    /// Some items adjudicated, some refused (unknown services).
    Partial,
    /// Nothing adjudicated.
    Error,
    /// A pend rule fired: a reviewer finishes the claim.
    Queued,
}

impl Disposition {
    pub fn code(self) -> &'static str {
        match self {
            Disposition::Complete => "complete",
            Disposition::Partial => "partial",
            Disposition::Error => "error",
            Disposition::Queued => "queued",
        }
    }
}

/// The result of adjudicating one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjudication {
    pub disposition: Disposition,
    pub items: Vec<ItemOut>,
    /// Items refused, with why.
    pub refused: Vec<(u32, String)>,
    /// Why the claim was queued.
    pub pended: Vec<String>,
    /// What the member has met after this claim.
    pub accumulated: Accumulated,
}

impl Adjudication {
    pub fn total(&self, f: impl Fn(&ItemOut) -> i64) -> i64 {
        self.items.iter().map(f).sum()
    }
}

fn percent_of(amount: i64, pct: Decimal) -> i64 {
    (Decimal::from(amount) * pct / Decimal::from(100))
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .unwrap_or(amount)
}

/// Adjudicates `items` under `rules`, given what the member has met this plan year.
pub fn adjudicate(rules: &PlanRules, before: Accumulated, items: &[ItemIn]) -> Adjudication {
    let submitted_total: i64 = items.iter().map(|i| i.submitted).sum();
    let mut pended = Vec::new();
    if let Some(limit) = rules.pend_above
        && submitted_total > limit
    {
        pended.push(format!(
            "the claim's total of {submitted_total} minor units is above the plan's review threshold of {limit}"
        ));
    }
    for item in items {
        if rules.services.iter().any(|s| s.code == item.code && s.pend) {
            pended.push(format!(
                "item {} ({}) needs a reviewer under the plan",
                item.sequence, item.code
            ));
        }
    }
    if !pended.is_empty() {
        return Adjudication {
            disposition: Disposition::Queued,
            items: Vec::new(),
            refused: Vec::new(),
            pended,
            accumulated: before,
        };
    }
    let mut acc = before;
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for item in items {
        let Some(rule) = rules.services.iter().find(|s| s.code == item.code) else {
            refused.push((
                item.sequence,
                format!("{} is not a service the plan covers", item.code),
            ));
            continue;
        };
        let allowed = rule.allowed.saturating_mul(item.quantity.max(1));
        let eligible = item.submitted.min(allowed).max(0);
        let deductible = eligible.min((rules.deductible - acc.deductible).max(0));
        let copay = rule.copay.min(eligible - deductible).max(0);
        let coinsurance = percent_of(eligible - deductible - copay, rule.coinsurance).max(0);
        // the out-of-pocket maximum caps what the member pays this year: coinsurance goes
        // first, then the copay, then the deductible
        let room = (rules.out_of_pocket_max - acc.out_of_pocket).max(0);
        let mut over = (deductible + copay + coinsurance - room).max(0);
        let mut cut = |part: i64| {
            let c = part.min(over);
            over -= c;
            part - c
        };
        let coinsurance = cut(coinsurance);
        let copay = cut(copay);
        let deductible = cut(deductible);
        let member = deductible + copay + coinsurance;
        acc.deductible += deductible;
        acc.out_of_pocket += member;
        out.push(ItemOut {
            sequence: item.sequence,
            submitted: item.submitted,
            eligible,
            deductible,
            copay,
            coinsurance,
            member,
            benefit: eligible - member,
        });
    }
    let disposition = match (out.is_empty(), refused.is_empty()) {
        (true, _) => Disposition::Error,
        (false, true) => Disposition::Complete,
        (false, false) => Disposition::Partial,
    };
    Adjudication {
        disposition,
        items: out,
        refused,
        pended,
        accumulated: acc,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> PlanRules {
        PlanRules {
            currency: "USD".into(),
            deductible: 50_000,
            out_of_pocket_max: 100_000,
            pend_above: Some(1_000_000),
            services: vec![
                ServiceRule {
                    code: "http://www.ama-assn.org/go/cpt|99213".into(),
                    allowed: 15_000,
                    copay: 2_500,
                    coinsurance: Decimal::from(20),
                    pend: false,
                },
                ServiceRule {
                    code: "http://www.ama-assn.org/go/cpt|70553".into(),
                    allowed: 120_000,
                    copay: 0,
                    coinsurance: Decimal::from(20),
                    pend: false,
                },
                ServiceRule {
                    code: "http://www.ama-assn.org/go/cpt|27447".into(),
                    allowed: 3_000_000,
                    copay: 0,
                    coinsurance: Decimal::from(10),
                    pend: true,
                },
            ],
        }
    }

    fn item(seq: u32, code: &str, submitted: i64) -> ItemIn {
        ItemIn {
            sequence: seq,
            code: format!("http://www.ama-assn.org/go/cpt|{code}"),
            submitted,
            quantity: 1,
        }
    }

    #[test]
    fn deductible_then_copay_then_coinsurance() {
        // an office visit billed at 200.00, allowed 150.00, nothing met yet: all of it goes
        // to the deductible
        let a = adjudicate(
            &rules(),
            Accumulated::default(),
            &[item(1, "99213", 20_000)],
        );
        assert_eq!(a.disposition, Disposition::Complete);
        let i = &a.items[0];
        assert_eq!(
            (i.eligible, i.deductible, i.copay, i.coinsurance),
            (15_000, 15_000, 0, 0)
        );
        assert_eq!((i.member, i.benefit), (15_000, 0));
        // with the deductible met: 25.00 copay, 20 % of the other 125.00, the plan pays 100.00
        let met = Accumulated {
            deductible: 50_000,
            out_of_pocket: 50_000,
        };
        let a = adjudicate(&rules(), met, &[item(1, "99213", 20_000)]);
        let i = &a.items[0];
        assert_eq!((i.deductible, i.copay, i.coinsurance), (0, 2_500, 2_500));
        assert_eq!((i.member, i.benefit), (5_000, 10_000));
        assert_eq!(a.accumulated.out_of_pocket, 55_000);
    }

    #[test]
    fn the_deductible_accumulates_across_items_and_the_maximum_caps() {
        // an MRI at 1,200.00 allowed: 500.00 deductible, then 20 % of 700.00 = 140.00
        let a = adjudicate(
            &rules(),
            Accumulated::default(),
            &[item(1, "70553", 150_000)],
        );
        let i = &a.items[0];
        assert_eq!(
            (i.eligible, i.deductible, i.coinsurance),
            (120_000, 50_000, 14_000)
        );
        assert_eq!(i.member, 64_000);
        // near the maximum: only 100.00 of room left, coinsurance is cut first
        let near = Accumulated {
            deductible: 50_000,
            out_of_pocket: 90_000,
        };
        let a = adjudicate(
            &rules(),
            near,
            &[item(1, "70553", 120_000), item(2, "99213", 15_000)],
        );
        assert_eq!(a.items[0].member, 10_000);
        assert_eq!(a.items[0].benefit, 110_000);
        assert_eq!(a.items[1].member, 0, "the maximum is reached");
        assert_eq!(a.accumulated.out_of_pocket, 100_000);
    }

    #[test]
    fn unknown_services_partial_or_error_and_pend_rules_queue() {
        let a = adjudicate(
            &rules(),
            Accumulated::default(),
            &[item(1, "99213", 10_000), item(2, "00000", 5_000)],
        );
        assert_eq!(a.disposition, Disposition::Partial);
        assert_eq!(a.refused.len(), 1);
        let a = adjudicate(&rules(), Accumulated::default(), &[item(1, "00000", 5_000)]);
        assert_eq!(a.disposition, Disposition::Error);
        let a = adjudicate(
            &rules(),
            Accumulated::default(),
            &[item(1, "27447", 2_000_000)],
        );
        assert_eq!(a.disposition, Disposition::Queued);
        assert_eq!(a.pended.len(), 2, "{:?}", a.pended);
        assert_eq!(a.accumulated, Accumulated::default());
    }
}
