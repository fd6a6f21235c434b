"""What the reports say the paper says: every quoted claim is word for word in ../shared/PAPER.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bnrepro.report.claims import QUOTES

PAPER = Path(__file__).resolve().parent.parent.parent / "shared" / "PAPER.md"


def _words(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


@pytest.mark.skipif(not PAPER.exists(), reason=f"{PAPER} is not beside this checkout")
@pytest.mark.parametrize("key", sorted(QUOTES))
def test_every_quote_is_in_paper_md(key: str) -> None:
    assert _words(QUOTES[key]) in _words(PAPER.read_text())
