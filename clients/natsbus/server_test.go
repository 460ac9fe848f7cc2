package natsbus

import (
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

func TestFeaturesOf(t *testing.T) {
	for _, tc := range []struct {
		version                 string
		multiFilter, termReason bool
	}{
		{"2.9.0", false, false},
		{"2.9.10", false, false},
		{"v2.9.25", false, false},
		{"2.10.0-beta.3", true, true},
		{"2.10.0", true, true},
		{"2.15.3", true, true},
		{"3.0.0", true, true},
	} {
		f, err := FeaturesOf(tc.version)
		if err != nil {
			t.Errorf("FeaturesOf(%q): %v", tc.version, err)
			continue
		}
		if f.MultiFilter != tc.multiFilter || f.TermReason != tc.termReason || f.Version != tc.version {
			t.Errorf("FeaturesOf(%q) = %+v", tc.version, f)
		}
	}
	for _, old := range []string{"2.8.4", "2.2.0", "1.4.1"} {
		_, err := FeaturesOf(old)
		if !errors.Is(err, ErrServerTooOld) || !strings.Contains(err.Error(), "2.9.0 or later") || !strings.Contains(err.Error(), old) {
			t.Errorf("FeaturesOf(%q) = %v, want ErrServerTooOld naming both versions", old, err)
		}
	}
	for _, bad := range []string{"", "2", "two.nine", "2.x.1"} {
		if _, err := FeaturesOf(bad); err == nil || errors.Is(err, ErrServerTooOld) {
			t.Errorf("FeaturesOf(%q) = %v, want an unreadable-version error", bad, err)
		}
	}
}

func TestFilter(t *testing.T) {
	old, _ := FeaturesOf("2.9.10")
	current, _ := FeaturesOf("2.10.0")
	for _, tc := range []struct {
		subjects []string
		single   string
		match    []string
		noMatch  []string
	}{
		{
			subjects: []string{"pathling.sync.completed.a", "pathling.sync.failed.a"},
			single:   "pathling.sync.*.a",
			match:    []string{"pathling.sync.completed.a", "pathling.sync.failed.a"},
			noMatch:  []string{"pathling.sync.requested.a", "pathling.sync.poison.a", "pathling.sync.completed.b"},
		},
		{
			subjects: []string{"p.requested.*", "p.failed.*"},
			single:   "p.*.*",
			match:    []string{"p.requested.x", "p.failed.y"},
			noMatch:  []string{"p.completed.x"},
		},
		{
			subjects: []string{"p.completed.>", "p.failed.>"},
			single:   "p.*.>",
			match:    []string{"p.completed.x", "p.failed.x.y"},
			noMatch:  []string{"p.requested.x", "p.failed"},
		},
		{
			subjects: []string{"a.b", "a.b.c"},
			single:   "a.>",
			match:    []string{"a.b", "a.b.c"},
			noMatch:  []string{"a.c", "a.b.d"},
		},
	} {
		f := old.Filter(tc.subjects...)
		if len(f.Subjects) != 1 || f.Subjects[0] != tc.single {
			t.Errorf("2.9 Filter(%v).Subjects = %v, want [%s]", tc.subjects, f.Subjects, tc.single)
		}
		for _, s := range tc.match {
			if !SubjectMatches(tc.single, s) || !f.Matches(s) {
				t.Errorf("2.9 Filter(%v) drops %s", tc.subjects, s)
			}
		}
		for _, s := range tc.noMatch {
			if f.Matches(s) {
				t.Errorf("2.9 Filter(%v) keeps %s", tc.subjects, s)
			}
		}
		var cc jetstream.ConsumerConfig
		f.Apply(&cc)
		if cc.FilterSubject != tc.single || cc.FilterSubjects != nil {
			t.Errorf("2.9 Apply: %q %v", cc.FilterSubject, cc.FilterSubjects)
		}
		// 2.10 filters on the server, exactly.
		f = current.Filter(tc.subjects...)
		if len(f.Subjects) != len(tc.subjects) || !f.Matches("anything.at.all") {
			t.Errorf("2.10 Filter(%v) = %+v", tc.subjects, f)
		}
		f.Apply(&cc)
		if cc.FilterSubject != "" || len(cc.FilterSubjects) != len(tc.subjects) {
			t.Errorf("2.10 Apply: %q %v", cc.FilterSubject, cc.FilterSubjects)
		}
	}
	// One subject is one filter subject on every server.
	var cc jetstream.ConsumerConfig
	old.Filter("p.requested.a").Apply(&cc)
	if cc.FilterSubject != "p.requested.a" || cc.FilterSubjects != nil {
		t.Errorf("single subject: %q %v", cc.FilterSubject, cc.FilterSubjects)
	}
}
