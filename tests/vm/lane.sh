#!/usr/bin/env bash
# The VM lane: a stock Debian kernel under QEMU, booted twice from one image, running jailpy's
# tests that this host's kernel cannot (see tests/vm/README.md):
#
#   1. AppArmor boot (the kernel's default: AppArmor on) with a pure cgroup v2 hierarchy:
#      pytest -m "cgroup_v2 or vm or apparmor", as root and as the guest's user `tester`;
#   2. SELinux boot (selinux=1 security=selinux enforcing=1, Debian's refpolicy and jailpy's
#      module profiles/selinux/jailpy.cil installed in the image): pytest -m selinux.
#
#   tests/vm/lane.sh [--boot apparmor|selinux|both] [PYTEST_ARGS...]
#
# PYTEST_ARGS replace the default markers of the boot(s) run.  Steps: (1) build the VM image into
# $VMTEST_CACHE if it is missing or was built for other packages, another vmtest.sh or another
# jailpy.cil (needs root and apt; 3-4 minutes); (2) copy the repo (without .venv/.git) into a
# temp dir and build a wheelhouse of jailpy and its test dependencies there (the guest has no
# network); (3) each boot runs tests/vm/smoke_v2.sh in the guest (JAILPY_VM_LSM says which LSM it
# checks), which installs the wheelhouse into a venv, runs smoke checks and then pytest as root
# and as tester.  Exits 0 when every boot passed, else the first failing boot's status (the
# guest's pytest status, 1 for a failed smoke check, 124 when the budget ran out, 125 when the
# image or the VM failed).
#
# Environment:
#   JAILPY_VM_BUDGET          wall-clock seconds for everything (build + wheels + boots) [1800]
#   JAILPY_VM_SELINUX_BUDGET  at most this many seconds of it for the SELinux boot [600]
#   VMTEST_CACHE       image cache [/var/cache/jailpy-vm]   VMTEST_MEM MiB [3072]
#   VMTEST_VERBOSE=1   print the guest console log;  other VMTEST_* as in tests/vm/vmtest.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
t_start=$SECONDS
budget=${JAILPY_VM_BUDGET:-1800}
se_budget=${JAILPY_VM_SELINUX_BUDGET:-600}
log() { printf 'vm-lane: %s\n' "$*" >&2; }

boots=(apparmor selinux)
if [ "${1:-}" = --boot ]; then
  case ${2:-} in
    apparmor|selinux) boots=("$2") ;;
    both) ;;
    *) log "--boot apparmor|selinux|both, got '${2:-}'"; exit 2 ;;
  esac
  shift 2
fi

export VMTEST_CACHE=${VMTEST_CACHE:-/var/cache/jailpy-vm}
export VMTEST_MEM=${VMTEST_MEM:-3072}
# what the guest needs offline: a python3 matching the host's /usr/bin/python3 (3.11 on
# bookworm) for the wheels, venv, newuidmap (id_map=range), libseccomp, gcc for C test programs;
# apparmor-utils and Debian's python3-apparmor for the AppArmor tests; with VMTEST_SELINUX=1
# vmtest.sh adds selinux-policy-default and labels the image, and installs jailpy's module
export VMTEST_PACKAGES="python3 python3-venv python3-pip uidmap libseccomp2 gcc libc6-dev apparmor-utils python3-apparmor"
export VMTEST_SELINUX=1
export VMTEST_SELINUX_MODULES="$repo/profiles/selinux/jailpy.cil"

# ---- 1. image: rebuilt when vmtest.sh, the build settings or jailpy.cil change
key=$( { sha256sum <"$here/vmtest.sh"; sha256sum <"$VMTEST_SELINUX_MODULES"
         echo "$VMTEST_PACKAGES|${VMTEST_SUITE:-bookworm}|$VMTEST_SELINUX"; } | sha256sum | cut -c1-16)
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

# ---- 3. each boot: smoke checks and pytest inside
rc_all=0
for lsm in "${boots[@]}"; do
  left=$(( budget - (SECONDS - t_start) ))
  if [ "$lsm" = selinux ] && [ "$left" -gt "$se_budget" ]; then left=$se_budget; fi
  if [ "$left" -lt 60 ]; then
    log "budget ${budget}s used up before the $lsm boot"
    [ "$rc_all" = 0 ] && rc_all=124
    continue
  fi
  export VMTEST_TIMEOUT=$left
  if [ $# -gt 0 ]; then args=("$@")
  elif [ "$lsm" = selinux ]; then args=(-m selinux)
  else args=(-m "cgroup_v2 or vm or apparmor"); fi
  append=""
  [ "$lsm" = selinux ] && append="security=selinux selinux=1 enforcing=1"
  log "$lsm boot (VM timeout ${left}s): pytest ${args[*]}"
  t=$SECONDS
  rc=0
  VMTEST_APPEND="$append" VMTEST_WORK=$work bash "$here/vmtest.sh" run \
    env JAILPY_VM_LSM="$lsm" bash /work/src/tests/vm/smoke_v2.sh "${args[@]}" || rc=$?
  log "$lsm boot + run: $((SECONDS - t))s; exit $rc"
  [ "$rc_all" = 0 ] && rc_all=$rc
done
log "lane total $((SECONDS - t_start))s; exit $rc_all"
exit "$rc_all"
