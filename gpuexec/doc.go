// Package gpuexec is the executor side of Sluice: the Runner interface and
// its runners (synthetic, exec, http), the Agent that leases from the leader
// and reports outcomes, and GPU discovery through NVML with a declared
// fallback (after a failed NVML Init nothing calls NVML again).
// docs/executors.md describes the protocols.
package gpuexec
