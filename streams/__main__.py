"""`python -m streams` runs the CLI."""

from streams.cli import main

main()
