#!/usr/bin/env bash
# The VM lane's AppArmor boot alone (cgroup v2, AppArmor on): kept under its old name for those who
# call it; tests/vm/lane.sh runs both boots (AppArmor, then SELinux).  See tests/vm/README.md.
#
#   tests/vm/run-v2.sh [PYTEST_ARGS...]    default: -m "cgroup_v2 or vm or apparmor"
exec bash "$(cd "$(dirname "$0")" && pwd)/lane.sh" --boot apparmor "$@"
