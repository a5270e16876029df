#!/bin/sh
# Grades the repository in the working directory (a student's module) with the grader of the
# image this runs in (made by `grader image build`): the job of a student's repository.
#   GitLab CI:      script: /opt/grader/ci/grade.sh     (ci/gitlab/grade.gitlab-ci.yml)
#   GitHub Actions: run: /opt/grader/ci/grade.sh        (ci/github/grade.yml)
#   by hand:        docker run --rm -v "$PWD:/work" -w /work grader:6.1 /opt/grader/ci/grade.sh
# Writes $GRADER_REPORT (default grader-report/): report.xml (JUnit), report.html, report.json,
# report.txt, the build log and every guest's console log. On GitHub it also writes the score
# and the summary of every check to the job summary ($GITHUB_STEP_SUMMARY).
#
# Settings (CI variables): GRADER_SUBMISSION the module's folder in the repository (default .);
# GRADER_REPORT; GRADER_ARGS more `grader run` options (e.g. --compat); GRADER_PASS_SCORE fail
# the job below this score (default: the score never fails the job); GRADER_PROFILE is set by
# the image.
# Exit status: 0 graded (whatever the score); 1 score below GRADER_PASS_SCORE; 5 the grade is
# incomplete (the grader's or the environment's fault, not the student's); otherwise the
# grader's own status (3: no module found in the repository, 4: the environment lacks something).
set -eu
repo=$(pwd)
report=${GRADER_REPORT:-grader-report}
src=${GRADER_SUBMISSION:-.}
profile=${GRADER_PROFILE:?is not set: run this script in an image made by grader image build}
name=${CI_PROJECT_NAME:-${GITHUB_REPOSITORY:-$(basename "$repo")}}
name=${name##*/}

# The submission is the repository's files, without its history and without an earlier report.
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
mkdir "$copy/$name"
tar -C "$src" --exclude=./.git --exclude="./$report" -cf - . | tar -C "$copy/$name" -xf -
case $report in /*) out=$report ;; *) out=$repo/$report ;; esac
rm -rf "$out"

status=0
# From the copy's folder, so that the reports name the submission after the repository.
# shellcheck disable=SC2086 # GRADER_ARGS holds several options
(cd "$copy" && grader run "$name" --out "$out" --profile "$profile" ${GRADER_ARGS:-}) || status=$?
if [ "$(id -u)" = 0 ] && [ -d "$out" ]; then
    # Root in the container: give the reports to whoever owns the repository's folder.
    chown -R "$(stat -c %u:%g "$repo")" "$out"
fi
[ "$status" = 0 ] || exit "$status"

set -- $(python3 -c 'import json, sys; d = json.load(open(sys.argv[1]))
print("%g %g %s" % (d["score"], d["max_score"], str(d["complete"]).lower()))' "$out/report.json")
score=$1 max=$2 complete=$3
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
    {
        echo "## Grade: $score / $max"
        echo
        echo '```'
        grader report "$out/report.json"
        echo '```'
        echo
        echo "The HTML report is in the artifact of this run."
    } >> "$GITHUB_STEP_SUMMARY"
fi
echo "grade: $score / $max (reports in $report/: report.html, report.xml, report.json)"
if [ "$complete" != true ]; then
    echo "the grade is INCOMPLETE: the grader could not grade some checks (not your fault): tell the course's staff" >&2
    exit 5
fi
if [ -n "${GRADER_PASS_SCORE:-}" ] && awk -v s="$score" -v p="$GRADER_PASS_SCORE" 'BEGIN { exit !(s + 0 < p + 0) }'; then
    echo "the score $score is below $GRADER_PASS_SCORE" >&2
    exit 1
fi
