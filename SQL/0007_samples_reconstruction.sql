-- Each sample records how the evaluated model's kept weights were set: a searched strategy scored with its FFNs
-- re-fitted by least squares is not comparable with one scored sliced, so the predictor learns one setting.
ALTER TABLE lop.samples ADD COLUMN reconstruction text NOT NULL DEFAULT 'none' CHECK (reconstruction IN ('none', 'least-squares'));
