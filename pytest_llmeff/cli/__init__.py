"""The commands of `llmeff` (one module each); `main` is the console entry point."""

from pytest_llmeff.cli.app import main

__all__ = ["main"]
