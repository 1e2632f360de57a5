#!/bin/bash
# vmtest.sh - run a command inside a throwaway QEMU VM that boots a stock
# Debian kernel with AppArmor active and a pure cgroup v2 hierarchy.
# (jailpy copy of ../shared/vmtest/vmtest.sh; changed: SIGTERM/SIGINT/SIGHUP to this
# script stop the VM instead of orphaning qemu, so an outer `timeout` works; a build
# killed inside debootstrap leaves no mount behind for the next build to trip on.)
#
#   vmtest.sh build            one-time: kernel + Debian rootfs image -> $VMTEST_CACHE
#   vmtest.sh run CMD [ARG..]  boot, run CMD as root in /work, power off;
#                              exits with CMD's status (124 = timeout, 125 = VM failure)
#
# Environment (defaults in brackets):
#   VMTEST_CACHE     cache/output dir [/var/cache/vmtest]
#   VMTEST_WORK      host dir shared at /work (9p) [$PWD]
#   VMTEST_SUITE     Debian suite [bookworm]      VMTEST_MIRROR  [the host's first Debian apt source]
#   VMTEST_PACKAGES  extra guest packages, space separated (build time)
#   VMTEST_SELINUX   1 = also install selinux-policy-default + label the image (build time)
#   VMTEST_SELINUX_MODULES  CIL files installed with semodule -i in the image (build time,
#                    with VMTEST_SELINUX=1: at host speed, not under emulation)
#   VMTEST_ACCEL     auto|kvm|tcg [auto]          VMTEST_CPUS [nproc]   VMTEST_MEM MiB [2048]
#   VMTEST_TIMEOUT   seconds before the VM is killed [3600]
#   VMTEST_APPEND    extra kernel command line (e.g. "security=selinux selinux=1 enforcing=0")
#   VMTEST_9P_CACHE  9p cache mode for /work: mmap|loose|none [mmap]; loose is 2-3x
#                    faster on many small files but misses host-side changes mid-run
#   VMTEST_VERBOSE   1 = print the guest kernel console log and timing after the run
#   VMTEST_KEEP_ROOTFS 1 = keep the unpacked rootfs dir next to the image (build time)
# Guest: Debian minbase + apparmor, busybox-static, kmod; user 'tester' (uid 1000);
# cgroup2 at /sys/fs/cgroup with all controllers enabled; no network but lo;
# root disk is a throwaway snapshot; /work is read-write 9p; no systemd.
set -euo pipefail

CACHE=${VMTEST_CACHE:-/var/cache/vmtest}
SUITE=${VMTEST_SUITE:-bookworm}
host_mirror() {  # the first plain Debian archive URI the host's apt already uses
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}'; } | grep -v -- '-security' | head -n 1 || true
}
MIRROR=${VMTEST_MIRROR:-$(host_mirror)}
log() { printf 'vmtest: %s\n' "$*" >&2; }
die() { log "$*"; exit 125; }

# ---------------------------------------------------------------- build ----
host_deps() {
  local missing=
  for c in qemu-system-x86_64 debootstrap mkfs.ext4 cpio busybox depmod xz; do
    command -v "$c" >/dev/null || missing=1
  done
  [ -z "$missing" ] && return
  log "installing host packages"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    qemu-system-x86 qemu-utils debootstrap e2fsprogs cpio busybox-static kmod xz-utils >/dev/null
}

