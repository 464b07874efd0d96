-- Tamper evidence (issue 12): SQLite has no TRUNCATE (its DELETE is refused by the row
-- triggers); links are keyed with the server's audit key from now on, and the key and the
-- signed head live outside the database. Nothing changes in the schema.
SELECT 1;
