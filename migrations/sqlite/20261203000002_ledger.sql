-- The credit extension's ledger (issue 14): an append-only double-entry journal in integer
-- minor units, and the finance commands' idempotency records. An entry's postings are
-- inserted first and the entry row last: its insert trigger refuses an entry whose postings
-- do not balance per currency, so an unbalanced entry can never exist, whatever the code does.

CREATE TABLE ledger_posting (
    entry    INTEGER NOT NULL,
    seq      INTEGER NOT NULL,
    account  TEXT    NOT NULL,
    currency TEXT    NOT NULL CHECK (length(currency) = 3),
    amount   INTEGER NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (entry, seq)
) WITHOUT ROWID;
CREATE INDEX ledger_posting_account ON ledger_posting (account);

CREATE TABLE ledger_entry (
    id         INTEGER PRIMARY KEY,
    book       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    effective  TEXT    NOT NULL,
    created    INTEGER NOT NULL,
    reverses   INTEGER REFERENCES ledger_entry (id),
    memo       TEXT
);
CREATE INDEX ledger_entry_book ON ledger_entry (book, id);

CREATE TRIGGER ledger_entry_balances BEFORE INSERT ON ledger_entry
WHEN (SELECT count(*) FROM ledger_posting WHERE entry = NEW.id) < 2
  OR EXISTS (SELECT 1 FROM ledger_posting WHERE entry = NEW.id
             GROUP BY currency HAVING sum(amount) <> 0)
BEGIN
    SELECT RAISE(ABORT, 'ledger entry does not balance');
END;
CREATE TRIGGER ledger_posting_closed BEFORE INSERT ON ledger_posting
WHEN EXISTS (SELECT 1 FROM ledger_entry WHERE id = NEW.entry)
BEGIN
    SELECT RAISE(ABORT, 'ledger entries are closed once posted');
END;
CREATE TRIGGER ledger_entry_immutable_update BEFORE UPDATE ON ledger_entry
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;
CREATE TRIGGER ledger_entry_immutable_delete BEFORE DELETE ON ledger_entry
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;
CREATE TRIGGER ledger_posting_immutable_update BEFORE UPDATE ON ledger_posting
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;
CREATE TRIGGER ledger_posting_immutable_delete BEFORE DELETE ON ledger_posting
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;

-- One row per finance command (scope: the operation and its target), for replays: the same
-- request id returns the stored result; with a different body it is a conflict.
CREATE TABLE finance_command (
    scope       TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    result      TEXT    NOT NULL CHECK (json_valid(result)),
    created     INTEGER NOT NULL,
    PRIMARY KEY (scope, request_id)
) WITHOUT ROWID;
CREATE TRIGGER finance_command_immutable_update BEFORE UPDATE ON finance_command
BEGIN
    SELECT RAISE(ABORT, 'finance commands are immutable');
END;
