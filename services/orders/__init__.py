"""orders: customers' orders and the order saga (Order -> Payment -> Inventory)."""
