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
