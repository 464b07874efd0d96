-- Hospital feeds (issue 15): the durable inbox of received HL7 v2 messages and the
-- dead letters of those that failed.

-- One row per distinct message: the raw bytes as received, their sha256, and the duplicate
-- key (MSH-3|MSH-4|MSH-10; sha256:<hex> for a message whose MSH cannot be read). A
-- re-delivery finds its row and gets the stored ACK back. A row in state 'processing' is
-- leased: a node that died mid-message leaves it to be taken over once the lease expires.
CREATE TABLE feed_message (
    id          TEXT    PRIMARY KEY,
    channel     TEXT    NOT NULL,
    dup_key     TEXT    NOT NULL UNIQUE,
    sha256      TEXT    NOT NULL,
    raw         BLOB    NOT NULL,
    received    INTEGER NOT NULL, -- ms since the Unix epoch
    state       TEXT    NOT NULL CHECK (state IN ('processing', 'accepted', 'failed')),
    lease_until INTEGER,
    ack_code    TEXT    CHECK (ack_code IN ('AA', 'AE', 'AR')),
    ack         TEXT,
    updated     INTEGER NOT NULL
);
CREATE INDEX feed_message_received ON feed_message (received);

-- A failed message, by class, until a replay succeeds (resolved is then set).
CREATE TABLE feed_dead_letter (
    message_id TEXT    PRIMARY KEY REFERENCES feed_message (id) ON DELETE CASCADE,
    class      TEXT    NOT NULL CHECK (class IN ('parse', 'unsupported', 'conflict', 'mapping',
                                                 'validation', 'transient-exhausted')),
    error      TEXT    NOT NULL,
    created    INTEGER NOT NULL,
    replays    INTEGER NOT NULL DEFAULT 0,
    resolved   INTEGER
);
CREATE INDEX feed_dead_letter_class ON feed_dead_letter (class, created);

-- The event time (EVN-2, else MSH-7) of the latest message applied to each resource a feed
-- writes, by its identity (the entry's request URL): an older message arriving later (an A01
-- after the A08 that updated it) does not overwrite newer data.
CREATE TABLE feed_event (
    identity   TEXT    PRIMARY KEY,
    event_ms   INTEGER NOT NULL,
    message_id TEXT    NOT NULL
);
