#!/bin/sh
# Joins the slices of ci/batch-shard.sh (staff): every folder under $GRADER_SHARDS_DIR (default
# shards/, as GitLab extracts the slices' artifacts, or as actions/download-artifact puts them)
# into one class report and one CSV in $GRADER_CLASS (default class/). `grader merge` refuses,
# with the list, when a slice is missing or two slices disagree on rubric or kernel.
set -eu
dir=${GRADER_SHARDS_DIR:-shards}
out=${GRADER_CLASS:-class}
set --
for d in "$dir"/*/; do
    [ -d "$d" ] && set -- "$@" "${d%/}"
done
if [ "$#" = 0 ]; then
    echo "merge.sh: no slice folder under $dir/: did the grading jobs keep their artifacts?" >&2
    exit 2
fi
exec grader merge "$@" --out "$out"
