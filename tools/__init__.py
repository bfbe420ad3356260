"""Developer tools: code generation and the event catalog. Never imported by a service."""
