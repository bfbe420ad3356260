-- cms: public profiles only. There is deliberately no column for an e-mail, phone or address.
CREATE TABLE IF NOT EXISTS profiles (
    user_id      text        PRIMARY KEY,
    display_name text        NOT NULL DEFAULT '',
    kind         text        NOT NULL DEFAULT 'customer' CHECK (kind IN ('customer', 'artisan')),
    bio          text        NOT NULL DEFAULT '',
    craft        text        NOT NULL DEFAULT '',
    locality     text        NOT NULL DEFAULT '',
    member_since timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
