"""Subcommands of the validate CLI, one module each (NAME, HELP, register, run)."""
