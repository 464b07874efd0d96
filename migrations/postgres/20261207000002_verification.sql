-- The last verification of the audit chain and of the ledger (kind 'audit' or 'ledger'): when
-- it ran, whether it passed and its one-line summary. Written by `healporium audit verify`,
-- `healporium finance verify` and the hourly `verify` job; shown by GET /metrics.
CREATE TABLE verification (
    kind    TEXT    PRIMARY KEY,
    at      BIGINT  NOT NULL,
    ok      BOOLEAN NOT NULL,
    detail  TEXT    NOT NULL
);
