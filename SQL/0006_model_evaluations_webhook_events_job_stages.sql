-- Evaluations of registered models, kept as a history (which data, when, which job); two new webhook events
-- (model.evaluated, model.alias_changed) in the webhook tables' CHECKs; the alias trigger emits
-- model.alias_changed for every change, whichever SQL makes it; and a typed stage column on lop.jobs.

CREATE TABLE lop.model_evaluations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model_id      bigint NOT NULL REFERENCES lop.models (id) ON DELETE CASCADE,
    -- The data's name as given (a named set, or a file path as the worker saw it) and its content hash.
    data          text NOT NULL CHECK (length(data) BETWEEN 1 AND 1000),
    data_hash     text CHECK (data_hash ~ '^[0-9a-f]{64}$'),
    -- loss, perplexity, tokens, and accuracy / answer loss on question data.
    metrics       jsonb NOT NULL CHECK (jsonb_typeof(metrics) = 'object' AND metrics ? 'loss'),
    job_id        bigint REFERENCES lop.jobs (id) ON DELETE SET NULL,
    evaluated_by  text NOT NULL,
    evaluated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_evaluations_by_model ON lop.model_evaluations (model_id, data, id DESC);

COMMENT ON TABLE lop.model_evaluations IS 'Every evaluation of a registered model (evaluate jobs); the latest per data is also in lop.models.metrics->evaluations';

ALTER TABLE lop.webhook_endpoints DROP CONSTRAINT webhook_endpoints_events_check;
ALTER TABLE lop.webhook_endpoints ADD CONSTRAINT webhook_endpoints_events_check
    CHECK (events <@ ARRAY['job.completed', 'job.failed', 'job.cancelled', 'model.registered', 'model.evaluated', 'model.alias_changed',
                           'predictor.promoted', 'ping']);
ALTER TABLE lop.webhook_deliveries DROP CONSTRAINT webhook_deliveries_event_type_check;
ALTER TABLE lop.webhook_deliveries ADD CONSTRAINT webhook_deliveries_event_type_check
    CHECK (event_type IN ('job.completed', 'job.failed', 'job.cancelled', 'model.registered', 'model.evaluated', 'model.alias_changed',
                          'predictor.promoted', 'ping'));

-- The alias history row, and a model.alias_changed event with the versions on both sides, in the same
-- transaction (a release flow deploys what becomes @production, however it got there).
CREATE OR REPLACE FUNCTION lop.model_aliases_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    actor      text := coalesce(nullif(current_setting('lop.actor', true), ''), session_user);
    job        bigint := nullif(current_setting('lop.job_id', true), '')::bigint;
    why        text := nullif(current_setting('lop.reason', true), '');
    new_id     bigint := CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE NEW.model_id END;
    old_id     bigint := CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.model_id END;
    model_name text := coalesce(NEW.name, OLD.name);
    alias_name text := coalesce(NEW.alias, OLD.alias);
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.model_id = NEW.model_id THEN
        RETURN NULL;
    END IF;
    INSERT INTO lop.model_alias_history (name, alias, model_id, previous_model_id, changed_by, job_id, reason)
    VALUES (model_name, alias_name, new_id, old_id, actor, job, why);
    PERFORM lop.emit_webhook_event('model.alias_changed', jsonb_strip_nulls(jsonb_build_object(
        'name', model_name, 'alias', alias_name,
        'change', CASE TG_OP WHEN 'INSERT' THEN 'set' WHEN 'DELETE' THEN 'removed' ELSE 'moved' END,
        'model_id', new_id, 'version', (SELECT version FROM lop.models WHERE id = new_id),
        'previous_model_id', old_id, 'previous_version', (SELECT version FROM lop.models WHERE id = old_id),
        'actor', actor, 'job_id', job, 'reason', why)));
    RETURN NULL;
END $$;

-- The stage a multi-stage job is in (compress: strategy, prune, evaluate, register), written with its progress.
ALTER TABLE lop.jobs ADD COLUMN progress_stage text CHECK (progress_stage ~ '^[a-z][a-z0-9_-]{0,39}$');
