#!/bin/bash
# Runs INSIDE the VM (started by tests/vm/lane.sh through vmtest.sh, as root, cwd /work = the
# host's temp dir holding src/ = a copy of the repo and wheels/ = a wheelhouse), in each boot;
# JAILPY_VM_LSM (apparmor, the default, or selinux) says which security module the boot has.
#
#   smoke_v2.sh [PYTEST_ARGS...]
#
# Smoke checks first, each fatal (exit 1): cgroup v2 mounted at /sys/fs/cgroup with no v1
# hierarchy, memory/pids/cpu/cpuset controllers available and enabled for children
# (Documentation/admin-guide/cgroup-v2.rst); a venv installed offline from the wheelhouse;
# AppArmor on and jailpy's payload profiles installed (apparmor boot) or SELinux enforcing with
# jailpy_t in the policy (selinux boot);
# `jailpy exec -- /bin/true` as root and as `tester`, then with --memory/--pids, whose report
# must say cgroup version 2.  Then
# `python -m pytest -q PYTEST_ARGS` as root and as tester; exit status: the root run's when
# it failed, else the tester run's.
#
# tester gets what tests/run.sh gives its rootless user on the host: a subuid/subgid range,
# its own copy of the repo, and a delegated cgroup parent /sys/fs/cgroup/jailpy-test (dir and
# cgroup.procs/threads/subtree_control chowned, memory pids cpu cpuset enabled) exported as
# JAILPY_CGROUP_PARENT=/jailpy-test.  Its processes run in the root-owned leaf
# jailpy-test/runner: on v2 a process may only be moved between cgroups whose common ancestor's
# cgroup.procs the mover can write, so the caller must already be inside the delegated subtree.
set -uo pipefail
venv=/opt/jailpy-venv
cg=/sys/fs/cgroup
deleg=jailpy-test
user=tester
ms() { date +%s%3N; }
T0=$(ms)
step() { printf '\n=== vm [%5.1fs]: %s\n' "$(( $(ms) - T0 ))e-3" "$*"; }
ok() { echo "  ok: $*"; }
fail() { echo "  FAIL: $*"; echo "=== vm: smoke check failed"; exit 1; }

step "guest"
echo "  kernel $(uname -r); $(python3 --version 2>&1); $(nproc) cpus; $(grep MemTotal /proc/meminfo | tr -s ' ')"
echo "  booted in $(cut -d' ' -f1 /proc/uptime)s (guest uptime at start)"

step "cgroup v2"
grep -q "^cgroup2 $cg cgroup2 " /proc/mounts || fail "no cgroup2 at $cg: $(grep cgroup /proc/mounts | tr '\n' ';')"
! grep -q ' cgroup ' /proc/mounts || fail "a cgroup v1 hierarchy is mounted: $(grep ' cgroup ' /proc/mounts)"
for c in memory pids cpu cpuset; do
  grep -qw "$c" "$cg/cgroup.controllers" || fail "controller $c missing: $(cat $cg/cgroup.controllers)"
  grep -qw "$c" "$cg/cgroup.subtree_control" || fail "controller $c not enabled: $(cat $cg/cgroup.subtree_control)"
done
ok "cgroup2 at $cg; controllers: $(cat $cg/cgroup.controllers)"

step "venv from the wheelhouse (no network)"
# the image's own pip (python3-pip, byte-compiled at image build) installs into a venv without
# pip: under TCG that takes ~15 s, against ~70 s for ensurepip + the venv's pip
python3 -m venv --without-pip "$venv" || fail "python3 -m venv"
python3 -m pip --python "$venv/bin/python" install -q --disable-pip-version-check --no-compile \
  --no-index --find-links /work/wheels 'jailpy[test]' || fail "pip install --no-index from /work/wheels"
ok "$("$venv/bin/python" -c 'from importlib.metadata import version as v; print("jailpy", v("jailpy"), "pytest", v("pytest"))')"

step "rootless set-up for $user"
grep -q "^$user:" /etc/subuid || usermod --add-subuids 100000-165535 "$user"
grep -q "^$user:" /etc/subgid || usermod --add-subgids 100000-165535 "$user"
mkdir -p "$cg/$deleg/runner" || fail "mkdir $cg/$deleg/runner"
echo "+memory +pids +cpu +cpuset" >"$cg/$deleg/cgroup.subtree_control" || fail "enable controllers in $cg/$deleg"
chown "$user:" "$cg/$deleg" "$cg/$deleg"/cgroup.{procs,threads,subtree_control} || fail "chown $cg/$deleg"
# a copy of the repo per user (as tests/run.sh does on the host), read once from the 9p share
rm -rf /tmp/src-root /tmp/src-$user; mkdir /tmp/src-root
tar -C /work/src -cf - . | tar -C /tmp/src-root -xf - && cp -a /tmp/src-root "/tmp/src-$user" \
  && chown -R "$user:" "/tmp/src-$user" || fail "copy of the repo"

