package natsbus

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MinServerVersion is the oldest nats-server the service works with (Debian 12's package is
// 2.9.10). Everything it needs from JetStream exists in 2.9 except two features of 2.10, which it
// does without on older servers (see ServerFeatures).
const MinServerVersion = "2.9.0"

// ErrServerTooOld is returned for a nats-server older than MinServerVersion.
var ErrServerTooOld = errors.New("nats-server too old")

// ServerFeatures is what the connected nats-server supports of the JetStream features whose
// absence changes what this service does. All decisions taken on the server's version live here.
type ServerFeatures struct {
	// Version is the server's version as it announced it.
	Version string
	// MultiFilter: a consumer may have several FilterSubjects (2.10). Without it, consumers take
	// one wider filter and the client drops what it did not ask for (see Filter).
	MultiFilter bool
	// TermReason: "+TERM <reason>" terminates a message and reports the reason in the
	// MSG_TERMINATED advisory (2.10). Older servers do not recognise it at all, so the message
	// would be redelivered after the ack wait, forever: they get a plain "+TERM".
	TermReason bool
}

// Features returns the features of the server nc is connected to. Errors: ErrServerTooOld for a
// server below MinServerVersion; an error when nc is not connected or the version is unreadable.
func Features(nc *nats.Conn) (ServerFeatures, error) {
	if nc == nil || !nc.IsConnected() {
		return ServerFeatures{}, errors.New("natsbus: not connected to a NATS server")
	}
	return FeaturesOf(nc.ConnectedServerVersion())
}

// FeaturesOf returns the features of a server of this version ("2.9.10", "v2.10.0-beta.3").
// Errors: ErrServerTooOld for a server below MinServerVersion (the message names the minimum);
// an error for an unreadable version.
func FeaturesOf(version string) (ServerFeatures, error) {
	major, minor, err := majorMinor(version)
	if err != nil {
		return ServerFeatures{}, err
	}
	atLeast := func(ma, mi int) bool { return major > ma || (major == ma && minor >= mi) }
	if !atLeast(2, 9) {
		return ServerFeatures{}, fmt.Errorf("%w: this one is %s, pathling-sync needs nats-server %s or later",
			ErrServerTooOld, version, MinServerVersion)
	}
	return ServerFeatures{Version: version, MultiFilter: atLeast(2, 10), TermReason: atLeast(2, 10)}, nil
}

func majorMinor(version string) (major, minor int, err error) {
	parts := strings.SplitN(strings.TrimPrefix(strings.TrimSpace(version), "v"), ".", 3)
	if len(parts) < 2 {
		return 0, 0, fmt.Errorf("natsbus: unreadable nats-server version %q", version)
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(strings.SplitN(parts[1], "-", 2)[0])
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("natsbus: unreadable nats-server version %q", version)
	}
	return major, minor, nil
}

// Filter selects subjects for one consumer on a server with given features. With several
// subjects on a server without MultiFilter, the consumer gets the narrowest single filter
// covering them all (pathling.sync.completed.a and pathling.sync.failed.a become
// pathling.sync.*.a) and Matches drops the rest on the client. One consumer on a wider filter,
// rather than one consumer per subject, keeps the messages in stream order, which scans,
// follows and replays rely on.
type Filter struct {
	// Subjects are the consumer's filter subjects: exactly one unless the server supports
	// several (put one in ConsumerConfig.FilterSubject, several in FilterSubjects; see Apply).
	Subjects []string
	wanted   []string // what the caller asked for; nil when the server filters exactly
}

// Filter returns the filter selecting subjects (none: every subject of the stream).
func (f ServerFeatures) Filter(subjects ...string) Filter {
	if len(subjects) <= 1 || f.MultiFilter {
		return Filter{Subjects: subjects}
	}
	return Filter{Subjects: []string{widen(subjects)}, wanted: subjects}
}

// Apply sets cfg's FilterSubject or FilterSubjects.
func (f Filter) Apply(cfg *jetstream.ConsumerConfig) {
	cfg.FilterSubject, cfg.FilterSubjects = "", nil
	switch len(f.Subjects) {
	case 0:
	case 1:
		cfg.FilterSubject = f.Subjects[0]
	default:
		cfg.FilterSubjects = f.Subjects
	}
}

// Matches reports whether a message on subject is one the caller asked for. It is always true
// when the server filters exactly.
func (f Filter) Matches(subject string) bool {
	if f.wanted == nil {
		return true
	}
	for _, w := range f.wanted {
		if SubjectMatches(w, subject) {
			return true
		}
	}
	return false
}

// widen returns the narrowest single filter matching every subject any of filters matches:
// equal tokens are kept, differing ones become "*", and filters of different lengths end in ">".
func widen(filters []string) string {
	split := make([][]string, len(filters))
	shortest, sameLen := -1, true
	for i, f := range filters {
		split[i] = strings.Split(f, ".")
		if shortest >= 0 && len(split[i]) != shortest {
			sameLen = false
		}
		if shortest < 0 || len(split[i]) < shortest {
			shortest = len(split[i])
		}
	}
	n := shortest
	if !sameLen {
		n-- // the last shared position must be ">" to cover the longer filters
	}
	var out []string
	for i := range n {
		tok, same, full := split[0][i], true, false
		for _, s := range split {
			same = same && s[i] == tok
			full = full || s[i] == ">"
		}
		switch {
		case full:
			return strings.Join(append(out, ">"), ".")
		case same:
			out = append(out, tok)
		default:
			out = append(out, "*")
		}
	}
	if !sameLen {
		out = append(out, ">")
	}
	return strings.Join(out, ".")
}

// SubjectMatches reports whether subject matches the NATS subject filter (with "*" for one token
// and a final ">" for one or more).
func SubjectMatches(filter, subject string) bool {
	ft, st := strings.Split(filter, "."), strings.Split(subject, ".")
	for i, tok := range ft {
		if tok == ">" {
			return len(st) > i
		}
		if i >= len(st) || (tok != "*" && tok != st[i]) {
			return false
		}
	}
	return len(ft) == len(st)
}
