-- Core store: immutable resource versions, the current-version pointer, index rows.

-- Every version of every resource, never updated or deleted (see the triggers below).
-- seq orders the whole store for system history; body is the exact JSON text (NULL = delete).
CREATE TABLE resource_version (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    last_updated  INTEGER NOT NULL, -- milliseconds since the Unix epoch, UTC
    method        TEXT    NOT NULL CHECK (method IN ('POST', 'PUT', 'PATCH', 'DELETE')),
    deleted       INTEGER NOT NULL DEFAULT 0,
    body          TEXT CHECK (body IS NULL OR json_valid(body)),
    UNIQUE (resource_type, id, version)
);
CREATE INDEX resource_version_type_seq ON resource_version (resource_type, seq);
CREATE INDEX resource_version_last_updated ON resource_version (last_updated);

CREATE TRIGGER resource_version_immutable_update BEFORE UPDATE ON resource_version
BEGIN
    SELECT RAISE(ABORT, 'resource versions are immutable');
END;
CREATE TRIGGER resource_version_immutable_delete BEFORE DELETE ON resource_version
BEGIN
    SELECT RAISE(ABORT, 'resource versions are immutable');
END;

-- The current version of each resource; writers check `version` to never lose an update.
CREATE TABLE resource (
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    version       INTEGER NOT NULL,
    deleted       INTEGER NOT NULL,
    last_updated  INTEGER NOT NULL,
    PRIMARY KEY (resource_type, id)
) WITHOUT ROWID;

-- Token index rows of current, live resources (identifiers, for conditional interactions).
CREATE TABLE resource_token (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    system        TEXT,
    code          TEXT NOT NULL
);
CREATE INDEX resource_token_lookup ON resource_token (resource_type, param, code, system);
CREATE INDEX resource_token_owner ON resource_token (resource_type, id);

-- Reference search-parameter rows of current, live resources (compartments, _include, chains).
CREATE TABLE resource_reference (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    target_type   TEXT NOT NULL,
    target_id     TEXT NOT NULL
);
CREATE INDEX resource_reference_target ON resource_reference (target_type, target_id, param);
CREATE INDEX resource_reference_owner ON resource_reference (resource_type, id);

-- Every local reference of current, live resources (referential integrity, $everything).
CREATE TABLE resource_link (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    target_type   TEXT NOT NULL,
    target_id     TEXT NOT NULL
);
CREATE INDEX resource_link_target ON resource_link (target_type, target_id);
CREATE INDEX resource_link_owner ON resource_link (resource_type, id);
