-- 001: the queue, the op log and the event streams.
-- Times are microseconds since the Unix epoch.  Blobs are msgpack.

CREATE TABLE submissions (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL,
  path        TEXT,
  idem_key    TEXT,
  op          TEXT,
  spec        TEXT,
  created     INTEGER NOT NULL
);

-- only submissions with a key are indexed (most have none)
CREATE UNIQUE INDEX submissions_key ON submissions(idem_key) WHERE idem_key IS NOT NULL;

CREATE TABLE jobs (
  id            INTEGER PRIMARY KEY,
  submission    INTEGER NOT NULL REFERENCES submissions(id),
  name          TEXT NOT NULL,
  kind          TEXT NOT NULL,
  params        BLOB,
  state         TEXT NOT NULL,           -- see docs/states.md
  priority      INTEGER NOT NULL DEFAULT 0,
  attempt       INTEGER NOT NULL DEFAULT 0,  -- current (or last) attempt number
  attempt_open  INTEGER NOT NULL DEFAULT 0,  -- 1 while that attempt may resume
  failures      INTEGER NOT NULL DEFAULT 0,  -- attempts counted against max_attempts
  max_attempts  INTEGER NOT NULL DEFAULT 3,
  crashes       INTEGER NOT NULL DEFAULT 0,  -- consecutive attempts cut by a daemon crash
  run_after     INTEGER NOT NULL DEFAULT 0,
  delayed       INTEGER NOT NULL DEFAULT 0,  -- 1 while run_after is in the future
  timeout       INTEGER NOT NULL DEFAULT 0,
  retry         INTEGER NOT NULL DEFAULT -1, -- re-run after an interrupted attempt: -1 kind default
  when_always   INTEGER NOT NULL DEFAULT 0,
  deps_pending  INTEGER NOT NULL DEFAULT 0,
  dependents    INTEGER NOT NULL DEFAULT 0,  -- jobs that need this one
  epoch         INTEGER NOT NULL DEFAULT 0,  -- fencing token, bumped by every claim
  lease_owner   TEXT,
  lease_expires INTEGER,
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  rollback_reason TEXT,                  -- why it is rolling back: failed, failed_permanent,
                                         -- cancelled, timed_out, interrupted, crashes
  exit_code     INTEGER,
  error         TEXT,
  result        BLOB,
  created       INTEGER NOT NULL,
  started       INTEGER,
  finished      INTEGER
);
-- ready to claim, in claim order; delayed jobs wait in jobs_due until
-- their run_after passes (claim promotes them), so neither index is scanned
-- past what a claim takes
CREATE INDEX jobs_ready ON jobs(priority DESC, id)
  WHERE state = 'queued' AND deps_pending = 0 AND delayed = 0;
CREATE INDEX jobs_due ON jobs(run_after) WHERE state = 'queued' AND delayed = 1;
CREATE INDEX jobs_state ON jobs(state, id);
CREATE INDEX jobs_submission ON jobs(submission, id);
CREATE INDEX jobs_lease ON jobs(lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE job_needs (
  job    INTEGER NOT NULL REFERENCES jobs(id),
  needs  INTEGER NOT NULL REFERENCES jobs(id),
  PRIMARY KEY (needs, job)
) WITHOUT ROWID;

CREATE TABLE attempts (
  job       INTEGER NOT NULL REFERENCES jobs(id),
  attempt   INTEGER NOT NULL,
  op        TEXT NOT NULL,
  node      TEXT NOT NULL,
  epochs    TEXT NOT NULL,                 -- claims of this attempt, "3,4"
  started   INTEGER NOT NULL,
  finished  INTEGER,
  outcome   TEXT,
  error     TEXT,
  PRIMARY KEY (job, attempt)
) WITHOUT ROWID;

-- The op log: one row per step of an attempt.  The undo record is committed
-- (state 'begun') before the step touches anything.
CREATE TABLE steps (
  job            INTEGER NOT NULL,
  attempt        INTEGER NOT NULL,
  seq            INTEGER NOT NULL,
  name           TEXT NOT NULL,
  state          TEXT NOT NULL,  -- begun done failed undoing undone undo_failed
  undo           BLOB,
  result         BLOB,
  error          TEXT,
  started        INTEGER NOT NULL,
  finished       INTEGER,
  undo_started   INTEGER,
  undo_finished  INTEGER,
  undo_error     TEXT,
  undo_runs      INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (job, attempt, seq)
) WITHOUT ROWID;

CREATE TABLE events (
  job     INTEGER NOT NULL,
  seq     INTEGER NOT NULL,
  ts      INTEGER NOT NULL,
  stream  TEXT NOT NULL,
  data    BLOB,
  PRIMARY KEY (job, seq)
) WITHOUT ROWID;

CREATE TABLE nodes (
  id        TEXT PRIMARY KEY,
  pid       INTEGER,
  started   INTEGER,
  heartbeat INTEGER,
  clean_stop INTEGER NOT NULL DEFAULT 0
);
