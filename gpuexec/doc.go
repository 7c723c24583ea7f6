// Package gpuexec is the executor side of Sluice: the Runner interface that
// turns one assigned job attempt into an output or an error, and the runners
// themselves (today the synthetic one used by `sluice dev`; exec, http and
// NVML discovery come with the executor agent). A runner reports progress as
// it goes and stops promptly when its context is canceled.
package gpuexec
