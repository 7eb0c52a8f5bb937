-- Node groups' scaling decisions and outcomes (wrangle::launch): one row per event, with
-- the numbers that caused it, so a launch or a termination can be explained afterwards.

CREATE TABLE scaling_events (
    id         BIGSERIAL NOT NULL PRIMARY KEY,
    at_ms      BIGINT    NOT NULL,
    group_name TEXT      NOT NULL,
    action     TEXT      NOT NULL,
    node       TEXT,
    reason     TEXT      NOT NULL,
    waiting    BIGINT    NOT NULL,
    nodes      BIGINT    NOT NULL,
    in_flight  BIGINT    NOT NULL,
    error      TEXT
);

CREATE INDEX scaling_events_at ON scaling_events (at_ms);
