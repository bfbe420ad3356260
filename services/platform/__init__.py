"""Shared mechanisms of every service; imports no service."""
