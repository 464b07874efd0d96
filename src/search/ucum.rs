//! UCUM normalization "where simple": units that differ from a base unit by a constant factor
//! (mass, length, volume, time, amount of substance and the common concentrations) are
//! indexed and searched in that base unit, so `5.4|http://unitsofmeasure.org|mg` finds
//! `0.0054 g`. Other units are compared as written.

pub const UCUM: &str = "http://unitsofmeasure.org";

/// (unit, base unit, factor to the base unit)
const UNITS: &[(&str, &str, f64)] = &[
    ("kg", "g", 1e3),
    ("g", "g", 1.0),
    ("mg", "g", 1e-3),
    ("ug", "g", 1e-6),
    ("ng", "g", 1e-9),
    ("pg", "g", 1e-12),
    ("km", "m", 1e3),
    ("m", "m", 1.0),
    ("cm", "m", 1e-2),
    ("mm", "m", 1e-3),
    ("um", "m", 1e-6),
    ("nm", "m", 1e-9),
    ("[in_i]", "m", 0.0254),
    ("[ft_i]", "m", 0.3048),
    ("L", "L", 1.0),
    ("l", "L", 1.0),
    ("dL", "L", 1e-1),
    ("cL", "L", 1e-2),
    ("mL", "L", 1e-3),
    ("ml", "L", 1e-3),
    ("uL", "L", 1e-6),
    ("ms", "s", 1e-3),
    ("s", "s", 1.0),
    ("min", "s", 60.0),
    ("h", "s", 3600.0),
    ("d", "s", 86_400.0),
    ("wk", "s", 604_800.0),
    ("mo", "s", 2_629_800.0),
    ("a", "s", 31_557_600.0),
    ("mol", "mol", 1.0),
    ("mmol", "mol", 1e-3),
    ("umol", "mol", 1e-6),
    ("nmol", "mol", 1e-9),
    ("g/L", "g/L", 1.0),
    ("g/dL", "g/L", 10.0),
    ("mg/dL", "g/L", 1e-2),
    ("mg/L", "g/L", 1e-3),
    ("ug/L", "g/L", 1e-6),
    ("mol/L", "mol/L", 1.0),
    ("mmol/L", "mol/L", 1e-3),
    ("umol/L", "mol/L", 1e-6),
    ("[lb_av]", "g", 453.592_37),
    ("[oz_av]", "g", 28.349_523_125),
];

/// The value and code in the base unit; unknown units come back as given.
pub fn canonical(value: f64, code: &str) -> (f64, String) {
    match UNITS.iter().find(|(u, _, _)| *u == code) {
        Some((_, base, factor)) => (value * factor, (*base).to_string()),
        None => (value, code.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn converts_simple_units() {
        let (v, c) = super::canonical(5.4, "mg");
        assert_eq!(c, "g");
        assert!((v - 0.0054).abs() < 1e-15);
        assert_eq!(super::canonical(2.0, "h"), (7200.0, "s".to_string()));
        assert_eq!(
            super::canonical(80.0, "mm[Hg]"),
            (80.0, "mm[Hg]".to_string())
        );
    }
}
