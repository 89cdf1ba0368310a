#!/usr/bin/env bash
# gpu_bundle.sh - packs what a bare GPU machine lacks to run a pollen CUDA build made here:
# the Debian runtime packages pollen links (Open MPI with its launcher and plugins, OpenBLAS,
# libuv, libjpeg-turbo, cJSON, protobuf-c and their dependencies) plus the built binaries,
# as one compressed archive. The CUDA runtime, cuBLAS and NCCL are NOT packed (hundreds of
# MB): tools/gpu_env.sh finds the GPU machine's own (CUDA 13 toolkit or PyTorch's wheels).
#   bash tools/gpu_bundle.sh [BUILD_DIR]     # default build-cuda; writes .gpu/bundle.tar.xz
# Then on the GPU machine: source tools/gpu_env.sh (unpacks it to /opt/pollen-root).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-cuda}
for b in pollen test_cuda_ops nccl_check test_device; do
  [ -x "$BUILD/$b" ] || { echo "gpu_bundle: $BUILD/$b missing; build with -DPOLLEN_CUDA=ON first" >&2; exit 1; }
done
PKGS="libopenmpi3 openmpi-bin openmpi-common libpmix2 libhwloc15 libevent-core-2.1-7
      libevent-pthreads-2.1-7 libopenblas0-openmp libuv1 libturbojpeg0 libjpeg62-turbo libcjson1
      libprotobuf-c1 libpng16-16 libudev1 libgomp1 libgfortran5 libquadmath0 libatomic1 libfabric1 libucx0 libibverbs1
      librdmacm1 libnl-3-200 libnl-route-3-200 libnuma1 libpsm2-2 libpsm-infinipath1 libmunge2"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download $PKGS >/dev/null)
mkdir -p "$work/root/bin"
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/root"; done
rm -rf "$work/root/usr/share/doc" "$work/root/usr/share/man" "$work/root/usr/share/lintian"
cp "$BUILD/pollen" "$BUILD/test_cuda_ops" "$BUILD/nccl_check" "$BUILD/test_device" "$work/root/bin/"
# Debian names the launcher through /etc/alternatives too.
ln -sf ../usr/bin/orterun "$work/root/bin/mpirun"
# Debian points libopenblas.so.0 through /etc/alternatives: give it a plain path.
ln -sf ../openblas-openmp/libopenblas.so.0 "$work/root/usr/lib/x86_64-linux-gnu/libopenblas.so.0" 2>/dev/null ||
  cp "$work"/root/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 "$work/root/usr/lib/x86_64-linux-gnu/"
mkdir -p .gpu
tar -C "$work/root" -cJf .gpu/bundle.tar.xz .
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || { mkdir -p .git/info; echo '/.gpu/' >>.git/info/exclude; }
echo "gpu_bundle: .gpu/bundle.tar.xz ($(du -h .gpu/bundle.tar.xz | cut -f1)); carry .gpu"
