-- The credit extension's ledger (issue 14): an append-only double-entry journal in integer
-- minor units, and the finance commands' idempotency records. An entry's postings are
-- inserted first and the entry row last: its insert trigger refuses an entry whose postings
-- do not balance per currency, so an unbalanced entry can never exist, whatever the code does.

CREATE SEQUENCE ledger_entry_id;

CREATE TABLE ledger_posting (
    entry    BIGINT  NOT NULL,
    seq      INTEGER NOT NULL,
    account  TEXT    NOT NULL,
    currency TEXT    NOT NULL CHECK (length(currency) = 3),
    amount   BIGINT  NOT NULL CHECK (amount <> 0),
    PRIMARY KEY (entry, seq)
);
CREATE INDEX ledger_posting_account ON ledger_posting (account);

CREATE TABLE ledger_entry (
    id         BIGINT  PRIMARY KEY,
    book       TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    effective  TEXT    NOT NULL,
    created    BIGINT  NOT NULL,
    reverses   BIGINT  REFERENCES ledger_entry (id),
    memo       TEXT
);
CREATE INDEX ledger_entry_book ON ledger_entry (book, id);

CREATE FUNCTION ledger_entry_balances() RETURNS trigger AS $$
BEGIN
    IF (SELECT count(*) FROM ledger_posting WHERE entry = NEW.id) < 2
       OR EXISTS (SELECT 1 FROM ledger_posting WHERE entry = NEW.id
                  GROUP BY currency HAVING sum(amount) <> 0) THEN
        RAISE EXCEPTION 'ledger entry does not balance';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_entry_balances BEFORE INSERT ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_balances();

CREATE FUNCTION ledger_posting_closed() RETURNS trigger AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger_entry WHERE id = NEW.entry) THEN
        RAISE EXCEPTION 'ledger entries are closed once posted';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_posting_closed BEFORE INSERT ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_closed();

CREATE FUNCTION ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER ledger_entry_immutable BEFORE UPDATE OR DELETE ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_posting_immutable BEFORE UPDATE OR DELETE ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

CREATE TABLE finance_command (
    scope       TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    result      TEXT    NOT NULL,
    created     BIGINT  NOT NULL,
    PRIMARY KEY (scope, request_id)
);
CREATE TRIGGER finance_command_immutable BEFORE UPDATE ON finance_command
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
