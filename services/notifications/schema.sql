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
-- A user's messages, newest first (ListNotifications: a page follows on from the last message of
-- the page before, decision 41); it replaced notifications_recipient, which lacked the key.
DROP INDEX IF EXISTS notifications_recipient;
CREATE INDEX IF NOT EXISTS notifications_recipient_pages
    ON notifications (recipient_id, created_at DESC, notification_id DESC);
-- When the user marked a message read (MarkNotificationsRead); the unread ones are counted and
-- listed apart.
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS read_at timestamptz;
DROP INDEX IF EXISTS notifications_unread;
CREATE INDEX IF NOT EXISTS notifications_unread_pages
    ON notifications (recipient_id, created_at DESC, notification_id DESC) WHERE read_at IS NULL;

-- What is mailed in place of `body` when it must not be listed nor pushed (a password reset's
-- code, decision 45); emptied once the message is delivered or given up on.
ALTER TABLE notifications ADD COLUMN IF NOT EXISTS mailed text;

-- Messages whose delivery failed, to be tried again from `next_attempt_at`; a delivered one leaves
-- the table, one given up on stays with `gave_up_at` set.
CREATE TABLE IF NOT EXISTS undelivered (
    notification_id uuid        PRIMARY KEY REFERENCES notifications (notification_id),
    attempts        integer     NOT NULL,
    next_attempt_at timestamptz NOT NULL,
    last_error      text        NOT NULL,
    gave_up_at      timestamptz
);
CREATE INDEX IF NOT EXISTS undelivered_due ON undelivered (next_attempt_at) WHERE gave_up_at IS NULL;

-- Users who closed their account (UserDeleted): their contact and messages are deleted, and no
-- message is stored for them again (an event about them may still arrive late).
CREATE TABLE IF NOT EXISTS forgotten (
    user_id    text        PRIMARY KEY,
    forgotten_at timestamptz NOT NULL DEFAULT now()
);
