-- The coordinator epoch: one row, incremented in the transaction that claims the database
-- at start, so every coordinator run holds a number larger than every run before it.
-- Leases carry it, and a report stamped with an older epoch is refused (fencing).

CREATE TABLE coordinator_epoch (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch INTEGER NOT NULL
);

INSERT INTO coordinator_epoch (id, epoch) VALUES (1, 0);
