"""JSON form of a grade: the complete record, from which every other report can be rebuilt."""
from __future__ import annotations

import json

from grader.model import GradeResult
from grader.report.audience import DEFAULT_AUDIENCE, for_audience


def render_json(result: GradeResult, audience: str = DEFAULT_AUDIENCE) -> str:
    """The result's to_dict() as indented JSON with sorted keys (the audience's view of it).

    ensure_ascii stays on: text decoded with surrogateescape (raw bytes of a student's
    output) is then written as \\udcXX escapes instead of failing to encode as UTF-8.
    """
    return json.dumps(for_audience(result, audience).to_dict(), indent=2, sort_keys=True) + "\n"


def load_json(text: str) -> GradeResult:
    """Rebuild a GradeResult from render_json's output (to re-render a saved grade)."""
    return GradeResult.from_dict(json.loads(text))
