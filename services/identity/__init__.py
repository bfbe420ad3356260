"""identity: users, credentials, sessions and access tokens."""
