-- Node groups' scaling decisions and outcomes (wrangle::launch): one row per event, with
-- the numbers that caused it, so a launch or a termination can be explained afterwards.

CREATE TABLE scaling_events (
    id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
    at_ms      INTEGER NOT NULL,
    group_name TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    node       TEXT,
    reason     TEXT    NOT NULL,
    waiting    INTEGER NOT NULL,
    nodes      INTEGER NOT NULL,
    in_flight  INTEGER NOT NULL,
    error      TEXT
);

CREATE INDEX scaling_events_at ON scaling_events (at_ms);
