#!/bin/sh
# Install the embedded-target tools tinywarden's tests and benchmarks use, when they are missing:
#   gcc-arm-none-eabi + binutils-arm-none-eabi  (cross compiler, arm-none-eabi-size/nm)
#   libnewlib-arm-none-eabi                     (C library for the bare-metal images)
#   qemu-system-arm                             (mps2-an386 Cortex-M4 board)
# Idempotent: does nothing when everything is present. Needs root (or sudo) only when installing.
set -eu

missing=""
command -v arm-none-eabi-gcc >/dev/null 2>&1 || missing="$missing gcc-arm-none-eabi"
command -v arm-none-eabi-size >/dev/null 2>&1 || missing="$missing binutils-arm-none-eabi"
if ! command -v arm-none-eabi-gcc >/dev/null 2>&1 ||
   ! case "$(arm-none-eabi-gcc -print-file-name=libc.a)" in /*) true ;; *) false ;; esac; then
    missing="$missing libnewlib-arm-none-eabi"
fi
command -v qemu-system-arm >/dev/null 2>&1 || missing="$missing qemu-system-arm"

if [ -z "$missing" ]; then
    echo "install-toolchain: arm-none-eabi-gcc, newlib and qemu-system-arm already installed"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "install-toolchain: missing Debian packages:$missing; run as root to install them" >&2
    exit 1
fi

echo "install-toolchain: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # the package list is meant to split into words
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
