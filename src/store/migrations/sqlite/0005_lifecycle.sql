-- keyport schema, version 5: a secret's lifecycle. Append-only, portable SQL as in 0001.

-- What it is (decides the default rotation age and masking).
ALTER TABLE secrets ADD COLUMN kind TEXT NOT NULL DEFAULT 'other'
    CHECK (kind IN ('token', 'password', 'key', 'certificate', 'config', 'other'));
-- The secret's own rotation age in seconds (0: never); NULL: its kind's.
ALTER TABLE secrets ADD COLUMN rotate_after_secs INTEGER;
-- The secret's own masking choice; NULL: its kind's.
ALTER TABLE secrets ADD COLUMN mask INTEGER;
-- When the value last changed (not its description or targets), ms since the epoch.
ALTER TABLE secrets ADD COLUMN value_updated_at INTEGER NOT NULL DEFAULT 0;
-- Before this version no change was told apart: the last change is the best known.
UPDATE secrets SET value_updated_at = updated_at;
