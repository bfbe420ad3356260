"""cms: public profile pages, with no private field."""
