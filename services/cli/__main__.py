"""`python -m services.cli` runs the `a4co` command line."""

from services.cli.main import main

main()
