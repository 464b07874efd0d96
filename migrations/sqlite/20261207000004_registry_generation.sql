-- Bumped whenever the search-parameter registry changes: a SearchParameter written or
-- deleted, a custom parameter's index state set. A node compares it with the generation it
-- loaded before it searches or writes, so a parameter stored through one node is known to
-- every node sharing the database at once.
CREATE TABLE registry_generation (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    generation  BIGINT  NOT NULL
);
INSERT INTO registry_generation (id, generation) VALUES (1, 0);