# Guest boot scripts.  Stage 1 is /init of the initramfs (static busybox, fast
# under TCG): load the modules for the virtio disk/9p/serial, mount the Debian
# root and everything under it, then switch_root (so pivot_root works in the
# guest).  Stage 2 (/sbin/vmtest-init, PID 1 in the rootfs) runs the command,
# stores its exit status in the 9p control folder and powers off.  No systemd.
write_stage1() {
  cat >"$1" <<'EOF'
#!/bin/busybox sh
export PATH=/bin
fail() { echo "vmtest: $*"; poweroff -f; }
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "$m" 2>/dev/null; done </modules.list
i=0; while [ ! -b /dev/vda ] && [ $i -lt 500 ]; do usleep 10000; i=$((i+1)); done
mount -t ext4 /dev/vda /newroot || fail "cannot mount root"
cd /newroot
for d in dev proc sys; do mount --move /$d $d; done
mount -t securityfs securityfs sys/kernel/security
mount -t cgroup2 -o nsdelegate,memory_recursiveprot cgroup2 sys/fs/cgroup
printf '+%s ' $(cat sys/fs/cgroup/cgroup.controllers) >sys/fs/cgroup/cgroup.subtree_control
mount -t tmpfs -o mode=1777 tmpfs tmp
mount -t tmpfs -o mode=755 tmpfs run
mkdir -p dev/pts dev/shm dev/mqueue run/vmtest work
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts dev/pts; ln -sf pts/ptmx dev/ptmx
mount -t tmpfs -o mode=1777 tmpfs dev/shm
mount -t mqueue mqueue dev/mqueue
ln -sf /proc/self/fd dev/fd; ln -sf fd/0 dev/stdin; ln -sf fd/1 dev/stdout; ln -sf fd/2 dev/stderr
o=trans=virtio,version=9p2000.L,msize=262144
# SELinux on (security=selinux): no systemd to load the policy, so load it now;
# it must precede the 9p mounts, which get a fixed label (9p has no xattr labels)
if [ -d sys/fs/selinux ] && [ -x sbin/load_policy ]; then
  mount -t selinuxfs selinuxfs sys/fs/selinux && chroot . /sbin/load_policy -i \
    && o="$o,context=system_u:object_r:nfs_t:s0"
fi
mount -t 9p -o $o,cache=none ctl run/vmtest || fail "cannot mount control folder"
c=mmap; for a in $(cat proc/cmdline); do case $a in vmtest.cache=*) c=${a#*=};; esac; done
mount -t 9p -o $o,cache=$c work work || echo "vmtest: /work not mounted"
for p in sys/class/virtio-ports/*; do ln -sf "${p##*/}" "dev/vmtest-$(cat "$p/name")"; done
hostname vmtest; ip link set lo up
exec switch_root /newroot /sbin/vmtest-init
EOF
  chmod 755 "$1"
}

write_stage2() {
  cat >"$1" <<'EOF'
#!/bin/busybox sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb
cd /work 2>/dev/null || cd /
/bin/bash /run/vmtest/cmd </dev/null >/dev/vmtest-out 2>/dev/vmtest-err
echo $? >/run/vmtest/rc
sync
busybox poweroff -f
EOF
  chmod 755 "$1"
}

