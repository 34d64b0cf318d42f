"""The files ``llmeff init`` writes, as package data: ``test_llm.py.tmpl`` (the benchmark test),
``llmeff.yml.tmpl`` (the GitHub Actions workflow) and ``hub_fetch.yml.tmpl`` (its step that fetches a hub model).

A placeholder is ``%%{name}``: a delimiter that neither Python nor YAML nor GitHub's ``${{ }}`` expressions use,
so the templates are the files as written, with no escaping. Every placeholder must be given a value.
"""

from __future__ import annotations

import string
from importlib import resources


class _Template(string.Template):
    delimiter = "%%"


def template_text(name: str) -> str:
    """The raw text of the template file ``name`` shipped in this package."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def render_template(name: str, **values: str) -> str:
    """Template ``name`` with each ``%%{key}`` replaced by ``values[key]`` (KeyError naming a missing one)."""
    return _Template(template_text(name)).substitute(values)
