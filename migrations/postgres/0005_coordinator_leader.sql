-- The coordinator leader lease (PostgreSQL only; see src/store/leader.rs): one row naming
-- the coordinator that may write, the epoch it took the lease with, and when the lease
-- lapses by the database's clock. A standby takes the row once it is free or lapsed,
-- with a new epoch (also written to coordinator_epoch); writers check the epoch (fencing).

CREATE TABLE coordinator_leader (
    id         INTEGER     NOT NULL PRIMARY KEY CHECK (id = 1),
    holder     TEXT,
    epoch      BIGINT      NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    renewed_at TIMESTAMPTZ
);

INSERT INTO coordinator_leader (id, holder, epoch, expires_at, renewed_at)
VALUES (1, NULL, 0, TIMESTAMPTZ '1970-01-01 00:00:00+00', NULL);
