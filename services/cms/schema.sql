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
-- The artisans service's revision of the workshop shown (its onboarding is 1; 0 for a page without
-- a workshop): an artisan's page shows the workshop, which an older workshop event arriving late
-- does not change, nor the changes of the person's own profile.
ALTER TABLE profiles ADD COLUMN IF NOT EXISTS workshop_revision integer NOT NULL DEFAULT 0;
-- Users who closed their account (UserDeleted): their page is deleted and never made again.
CREATE TABLE IF NOT EXISTS forgotten (
    user_id      text        PRIMARY KEY,
    forgotten_at timestamptz NOT NULL DEFAULT now()
);
-- When an artisan's workshop left the marketplace (ArtisanOffboarded): the page stays, and says so.
ALTER TABLE profiles ADD COLUMN IF NOT EXISTS offboarded_at timestamptz;
