-- (resource_type, id) is a prefix of the (resource_type, id, param) owner indexes added with
-- search: every lookup by owner uses those, and the shorter ones only cost a B-tree insert per
-- index row written (about one in six of an AuditEvent's index inserts).
DROP INDEX resource_token_owner;
DROP INDEX resource_reference_owner;
