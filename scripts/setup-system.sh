#!/usr/bin/env bash
# Install the system tools tinywarden's tests use, when they are missing: host gcc (compiled C export),
# Mosquitto (MQTT escalation tests), nftables + iproute2 (response actuators, network namespaces, the attack
# range with util-linux's nsenter/unshare), clang with
# its libFuzzer/sanitizer runtime (fuzzing the generated C: tests/test_fuzz.py, benchmarks/fuzz.py) and,
# through install-toolchain.sh, the Cortex-M cross compiler, newlib and QEMU.
# Idempotent; does nothing when everything is present. Needs root (or sudo) only to install.
set -euo pipefail
here=$(dirname "$0")

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }
have gcc || need+=(gcc libc6-dev)
have mosquitto || need+=(mosquitto)
have nft || need+=(nftables)
have ip || need+=(iproute2)
have nsenter || need+=(util-linux)  # nsenter/unshare: the attack range's device PID namespace
have iptables || need+=(iptables)
have clang || need+=(clang)
# libFuzzer and the sanitizer runtimes ship apart from clang itself
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer*.a" >/dev/null || need+=(libclang-rt-dev)

if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
      echo "setup-system: missing Debian packages ${need[*]}; run as root to install them" >&2
      exit 1
    fi
  fi
  echo "setup-system: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
sh "$here/install-toolchain.sh" >/dev/null
