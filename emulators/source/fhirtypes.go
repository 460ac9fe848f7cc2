package source

// r4ResourceTypes lists the resource types of FHIR R4 (4.0.1). A kick-off naming any other
// type is rejected with 400, as a real R4 server would; a known type without data simply
// exports nothing.
// It is filled once and only read afterwards.
var r4ResourceTypes = func() map[string]bool {
	types := map[string]bool{}
	for _, t := range []string{
		"Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance", "Appointment",
		"AppointmentResponse", "AuditEvent", "Basic", "Binary", "BiologicallyDerivedProduct",
		"BodyStructure", "Bundle", "CapabilityStatement", "CarePlan", "CareTeam", "CatalogEntry",
		"ChargeItem", "ChargeItemDefinition", "Claim", "ClaimResponse", "ClinicalImpression",
		"CodeSystem", "Communication", "CommunicationRequest", "CompartmentDefinition",
		"Composition", "ConceptMap", "Condition", "Consent", "Contract", "Coverage",
		"CoverageEligibilityRequest", "CoverageEligibilityResponse", "DetectedIssue", "Device",
		"DeviceDefinition", "DeviceMetric", "DeviceRequest", "DeviceUseStatement",
		"DiagnosticReport", "DocumentManifest", "DocumentReference", "EffectEvidenceSynthesis",
		"Encounter", "Endpoint", "EnrollmentRequest", "EnrollmentResponse", "EpisodeOfCare",
		"EventDefinition", "Evidence", "EvidenceVariable", "ExampleScenario",
		"ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal", "GraphDefinition", "Group",
		"GuidanceResponse", "HealthcareService", "ImagingStudy", "Immunization",
		"ImmunizationEvaluation", "ImmunizationRecommendation", "ImplementationGuide",
		"InsurancePlan", "Invoice", "Library", "Linkage", "List", "Location", "Measure",
		"MeasureReport", "Media", "Medication", "MedicationAdministration", "MedicationDispense",
		"MedicationKnowledge", "MedicationRequest", "MedicationStatement", "MedicinalProduct",
		"MedicinalProductAuthorization", "MedicinalProductContraindication",
		"MedicinalProductIndication", "MedicinalProductIngredient", "MedicinalProductInteraction",
		"MedicinalProductManufactured", "MedicinalProductPackaged",
		"MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect",
		"MessageDefinition", "MessageHeader", "MolecularSequence", "NamingSystem",
		"NutritionOrder", "Observation", "ObservationDefinition", "OperationDefinition",
		"OperationOutcome", "Organization", "OrganizationAffiliation", "Parameters", "Patient",
		"PaymentNotice", "PaymentReconciliation", "Person", "PlanDefinition", "Practitioner",
		"PractitionerRole", "Procedure", "Provenance", "Questionnaire", "QuestionnaireResponse",
		"RelatedPerson", "RequestGroup", "ResearchDefinition", "ResearchElementDefinition",
		"ResearchStudy", "ResearchSubject", "RiskAssessment", "RiskEvidenceSynthesis", "Schedule",
		"SearchParameter", "ServiceRequest", "Slot", "Specimen", "SpecimenDefinition",
		"StructureDefinition", "StructureMap", "Subscription", "Substance",
		"SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
		"SubstanceReferenceInformation", "SubstanceSourceMaterial", "SubstanceSpecification",
		"SupplyDelivery", "SupplyRequest", "Task", "TerminologyCapabilities", "TestReport",
		"TestScript", "ValueSet", "VerificationResult", "VisionPrescription",
	} {
		types[t] = true
	}
	return types
}()

// mandatoryElements lists, for the generated types, the top-level elements with a minimum
// cardinality of 1 in R4. _elements never removes them (nor id, meta, resourceType).
var mandatoryElements = map[string][]string{
	"Encounter":   {"status", "class"},
	"Observation": {"status", "code"},
	"Condition":   {"subject"},
}

// choiceElements are R4 element names that appear in JSON with a type suffix
// (valueQuantity, effectiveDateTime, ...): _elements=value selects any of them.
var choiceElements = map[string]bool{
	"value": true, "effective": true, "onset": true, "abatement": true, "deceased": true,
	"multipleBirth": true, "occurrence": true, "performed": true, "medication": true,
	"reported": true, "timing": true, "born": true, "age": true, "serviced": true,
}
