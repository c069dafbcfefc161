"""The bodies of the CLI commands, one module per command (cli.py only parses argv)."""
