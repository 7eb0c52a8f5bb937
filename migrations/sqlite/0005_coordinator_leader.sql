-- The coordinator leader lease is PostgreSQL's alone (see src/store/leader.rs): an SQLite
-- file has one coordinator, held by the lock file beside it. This version keeps the two
-- backends' schema numbers in step.

SELECT 1;
