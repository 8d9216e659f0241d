-- keyport schema, version 3: each file secret's last delivery, per place (an OS account, or a
-- workspace login as `workspace:<id>:<login>`), so a file that could not be written is shown
-- and never looks delivered. Append-only, portable SQL as in 0001.

CREATE TABLE secret_deliveries (
    secret_id  INTEGER NOT NULL REFERENCES secrets(id) ON DELETE CASCADE,
    place      TEXT    NOT NULL,
    path       TEXT    NOT NULL,   -- where it was to be written there
    outcome    TEXT    NOT NULL,   -- 'written' | 'unchanged' | 'failed'
    reason     TEXT,               -- why it failed (an OS error, never a value)
    at         INTEGER NOT NULL,
    PRIMARY KEY (secret_id, place)
);
