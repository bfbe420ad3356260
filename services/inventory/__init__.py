"""inventory: stock per product and reservations for orders."""
