package node

// A Node's work, by role. Each role is a view of the Node (it embeds it)
// that holds the methods of one concern, so that Node itself keeps its life
// cycle (start, propose, reload, close), what every role uses (auth, the
// HTTP server, TLS) and a few checks of its own. The roles call each other through the
// Node's fields (n.desk, n.duty, ...); wire sets them.
type (
	// jobDesk serves clients' job calls: submit (checks, the pre-check,
	// the answer), watch, the public view of a job with its ETA, and
	// read-your-writes.
	jobDesk struct{ *Node }
	// limitChecks is the rate-limit door outside Submit: the Check API,
	// Envoy's RLS, usage reads, and the errors and headers a refusal
	// carries.
	limitChecks struct{ *Node }
	// challenger decides CHALLENGE rules: which rules an answer or pass
	// covers, verifying them, and the errors a challenge is.
	challenger struct{ *Node }
	// leaderRoute takes a follower's request to the leader: the leader's
	// address, the forwarding clients and headers, batched submits.
	leaderRoute struct{ *Node }
	// leaderDuty is what the leader does: its loop (dispatch, leases,
	// stale runs, ticks) and catching up with the log after an election.
	leaderDuty struct{ *Node }
	// membership keeps the raft configuration and the members' addresses:
	// join, remove, hand-over, recovery, health and the gossip pool's
	// events.
	membership struct{ *Node }
)

// wire gives n its roles.
func wire(n *Node) *Node {
	n.desk, n.checks, n.chall = jobDesk{n}, limitChecks{n}, challenger{n}
	n.route, n.duty, n.cluster = leaderRoute{n}, leaderDuty{n}, membership{n}
	return n
}
