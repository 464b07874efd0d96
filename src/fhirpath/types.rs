//! The FHIR R4 and System type names the engine knows without a `TypeInfo` hook, and the
//! facts about them it needs: choice-type suffixes, built-in specialisation, quantity types.
//! Shared by the evaluator, `system` and the function library; it depends on none of them.

/// Choice-type suffixes of FHIR R4 data types (`valueQuantity` → `Quantity`).
const CHOICE_TYPES: [&str; 50] = [
    "Base64Binary",
    "Boolean",
    "Canonical",
    "Code",
    "Date",
    "DateTime",
    "Decimal",
    "Id",
    "Instant",
    "Integer",
    "Markdown",
    "Oid",
    "PositiveInt",
    "String",
    "Time",
    "UnsignedInt",
    "Uri",
    "Url",
    "Uuid",
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "CodeableConcept",
    "Coding",
    "ContactPoint",
    "Count",
    "Distance",
    "Duration",
    "HumanName",
    "Identifier",
    "Money",
    "Period",
    "Quantity",
    "Range",
    "Ratio",
    "Reference",
    "SampledData",
    "Signature",
    "Timing",
    "ContactDetail",
    "Contributor",
    "DataRequirement",
    "Expression",
    "ParameterDefinition",
    "RelatedArtifact",
    "TriggerDefinition",
    "UsageContext",
    "Dosage",
    "Meta",
];

/// FHIR R4 primitive type names.
const PRIMITIVES: [&str; 20] = [
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
    "xhtml",
];

/// Other R4 type names (abstract bases, special data types) that may appear in type tests.
const OTHER_TYPES: [&str; 12] = [
    "Resource",
    "DomainResource",
    "Element",
    "BackboneElement",
    "Extension",
    "Narrative",
    "SimpleQuantity",
    "MoneyQuantity",
    "ElementDefinition",
    "MarketingStatus",
    "Population",
    "ProductShelfLife",
];

/// All R4 resource type names.
const RESOURCES: [&str; 146] = [
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// FHIRPath System type names.
const SYSTEM_TYPES: [&str; 8] = [
    "Boolean", "Integer", "Decimal", "String", "Date", "DateTime", "Time", "Quantity",
];

/// R4 types that are (profiles of) Quantity.
const QUANTITY_TYPES: [&str; 7] = [
    "Quantity",
    "Age",
    "Distance",
    "Duration",
    "Count",
    "SimpleQuantity",
    "MoneyQuantity",
];

/// FHIR type name for a choice suffix (`DateTime` → `dateTime`, `Quantity` → `Quantity`).
pub(super) fn choice_type(suffix: &str) -> Option<String> {
    let idx = CHOICE_TYPES.iter().position(|t| *t == suffix)?;
    if idx < 19 {
        let mut c = suffix.chars();
        let first = c.next()?;
        Some(first.to_ascii_lowercase().to_string() + c.as_str())
    } else {
        Some(suffix.to_string())
    }
}

/// Splits `valueQuantity` into (`value`, `Quantity` type) when the suffix is an R4 type.
pub(super) fn split_choice(key: &str) -> Option<(&str, String)> {
    for (i, c) in key.char_indices().skip(1) {
        if c.is_ascii_uppercase() {
            let (base, suffix) = key.split_at(i);
            return choice_type(suffix).map(|t| (base, t));
        }
    }
    None
}

/// The built-in R4 base type of `ty` (`code` → `string`, `Patient` → `DomainResource`).
pub(super) fn builtin_parent(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "code" | "id" | "markdown" => "string",
        "url" | "canonical" | "oid" | "uuid" => "uri",
        "unsignedInt" | "positiveInt" => "integer",
        "Age" | "Distance" | "Duration" | "Count" | "SimpleQuantity" | "MoneyQuantity" => {
            "Quantity"
        }
        "Bundle" | "Binary" | "Parameters" | "DomainResource" => "Resource",
        "BackboneElement" => "Element",
        "Resource" | "Element" => return None,
        t if RESOURCES.contains(&t) => "DomainResource",
        t if PRIMITIVES.contains(&t) || CHOICE_TYPES.contains(&t) || OTHER_TYPES.contains(&t) => {
            "Element"
        }
        _ => return None,
    })
}

/// Whether `name` is an R4 resource type.
pub(super) fn is_resource_type(name: &str) -> bool {
    RESOURCES.contains(&name)
}

/// Whether `name` is a FHIR primitive type name (`code`, `dateTime`, …).
pub(super) fn is_primitive(name: &str) -> bool {
    PRIMITIVES.contains(&name)
}

/// Whether a node of FHIR type `name` holds a Quantity.
pub(super) fn is_quantity_type(name: &str) -> bool {
    QUANTITY_TYPES.contains(&name)
}

/// Whether `name` is a type the engine knows without a [`super::TypeInfo`] hook.
pub(super) fn is_builtin_type(name: &str) -> bool {
    SYSTEM_TYPES.contains(&name)
        || PRIMITIVES.contains(&name)
        || CHOICE_TYPES.contains(&name)
        || OTHER_TYPES.contains(&name)
        || RESOURCES.contains(&name)
}
