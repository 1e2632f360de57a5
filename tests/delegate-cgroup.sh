#!/usr/bin/env bash
# Give a user a cgroup subtree of their own, the way an administrator sets up a judge service
# that runs as an unprivileged account (then: jailpy exec --cgroup-parent PATH, or
# JAILPY_CGROUP_PARENT=PATH).  Run as root.
#
#   tests/delegate-cgroup.sh create USER /PATH    make /PATH in every cgroup hierarchy, owned by USER
#   tests/delegate-cgroup.sh remove /PATH         remove it again (only if nothing runs in it)
#
# cgroup v2 (Documentation/admin-guide/cgroup-v2.rst, "Delegation"): the directory and its
# cgroup.procs, cgroup.threads and cgroup.subtree_control are chowned, and the controllers are
# enabled in the parent's cgroup.subtree_control.  cgroup v1: the directory and its files are chowned
# in each of the memory, pids, cpu, cpuacct, cpuset, freezer and blkio hierarchies (cpuset needs cpus and
# mems copied from the parent before anything can join).
set -euo pipefail
action=$1
if [ "$action" = create ]; then user=$2; path=$3; else path=$2; fi
case $path in /*) ;; *) echo "path must start with /" >&2; exit 2 ;; esac

v1_dirs() {  # mount points of the v1 hierarchies we use
  awk '$3 == "cgroup" { print $2 }' /proc/self/mounts | while read -r m; do
    case ",$(basename "$m")," in
      *,memory,*|*,pids,*|*,cpu,*|*,cpuacct,*|*,cpuset,*|*,freezer,*|*,blkio,*) echo "$m" ;;
    esac
  done
}
v2_root() {  # the unified hierarchy, if it has controllers
  local m
  m=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
  [ -n "$m" ] && [ -s "$m/cgroup.controllers" ] && echo "$m"
}

if [ "$action" = create ]; then
  if root=$(v2_root); then
    want=""
    for c in memory pids cpu cpuset io; do grep -qw "$c" "$root/cgroup.controllers" && want="$want +$c"; done
    # every level from the root down must pass the controllers on
    d=$root
    IFS=/ read -ra parts <<<"${path#/}"
    for p in "${parts[@]}"; do
      echo "$want" >"$d/cgroup.subtree_control"
      d=$d/$p
      mkdir -p "$d"
    done
    chown "$user" "$d" "$d/cgroup.procs" "$d/cgroup.threads" "$d/cgroup.subtree_control"
  else
    for m in $(v1_dirs); do
      mkdir -p "$m$path"
      if [ -e "$m$path/cpuset.cpus" ]; then
        cat "$m/cpuset.cpus" >"$m$path/cpuset.cpus"
        cat "$m/cpuset.mems" >"$m$path/cpuset.mems"
      fi
      chown -R "$user" "$m$path"
    done
  fi
else
  # children first; rmdir refuses a cgroup that still has processes
  if root=$(v2_root); then dirs=$root; else dirs=$(v1_dirs); fi
  for m in $dirs; do
    [ -d "$m$path" ] || continue
    find "$m$path" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
fi
