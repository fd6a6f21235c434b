"""The README's numbers are the reports' numbers: its generated blocks equal what scripts/readme_numbers.py
writes from reports/*/numbers.json, and every percentage anywhere in it appears in a committed report."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"


def _script():
    spec = importlib.util.spec_from_file_location("readme_numbers", REPO / "scripts" / "readme_numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_blocks_equal_what_the_reports_give() -> None:
    script = _script()
    text = README.read_text()
    assert set(script.WRITERS) <= set(re.findall(r"<!-- numbers:([\w-]+) -->", text))  # every block is in use
    assert script.regenerate(text, REPO / "reports") == text, "README is stale: python scripts/readme_numbers.py"


def test_a_stale_number_is_found_and_rewritten() -> None:
    script = _script()
    text = README.read_text()
    block = re.search(r"<!-- numbers:fig1 -->\n(.*?)<!-- /numbers:fig1 -->", text, re.DOTALL)
    number = re.search(r"\d+\.\d\d%", block[1])[0]
    stale = text[:block.start(1)] + block[1].replace(number, "12.34%", 1) + text[block.end(1):]
    assert stale != text and script.regenerate(stale, REPO / "reports") == text


def test_every_percentage_in_the_readme_is_in_a_report() -> None:
    reports = "\n".join(p.read_text() for p in (REPO / "reports").rglob("*.md"))
    numbers = set(re.findall(r"(\d+(?:\.\d+)?)%", README.read_text()))
    missing = sorted(n for n in numbers if not re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", reports))
    assert not missing, f"percentages in README.md that no report under reports/ contains: {missing}"
