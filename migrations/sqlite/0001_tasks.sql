-- Tasks, their attempts, and the node and worker registry (SQLite).
-- Ids are UUIDs as 16-byte blobs; times are Unix milliseconds; payloads and results are
-- JSON bytes.

CREATE TABLE tasks (
    id              BLOB    NOT NULL PRIMARY KEY,
    task_type       TEXT    NOT NULL,
    payload         BLOB    NOT NULL,
    options         TEXT    NOT NULL,
    priority        INTEGER NOT NULL,
    idempotency_key TEXT,
    status          TEXT    NOT NULL,
    retries_used    INTEGER NOT NULL DEFAULT 0,
    lease_losses    INTEGER NOT NULL DEFAULT 0,
    created_at_ms   INTEGER NOT NULL,
    ready_at_ms     INTEGER,
    finished_at_ms  INTEGER,
    result          BLOB,
    error           TEXT,
    dead_seq        INTEGER
);

CREATE UNIQUE INDEX tasks_idempotency_key ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- One index serves recovery (finished_at_ms IS NULL: the unfinished tasks) and retention
-- (the oldest finished). A status index would be rewritten on every lease and completion;
-- this one changes once per task.
CREATE INDEX tasks_finished_at ON tasks (finished_at_ms);
CREATE INDEX tasks_dead ON tasks (dead_seq) WHERE dead_seq IS NOT NULL;

CREATE TABLE attempts (
    task_id        BLOB    NOT NULL,
    number         INTEGER NOT NULL,
    worker         TEXT    NOT NULL,
    node           TEXT    NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    outcome        TEXT,
    error          TEXT,
    PRIMARY KEY (task_id, number)
);

CREATE TABLE nodes (
    id                 TEXT    NOT NULL PRIMARY KEY,
    address            TEXT,
    labels             TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    registered_at_ms   INTEGER NOT NULL,
    heartbeat_at_ms    INTEGER NOT NULL,
    deregistered_at_ms INTEGER
);

CREATE TABLE workers (
    id                 TEXT    NOT NULL PRIMARY KEY,
    node               TEXT    NOT NULL,
    labels             TEXT    NOT NULL,
    task_types         TEXT    NOT NULL,
    status             TEXT    NOT NULL,
    registered_at_ms   INTEGER NOT NULL,
    heartbeat_at_ms    INTEGER NOT NULL,
    deregistered_at_ms INTEGER
);
