// Package policy reads a policy file (YAML or JSON sluice.v1.Policy),
// validates it one section at a time with errors that name the field, and
// compiles it into what the limiter (LimiterRules) and the scheduler
// (SchedulerConfig) take. The server (node), the state machine (fsm), the
// simulator (sim) and the CLI all read policies through it.
package policy
