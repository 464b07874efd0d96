-- Subscriptions (issue 16): the dispatcher's position in the change feed, the outbox of
-- notifications owed to each Subscription (in commit order), and each Subscription's
-- delivery state. Times are ms since the Unix epoch.

-- How far the change feed has been matched against the active Subscriptions (one row,
-- 'dispatch'; a node only ever moves it forward).
CREATE TABLE subscription_cursor (
    name     TEXT   PRIMARY KEY,
    position BIGINT NOT NULL
);

-- A matching version owed to a Subscription, removed when its receiver acknowledged it. The
-- change feed position orders a Subscription's notifications; the key makes a second
-- dispatcher's insert a no-op.
CREATE TABLE subscription_event (
    subscription  TEXT   NOT NULL,
    seq           BIGINT NOT NULL,
    resource_type TEXT   NOT NULL,
    resource_id   TEXT   NOT NULL,
    version       BIGINT NOT NULL,
    created       BIGINT NOT NULL,
    PRIMARY KEY (subscription, seq)
);

-- Who is delivering a Subscription's notifications right now (one delivery at a time keeps
-- them in order), its consecutive failures, and how many notifications it has sent.
CREATE TABLE subscription_delivery (
    subscription TEXT   PRIMARY KEY,
    lease_owner  TEXT,
    lease_until  BIGINT NOT NULL DEFAULT 0,
    failures     BIGINT NOT NULL DEFAULT 0,
    sent         BIGINT NOT NULL DEFAULT 0
);
