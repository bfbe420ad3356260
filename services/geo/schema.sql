-- geo: the workshops, source of truth for the Redis geo index.
CREATE TABLE IF NOT EXISTS workshops (
    artisan_id   text             PRIMARY KEY,
    display_name text             NOT NULL,
    craft        text             NOT NULL,
    locality     text             NOT NULL,
    latitude     double precision NOT NULL,
    longitude    double precision NOT NULL,
    updated_at   timestamptz      NOT NULL DEFAULT now()
);

-- Products published by each workshop, from ProductPublished.
CREATE TABLE IF NOT EXISTS products (
    product_id text PRIMARY KEY,
    artisan_id text NOT NULL
);
CREATE INDEX IF NOT EXISTS products_artisan ON products (artisan_id);
