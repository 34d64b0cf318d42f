"""`python -m pytest_llmeff.cli`: the `llmeff` command."""

import sys

from pytest_llmeff.cli.app import main

sys.exit(main())
