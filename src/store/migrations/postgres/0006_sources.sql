-- keyport schema, version 6, on PostgreSQL: secrets whose value lives elsewhere (as
-- migrations/sqlite/0006).

ALTER TABLE secrets ADD COLUMN source text CHECK (source IS NULL OR length(source) > 0);
ALTER TABLE secrets ADD COLUMN required bigint NOT NULL DEFAULT 0 CHECK (required IN (0, 1));
