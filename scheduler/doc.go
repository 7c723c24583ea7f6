// Package scheduler decides which queued job runs next and where: the
// hierarchical weighted-fair queue (FairQueue), placement on executor
// slots with capacity held for big jobs, place in line, and backpressure.
// It is pure: time is an argument (unix nanoseconds); it reads no clock,
// starts no goroutines, does no I/O and keeps no floats, so the same calls
// in the same order give the same state, encoding and placements on every
// replica. FIFO is the plain arrival-order Queue it replaces.
//
// # Order
//
// Strict tiers first; then tiers by weight; within a tier, tenants by
// weight; within a tenant, priority (0–9, higher first), then arrival
// (Seq). Both weighted levels are start-time fair queueing (SFQ, Goyal,
// Vin and Cheng 1996) on exact rational virtual time (whole part plus a
// fraction over the weight; nothing is rounded while a tenant stays
// backlogged). A job of cost c (Job.Cost, milli-GPU-seconds; 0 counts as
// 1) started from a tenant of weight w starts at S = max(tag, V), moves the
// tenant's tag to S + c/w and the tier's virtual time V to S; the tier's
// next job comes from the tenant with the least tag that has a job it can
// run now (ties by tenant name). A tenant that was idle, capped or empty
// re-enters at max(its tag, V), rounded up to its weight's fraction: it
// banks no credit for the time it was away. Tiers are tagged the same way
// against the virtual time of their band (strict or not).
//
// # Fairness bound
//
// Let tenants a and b of one tier, of weights w_a and w_b and largest job
// costs C_a and C_b, be backlogged — each has a ready job that fits a slot
// offered and is under its MaxRunning — at every dispatch of a stretch of
// the tier's dispatches, and let W_a and W_b be the costs of their jobs
// started in it. Then
//
//	|W_a/w_a − W_b/w_b| ≤ C_a/w_a + C_b/w_b
//
// whatever the priorities, the other tenants' arrivals or how many jobs
// each Place hands out (TestBackloggedTenantsWeightedServiceWithinOneMaxCost).
// The same bound holds between two non-strict tiers with their tier
// weights and largest job costs (TestBackloggedTiersWeightedServiceWithinOneMaxCost),
// while no executor is held (see Reservation; a held executor can move
// one job per tier per Place ahead). So tiers pro 4 : free 1, both
// backlogged, get 4/5 and 1/5 of the GPU time, within one job each way.
//
// # Starvation
//
// Among non-strict tiers no job waits forever while capacity for it keeps
// freeing. With jobs that fit and costs in [1, C], a job whose tenant t
// (weight w_t, in tier T of weight w_T) has n jobs up to and including it
// and sends nothing more ahead of it starts within
//
//	n·(1 + Σ_{u≠t in T} (⌊C·w_u/w_t⌋ + 1)) · (1 + Σ_{X≠T} (⌊C·w_X/w_T⌋ + 1))
//
// dispatches of its band (TestNoQueuedJobStarvesAcrossWeightedTiers).
// Priority is strict within a tenant only: a tenant's stream of
// higher-priority jobs holds back its own lower ones, never another
// tenant's. Strict tiers are served before the others whenever they have a
// job that can run, so a strict tier's continuous stream starves every
// non-strict tier by design: strict is for small latency-critical traffic
// (health probes, operators); bound it with its tenants' MaxRunning, which
// leaves the rest of the capacity to the other tiers, or with admission
// bounds.
//
// # Reservation
//
// A job that fits no free slot does not block the jobs behind it, until it
// has waited Config.ReserveAfter since its Ready time: then its tenant
// dispatches nothing else until it starts, which brings the tenant to the
// head of its tier, and the head job of each tier holds one executor that
// it will fit once that executor's running jobs end (Slot.TotalGPUs).
// Nothing else is placed there, so a 4-GPU job among a stream of 1-GPU
// jobs starts within about ReserveAfter plus one run of the held
// executor's jobs (TestBigJobStartsWithinBoundedTimeAmongSmallJobs;
// without it, TestReservationIsWhatStartsABigJobAmongStaggeredSmallOnes
// shows the big job starving).
//
// # Caps, backpressure, place in line, snapshots
//
// Tenant concurrency caps (TenantConfig.MaxRunning) hold jobs queued,
// never rejected: the queue counts running jobs from Start and Stopped.
// CheckAdmission names the first backpressure bound a new job would exceed
// (queued in all, per tenant, per model, predicted wait) as a *BusyError
// matching ErrBusy, with a suggested retry time; nothing queued is
// dropped. Position is the job's rank among queued jobs of its model in
// queue order, an estimate of dispatch order (exact within a tier when all
// jobs are ready and fit and nothing arrives; see position.go), in
// O(T log n) for T tiers; Ascend and Page walk queue order. AppendBinary
// encodes the whole state deterministically and UnmarshalBinary restores
// it: encode, decode, encode gives the same bytes and every later decision
// is the same (TestSnapshotRestoreKeepsBytesAndDecisions).
package scheduler
