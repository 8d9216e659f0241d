-- keyport schema, version 7: signing in to the web pages. Append-only, portable SQL as in 0001.

-- One-time sign-in links (`keyport web-login`), by the hex SHA-256 of their token: the token
-- itself is only in the link. Consumed (deleted) by the POST that signs in.
CREATE TABLE web_links (
    token_hash TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Signed-in browsers, by the hex SHA-256 of their cookie's token. A session ends at
-- `expires_at` (absolute), after the idle timeout past `last_seen_at`, at sign-out, or with
-- its user.
CREATE TABLE web_sessions (
    token_hash   TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);
