-- Each sample records what its reward measured: loss (−L/L_uniform) or accuracy (over the uniform strategy's). A
-- search on question data may use either, and rewards of the two kinds are not comparable.
ALTER TABLE lop.samples ADD COLUMN reward_kind text NOT NULL DEFAULT 'loss' CHECK (reward_kind IN ('loss', 'accuracy'));
