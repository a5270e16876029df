"""`grader batch`: a whole class graded in parallel subprocesses, resumable, with class outputs.

Modules: entries (what to grade, student ids), store (results under content keys, atomic),
runner (one bounded `grader run` subprocess per submission, in parallel, with progress),
roster (students matched to submissions), shard (stable slices, merge), diffing (regrade diff),
outputs (class page, CSV, per-submission pages), cli (the subcommands).
"""
