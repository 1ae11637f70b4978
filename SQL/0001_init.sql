-- lop's schema. Everything lop stores lives in it; later migrations add the queue, samples, registry and webhooks.
-- (`lop migrate` creates the schema and lop.schema_migrations before the first migration, so that it can record it.)
CREATE SCHEMA IF NOT EXISTS lop;
COMMENT ON SCHEMA lop IS 'lop: on-demand structured pruning of multimodal LLMs (jobs, samples, models, webhooks)';
COMMENT ON TABLE lop.schema_migrations IS 'Applied migrations from SQL/: version, file name, sha256 of the file, when';
