-- Actions taken through the dashboard (cancel, retry, redeliver, alias moves), one row each, written in the
-- same transaction as nothing else: the action's own effect is recorded by its table (a job's state, a
-- delivery's schedule, the alias history); this is who asked, from where, and what came of it.
CREATE TABLE lop.web_actions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action     text NOT NULL CHECK (action IN ('cancel', 'retry', 'redeliver', 'alias')),
    target     text NOT NULL CHECK (length(target) BETWEEN 1 AND 200),
    outcome    text NOT NULL CHECK (length(outcome) <= 1000),
    ok         boolean NOT NULL,
    remote     text CHECK (length(remote) <= 200),
    created_at timestamptz NOT NULL DEFAULT now()
);
