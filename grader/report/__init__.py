"""Report stage: pure renderers of a GradeResult (text, JSON, JUnit, HTML) and the file writer."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from grader.errors import ConfigError
from grader.model import GradeResult
from grader.report.audience import DEFAULT_AUDIENCE, for_audience
from grader.report.html_report import render_html
from grader.report.json_report import load_json, render_json
from grader.report.junit_report import render_junit
from grader.report.terminal import render_terminal


def _text(result: GradeResult) -> str:
    return render_terminal(result, color=False, verbose=True)


# format name -> (file name, renderer). The text file is the verbose, colourless terminal report.
# Renderers get the audience's view already (for_audience is applied once, in write_reports).
FORMATS: dict[str, tuple[str, Callable[[GradeResult], str]]] = {
    "json": ("report.json", render_json),
    "junit": ("report.xml", render_junit),
    "html": ("report.html", render_html),
    "text": ("report.txt", _text),
}


def write_reports(result: GradeResult, outdir: Path, formats: Iterable[str], *,
                  audience: str = DEFAULT_AUDIENCE,
                  class_link: str | None = None) -> dict[str, Path]:
    """Write the asked formats into outdir (created if needed); return format -> file written.

    An unknown format name fails before anything is written, with the list of valid ones.
    audience "student" leaves the hidden checks out of every file; class_link adds a link
    back to a batch's class page in the HTML.
    """
    view = for_audience(result, audience)
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
        text = render_html(view, class_link=class_link) if fmt == "html" else render(view)
        # backslashreplace: a lone surrogate left in some text must not lose the whole report.
        path.write_text(text, encoding="utf-8", errors="backslashreplace")
        written[fmt] = path
    return written


__all__ = [
    "FORMATS",
    "for_audience",
    "load_json",
    "render_html",
    "render_json",
    "render_junit",
    "render_terminal",
    "write_reports",
]
