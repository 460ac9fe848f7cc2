package source

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
)

// Default sizes of the synthetic dataset.
const (
	DefaultPatients               = 10
	DefaultEncountersPerPatient   = 2
	DefaultObservationsPerPatient = 3
	DefaultConditionsPerPatient   = 1
	DefaultSeedAge                = 24 * time.Hour
)

type coding struct{ system, code, display, unit string }

var (
	familyNames = []string{"Smith", "Nguyen", "Garcia", "Müller", "Okafor", "Rossi", "Kowalski", "Tanaka", "Silva", "O'Brien", "Johansson", "Dubois"}
	givenFemale = []string{"Alice", "Maria", "Aiko", "Fatima", "Ingrid", "Chloe", "Amara", "Lucía"}
	givenMale   = []string{"Bob", "Jamal", "Kenji", "Lars", "Mateo", "Pierre", "Tomasz", "Oliver"}
	cities      = []struct{ city, state, postal string }{
		{"Brisbane", "QLD", "4000"}, {"Sydney", "NSW", "2000"}, {"Melbourne", "VIC", "3000"},
		{"Perth", "WA", "6000"}, {"Adelaide", "SA", "5000"}, {"Hobart", "TAS", "7000"},
	}
	encounterTypes = []coding{
		{"http://snomed.info/sct", "185349003", "Encounter for check up", ""},
		{"http://snomed.info/sct", "185345009", "Encounter for symptom", ""},
		{"http://snomed.info/sct", "390906007", "Follow-up encounter", ""},
	}
	observationCodes = []struct {
		coding
		low, high float64
		decimals  int
	}{
		{coding{"http://loinc.org", "8867-4", "Heart rate", "/min"}, 50, 110, 0},
		{coding{"http://loinc.org", "8310-5", "Body temperature", "Cel"}, 36, 39, 1},
		{coding{"http://loinc.org", "29463-7", "Body weight", "kg"}, 45, 120, 1},
		{coding{"http://loinc.org", "8302-2", "Body height", "cm"}, 150, 200, 0},
		{coding{"http://loinc.org", "2339-0", "Glucose [Mass/volume] in Blood", "mg/dL"}, 70, 180, 0},
	}
	conditionCodes = []coding{
		{"http://snomed.info/sct", "38341003", "Hypertensive disorder", ""},
		{"http://snomed.info/sct", "44054006", "Diabetes mellitus type 2", ""},
		{"http://snomed.info/sct", "195967001", "Asthma", ""},
		{"http://snomed.info/sct", "55822004", "Hyperlipidemia", ""},
		{"http://snomed.info/sct", "40055000", "Chronic sinusitis", ""},
	}
)

// datasetSize is the resolved shape of the synthetic dataset.
type datasetSize struct {
	patients, encounters, observations, conditions int
}

// resolveCount applies the Config convention: 0 means the default, negative means none.
func resolveCount(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	default:
		return v
	}
}

