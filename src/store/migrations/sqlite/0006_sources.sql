-- keyport schema, version 6: secrets whose value lives elsewhere. Append-only, portable SQL as
-- in 0001.

-- The reference (`vault://…`, `vault-dyn://…`, `exec://…`) resolved at each session start;
-- NULL: the value is the sealed one. A reference's own sealed value is empty.
ALTER TABLE secrets ADD COLUMN source TEXT CHECK (source IS NULL OR length(source) > 0);
-- Whether a session is refused when the value cannot be had (1), or goes on without it (0).
ALTER TABLE secrets ADD COLUMN required INTEGER NOT NULL DEFAULT 0 CHECK (required IN (0, 1));
