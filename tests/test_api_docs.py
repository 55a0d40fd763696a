"""docs/api.md is the server's own list of what it implements: it cannot drift."""

from __future__ import annotations

from pathlib import Path

from shipyard.api.app import operations_doc

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_the_operations_page_matches_the_routing_tables() -> None:
    assert DOC.read_text() == operations_doc(), (
        "docs/api.md is out of date; regenerate it with: .venv/bin/python -c "
        "'import sys; from shipyard.api.app import operations_doc; "
        "sys.stdout.write(operations_doc())' > docs/api.md")
