-- Failover's tables are PostgreSQL's alone (see migrations/postgres/0006): an SQLite file
-- has one coordinator. This version keeps the two backends' schema numbers in step.

SELECT 1;
