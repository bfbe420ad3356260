"""loyalty: each customer's points ledger."""