// generateDataset builds the initial records, deterministically from seed and size. Their
// meta.lastUpdated values are spread evenly (millisecond steps) over the window that ends just
// before end, in generation order: patient 1 with its encounters, observations and
// conditions, then patient 2, and so on. Clinical dates come from the seed alone.
func generateDataset(seed int64, size datasetSize, end time.Time, age time.Duration) ([]*record, error) {
	perPatient := 1 + size.encounters + size.observations + size.conditions
	total := size.patients * perPatient
	if total == 0 {
		return nil, nil
	}
	step := (age / time.Duration(total)).Truncate(time.Millisecond)
	if step < time.Millisecond {
		step = time.Millisecond
	}
	base := end.Add(-step * time.Duration(total))

	rng := rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15))
	newID := func() string {
		var u uuid.UUID
		for i := range u {
			u[i] = byte(rng.UintN(256))
		}
		u[6] = (u[6] & 0x0f) | 0x40 // version 4
		u[8] = (u[8] & 0x3f) | 0x80 // RFC 4122 variant
		return u.String()
	}
	pick := func(n int) int { return rng.IntN(n) }
	clinicalBase := time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC)
	clinicalDate := func() time.Time {
		return clinicalBase.Add(time.Duration(rng.Int64N(int64(10 * 365 * 24 * time.Hour)))).Truncate(time.Second)
	}

	records := make([]*record, 0, total)
	add := func(obj map[string]any) error {
		stamp := base.Add(step * time.Duration(len(records)))
		obj["meta"] = map[string]any{"versionId": "1", "lastUpdated": stamp.Format(instantLayout)}
		body, err := encodeResource(obj)
		if err != nil {
			return fmt.Errorf("source: generate %s: %w", obj["resourceType"], err)
		}
		records = append(records, &record{
			typ: obj["resourceType"].(string), id: obj["id"].(string), version: 1, lastUpdated: stamp, body: body,
		})
		return nil
	}

	for p := 0; p < size.patients; p++ {
		patientID := newID()
		female := rng.IntN(2) == 0
		given := givenMale
		gender := "male"
		if female {
			given, gender = givenFemale, "female"
		}
		city := cities[pick(len(cities))]
		birth := time.Date(1930+pick(90), time.Month(1+pick(12)), 1+pick(28), 0, 0, 0, 0, time.UTC)
		patient := map[string]any{
			"resourceType": "Patient",
			"id":           patientID,
			"identifier": []any{map[string]any{
				"system": "urn:oid:1.2.36.146.595.217.0.1",
				"value":  fmt.Sprintf("MRN%08d", rng.IntN(100000000)),
			}},
			"active": true,
			"name": []any{map[string]any{
				"use": "official", "family": familyNames[pick(len(familyNames))],
				"given": []any{given[pick(len(given))]},
			}},
			"gender":    gender,
			"birthDate": birth.Format("2006-01-02"),
			"address": []any{map[string]any{
				"city": city.city, "state": city.state, "postalCode": city.postal, "country": "AU",
			}},
		}
		if err := add(patient); err != nil {
			return nil, err
		}
		subject := map[string]any{"reference": "Patient/" + patientID}

		encounterIDs := make([]string, 0, size.encounters)
		encounterStarts := make([]time.Time, 0, size.encounters)
		for e := 0; e < size.encounters; e++ {
			id := newID()
			start := clinicalDate()
			typ := encounterTypes[pick(len(encounterTypes))]
			enc := map[string]any{
				"resourceType": "Encounter",
				"id":           id,
				"status":       "finished",
				"class": map[string]any{
					"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory",
				},
				"type":    []any{codeableConcept(typ)},
				"subject": subject,
				"period": map[string]any{
					"start": start.Format(time.RFC3339),
					"end":   start.Add(time.Duration(15+pick(90)) * time.Minute).Format(time.RFC3339),
				},
			}
			if err := add(enc); err != nil {
				return nil, err
			}
			encounterIDs = append(encounterIDs, id)
			encounterStarts = append(encounterStarts, start)
		}

		for o := 0; o < size.observations; o++ {
			code := observationCodes[pick(len(observationCodes))]
			value := code.low + rng.Float64()*(code.high-code.low)
			obs := map[string]any{
				"resourceType": "Observation",
				"id":           newID(),
				"status":       "final",
				"category": []any{codeableConcept(coding{
					"http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs", "Vital Signs", "",
				})},
				"code":    codeableConcept(code.coding),
				"subject": subject,
				"valueQuantity": map[string]any{
					"value":  json.Number(fmt.Sprintf("%.*f", code.decimals, value)),
					"unit":   code.unit,
					"system": "http://unitsofmeasure.org",
					"code":   code.unit,
				},
			}
			effective := clinicalDate()
			if len(encounterIDs) > 0 {
				i := o % len(encounterIDs)
				obs["encounter"] = map[string]any{"reference": "Encounter/" + encounterIDs[i]}
				effective = encounterStarts[i].Add(time.Duration(pick(15)) * time.Minute)
			}
			obs["effectiveDateTime"] = effective.Format(time.RFC3339)
			if err := add(obs); err != nil {
				return nil, err
			}
		}

		for c := 0; c < size.conditions; c++ {
			onset := clinicalDate()
			cond := map[string]any{
				"resourceType": "Condition",
				"id":           newID(),
				"clinicalStatus": codeableConcept(coding{
					"http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active", "",
				}),
				"verificationStatus": codeableConcept(coding{
					"http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed", "",
				}),
				"code":          codeableConcept(conditionCodes[pick(len(conditionCodes))]),
				"subject":       subject,
				"onsetDateTime": onset.Format(time.RFC3339),
				"recordedDate":  onset.Add(time.Duration(pick(30)) * 24 * time.Hour).Format(time.RFC3339),
			}
			if len(encounterIDs) > 0 {
				cond["encounter"] = map[string]any{"reference": "Encounter/" + encounterIDs[c%len(encounterIDs)]}
			}
			if err := add(cond); err != nil {
				return nil, err
			}
		}
	}
	return records, nil
}

func codeableConcept(c coding) map[string]any {
	return map[string]any{
		"coding": []any{map[string]any{"system": c.system, "code": c.code, "display": c.display}},
		"text":   c.display,
	}
}
