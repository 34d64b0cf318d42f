"""The commands of `llmeff`, one module each; `app.main` is the console entry point (`python -m pytest_llmeff.cli`)."""
