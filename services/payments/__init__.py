"""payments: payment methods, charges and refunds."""
