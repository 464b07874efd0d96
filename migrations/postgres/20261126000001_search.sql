-- Search indexes: one table per search-parameter type, rows for current, live resources only
-- (replaced on every write, removed on delete). `param` is the search parameter code;
-- composite parameters store their components as `code$0`, `code$1`… rows sharing `grp`.
-- Derived parameters: `code:text` (token display text, as a string row) and
-- `code:identifier` (Reference.identifier, as a token row).

ALTER TABLE resource_token ADD COLUMN grp BIGINT;
ALTER TABLE resource_reference ADD COLUMN grp BIGINT;
CREATE INDEX resource_reference_param ON resource_reference (resource_type, param, target_type, target_id);
CREATE INDEX resource_type_updated ON resource (resource_type, last_updated);
-- a resource's rows of one parameter (sort keys, reindex): id before param, so the planner
-- never walks a whole parameter's rows per resource
CREATE INDEX resource_token_owner_param ON resource_token (resource_type, id, param);
CREATE INDEX resource_reference_owner_param ON resource_reference (resource_type, id, param);

-- norm: lower-cased, accents removed (default and :contains); exact: as written (:exact).
CREATE TABLE search_string (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    norm          TEXT COLLATE "C" NOT NULL,
    exact         TEXT COLLATE "C" NOT NULL,
    grp           BIGINT
);
CREATE INDEX search_string_lookup ON search_string (resource_type, param, norm);
CREATE INDEX search_string_owner ON search_string (resource_type, id, param);

-- A date, dateTime, instant, Period or Timing as an inclusive range in milliseconds (UTC).
CREATE TABLE search_date (
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    param         TEXT    NOT NULL,
    low           BIGINT  NOT NULL,
    high          BIGINT  NOT NULL,
    grp           BIGINT
);
CREATE INDEX search_date_low ON search_date (resource_type, param, low);
CREATE INDEX search_date_high ON search_date (resource_type, param, high);
CREATE INDEX search_date_owner ON search_date (resource_type, id, param);

CREATE TABLE search_number (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    value         DOUBLE PRECISION NOT NULL,
    grp           BIGINT
);
CREATE INDEX search_number_lookup ON search_number (resource_type, param, value);
CREATE INDEX search_number_owner ON search_number (resource_type, id, param);

-- cvalue/ccode: the value in the UCUM base unit, where the conversion is a simple factor.
CREATE TABLE search_quantity (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    value         DOUBLE PRECISION NOT NULL,
    system        TEXT,
    code          TEXT,
    unit          TEXT,
    cvalue        DOUBLE PRECISION,
    ccode         TEXT,
    grp           BIGINT
);
CREATE INDEX search_quantity_lookup ON search_quantity (resource_type, param, value);
CREATE INDEX search_quantity_canonical ON search_quantity (resource_type, param, ccode, cvalue);
CREATE INDEX search_quantity_owner ON search_quantity (resource_type, id, param);

-- uri parameters, canonical references and references to other servers.
CREATE TABLE search_uri (
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    param         TEXT NOT NULL,
    value         TEXT COLLATE "C" NOT NULL,
    grp           BIGINT
);
CREATE INDEX search_uri_lookup ON search_uri (resource_type, param, value);
CREATE INDEX search_uri_owner ON search_uri (resource_type, id, param);

-- Paging cursors: the query and the position of a page, so links carry only an opaque id.
CREATE TABLE search_cursor (
    id      TEXT    PRIMARY KEY,
    created BIGINT  NOT NULL,
    payload TEXT    NOT NULL
);
CREATE INDEX search_cursor_created ON search_cursor (created);

-- Custom SearchParameters and their index state ('reindexing' until every row is written).
CREATE TABLE search_param_state (
    base    TEXT    NOT NULL,
    code    TEXT    NOT NULL,
    status  TEXT    NOT NULL,
    updated BIGINT  NOT NULL,
    PRIMARY KEY (base, code)
);
