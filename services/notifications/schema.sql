-- notifications: what was said to whom, and how to reach them (kept here, never published).
CREATE TABLE IF NOT EXISTS contacts (
    user_id      text PRIMARY KEY,
    email        text NOT NULL,
    display_name text NOT NULL
);

CREATE TABLE IF NOT EXISTS notifications (
    notification_id uuid        PRIMARY KEY,
    recipient_id    text        NOT NULL,
    topic           text        NOT NULL,
    title           text        NOT NULL,
    body            text        NOT NULL,
    subject_id      text        NOT NULL,
    event_id        uuid        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (recipient_id, event_id)
);
CREATE INDEX IF NOT EXISTS notifications_recipient ON notifications (recipient_id, created_at DESC);
