#!/bin/sh
# Grades one slice of a class (staff): `grader batch --shard K/N` in a GitLab `parallel:` job
# (K = CI_NODE_INDEX, N = CI_NODE_TOTAL) or a GitHub Actions matrix (GRADER_SHARD,
# GRADER_SHARDS). The same student always falls in the same slice. Writes the slice's batch
# folder to $GRADER_SHARDS_DIR/K (default shards/K); ci/merge.sh joins them.
# Settings: GRADER_SUBMISSIONS a folder of submissions (one archive or folder per student) or a
# list file (default submissions); GRADER_BATCH_ARGS more `grader batch` options (e.g.
# --mapping students.csv, -j 2); GRADER_PROFILE is set by the image.
set -eu
k=${GRADER_SHARD:-${CI_NODE_INDEX:-1}}
n=${GRADER_SHARDS:-${CI_NODE_TOTAL:-1}}
src=${GRADER_SUBMISSIONS:-submissions}
out=${GRADER_SHARDS_DIR:-shards}/$k
profile=${GRADER_PROFILE:?is not set: run this script in an image made by grader image build}
# shellcheck disable=SC2086 # GRADER_BATCH_ARGS holds several options
exec grader batch "$src" --shard "$k/$n" --out "$out" --profile "$profile" ${GRADER_BATCH_ARGS:-}
