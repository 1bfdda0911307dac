"""The `estm` command line: `main.py` holds the command table; one small module per command."""
