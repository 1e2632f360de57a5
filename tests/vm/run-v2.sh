#!/usr/bin/env bash
# The cgroup v2 VM lane: boot a stock Debian kernel with a pure cgroup v2 hierarchy under QEMU
# ONCE and run jailpy's cgroup v2 tests inside, as root and then as the guest's unprivileged
# user `tester`.  See tests/vm/README.md.
#
#   tests/vm/run-v2.sh [PYTEST_ARGS...]    default: -m "cgroup_v2 or vm or apparmor"
#   tests/vm/run-v2.sh tests/unit          e.g. a list of test files or directories
#
# Steps: (1) build the VM image into $VMTEST_CACHE if it is missing or was built for other
# packages (needs root and apt; about 2 minutes); (2) copy the repo (without .venv/.git) into
# a temp dir and build a wheelhouse of jailpy and its test dependencies there, since the guest
# has no network; (3) boot, run tests/vm/smoke_v2.sh in the guest, which checks cgroup v2,
# installs the wheelhouse into a venv, runs `jailpy exec -- /bin/true` and then pytest as
# root and as tester.  Exits with the guest's status: 0 when both pytest runs passed, else the
# first failing pytest status (5 = no test collected counts as a failure), 1 for a failed smoke
# check, 124 when the budget ran out, 125 when the VM itself failed.
#
# Environment:
#   JAILPY_VM_BUDGET   wall-clock seconds for everything (build + wheels + VM) [1200]
#   VMTEST_CACHE       image cache [/var/cache/jailpy-vm]   VMTEST_MEM MiB [3072]
#   VMTEST_VERBOSE=1   print the guest console log;  other VMTEST_* as in tests/vm/vmtest.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
t_start=$SECONDS
budget=${JAILPY_VM_BUDGET:-1200}
log() { printf 'vm-lane: %s\n' "$*" >&2; }

export VMTEST_CACHE=${VMTEST_CACHE:-/var/cache/jailpy-vm}
export VMTEST_MEM=${VMTEST_MEM:-3072}
# what the guest needs offline: a python3 matching the host's /usr/bin/python3 (3.11 on
# bookworm) for the wheels, venv, newuidmap (id_map=range), libseccomp, gcc for C test programs;
# apparmor-utils and Debian's python3-apparmor for the AppArmor tests (the kernel has AppArmor on)
export VMTEST_PACKAGES="python3 python3-venv python3-pip uidmap libseccomp2 gcc libc6-dev apparmor-utils python3-apparmor"

# ---- 1. image: rebuilt when vmtest.sh or the build settings change
key=$( { sha256sum <"$here/vmtest.sh"
         echo "$VMTEST_PACKAGES|${VMTEST_SUITE:-bookworm}|${VMTEST_SELINUX:-0}"; } | sha256sum | cut -c1-16)
stamp=$VMTEST_CACHE/jailpy-image.key
if [ -f "$VMTEST_CACHE/root.img" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then
  log "image $VMTEST_CACHE/root.img is current (key $key)"
else
  [ "$(id -u)" = 0 ] || { log "no current VM image in $VMTEST_CACHE; build it as root: sudo $0"; exit 125; }
  log "building the VM image (key $key)"
  t=$SECONDS
  rm -f "$stamp"
  bash "$here/vmtest.sh" build || { log "image build failed"; exit 125; }
  echo "$key" >"$stamp"
  log "image built in $((SECONDS - t))s"
fi

# ---- 2. a copy of the repo the guest may not change the tree through, and a wheelhouse
work=$(mktemp -d "${TMPDIR:-/tmp}/jailpy-vm.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/src" "$work/wheels"
tar -C "$repo" --exclude=./.venv --exclude=./.git --exclude='*/__pycache__' --exclude=./.pytest_cache \
    --exclude='*.egg-info' --exclude=./build --exclude=./dist -cf - . | tar -C "$work/src" -xf -
t=$SECONDS
# pip wheel builds jailpy from the copy (so the wheel is this tree) plus every dependency
# (the grep drops pip's notes about configured local index folders that do not exist)
/usr/bin/python3 -m pip wheel -q --disable-pip-version-check -w "$work/wheels" "$work/src[test]" \
  2> >(grep -v "^WARNING: Location 'file:.*' is ignored" >&2) \
  || { log "pip wheel failed (needs PyPI on the host)"; exit 125; }
# what pip wheel left in the copy
rm -rf "$work/src/build" "$work/src"/*.egg-info
log "wheelhouse: $(ls "$work/wheels" | wc -l) wheels in $((SECONDS - t))s"
chmod -R a+rX "$work"

# ---- 3. boot once and run everything inside
left=$(( budget - (SECONDS - t_start) ))
[ "$left" -ge 60 ] || { log "budget ${budget}s used up before boot"; exit 124; }
export VMTEST_TIMEOUT=$left
[ $# -gt 0 ] || set -- -m "cgroup_v2 or vm or apparmor"
log "booting (VM timeout ${left}s): pytest $*"
t=$SECONDS
rc=0
VMTEST_WORK=$work bash "$here/vmtest.sh" run bash /work/src/tests/vm/smoke_v2.sh "$@" || rc=$?
log "VM boot + run: $((SECONDS - t))s; lane total $((SECONDS - t_start))s; exit $rc"
exit "$rc"
