#!/usr/bin/env bash
# Installs everything pollen needs to build and run on Debian 12, from Debian's packages.
# Run as root or with sudo. Safe to run again.
#   --with-torch   also the PyTorch packages used only to regenerate reference files and to
#                  run the PyTorch side of the benchmarks (not needed to build or test).
set -euo pipefail
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
packages=(
  build-essential cmake pkg-config ca-certificates
  libopenblas-openmp-dev   # the OpenMP build of OpenBLAS: shares pollen's OpenMP threads
  libopenmpi-dev openmpi-bin
  libuv1-dev libturbojpeg0-dev libcjson-dev libpng-dev
  libprotobuf-c-dev protobuf-c-compiler
  python3                  # small test helpers
  procps iproute2          # tests: process and network-namespace tools
  slurm-wlm munge yamllint # tests: a private one-node SLURM (requeue test), manifest lint
  clang-14 libclang-rt-14-dev  # tests: libFuzzer target for the status parser (skipped without)
  protobuf-compiler python3-protobuf  # tests: TensorBoard event files read with TensorBoard's schema
  prometheus               # tests: promtool checks the /metrics exposition
)
if [ "${1:-}" = "--with-torch" ]; then
  packages+=(python3-torch python3-torchvision python3-numpy libjemalloc2)
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}"
