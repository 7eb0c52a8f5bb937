-- `GET /workflows/runs?status=...` reads the newest finished runs of one status: an index
-- that leads with the status finds them without walking every newer run of other statuses.
CREATE INDEX workflow_runs_status_finished ON workflow_runs (status, finished_at_ms);
