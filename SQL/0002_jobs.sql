-- The job queue. Every piece of compute work is a row here that a worker claims, runs and finalizes.
-- The state machine lives in the schema: CHECKs reject what a hand-written INSERT can get wrong, and
-- every transition in lop's code names the state it comes from.

CREATE TYPE lop.job_state AS ENUM (
    'available',   -- may be claimed now
    'scheduled',   -- waits for scheduled_at (submitted with --at)
    'running',     -- claimed; attempted_by holds it while lease_expires_at is in the future
    'retryable',   -- failed; may be claimed again from scheduled_at on (backoff)
    'completed', 'cancelled', 'discarded'   -- final
);

CREATE TABLE lop.jobs (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('compress', 'search', 'sweep', 'train', 'evaluate', 'noop', 'sleep')),
    queue               text NOT NULL DEFAULT 'default' CHECK (queue ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    state               lop.job_state NOT NULL DEFAULT 'available',
    -- 1 runs first, 4 last.
    priority            smallint NOT NULL DEFAULT 2 CHECK (priority BETWEEN 1 AND 4),
    args                jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(args) = 'object'),
    attempt             integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts        integer NOT NULL DEFAULT 5 CHECK (max_attempts > 0 AND max_attempts <= 1000),
    scheduled_at        timestamptz NOT NULL DEFAULT now(),
    attempted_at        timestamptz,
    attempted_by        text,
    lease_expires_at    timestamptz,
    progress            real NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    progress_message    text CHECK (length(progress_message) <= 500),
    result              jsonb,
    -- One entry per failed attempt: {"attempt", "at", "error", "worker"}.
    errors              jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(errors) = 'array'),
    unique_key          text CHECK (length(unique_key) BETWEEN 1 AND 500),
    cancel_requested_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    finalized_at        timestamptz,
    CONSTRAINT jobs_finalized_when_final CHECK ((state IN ('completed', 'cancelled', 'discarded')) = (finalized_at IS NOT NULL)),
    CONSTRAINT jobs_running_has_lease CHECK (state <> 'running' OR (lease_expires_at IS NOT NULL AND attempted_by IS NOT NULL)),
    CONSTRAINT jobs_attempts_within_max CHECK (attempt <= max_attempts)
);

COMMENT ON TABLE lop.jobs IS 'Work for lop-worker: INSERT INTO lop.jobs (kind, args) VALUES (''compress'', ''{...}'') is a valid submission';

-- Claim: the jobs that can run, in the claim query's order.
CREATE INDEX jobs_claimable ON lop.jobs (priority, scheduled_at, id) WHERE state IN ('available', 'scheduled', 'retryable');
-- Rescue: running jobs by lease.
CREATE INDEX jobs_running_leases ON lop.jobs (lease_expires_at) WHERE state = 'running';
-- One live job per unique key; finalized jobs free the key.
CREATE UNIQUE INDEX jobs_unique_live_key ON lop.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state NOT IN ('completed', 'cancelled', 'discarded');
-- Listings (lop list --state/--kind, newest first) and pruning of old finalized jobs.
CREATE INDEX jobs_state_listing ON lop.jobs (state, id DESC);
CREATE INDEX jobs_kind_listing ON lop.jobs (kind, id DESC);
CREATE INDEX jobs_finalized ON lop.jobs (finalized_at) WHERE finalized_at IS NOT NULL;

-- A job submitted for later starts as 'scheduled'.
CREATE FUNCTION lop.jobs_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'available' AND NEW.scheduled_at > now() THEN
        NEW.state := 'scheduled';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER jobs_before_insert BEFORE INSERT ON lop.jobs FOR EACH ROW EXECUTE FUNCTION lop.jobs_before_insert();

-- Idle workers LISTEN on lop_jobs and wake at once (the payload is the queue; equal payloads in one
-- transaction are sent once). Workers also poll, so a lost notification only delays a job.
CREATE FUNCTION lop.jobs_notify_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('lop_jobs', NEW.queue);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_notify_insert AFTER INSERT ON lop.jobs FOR EACH ROW EXECUTE FUNCTION lop.jobs_notify_insert();

-- Periodic jobs: one row per (schedule, fire time), inserted in the same transaction as the job it enqueues,
-- so a fire time is enqueued exactly once however many workers race for it (and never again after the job
-- completes, which a unique key on live jobs alone would allow).
CREATE TABLE lop.periodic_runs (
    name       text NOT NULL,
    fire_time  timestamptz NOT NULL,
    job_id     bigint REFERENCES lop.jobs (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, fire_time)
);
