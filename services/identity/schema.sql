-- identity: users and their sessions. Applied at start-up; every statement is idempotent.
CREATE TABLE IF NOT EXISTS users (
    user_id       uuid        PRIMARY KEY,
    email         text        NOT NULL UNIQUE,
    display_name  text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('customer', 'artisan', 'admin')),
    password_hash text        NOT NULL,
    phone_number  text        NOT NULL DEFAULT '',
    address       jsonb       NOT NULL DEFAULT '{}',
    bio           text        NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sessions (
    session_id         uuid        PRIMARY KEY,
    user_id            uuid        NOT NULL REFERENCES users (user_id),
    refresh_hash       text        NOT NULL,
    refresh_expires_at timestamptz NOT NULL,
    revoked_at         timestamptz,
    revoke_reason      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    rotated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
-- The sessions revoked lately, whose revocations identity records in Redis again if Redis lost them.
CREATE INDEX IF NOT EXISTS sessions_revoked ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;

-- Password checks per e-mail address (normalised, an account's or not) in the current window.
CREATE TABLE IF NOT EXISTS login_attempts (
    email        text        PRIMARY KEY,
    attempts     integer     NOT NULL,
    window_start timestamptz NOT NULL
);

-- Codes that reset a forgotten password (decision 45), one row per request of an address, an
-- account's or not (then without user nor code), so that requests are counted alike. Only a code's
-- hash is kept. A code is live while unused, unexpired, and its address under 5 wrong codes; rows
-- are forgotten once older than the hour the requests are counted over.
CREATE TABLE IF NOT EXISTS password_resets (
    reset_id     uuid        PRIMARY KEY,
    email        text        NOT NULL,
    user_id      uuid        REFERENCES users (user_id),
    code_hash    text,
    requested_at timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    wrong_codes  integer     NOT NULL DEFAULT 0,
    used_at      timestamptz
);
CREATE INDEX IF NOT EXISTS password_resets_email ON password_resets (email, requested_at);
CREATE INDEX IF NOT EXISTS password_resets_requested ON password_resets (requested_at);

-- When an account was closed (DeleteAccount): its personal data erased, its e-mail address replaced
-- by "<user id>@deleted.invalid" so that it may sign up again; the row stays for its sessions.
ALTER TABLE users ADD COLUMN IF NOT EXISTS deleted_at timestamptz;

-- The client that started a session (its user-agent, at most 200 characters), and a user's sessions
-- not ended, newest first (ListSessions, decision 49; pages as decision 41's).
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS user_agent text NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS sessions_user_pages ON sessions (user_id, created_at DESC, session_id DESC)
    WHERE revoked_at IS NULL;

-- When an artisan's workshop left the marketplace (ArtisanOffboarded): from then on the artisan may
-- close their account with DeleteAccount, as a customer may (decision 50).
ALTER TABLE users ADD COLUMN IF NOT EXISTS offboarded_at timestamptz;
