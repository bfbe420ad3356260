"""The `a4co` command line for operators: the dead-letter queue now, status and demos later."""
