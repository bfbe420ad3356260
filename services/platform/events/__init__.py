"""Domain events: their registry (read from the contracts), envelope, outbox and consumers."""
