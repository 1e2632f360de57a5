#!/usr/bin/env bash
# Set up and run the whole jailpy test suite.
#
#   sudo tests/run.sh     installs what the tests need (apt-get), runs the suite as root, then
#                         again as an unprivileged user (JAILPY_TEST_USER, default jailpy-test,
#                         created if missing, with a subuid/subgid range) from a copy of the repo
#   tests/run.sh          (as a normal user) runs the suite as you, in .venv
#
# Extra arguments go to pytest, e.g. `sudo tests/run.sh -k exit_codes`. The VM lane (cgroup v2,
# AppArmor, SELinux; ~30 min, its own suite) runs after a whole-suite run only: with pytest
# arguments it is skipped unless JAILPY_VM_LANE=1; JAILPY_VM_LANE=0 skips it always.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=/usr/bin/python3
user=${JAILPY_TEST_USER:-jailpy-test}
log() { printf '\n=== %s\n' "$*"; }

setup_venv() {  # $1: repo dir; runs as the current user
  cd "$1"
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test,fuzz,net,service]'
  # bytecode now: with PYTHONDONTWRITEBYTECODE set, every jailpy command would compile it again
  .venv/bin/python -m compileall -q jailpy >/dev/null
}

if [ "$(id -u)" != 0 ]; then
  setup_venv "$repo"
  log "pytest as $(id -un) (rootless)"
  exec .venv/bin/python -m pytest "$@"
fi

log "system packages"
need=()
# compilers and runtimes the seccomp tests run under every policy (they skip what is missing)
# the network tests: ip (network namespaces, veths), nft, pasta and slirp4netns (--network user);
# bubblewrap and crun: jailpy inside them (tests/integration/test_nesting.py, test_containers.py),
# bubblewrap also the peer bench/pool.py compares with; redis-server: the workers' broker, started
# by the tests themselves (tests/integration/test_workers.py); apparmor (apparmor_parser),
# python3-apparmor: the generated AppArmor profiles are compiled and parsed; busybox-static: the
# test images' userland (tests/image_helpers.py, tests/integration/test_images.py)
for p in python3-venv python3-pip uidmap gcc g++ libc6-dev default-jdk-headless nodejs golang-go \
         iproute2 nftables passt slirp4netns bubblewrap crun redis-server apparmor python3-apparmor busybox-static; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# --network user rootless: slirp4netns and pasta open /dev/net/tun, 0666 on a stock Debian (udev);
# some VM images leave it 0600
[ -c /dev/net/tun ] && chmod 0666 /dev/net/tun

log "pytest as root"
setup_venv "$repo"
rc=0
.venv/bin/python -m pytest "$@" || rc=$?

log "pytest as $user (rootless)"
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
uid=$(id -u "$user")
# a subuid/subgid range, so the range mapping (newuidmap) is tested too
grep -q "^$user:" /etc/subuid 2>/dev/null || usermod --add-subuids $((uid * 65536))-$((uid * 65536 + 65535)) "$user"
grep -q "^$user:" /etc/subgid 2>/dev/null || usermod --add-subgids $((uid * 65536))-$((uid * 65536 + 65535)) "$user"
work=$(mktemp -d /tmp/jailpy-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/src"
tar -C "$repo" --exclude=./.venv --exclude='*/__pycache__' --exclude=./.pytest_cache -cf - . | tar -C "$work/src" -xf -
chmod -R a+rX "$work"
chown -R "$user:" "$work/src"
# a cgroup subtree delegated to the user (as an administrator would give a judge service), so
# the rootless run tests the limits too
cg_parent=/jailpy-test-$user
bash "$repo/tests/delegate-cgroup.sh" create "$user" "$cg_parent"
trap 'rm -rf "$work"; bash "$repo/tests/delegate-cgroup.sh" remove "$cg_parent"' EXIT
rc2=0
runuser -u "$user" -- env HOME="$(getent passwd "$user" | cut -d: -f6)" JAILPY_CGROUP_PARENT="$cg_parent" \
  bash "$work/src/tests/run.sh" "$@" || rc2=$?
rc3=0
vm_default=1
[ $# -gt 0 ] && vm_default=0   # a subset (-k ...): the VM lane would still run its whole suite
if [ "${JAILPY_VM_LANE:-$vm_default}" = 0 ]; then
  log "VM lane skipped (${JAILPY_VM_LANE+JAILPY_VM_LANE=0}${JAILPY_VM_LANE-pytest arguments given; JAILPY_VM_LANE=1 runs it})"
else
  # cgroup v2, AppArmor and SELinux (this kind of host has cgroup v1 and neither LSM): a Debian
  # kernel under QEMU, booted twice from one image (tests/vm/README.md)
  log "VM lane (cgroup v2 + AppArmor boot, SELinux boot)"
  JAILPY_VM_BUDGET=1800 timeout -k 30 2100 bash "$repo/tests/vm/lane.sh" || rc3=$?
fi
log "root: exit $rc; $user: exit $rc2; VM lane: exit $rc3"
[ "$rc" = 0 ] && [ "$rc2" = 0 ] && [ "$rc3" = 0 ]
