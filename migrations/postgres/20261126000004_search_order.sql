-- A string parameter's rows in (value, id) order: a page of a broad prefix search walks this
-- index in order and stops after the page, instead of listing every match (see docs/search.md,
-- "Ordered drivers"). Ids compare bytewise, as the page order does. It supersedes the
-- (resource_type, param, norm) index.
CREATE INDEX search_string_order ON search_string (resource_type, param, norm, id COLLATE "C");
DROP INDEX search_string_lookup;
