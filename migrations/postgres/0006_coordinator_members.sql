-- Failover's view of the coordinators (PostgreSQL only; see src/store/leader.rs and
-- src/failover/): the leader lease row also says where the leader serves HTTP (standbys
-- redirect clients there), when it took the lease and from whom; and every coordinator,
-- leader or standby, says once per renewal interval that it is alive and where, so the
-- dashboard can list the standbys.

ALTER TABLE coordinator_leader ADD COLUMN http_url TEXT;
ALTER TABLE coordinator_leader ADD COLUMN acquired_at TIMESTAMPTZ;
ALTER TABLE coordinator_leader ADD COLUMN previous_holder TEXT;

CREATE TABLE coordinator_members (
    holder   TEXT        NOT NULL PRIMARY KEY,
    http_url TEXT,
    role     TEXT        NOT NULL,
    seen_at  TIMESTAMPTZ NOT NULL
);
