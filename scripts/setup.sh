#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine: apt packages, kernel headers
# for bcc, bpffs, and the venv. Called by `make setup` (and so by lab/test/bench).
set -euo pipefail
cd "$(dirname "$0")/.."

# gcc and libc6-dev: the benchmark compiles its warm-path test-run driver
# (controller/lispctl/bench/warmrun.c) with cc.
APT_PACKAGES=(python3-bpfcc bpfcc-tools python3-venv linux-headers-amd64 tshark
              iperf3 tcpdump netsniff-ng iproute2 ethtool bird2 nftables gcc libc6-dev)

if [ "$(id -u)" != 0 ]; then
    echo "setup: must run as root (apt, kernel headers, bpffs)" >&2
    exit 1
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing apt packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -q
    apt-get install -y -q "${missing[@]}"
    # bird2 is for the lab (each BIRD there runs with its own config and
    # socket, in a namespace): the system-wide daemon its package enables
    # is not wanted.
    if [[ " ${missing[*]} " == *" bird2 "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --now bird.service >/dev/null 2>&1 || true
    fi
fi

# tests/vm boots Debian 12's own kernel (6.1, the oldest the data plane
# supports) with virtme-ng (pyproject's test extra) under qemu, over this
# root filesystem: it needs the kernel image and modules (not booted on the
# host), its headers for bcc inside the VM, and a static busybox for
# virtme-ng's initramfs. linux-image-amd64 and linux-headers-amd64 name the
# same ABI; the headers of the newest installed 6.1 image are checked by name
# in case the two were installed at different times.
VM_PACKAGES=(qemu-system-x86 busybox-static linux-image-amd64)
missing=()
for p in "${VM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing packages for the 6.1 VM tests: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
vm_kernel=$(ls /boot/vmlinuz-6.1.0-*-amd64 2>/dev/null | sort -V | tail -n1)
if [ -z "$vm_kernel" ]; then
    echo "setup: no Debian 6.1 kernel image in /boot after installing linux-image-amd64" >&2
    exit 1
fi
vm_kver=${vm_kernel#/boot/vmlinuz-}
if ! dpkg-query -W -f='${Status}' "linux-headers-$vm_kver" 2>/dev/null | grep -q "install ok installed"; then
    echo "setup: installing linux-headers-$vm_kver for the 6.1 VM tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "linux-headers-$vm_kver"
fi

# bcc compiles against /lib/modules/$(uname -r)/build. Kernels without their
# own headers (cloud/VM kernels) get Debian's generic tree: our programs use
# only UAPI definitions, so any recent header tree is good enough.
kdir=/lib/modules/$(uname -r)
if [ ! -e "$kdir/build/Makefile" ]; then
    arch=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1)
    if [ -z "$arch" ] || [ -z "$common" ]; then
        echo "setup: no kernel headers for $(uname -r) and no Debian header tree in /usr/src" >&2
        exit 1
    fi
    echo "setup: kernel $(uname -r) has no headers; linking $arch as build and $common as source under $kdir"
    mkdir -p "$kdir"
    ln -sfn "$arch" "$kdir/build"
    ln -sfn "$common" "$kdir/source"
fi

if ! mountpoint -q /sys/fs/bpf; then
    echo "setup: mounting bpffs on /sys/fs/bpf"
    mount -t bpf bpf /sys/fs/bpf
fi

stamp=.venv/.installed
if [ ! -x .venv/bin/python ] || [ pyproject.toml -nt "$stamp" ]; then
    [ -x .venv/bin/python ] || /usr/bin/python3 -m venv --system-site-packages .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi
.venv/bin/python -c 'import bcc, pyroute2, cryptography, pydantic, typer, prometheus_client' \
    || { echo "setup: python dependencies do not import" >&2; exit 1; }
