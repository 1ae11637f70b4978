-- Search: every strategy a search scored (what the predictor learns from), and the parent/child link between
-- a sweep and the searches it fans out to.

-- A sweep's children point at it; when the last one finishes, the parent waiting in 'scheduled' is woken.
ALTER TABLE lop.jobs ADD COLUMN parent_id bigint REFERENCES lop.jobs (id) ON DELETE SET NULL;
CREATE INDEX jobs_children ON lop.jobs (parent_id) WHERE parent_id IS NOT NULL;

-- A job may wait without spending an attempt (a sweep waiting for its children): it goes back to
-- 'scheduled' with its attempt counter restored. snoozes counts how often, for the listing.
ALTER TABLE lop.jobs ADD COLUMN snoozes integer NOT NULL DEFAULT 0 CHECK (snoozes >= 0);

CREATE FUNCTION lop.jobs_wake_parent() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent_queue text;
BEGIN
    UPDATE lop.jobs SET scheduled_at = now()
     WHERE id = NEW.parent_id AND state = 'scheduled' AND scheduled_at > now()
    RETURNING queue INTO parent_queue;
    IF parent_queue IS NOT NULL THEN
        PERFORM pg_notify('lop_jobs', parent_queue);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_wake_parent AFTER UPDATE OF state ON lop.jobs FOR EACH ROW
    WHEN (NEW.parent_id IS NOT NULL AND NEW.state IN ('completed', 'cancelled', 'discarded') AND OLD.state <> NEW.state)
    EXECUTE FUNCTION lop.jobs_wake_parent();

CREATE TABLE lop.samples (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The base model as the job named it (a path now; a registry name later), and the sha256 of its config
    -- and every weight: samples of different weights never mix, whatever the name.
    model            text NOT NULL CHECK (length(model) BETWEEN 1 AND 1000),
    model_hash       text NOT NULL CHECK (model_hash ~ '^[0-9a-f]{64}$'),
    calibration_hash text NOT NULL CHECK (calibration_hash ~ '^[0-9a-f]{64}$'),
    -- The prunable units, in strategy order (language.layers.i.mlp, vision.layers.i.mlp).
    units            text[] NOT NULL CHECK (cardinality(units) > 0),
    importance       text NOT NULL CHECK (importance IN ('lop', 'magnitude', 'wanda')),
    -- The budget searched, as written (0.5, params:N, ...), its kind and value, and the fraction of the
    -- units' parameters the sizes actually keep (the predictor's input).
    budget           text NOT NULL,
    budget_kind      text NOT NULL CHECK (budget_kind IN ('fraction', 'parameters', 'flops_per_token', 'bytes')),
    budget_value     float8 NOT NULL CHECK (budget_value > 0),
    kept_fraction    float8 NOT NULL CHECK (kept_fraction > 0 AND kept_fraction <= 1),
    strategy         float8[] NOT NULL,
    sizes            integer[] NOT NULL,
    reward           float8 NOT NULL,
    loss             float8 NOT NULL CHECK (loss >= 0),
    -- Task metrics beyond the loss, e.g. {"accuracy": 0.8}.
    metrics          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metrics) = 'object'),
    depth            integer NOT NULL DEFAULT 0 CHECK (depth >= 0),
    -- Which search produced it: 'job:ID' for a search job, 'cli:HASH' for `lop search --store`.
    search_key       text NOT NULL CHECK (length(search_key) BETWEEN 1 AND 200),
    job_id           bigint REFERENCES lop.jobs (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT samples_one_size_per_unit CHECK (cardinality(strategy) = cardinality(units) AND cardinality(sizes) = cardinality(units)),
    -- A search stores each strategy once, however often it meets it or is retried.
    CONSTRAINT samples_once_per_search UNIQUE (search_key, sizes)
);

COMMENT ON TABLE lop.samples IS 'Every strategy a search evaluated: its budget, layer-wise keep ratios, integer sizes and calibration loss';

-- "All samples of model M" (the predictor's training set), newest last.
CREATE INDEX samples_by_model ON lop.samples (model_hash, calibration_hash, id);
-- "Best sample per budget": the lowest loss first within each budget.
CREATE INDEX samples_best_per_budget ON lop.samples (model_hash, calibration_hash, budget_kind, budget_value, loss);
CREATE INDEX samples_by_job ON lop.samples (job_id) WHERE job_id IS NOT NULL;
