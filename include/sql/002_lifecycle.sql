-- 002: sequence lifecycle: variant assignments kept per enrollment, winner decisions, archive.
ALTER TABLE enrollments ADD COLUMN variants jsonb NOT NULL DEFAULT '{}'::jsonb;  -- step -> arm, fixed at first attempt

CREATE TABLE variant_decisions (
    version_id  bigint NOT NULL REFERENCES sequence_versions (id),
    step        text   NOT NULL,
    winner      text   NOT NULL,
    decided_at  timestamptz NOT NULL,
    data        jsonb  NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (version_id, step)
);
