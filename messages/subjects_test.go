package messages_test

import (
	"strings"
	"testing"

	"github.com/pathling-sync/pathling-sync/messages"
)

func TestValidTarget(t *testing.T) {
	for _, name := range []string{"default", "a", "LAB_2-east", strings.Repeat("x", 64), "0"} {
		if !messages.ValidTarget(name) {
			t.Errorf("ValidTarget(%q) = false", name)
		}
	}
	for _, name := range []string{"", strings.Repeat("x", 65), "a.b", "a b", "a*", ">", "ä", "a\n", "a/b"} {
		if messages.ValidTarget(name) {
			t.Errorf("ValidTarget(%q) = true", name)
		}
	}
}

func TestSubjectsBuild(t *testing.T) {
	var def messages.Subjects
	custom := messages.Subjects{Prefix: "acme.fhir.sync"}
	tests := []struct{ got, want string }{
		{def.Requested("default"), "pathling.sync.requested.default"},
		{def.Completed("lab_2"), "pathling.sync.completed.lab_2"},
		{def.Failed("x-y"), "pathling.sync.failed.x-y"},
		{def.RequestedFilter(), "pathling.sync.requested.>"},
		{def.All(), "pathling.sync.>"},
		{custom.Requested("t"), "acme.fhir.sync.requested.t"},
		{custom.Completed("t"), "acme.fhir.sync.completed.t"},
		{custom.Failed("t"), "acme.fhir.sync.failed.t"},
		{custom.RequestedFilter(), "acme.fhir.sync.requested.>"},
		{custom.All(), "acme.fhir.sync.>"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func TestSubjectsTargetOf(t *testing.T) {
	tests := []struct {
		prefix, subject, kind, target string
		ok                            bool
	}{
		{"", "pathling.sync.requested.default", "requested", "default", true},
		{"", "pathling.sync.completed.lab_2", "completed", "lab_2", true},
		{"", "pathling.sync.failed.A-1", "failed", "A-1", true},
		{"acme.sync", "acme.sync.requested.t", "requested", "t", true},
		{"", "pathling.sync.started.t", "", "", false},
		{"", "pathling.sync.requested", "", "", false},
		{"", "pathling.sync.requested.", "", "", false},
		{"", "pathling.sync.requested.a.b", "", "", false},
		{"", "pathling.sync.requested." + strings.Repeat("x", 65), "", "", false},
		{"", "pathling.syncx.requested.t", "", "", false},
		{"", "other.sync.requested.t", "", "", false},
		{"acme.sync", "pathling.sync.requested.t", "", "", false},
		{"", "", "", "", false},
	}
	for _, tc := range tests {
		kind, target, ok := messages.Subjects{Prefix: tc.prefix}.TargetOf(tc.subject)
		if kind != tc.kind || target != tc.target || ok != tc.ok {
			t.Errorf("TargetOf(%q) with prefix %q = %q, %q, %v; want %q, %q, %v",
				tc.subject, tc.prefix, kind, target, ok, tc.kind, tc.target, tc.ok)
		}
	}
}

func TestSubjectsRoundTrip(t *testing.T) {
	for _, s := range []messages.Subjects{{}, {Prefix: "a"}, {Prefix: "a.b.c"}} {
		for kind, build := range map[string]func(string) string{
			messages.KindRequested: s.Requested, messages.KindCompleted: s.Completed, messages.KindFailed: s.Failed,
		} {
			gotKind, target, ok := s.TargetOf(build("t_1"))
			if !ok || gotKind != kind || target != "t_1" {
				t.Errorf("prefix %q kind %s: TargetOf(build) = %q, %q, %v", s.Prefix, kind, gotKind, target, ok)
			}
		}
	}
}

func TestValidSubjectPrefix(t *testing.T) {
	for _, p := range []string{"pathling.sync", "a", "a-b.c_d"} {
		if !messages.ValidSubjectPrefix(p) {
			t.Errorf("ValidSubjectPrefix(%q) = false", p)
		}
	}
	for _, p := range []string{"", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b", "a.b*", "a\tb"} {
		if messages.ValidSubjectPrefix(p) {
			t.Errorf("ValidSubjectPrefix(%q) = true", p)
		}
	}
}

func TestSubjectsRequestedTarget(t *testing.T) {
	custom := messages.Subjects{Prefix: "acme.fhir"}
	tests := []struct {
		s                        messages.Subjects
		subject, target, problem string
	}{
		{messages.Subjects{}, "pathling.sync.requested.default", "default", ""},
		{custom, "acme.fhir.requested.lab_2", "lab_2", ""},
		{messages.Subjects{}, "pathling.sync.requested.a.b", "", messages.SubjectExtraTokens},
		{messages.Subjects{}, "pathling.sync.requested.default.", "", messages.SubjectExtraTokens},
		{messages.Subjects{}, "pathling.sync.requested.bad$name", "", messages.SubjectInvalidTarget},
		{messages.Subjects{}, "pathling.sync.requested." + strings.Repeat("x", 65), "", messages.SubjectInvalidTarget},
		{messages.Subjects{}, "pathling.sync.requested.", "", messages.SubjectInvalidTarget},
		{messages.Subjects{}, "pathling.sync.completed.default", "", messages.SubjectNotRequested},
		{messages.Subjects{}, "pathling.sync.requested", "", messages.SubjectNotRequested},
		{custom, "pathling.sync.requested.default", "", messages.SubjectNotRequested},
	}
	for _, tc := range tests {
		target, problem := tc.s.RequestedTarget(tc.subject)
		if target != tc.target || problem != tc.problem {
			t.Errorf("RequestedTarget(%q) = %q, %q; want %q, %q", tc.subject, target, problem, tc.target, tc.problem)
		}
	}
}
