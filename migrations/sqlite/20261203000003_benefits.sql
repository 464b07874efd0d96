-- Claim adjudication (issue 14): what each coverage's member has met of the deductible and
-- the out-of-pocket maximum in a plan year. Updated under the coverage's lock in the
-- transaction that stores the ClaimResponse, so claims accumulate in order.

CREATE TABLE benefit_accumulator (
    coverage      TEXT    NOT NULL,
    plan_year     TEXT    NOT NULL,
    deductible    INTEGER  NOT NULL CHECK (deductible >= 0),
    out_of_pocket INTEGER  NOT NULL CHECK (out_of_pocket >= 0),
    updated       INTEGER  NOT NULL,
    PRIMARY KEY (coverage, plan_year)
);
