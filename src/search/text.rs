//! String normalization for search: case- and accent-insensitive matching compares the
//! NFD-decomposed, combining-mark-free, lower-cased forms.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// `Müller ` → `muller `: decomposed, combining marks dropped, lower-cased.
pub fn normalize(s: &str) -> String {
    s.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn folds_case_and_accents() {
        assert_eq!(super::normalize("Zoë ÅSTRÖM-Ça"), "zoe astrom-ca");
        assert_eq!(super::normalize("ÉCOLE Straße"), "ecole straße");
    }
}
