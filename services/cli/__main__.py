"""`python -m services.cli` runs the `a4co` command line."""

from services.cli.main import app

app(prog_name="a4co")