ok "subuid $(grep "^$user:" /etc/subuid); JAILPY_CGROUP_PARENT=/$deleg ($(cat $cg/$deleg/cgroup.subtree_control))"

# as_user CMD...: run CMD as tester, inside the delegated subtree, with a clean environment
as_user() {
  sh -c 'echo $$ >"$0" && exec "$@"' "$cg/$deleg/runner/cgroup.procs" \
    runuser -u "$user" -- env -i HOME="/home/$user" LANG=C.UTF-8 PATH="$venv/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    JAILPY_CGROUP_PARENT="/$deleg" JAILPY_TEST_TIME_FACTOR=5 "$@"
}
as_root() {
  env -i HOME=/root LANG=C.UTF-8 PATH="$venv/bin:/usr/sbin:/usr/bin:/sbin:/bin" JAILPY_TEST_TIME_FACTOR=5 "$@"
}

if [ "${JAILPY_VM_LSM:-apparmor}" = apparmor ]; then
  step "AppArmor: jailpy's payload profiles (as root), for the tests marked apparmor"
  [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ] || fail "AppArmor is not enabled in this kernel"
  out=$(cd /tmp/src-root && as_root jailpy apparmor install --policy default --policy tests/vm/apparmor-test.toml 2>&1) \
    || fail "jailpy apparmor install: $out"
  echo "$out" | sed 's/^/  /'
  ok "$(ls /sys/kernel/security/apparmor/policy/profiles | grep -c '^jailpy-payload-') jailpy payload profiles loaded"
else
  step "SELinux: enforcing, with jailpy's module (installed in the image), for the tests marked selinux"
  [ "$(cat /sys/fs/selinux/enforce 2>/dev/null)" = 1 ] || fail "SELinux is not enforcing: $(cat /proc/cmdline)"
  printf 'system_u:system_r:jailpy_t:s0\0' >/sys/fs/selinux/context 2>/dev/null || fail "jailpy_t is not in the policy"
  ok "enforcing; this shell runs as $(cat /proc/self/attr/current | tr -d '\0'); jailpy_t is in the policy"
fi

step "jailpy exec -- /bin/true${JAILPY_VM_LSM:+ (under $JAILPY_VM_LSM)}"
for who in root "$user"; do
  run=as_root; [ "$who" = root ] || run=as_user
  t=$(ms); out=$(cd "/tmp/src-$who" && $run jailpy exec -- /bin/true 2>&1); rc=$?
  [ "$rc" = 0 ] || fail "as $who: exit $rc: $out"
  ok "as $who ($(( $(ms) - t )) ms)"
done

step "jailpy exec --memory 64M --pids 20 (cgroup v2)"
for who in root "$user"; do
  run=as_root; [ "$who" = root ] || run=as_user
  # in a directory of its own: jailpy replaces the report, which in sticky /tmp only the file's owner may
  dir=$(mktemp -d /tmp/report.XXXXXX) && chmod 777 "$dir" && rep=$dir/report.json
  out=$(cd "/tmp/src-$who" && $run jailpy exec --memory 64M --pids 20 --report "$rep" -- /bin/true 2>&1); rc=$?
  [ "$rc" = 0 ] || fail "as $who: exit $rc: $out"
  v=$(python3 -c 'import json,sys; print((json.load(open(sys.argv[1]))["protections"]["cgroup"] or {}).get("version"))' "$rep" 2>&1)
  [ "$v" = 2 ] || fail "as $who: report protections.cgroup.version is '$v', want 2: $(cat "$rep")"
  ok "as $who: cgroup version 2"
done

step "pytest -q $* (as root)"
(cd /tmp/src-root && as_root python -m pytest -q -p no:cacheprovider "$@"); rc_root=$?
step "pytest -q $* (as $user)"
(cd "/tmp/src-$user" && as_user python -m pytest -q -p no:cacheprovider "$@"); rc_user=$?

step "bench/lsm.py: what the ${JAILPY_VM_LSM:-apparmor} exec label costs per run (as root; not a check)"
(cd /tmp/src-root && as_root timeout 300 python bench/lsm.py --label "${JAILPY_VM_LSM:-apparmor}" --label-only \
  --runs 10 --warmup 2) || echo "  (the benchmark did not finish)"

step "done: pytest root exit $rc_root, $user exit $rc_user"
rmdir "$cg/$deleg/runner" "$cg/$deleg" 2>/dev/null
[ "$rc_root" != 0 ] && exit "$rc_root"
exit "$rc_user"
