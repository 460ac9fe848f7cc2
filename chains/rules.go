// Package chains requests syncs when others complete: rules such as "on
// SyncCompleted of target A (only for these types, only when not empty),
// request a sync of target B with these fields", e.g. a second Pathling kept
// in step with the first with since "auto".
//
// The rules run as a Watermill router handler (Chainer.Handle) on a durable
// JetStream consumer of the SyncCompleted subjects shared by all replicas
// (Router). A chained request's id is derived from the rule and the
// completed request ("chain:<rule>:<request id>"), so a redelivered or
// re-published SyncCompleted yields the same id, which JetStream's duplicate
// window, or else the service's run records, turn into one sync. The
// correlation id and the trace context are carried forward.
package chains

import (
	"slices"
	"strings"

	"github.com/pathling-sync/pathling-sync/messages"
)

// Rule requests a sync of Target when a SyncCompleted matches On.
type Rule struct {
	// Name identifies the rule in ids and requestedBy.
	Name string
	On   Trigger
	// Target is the target the rule requests a sync of.
	Target string
	// Request holds the request's fields (empty ones take the target's
	// defaults in the service). CorrelationID and RequestedBy are set by
	// the chain.
	Request messages.SyncRequested
}

// Trigger says which SyncCompleted events fire a rule.
type Trigger struct {
	// Target is the target whose syncs fire the rule.
	Target string
	// Types, when set, must each have been covered by the completed sync:
	// named in its types, or its types empty (all types).
	Types []string
	// NonEmpty requires the sync to have imported something: not an
	// empty incremental export, and at least one file.
	NonEmpty bool
}

// Matches reports whether a SyncCompleted of target fires the rule.
func (r Rule) Matches(target string, c messages.SyncCompleted) bool {
	if target != r.On.Target {
		return false
	}
	if r.On.NonEmpty && (c.Empty || c.Outputs == 0) {
		return false
	}
	if len(c.Types) == 0 {
		return true // the sync covered every type
	}
	for _, t := range r.On.Types {
		if !slices.Contains(c.Types, t) {
			return false
		}
	}
	return true
}

// RequestID is the id of the SyncRequested rule publishes for the completed
// request completedRequestID: "chain:<rule>:<completed request id>".
func RequestID(rule, completedRequestID string) string {
	return "chain:" + rule + ":" + completedRequestID
}

// depth is how many chain hops led to a request id: the number of
// "chain:<rule>:" prefixes (rule names contain no ':').
func depth(requestID string) int {
	n := 0
	for {
		rest, ok := strings.CutPrefix(requestID, "chain:")
		if !ok {
			return n
		}
		_, after, ok := strings.Cut(rest, ":")
		if !ok {
			return n
		}
		requestID = after
		n++
	}
}
