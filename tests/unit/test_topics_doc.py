"""docs/topics.md is what the contracts say, for every topic the worker reads or writes."""

from __future__ import annotations

from pathlib import Path

from stream.settings import TopicNames
from tributary.topics_doc import TOPICS, topics_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "topics.md"


def test_docs_topics_md_matches_the_contracts():
    assert DOC.read_text() == topics_markdown(), "regenerate it: tributary schema --out docs/topics.md"


def test_every_topic_is_documented_once():
    assert sorted(t.setting for t in TOPICS) == sorted(TopicNames.model_fields)
