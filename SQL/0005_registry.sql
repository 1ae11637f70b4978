-- The model registry: base models, the pruned variants made from them and the predictors trained for them,
-- each with its files (sha256 and size), under the configured artifact root; and aliases (champion, candidate,
-- ...) whose every change is recorded by a trigger in the transaction that makes it.

CREATE TYPE lop.model_kind AS ENUM ('base', 'pruned', 'predictor');

CREATE TABLE lop.models (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$'),
    -- Per name: 1, 2, 3, ... (allocated under an advisory lock on the name).
    version        integer NOT NULL CHECK (version >= 1),
    kind           lop.model_kind NOT NULL,
    -- What a pruned model or a predictor was made from, and the predictor that chose a pruned model's strategy.
    base_model_id  bigint REFERENCES lop.models (id) ON DELETE RESTRICT,
    predictor_id   bigint REFERENCES lop.models (id) ON DELETE RESTRICT,
    source_job_id  bigint REFERENCES lop.jobs (id) ON DELETE SET NULL,
    -- A folder relative to the artifact root (never absolute, never '..').
    artifact_path  text NOT NULL CHECK (artifact_path ~ '^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$' AND artifact_path !~ '(^|/)\.\.?(/|$)'),
    -- {"config.json": {"sha256": "...", "bytes": 443}, ...}: every registered file of the folder.
    files          jsonb NOT NULL CHECK (jsonb_typeof(files) = 'object' AND files <> '{}'),
    size_bytes     bigint NOT NULL CHECK (size_bytes >= 0),
    parameters     bigint NOT NULL CHECK (parameters >= 0),
    -- A model's content hash (the key of its samples in lop.samples); a predictor's weights file sha256.
    content_hash   text NOT NULL CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    -- Base models: the held-out data pruned variants are evaluated on, and the calibration data that ranks neurons
    -- (data names or paths relative to the artifact folder).
    eval_data      text,
    calibration    text,
    -- Pruned models: the budget met, the layer-wise ratios and integer sizes, and how the strategy was chosen.
    budget         text,
    budget_kind    text CHECK (budget_kind IN ('fraction', 'parameters', 'flops_per_token', 'bytes')),
    budget_value   float8 CHECK (budget_value > 0),
    strategy       float8[],
    sizes          integer[],
    method         text CHECK (method IN ('predict', 'search')),
    -- A compress request's identity (base, budget, method, predictor): a duplicate reuses this row.
    request_key    text UNIQUE CHECK (request_key ~ '^[0-9a-f]{64}$'),
    metrics        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metrics) = 'object'),
    -- Where it came from, e.g. a predictor's training samples: model_hash, calibration_hash, through_sample_id.
    lineage        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(lineage) = 'object'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT models_name_version UNIQUE (name, version),
    CONSTRAINT models_base_has_no_base CHECK ((kind = 'base') = (base_model_id IS NULL)),
    CONSTRAINT models_base_has_eval_data CHECK (kind <> 'base' OR (eval_data IS NOT NULL AND calibration IS NOT NULL)),
    CONSTRAINT models_pruned_has_strategy CHECK ((kind = 'pruned') = (budget IS NOT NULL AND budget_kind IS NOT NULL AND budget_value IS NOT NULL
        AND strategy IS NOT NULL AND sizes IS NOT NULL AND method IS NOT NULL)),
    CONSTRAINT models_strategy_sizes CHECK (cardinality(strategy) = cardinality(sizes)),
    CONSTRAINT models_predictor_of_pruned CHECK (predictor_id IS NULL OR kind = 'pruned')
);

COMMENT ON TABLE lop.models IS 'The model registry: base models, pruned variants and predictors, with files, metrics and lineage';

CREATE INDEX models_by_base ON lop.models (base_model_id, kind) WHERE base_model_id IS NOT NULL;
CREATE INDEX models_by_content ON lop.models (content_hash);

CREATE TABLE lop.model_aliases (
    name        text NOT NULL,
    alias       text NOT NULL CHECK (alias ~ '^[a-z][a-z0-9_-]{0,39}$'),
    model_id    bigint NOT NULL REFERENCES lop.models (id) ON DELETE RESTRICT,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, alias)
);

-- Every alias change: set (model_id), moved (previous_model_id too) or removed (model_id NULL); by whom
-- (the transaction-local setting lop.actor, else the database user) and for which job (lop.job_id).
CREATE TABLE lop.model_alias_history (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text NOT NULL,
    alias              text NOT NULL,
    model_id           bigint REFERENCES lop.models (id) ON DELETE SET NULL,
    previous_model_id  bigint REFERENCES lop.models (id) ON DELETE SET NULL,
    changed_by         text NOT NULL,
    job_id             bigint REFERENCES lop.jobs (id) ON DELETE SET NULL,
    reason             text,
    changed_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_alias_history_by_name ON lop.model_alias_history (name, alias, id);

-- Before a write: an alias stays within its name, and carries the time it last moved.
CREATE FUNCTION lop.model_aliases_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    model_name text;
BEGIN
    SELECT name INTO model_name FROM lop.models WHERE id = NEW.model_id;
    IF model_name IS DISTINCT FROM NEW.name THEN
        RAISE EXCEPTION 'alias %@% cannot point at model % (named %)', NEW.name, NEW.alias, NEW.model_id, model_name
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'INSERT' OR OLD.model_id <> NEW.model_id THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER model_aliases_check BEFORE INSERT OR UPDATE ON lop.model_aliases
    FOR EACH ROW EXECUTE FUNCTION lop.model_aliases_check();

-- After a write that changed something (an upsert fires only the trigger of what it did): the history row.
CREATE FUNCTION lop.model_aliases_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.model_id = NEW.model_id THEN
        RETURN NULL;
    END IF;
    INSERT INTO lop.model_alias_history (name, alias, model_id, previous_model_id, changed_by, job_id, reason)
    VALUES (coalesce(NEW.name, OLD.name), coalesce(NEW.alias, OLD.alias),
            CASE WHEN TG_OP = 'DELETE' THEN NULL ELSE NEW.model_id END,
            CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.model_id END,
            coalesce(nullif(current_setting('lop.actor', true), ''), session_user),
            nullif(current_setting('lop.job_id', true), '')::bigint,
            nullif(current_setting('lop.reason', true), ''));
    RETURN NULL;
END $$;
CREATE TRIGGER model_aliases_record AFTER INSERT OR UPDATE OR DELETE ON lop.model_aliases
    FOR EACH ROW EXECUTE FUNCTION lop.model_aliases_record();

-- Lineage: the samples behind a model. A predictor's are the samples it was trained on; a pruned model's are
-- those of its predictor, or of the search that chose its strategy.
CREATE FUNCTION lop.model_samples(model_id bigint) RETURNS SETOF lop.samples LANGUAGE sql STABLE AS $$
    SELECT s.*
      FROM lop.models m
      LEFT JOIN lop.models p ON p.id = CASE WHEN m.kind = 'predictor' THEN m.id ELSE m.predictor_id END
      JOIN lop.samples s ON (p.id IS NOT NULL
                             AND s.model_hash = p.lineage->>'model_hash'
                             AND s.calibration_hash = p.lineage->>'calibration_hash'
                             AND s.id <= (p.lineage->>'through_sample_id')::bigint)
                         OR (m.method = 'search' AND s.search_key = m.lineage->>'search_key')
     WHERE m.id = $1
$$;
