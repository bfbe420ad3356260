"""`python -m services.cli` runs the `a4co` command line."""

import logging

from services.cli.main import app

# What the platform's code says while a command runs (JetStream asked again in a cluster, NATS
# lost and found again) goes to standard error as Python's last resort would put it, but named.
logging.basicConfig(format="a4co: %(message)s", level=logging.WARNING)
app(prog_name="a4co")
