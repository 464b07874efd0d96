//! The HL7 v2 parser and the shipped message structures against real messages: every
//! sample in ../shared/fhir/hl7v2 (Microsoft FHIR-Converter's 57 and the v2-to-FHIR IG's
//! MDM^T02) parses, and every one whose trigger the mapping set supports matches its
//! structure with no misplaced or missing segment — the grammar attaches each segment to
//! its group. Pure: no database.

use crate::common::shared;
use healporium::feeds::mapping_set::MappingSet;
use healporium::hl7v2::{er7, grammar};

fn samples() -> Vec<(String, String)> {
    let dir = shared().join("hl7v2");
    let mut out = Vec::new();
    let ms = dir.join("microsoft-fhir-converter/messages");
    for e in std::fs::read_dir(&ms).unwrap() {
        let p = e.unwrap().path();
        out.push((
            p.file_name().unwrap().to_string_lossy().into_owned(),
            std::fs::read_to_string(&p).unwrap(),
        ));
    }
    let ig = dir.join("hl7-v2-to-fhir-ig-samples/Message.hl7_MDM_T02.txt");
    out.push(("IG MDM_T02".into(), std::fs::read_to_string(ig).unwrap()));
    out.sort();
    out
}

#[test]
fn every_sample_parses_and_supported_ones_match_their_structure() {
    let set = MappingSet::embedded().expect("the shipped mapping set loads");
    let all = samples();
    assert!(all.len() >= 58, "{} samples", all.len());
    let mut matched = 0;
    let mut triggers = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    for (name, text) in &all {
        let m = match er7::parse(text) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{name}: does not parse: {e}"));
                continue;
            }
        };
        let Some(st) = set.structure_for(&m) else {
            continue; // a trigger the set does not support: an AR at run time
        };
        let names: Vec<String> = m.segments.iter().map(|s| s.name.clone()).collect();
        let (_, findings) = grammar::match_segments(st, &names);
        let errors: Vec<String> = findings
            .iter()
            .filter(|f| f.is_error())
            .map(|f| f.to_string())
            .collect();
        if errors.is_empty() {
            matched += 1;
            let (code, trigger, _) = m.message_type();
            triggers.insert(format!("{code}^{trigger}"));
        } else {
            problems.push(format!("{name} as {}: {}", st.name, errors.join("; ")));
        }
    }
    println!("{matched} samples matched their structure");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // every message type the feeds support has a sample here, except OMP^O09 (none exists)
    for t in [
        "ADT^A01", "ADT^A02", "ADT^A03", "ADT^A04", "ADT^A08", "ADT^A11", "ADT^A13", "ADT^A28",
        "ADT^A31", "ADT^A40", "ADT^A47", "ORU^R01", "RDE^O11", "RDS^O13", "SIU^S12", "SIU^S13",
        "SIU^S14", "SIU^S15", "SIU^S26", "DFT^P03", "BAR^P01", "VXU^V04", "MDM^T02",
    ] {
        assert!(
            triggers.contains(t),
            "no sample of {t} matched: {triggers:?}"
        );
    }
}
