#!/usr/bin/env bash
# Gradescope autograder setup (run once when Gradescope builds the autograder image), for the
# default base image. The autograder zip holds this repository under grader/ (see README.md).
# It needs root (Gradescope runs it as root), the network (package archives), and about 2 GB of
# disk for the kernel, the build root and the guest image.
set -euo pipefail
cd /autograder/source/grader
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv
./grader.sh setup --profile "${GRADER_PROFILE:-6.1}"
cp ci/gradescope/run_autograder /autograder/run_autograder
chmod +x /autograder/run_autograder
