-- Workflow definitions, runs and each run's journal (PostgreSQL).
-- A run's journal is an ordered list of events (a step done or failed, a retry of the run)
-- plus the deadlines of its timers; replaying the events in order rebuilds the run. A
-- finished run keeps its final state, so reading it needs no replay.

CREATE TABLE workflow_definitions (
    name          TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    definition    TEXT    NOT NULL,
    created_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE workflow_runs (
    id             UUID    NOT NULL PRIMARY KEY,
    workflow       TEXT    NOT NULL,
    version        TEXT    NOT NULL,
    status         TEXT    NOT NULL,
    input          TEXT    NOT NULL,
    generation     BIGINT  NOT NULL DEFAULT 0,
    error          TEXT,
    state          TEXT,
    steps_done     BIGINT  NOT NULL DEFAULT 0,
    created_at_ms  BIGINT  NOT NULL,
    updated_at_ms  BIGINT  NOT NULL,
    finished_at_ms BIGINT
);

CREATE INDEX workflow_runs_finished_at ON workflow_runs (finished_at_ms);

CREATE TABLE workflow_events (
    run_id UUID    NOT NULL,
    seq    BIGINT  NOT NULL,
    step   TEXT    NOT NULL,
    kind   TEXT    NOT NULL,
    value  TEXT    NOT NULL,
    at_ms  BIGINT  NOT NULL,
    PRIMARY KEY (run_id, seq)
);
