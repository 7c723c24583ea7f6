#!/bin/sh
# Discovers this host's GPUs through the real NVML, as `sluice executor`
# will, and lists them with nvidia-smi for comparison. Run it from the
# repository root on a GPU host; it needs Go, cgo (a C compiler) and the
# NVIDIA driver. Exits with the Go test's status.
set -u
cd "$(dirname "$0")/.." || exit 1
SLUICE_NVML_REAL=1 go test -count=1 -run TestNVMLOnRealHardware -v ./gpuexec/
status=$?
echo "--- nvidia-smi -L, for comparison"
nvidia-smi -L || echo "nvidia-smi: not available"
exit "$status"
