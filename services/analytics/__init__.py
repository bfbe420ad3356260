"""analytics: sales facts from the order events, and reports per artisan and period."""
