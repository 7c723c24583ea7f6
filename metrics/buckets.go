package metrics

// Histogram buckets, in seconds (and commands for batch sizes).
var (
	jobBuckets      = []float64{0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}
	requestBuckets  = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}
	snapshotBuckets = []float64{0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30}
	batchBuckets    = []float64{1, 2, 4, 8, 16, 32, 64, 128}
)
