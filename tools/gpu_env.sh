# gpu_env.sh - sourced on a bare GPU machine: unpacks .gpu/bundle.tar.xz (tools/gpu_bundle.sh)
# to /opt/pollen-root and points the loader, PATH and Open MPI at it, and at the machine's own
# CUDA runtime, cuBLAS and NCCL (the CUDA toolkit's, else PyTorch's nvidia-* wheels).
#   source tools/gpu_env.sh && pollen --version
POLLEN_ROOT=/opt/pollen-root
if [ ! -x "$POLLEN_ROOT/bin/pollen" ]; then
  mkdir -p "$POLLEN_ROOT" && tar -C "$POLLEN_ROOT" -xJf .gpu/bundle.tar.xz || return 1
fi
_libs="$POLLEN_ROOT/usr/lib/x86_64-linux-gnu:$POLLEN_ROOT/usr/lib/x86_64-linux-gnu/openmpi/lib"
_libs="$_libs:$POLLEN_ROOT/usr/lib/x86_64-linux-gnu/openblas-openmp"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
  [ -d "$d" ] && _libs="$_libs:$d"
done
# PyTorch's wheels carry NCCL and cuBLAS where the toolkit lacks them.
for f in $(find / -xdev \( -name 'libnccl.so.2' -o -name 'libcublas.so.13' -o -name 'libcublasLt.so.13' -o -name 'libcudart.so.13' \) 2>/dev/null); do
  _libs="$_libs:$(dirname "$f")"
done
export LD_LIBRARY_PATH="$_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$POLLEN_ROOT/bin:$POLLEN_ROOT/usr/bin:$PATH"
export OPAL_PREFIX="$POLLEN_ROOT/usr" PMIX_INSTALL_PREFIX="$POLLEN_ROOT/usr"
export PMIX_MCA_mca_base_component_path="$POLLEN_ROOT/usr/lib/x86_64-linux-gnu/pmix2/lib/pmix"
# The GPU image may hold another PMIx whose zlib plugin does not load: say nothing of it.
export PMIX_MCA_pcompress_base_silence_warning=1 PMIX_MCA_mca_base_component_show_load_errors=0
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# No InfiniBand or OFI there: keep Open MPI to shared memory and TCP.
export OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader,tcp OMPI_MCA_mtl='^ofi,psm,psm2'
unset _libs