build() {
  [ "$(id -u)" = 0 ] || die "build must run as root"
  host_deps
  mkdir -p "$CACHE"; local t0=$SECONDS
  # 1. kernel: the versioned package behind linux-image-amd64, unpacked only
  local kpkg kver
  apt-cache show linux-image-amd64 >/dev/null 2>&1 || apt-get update -qq
  kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$kpkg" ] || die "cannot resolve linux-image-amd64 (apt-get update?)"
  kver=${kpkg#linux-image-}
  rm -rf "$CACHE/dl" "$CACHE/kernel"; mkdir -p "$CACHE/dl"
  chown _apt "$CACHE/dl" 2>/dev/null || true
  (cd "$CACHE/dl" && apt-get download -qq "$kpkg")
  dpkg -x "$CACHE"/dl/"$kpkg"_*.deb "$CACHE/kernel"
  rm -rf "$CACHE/dl"
  local vmlinuz="$CACHE/kernel/boot/vmlinuz-$kver" off
  # decompressed ELF vmlinux boots via PVH: skips real mode + decompression (2x faster under TCG)
  off=$(LC_ALL=C grep -abo $'\xfd7zXZ' "$vmlinuz" | head -1 | cut -d: -f1 || true)
  if [ -n "$off" ] && xz -dc --single-stream <(tail -c +$((off + 1)) "$vmlinuz") >"$CACHE/vmlinux" 2>/dev/null \
     && LC_ALL=C grep -q ELF <(head -c 4 "$CACHE/vmlinux"); then :; else cp "$vmlinuz" "$CACHE/vmlinux"; fi
  log "kernel $kver ready ($((SECONDS - t0))s)"

  # 2. root filesystem
  local root="$CACHE/rootfs" pkgs="apparmor busybox-static kmod ${VMTEST_PACKAGES:-}"
  [ "${VMTEST_SELINUX:-0}" = 1 ] && pkgs="$pkgs selinux-policy-default policycoreutils selinux-utils"
  # a build killed inside debootstrap can leave proc/sys mounted in the rootfs: unmount first
  { grep -o " $root/[^ ]*" /proc/mounts || true; } | sort -r | xargs -r umount -l
  rm -rf --one-file-system "$root"
  debootstrap --variant=minbase --include="$(echo $pkgs | tr ' ' ,)" "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
  log "debootstrap done ($((SECONDS - t0))s)"
  # kernel modules, minus hardware we never emulate
  mkdir -p "$root/usr/lib/modules"
  cp -a "$CACHE/kernel/lib/modules/$kver" "$root/usr/lib/modules/"
  (cd "$root/usr/lib/modules/$kver/kernel" && rm -rf sound drivers/{gpu,media,usb,scsi,infiniband,staging,bluetooth,iio,hid,input,mtd,isdn,net/wireless,net/ethernet,net/can,net/usb})
  depmod -b "$root" "$kver"
  chroot "$root" useradd -m -u 1000 -s /bin/bash tester       # unprivileged test user
  echo vmtest >"$root/etc/hostname"
  printf '/dev/vda / ext4 rw 0 1\n' >"$root/etc/fstab"
  write_stage2 "$root/sbin/vmtest-init"
  rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
         "$root"/usr/share/{doc,man,info}
  if [ "${VMTEST_SELINUX:-0}" = 1 ]; then   # label files now (host kernel need not know SELinux)
    mount -t proc proc "$root/proc"   # libselinux sets labels via /proc/self/fd
    for m in ${VMTEST_SELINUX_MODULES:-}; do
      cp "$m" "$root/tmp/" && chroot "$root" semodule -i "/tmp/${m##*/}" && rm "$root/tmp/${m##*/}" \
        || { umount "$root/proc"; die "semodule -i $m failed"; }
    done
    chroot "$root" setfiles /etc/selinux/default/contexts/files/file_contexts / || true
    umount "$root/proc"
  fi

  # 3. ext4 image (sparse, 1 GiB headroom; guest runs on a snapshot, never modifies it)
  local mb=$(( $(du -sm "$root" | cut -f1) + 1024 ))
  rm -f "$CACHE/root.img"
  mkfs.ext4 -q -F -L vmroot -d "$root" "$CACHE/root.img" "${mb}M" >/dev/null

  # 4. initramfs: static busybox + modules for virtio disk/9p/console
  local ird="$CACHE/initrd.d"; rm -rf "$ird"; mkdir -p "$ird/bin"
  cp "$(command -v busybox)" "$ird/bin/busybox"
  for a in sh cat chroot mount insmod mkdir ln usleep poweroff switch_root hostname ip; do ln -s busybox "$ird/bin/$a"; done
  for m in virtio_pci virtio_mmio virtio_blk ext4 9p 9pnet_virtio virtio_console; do
    modprobe -d "$root" -S "$kver" --show-depends "$m"
  done | awk '$1 == "insmod" && !seen[$2]++ {print $2}' | while read -r f; do
    mkdir -p "$ird/m"; cp "$f" "$ird/m/"; echo "/m/${f##*/}"
  done >"$ird/modules.list"
  write_stage1 "$ird/init"
  (cd "$ird" && find . | cpio -o -H newc --quiet) >"$CACHE/initrd.cpio"
  rm -rf "$ird" "$CACHE/kernel/lib"
  [ "${VMTEST_KEEP_ROOTFS:-0}" = 1 ] || rm -rf "$root"
  log "build done in $((SECONDS - t0))s: $(du -sh --apparent-size "$CACHE/root.img" | cut -f1) image" \
      "($(du -sh "$CACHE/root.img" | cut -f1) on disk), $(du -sh "$CACHE/vmlinux" | cut -f1) kernel"
}

# ------------------------------------------------------------------ run ----
run() {
  [ $# -gt 0 ] || die "usage: vmtest.sh run CMD [ARG...]"
  [ -f "$CACHE/root.img" ] || die "no image in $CACHE; run 'vmtest.sh build' first"
  local work; work=$(cd "${VMTEST_WORK:-$PWD}" && pwd)
  local accel=${VMTEST_ACCEL:-auto}
  if [ "$accel" = auto ]; then
    # /dev/kvm alone is not enough: PVM-style software KVM (no vmx/svm flags) cannot run a stock kernel
    if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then accel=kvm; else accel=tcg; fi
  fi
  local cpuargs
  case $accel in
    kvm) cpuargs=(-accel kvm -cpu host) ;;
    tcg) cpuargs=(-accel tcg,thread=multi -cpu max) ;;
    *) die "bad VMTEST_ACCEL=$accel" ;;
  esac
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/vmtest.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  mkdir "$tmp/ctl"
  { printf 'exec'; printf ' %q' "$@"; echo; } >"$tmp/ctl/cmd"
  # guest stdout/stderr -> virtio serial ports -> FIFOs -> our stdout/stderr (streamed)
  mkfifo "$tmp/out.in" "$tmp/out.out" "$tmp/err.in" "$tmp/err.out"
  cat "$tmp/out.out" & local p1=$!
  cat "$tmp/err.out" >&2 & local p2=$!
  local append="console=ttyS0 quiet panic=-1 mitigations=off i8042.noaux i8042.nokbd"
  append="$append vmtest.cache=${VMTEST_9P_CACHE:-mmap} ${VMTEST_APPEND:-}"
  local qrc=0 t0=$SECONDS qpid
  # in the background so a signal to us can be forwarded: timeout(1) runs qemu in its own
  # process group, which a signal sent to ours (e.g. by an outer timeout) would not reach
  timeout --kill-after=10 "${VMTEST_TIMEOUT:-3600}" qemu-system-x86_64 "${cpuargs[@]}" \
    -M q35 -smp "${VMTEST_CPUS:-$(nproc)}" -m "${VMTEST_MEM:-2048}" \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$CACHE/vmlinux" -initrd "$CACHE/initrd.cpio" -append "$append" \
    -serial "file:$tmp/console.log" \
    -drive "file=$CACHE/root.img,if=virtio,format=raw,snapshot=on,cache=unsafe" \
    -fsdev "local,id=ctl,path=$tmp/ctl,security_model=none" -device virtio-9p-pci,fsdev=ctl,mount_tag=ctl \
    -fsdev "local,id=work,path=$work,security_model=none,multidevs=remap" \
    -device virtio-9p-pci,fsdev=work,mount_tag=work \
    -device virtio-serial-pci \
    -chardev "pipe,id=out,path=$tmp/out" -device virtserialport,chardev=out,name=out \
    -chardev "pipe,id=err,path=$tmp/err" -device virtserialport,chardev=err,name=err \
    </dev/null &
  qpid=$!
  local sig=
  for s in TERM INT HUP; do trap "sig=$s; kill -TERM $qpid 2>/dev/null || true" $s; done
  while :; do   # a trapped signal interrupts wait (status > 128) while qemu still runs
    qrc=0; wait "$qpid" || qrc=$?
    [ "$qrc" -gt 128 ] && kill -0 "$qpid" 2>/dev/null && continue
    break
  done
  trap - TERM INT HUP
  if [ -n "$sig" ]; then
    : <>"$tmp/out.out"; : <>"$tmp/err.out"; wait $p1 $p2 || true
    log "stopped by SIG$sig after $((SECONDS - t0))s"; return $((128 + $(kill -l "$sig")))
  fi
  # unblock the readers if qemu never opened the FIFOs, then let them drain
  : <>"$tmp/out.out"; : <>"$tmp/err.out"
  wait $p1 $p2 || true
  [ "${VMTEST_VERBOSE:-0}" = 1 ] && { cat "$tmp/console.log" >&2; log "$accel VM ran $((SECONDS - t0))s"; }
  if [ -s "$tmp/ctl/rc" ]; then
    return "$(cat "$tmp/ctl/rc")"
  fi
  [ "$qrc" = 124 ] && { log "timeout after ${VMTEST_TIMEOUT:-3600}s"; return 124; }
  log "VM failed (qemu exit $qrc); console tail:"; tail -30 "$tmp/console.log" >&2 || true
  return 125
}

case ${1:-} in
  build) build ;;
  run) shift; run "$@" ;;
  *) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
