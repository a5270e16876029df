"""Gradebook exports: pure functions of a class's rows (or of one grade) to the text a gradebook
imports. table: our CSV; moodle and canvas: their grade import CSVs, students matched through a
roster; gradescope: an autograder's results.json."""
from __future__ import annotations

from grader.exports.canvas import render_canvas
from grader.exports.gradescope import gradescope_results, render_gradescope
from grader.exports.moodle import render_moodle
from grader.exports.table import render_csv

EXPORT_FORMATS = ("csv", "moodle", "canvas", "gradescope")


class RosterRefused(Exception):
    """A gradebook file that would not import as it stands; the message lists why."""


__all__ = ["EXPORT_FORMATS", "RosterRefused", "gradescope_results", "render_canvas",
           "render_csv", "render_gradescope", "render_moodle"]
