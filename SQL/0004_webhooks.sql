-- Webhooks: endpoints, the outbox of deliveries, and one row per delivery attempt (Standard Webhooks v1).
-- An event is written here in the same transaction as its cause (a job's final state, a registration), so it
-- exists if and only if its cause committed; lop-notifier posts it afterwards and retries on a schedule.

CREATE TABLE lop.webhook_endpoints (
    id                         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    url                        text NOT NULL CHECK (url ~ '^https?://[^/?#]' AND length(url) <= 2000),
    -- whsec_ + base64 of the signing key. Kept to sign; never logged.
    secret                     text NOT NULL CHECK (secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$'),
    -- While a secret is being rotated, deliveries are signed with the previous one too, until it expires.
    previous_secret            text CHECK (previous_secret ~ '^whsec_[A-Za-z0-9+/]{32,}={0,2}$'),
    previous_secret_expires_at timestamptz,
    -- Event types this endpoint receives; empty means all of them.
    events                     text[] NOT NULL DEFAULT '{}'
        CHECK (events <@ ARRAY['job.completed', 'job.failed', 'job.cancelled', 'model.registered', 'predictor.promoted', 'ping']),
    enabled                    boolean NOT NULL DEFAULT true,
    disabled_reason            text CHECK (length(disabled_reason) <= 500),
    created_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_endpoints_rotation CHECK ((previous_secret IS NULL) = (previous_secret_expires_at IS NULL))
);

COMMENT ON TABLE lop.webhook_endpoints IS 'Receivers of lop''s webhooks: lop webhooks add URL [--events ...]';

CREATE TYPE lop.delivery_state AS ENUM (
    'pending',     -- not yet attempted
    'failed',      -- the last attempt failed; retried from next_attempt_at
    'delivered',   -- a 2xx arrived (final)
    'dead'         -- the schedule ran out, or the endpoint answered 410 (final; lop webhooks redeliver revives it)
);

CREATE TABLE lop.webhook_deliveries (
    -- The webhook-id header: one per event and endpoint, the same on every retry (receivers deduplicate by it).
    id               text PRIMARY KEY DEFAULT ('msg_' || replace(gen_random_uuid()::text, '-', '')),
    endpoint_id      bigint NOT NULL REFERENCES lop.webhook_endpoints (id) ON DELETE CASCADE,
    event_type       text NOT NULL CHECK (event_type IN ('job.completed', 'job.failed', 'job.cancelled', 'model.registered', 'predictor.promoted', 'ping')),
    -- {type, timestamp, data}: posted exactly as its text here, which is what is signed.
    payload          jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object' AND octet_length(payload::text) <= 20480),
    state            lop.delivery_state NOT NULL DEFAULT 'pending',
    attempt          integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- A notifier holds a delivery while it posts; another takes it over once the lease has expired.
    leased_by        text,
    lease_expires_at timestamptz,
    last_error       text CHECK (length(last_error) <= 2000),
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    CONSTRAINT webhook_deliveries_delivered_when_delivered CHECK ((state = 'delivered') = (delivered_at IS NOT NULL))
);

-- Claim: due deliveries in order.
CREATE INDEX webhook_deliveries_due ON lop.webhook_deliveries (next_attempt_at) WHERE state IN ('pending', 'failed');
CREATE INDEX webhook_deliveries_listing ON lop.webhook_deliveries (state, created_at DESC);
CREATE INDEX webhook_deliveries_by_endpoint ON lop.webhook_deliveries (endpoint_id, created_at DESC);

CREATE TABLE lop.webhook_attempts (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id  text NOT NULL REFERENCES lop.webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL CHECK (attempt >= 1),
    notifier     text NOT NULL,
    started_at   timestamptz NOT NULL,
    duration_ms  float8 NOT NULL CHECK (duration_ms >= 0),
    -- The HTTP status, when a response arrived.
    status_code  integer CHECK (status_code BETWEEN 100 AND 999),
    response     text CHECK (length(response) <= 65536),
    error        text CHECK (length(error) <= 2000)
);

CREATE INDEX webhook_attempts_by_delivery ON lop.webhook_attempts (delivery_id, attempt);

-- Writes one event to the outbox: one delivery per enabled endpoint that wants it, and a NOTIFY that wakes the
-- notifiers when the transaction commits. Data too large for a 20 KB payload is replaced by a note saying so
-- (an event never makes its cause fail). Returns the deliveries written.
CREATE FUNCTION lop.emit_webhook_event(event_type text, data jsonb) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    body jsonb := jsonb_build_object('type', event_type,
                                     'timestamp', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                                     'data', data);
    written integer;
BEGIN
    IF octet_length(body::text) > 20000 THEN
        body := jsonb_set(body, '{data}', jsonb_build_object('truncated', true, 'bytes', octet_length(data::text)));
    END IF;
    INSERT INTO lop.webhook_deliveries (endpoint_id, event_type, payload)
    SELECT e.id, event_type, body FROM lop.webhook_endpoints e
    WHERE e.enabled AND (cardinality(e.events) = 0 OR event_type = ANY (e.events));
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written > 0 THEN
        PERFORM pg_notify('lop_webhooks', '');
    END IF;
    RETURN written;
END $$;

-- A job reaching a final state emits job.completed, job.failed (discarded) or job.cancelled in the transaction
-- that finalizes it, whichever code (or hand-written UPDATE) does so.
CREATE FUNCTION lop.jobs_emit_webhook_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    result jsonb := CASE WHEN octet_length(NEW.result::text) <= 12000 THEN NEW.result END;
BEGIN
    PERFORM lop.emit_webhook_event(
        CASE NEW.state WHEN 'completed' THEN 'job.completed' WHEN 'discarded' THEN 'job.failed' ELSE 'job.cancelled' END,
        jsonb_strip_nulls(jsonb_build_object(
            'job', jsonb_build_object('id', NEW.id, 'kind', NEW.kind, 'queue', NEW.queue, 'state', NEW.state, 'attempt', NEW.attempt,
                                      'parent_id', NEW.parent_id, 'created_at', NEW.created_at, 'finalized_at', NEW.finalized_at),
            'result', result,
            'result_truncated', CASE WHEN NEW.result IS NOT NULL AND result IS NULL THEN true END,
            'error', left(NEW.errors -> -1 ->> 'error', 2000),
            'links', jsonb_build_object('status', 'lop status ' || NEW.id, 'artifact', NEW.result ->> 'artifact',
                                        'metrics', CASE WHEN octet_length((NEW.result -> 'metrics')::text) <= 4000 THEN NEW.result -> 'metrics' END))));
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_emit_webhook_event AFTER UPDATE OF state ON lop.jobs FOR EACH ROW
    WHEN (NEW.state IN ('completed', 'discarded', 'cancelled') AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION lop.jobs_emit_webhook_event();
