-- geo: the workshops, source of truth for the Redis geo index.
CREATE TABLE IF NOT EXISTS workshops (
    artisan_id   text             PRIMARY KEY,
    display_name text             NOT NULL,
    craft        text             NOT NULL,
    locality     text             NOT NULL,
    latitude     double precision NOT NULL,
    longitude    double precision NOT NULL,
    updated_at   timestamptz      NOT NULL DEFAULT now(),
    -- One more on every change: a location kept in memory is replaced only by a newer one.
    version      bigint           NOT NULL DEFAULT 1
);
-- Data directories made before the version column.
ALTER TABLE workshops ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 1;
-- The artisans service's revision of the workshop (UpdateArtisan; its onboarding is 1): an older
-- event arriving late changes nothing.
ALTER TABLE workshops ADD COLUMN IF NOT EXISTS revision integer NOT NULL DEFAULT 1;
-- A workshop that left the marketplace (ArtisanOffboarded, its last revision): off the map for good.
ALTER TABLE workshops ADD COLUMN IF NOT EXISTS offboarded boolean NOT NULL DEFAULT false;

-- Products published by each workshop, from ProductPublished, and those withdrawn from sale since
-- (ProductWithdrawn), which the map counts no more.
CREATE TABLE IF NOT EXISTS products (
    product_id text PRIMARY KEY,
    artisan_id text NOT NULL
);
ALTER TABLE products ADD COLUMN IF NOT EXISTS withdrawn boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS products_artisan ON products (artisan_id);
