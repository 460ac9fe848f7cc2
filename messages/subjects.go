package messages

import (
	"regexp"
	"strings"
)

// DefaultSubjectPrefix is the subject prefix of the contract's stream.
const DefaultSubjectPrefix = "pathling.sync"

// Subject kinds: the token after the prefix.
const (
	KindRequested = "requested"
	KindCompleted = "completed"
	KindFailed    = "failed"
)

var targetPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidTarget reports whether name is a valid target name ([A-Za-z0-9_-]{1,64}), and so a
// single subject token.
func ValidTarget(name string) bool {
	return targetPattern.MatchString(name)
}

// ValidSubjectPrefix reports whether p can prefix the contract's subjects: one or more
// dot-separated non-empty tokens without wildcards or white space.
func ValidSubjectPrefix(p string) bool {
	if p == "" {
		return false
	}
	for tok := range strings.SplitSeq(p, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n*>") {
			return false
		}
	}
	return true
}

// Subjects builds and parses the contract's subjects under a prefix. The zero value uses
// DefaultSubjectPrefix. Builders do not check the target: check it with ValidTarget first.
type Subjects struct {
	// Prefix replaces DefaultSubjectPrefix when set.
	Prefix string
}

func (s Subjects) prefix() string {
	if s.Prefix == "" {
		return DefaultSubjectPrefix
	}
	return s.Prefix
}

// Requested is the subject of a target's SyncRequested events.
func (s Subjects) Requested(target string) string { return s.subject(KindRequested, target) }

// Completed is the subject of a target's SyncCompleted events.
func (s Subjects) Completed(target string) string { return s.subject(KindCompleted, target) }

// Failed is the subject of a target's SyncFailed events.
func (s Subjects) Failed(target string) string { return s.subject(KindFailed, target) }

func (s Subjects) subject(kind, target string) string {
	return s.prefix() + "." + kind + "." + target
}

// RequestedFilter is the consumer filter matching every target's SyncRequested.
func (s Subjects) RequestedFilter() string { return s.prefix() + "." + KindRequested + ".>" }

// All is the stream's subject filter: every event of every target.
func (s Subjects) All() string { return s.prefix() + ".>" }

// TargetOf splits an event subject into its kind (KindRequested, KindCompleted or KindFailed) and
// target; ok is false for a subject outside the prefix, of another kind, or whose target is not a
// valid target name.
func (s Subjects) TargetOf(subject string) (kind, target string, ok bool) {
	rest, found := strings.CutPrefix(subject, s.prefix()+".")
	if !found {
		return "", "", false
	}
	kind, target, found = strings.Cut(rest, ".")
	if !found || !ValidTarget(target) {
		return "", "", false
	}
	switch kind {
	case KindRequested, KindCompleted, KindFailed:
		return kind, target, true
	default:
		return "", "", false
	}
}

// Why a subject is not the SyncRequested subject of a valid target (RequestedTarget). A small,
// fixed set: they are metric label values.
const (
	SubjectNotRequested  = "not_requested"  // outside <prefix>.requested.
	SubjectExtraTokens   = "extra_tokens"   // tokens after the target: <prefix>.requested.a.b
	SubjectInvalidTarget = "invalid_target" // one token, but not a valid target name
)

// RequestedTarget returns the target of a SyncRequested subject, <prefix>.requested.<target>;
// for any other subject, target is empty and problem says why (a Subject* constant).
func (s Subjects) RequestedTarget(subject string) (target, problem string) {
	rest, found := strings.CutPrefix(subject, s.prefix()+"."+KindRequested+".")
	switch {
	case !found:
		return "", SubjectNotRequested
	case strings.Contains(rest, "."):
		return "", SubjectExtraTokens
	case !ValidTarget(rest):
		return "", SubjectInvalidTarget
	}
	return rest, ""
}
