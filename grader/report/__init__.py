"""Report stage: pure renderers of a GradeResult (text, JSON, JUnit, HTML) and the file writer."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from grader.errors import ConfigError
from grader.model import GradeResult
from grader.report.html_report import render_html
from grader.report.json_report import load_json, render_json
from grader.report.junit_report import render_junit
from grader.report.terminal import render_terminal


def _text(result: GradeResult) -> str:
    return render_terminal(result, color=False, verbose=True)


# format name -> (file name, renderer). The text file is the verbose, colourless terminal report.
FORMATS: dict[str, tuple[str, Callable[[GradeResult], str]]] = {
    "json": ("report.json", render_json),
    "junit": ("report.xml", render_junit),
    "html": ("report.html", render_html),
    "text": ("report.txt", _text),
}


def write_reports(result: GradeResult, outdir: Path, formats: Iterable[str]) -> dict[str, Path]:
    """Write the asked formats into outdir (created if needed); return format -> file written.

    An unknown format name fails before anything is written, with the list of valid ones.
    """
    wanted = sorted(set(formats))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown:
        raise ConfigError(
            f"unknown report format(s) {', '.join(unknown)}; valid: {', '.join(sorted(FORMATS))}"
        )
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for fmt in wanted:
        name, render = FORMATS[fmt]
        path = outdir / name
        # backslashreplace: a lone surrogate left in some text must not lose the whole report.
        path.write_text(render(result), encoding="utf-8", errors="backslashreplace")
        written[fmt] = path
    return written


__all__ = [
    "FORMATS",
    "load_json",
    "render_html",
    "render_json",
    "render_junit",
    "render_terminal",
    "write_reports",
]
