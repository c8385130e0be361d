"""The evidence a rule set ships with: its source documents, and the checks of quotes against them.

A rule's card quotes the source; a quote that is not in the source word for word is an
invented citation, which a clinician reviewing the rule would trust. The rule set declares
its sources in ruleset.yaml (`sources:`), so every load checks every quote and section
against the real text, with no extra flag and nothing outside the rule-set directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

NO_SOURCE = "quotes not verified: no source declared (add `sources:` to ruleset.yaml)"
"""What a rule set without declared sources says instead of a verdict on its quotes."""


@dataclass(frozen=True)
class SourceDocument:
    """One declared source document: id and title from ruleset.yaml, its path and exact text."""

    id: str
    title: str
    path: Path
    text: str

    @property
    def name(self) -> str:
        return self.path.name


@lru_cache(maxsize=16)  # the loader asks once per rule of the same text
def headings(source_text: str) -> tuple[str, ...]:
    """The section headings of the source, in order: lines standing alone between blank lines
    that do not end with a full stop (the first is the document's title)."""
    blocks = (b.strip() for b in source_text.replace("\r\n", "\n").split("\n\n"))
    return tuple(dict.fromkeys(b for b in blocks if b and "\n" not in b and not b.endswith(".") and len(b) < 80))


def section_of(source_text: str, heads: Sequence[str], quote: str) -> str | None:
    """The heading under which a quote stands in the source, or None if it is not found."""
    at = source_text.find(quote)
    if at < 0:
        return None
    positions = sorted((source_text.find(h), h) for h in heads if source_text.find(h) >= 0)
    before = [h for pos, h in positions if pos <= at]
    return before[-1] if before else None


def typography_hint(quote: str, source_text: str) -> str:
    """' (the source writes ’ where the quote has ')' when straight quotes are the only difference."""
    for straight, curly in (("'", "’"), ('"', "“")):
        if straight in quote and quote.replace(straight, curly) in source_text:
            return f" (the source writes {curly} where the quote has {straight})"
    return ""


def quote_problem(quote: str, source_text: str, source_name: str) -> str | None:
    """Why a quote is not a verbatim quote of the source, or None when it is."""
    if quote in source_text:
        return None
    return (f"the quote is not found verbatim in {source_name}{typography_hint(quote, source_text)}; "
            "copy it exactly from the source (punctuation and curly quotes included)")


def section_problem(section: str, quote: str, source_text: str, source_name: str) -> str | None:
    """Why a rule's section is not the heading its quote stands under, or None when it is."""
    heads = headings(source_text)
    if section not in heads:
        import difflib

        near = difflib.get_close_matches(section, heads, n=1, cutoff=0.6)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        return f"section '{section}' is not a heading of {source_name}{hint}"
    under = section_of(source_text, heads, quote)
    if under is not None and under != section:
        return f"the quote stands under '{under}' in {source_name}, the rule names '{section}'"
    return None


def source_for(sources: Sequence[SourceDocument], cited_file: str | None) -> SourceDocument | None:
    """The declared source a pack cites (`source.file` matching a source's file name); the only
    source when there is one; else None (the caller checks against all of them)."""
    if cited_file:
        for doc in sources:
            if doc.name == cited_file or str(doc.path).endswith("/" + cited_file):
                return doc
    return sources[0] if len(sources) == 1 else None
