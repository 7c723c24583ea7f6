// Package gpuexec is the executor side of Sluice: the Runner interface that
// turns one assigned job attempt into an output or an error, the runners
// (synthetic, exec: a child process per attempt, http: a POST per attempt;
// ParseRunner reads the --runner flag), and GPU discovery through NVML with a
// declared fallback. A runner reports progress, bounds its output, and stops
// promptly when its context is canceled; after a failed NVML Init nothing
// calls NVML again. docs/executors.md describes the protocols.
package gpuexec
