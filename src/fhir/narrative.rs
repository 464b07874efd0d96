//! Narrative XHTML (`Narrative.div`), read with an XML parser: the elements it uses, the links
//! it holds (`a href`, `img src`) and whether it has content. The rules R4 puts on it (txt-1:
//! only basic HTML, no scripts or event handlers; txt-2: some non-whitespace content) and the
//! HL7 validator's hyperlink-scheme rule are judged here; `#id` links feed dom-3.

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// The HTML 4.0 formatting elements txt-1 allows (chapters 7–11 and 15, `a`, `img`).
const ALLOWED_ELEMENTS: &[&str] = &[
    "a",
    "abbr",
    "acronym",
    "address",
    "b",
    "bdo",
    "big",
    "blockquote",
    "br",
    "caption",
    "cite",
    "code",
    "col",
    "colgroup",
    "dd",
    "dfn",
    "div",
    "dl",
    "dt",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "kbd",
    "li",
    "ol",
    "p",
    "pre",
    "q",
    "samp",
    "small",
    "span",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "tfoot",
    "th",
    "thead",
    "tr",
    "tt",
    "ul",
    "var",
];

/// URL schemes a narrative hyperlink may use (anything else, `urn:` included, is not a link
/// a reader can follow; relative links and `#fragments` have no scheme).
const LINK_SCHEMES: &[&str] = &[
    "http", "https", "ftp", "ftps", "sftp", "mailto", "tel", "fax",
];

/// What is wrong with a narrative, one message per problem.
#[derive(Debug, Default)]
pub struct Findings {
    /// txt-1 and well-formedness problems.
    pub invalid: Vec<String>,
    /// txt-2: no non-whitespace text and no image.
    pub empty: bool,
    /// Hyperlinks with a scheme that is not a followable link.
    pub bad_links: Vec<String>,
}

/// The `#id` targets of `a href` and `img src` in a narrative (for dom-3).
pub fn local_links(div: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk(div, |name, e| {
        for (key, value) in attributes(e) {
            if matches!((name, key.as_str()), ("a", "href") | ("img", "src"))
                && value.starts_with('#')
            {
                out.push(value);
            }
        }
        Ok(())
    });
    out
}

/// Judges a narrative against txt-1, txt-2 and the hyperlink rule.
pub fn check(div: &str) -> Findings {
    let mut f = Findings::default();
    let mut content = false;
    let mut invalid = Vec::new();
    let mut bad_links = Vec::new();
    let outcome = walk_all(div, &mut content, |name, e| {
        if !ALLOWED_ELEMENTS.contains(&name) {
            invalid.push(format!(
                "txt-1: the element '{}' is not allowed in a narrative",
                clip(name)
            ));
        }
        for (key, value) in attributes(e) {
            let lower = key.to_ascii_lowercase();
            if lower.starts_with("on") {
                invalid.push(format!(
                    "txt-1: the event attribute '{}' is not allowed in a narrative",
                    clip(&key)
                ));
            }
            if matches!((name, lower.as_str()), ("a", "href") | ("img", "src")) {
                match scheme(&value) {
                    Some(s) if s.eq_ignore_ascii_case("javascript") => invalid.push(format!(
                        "txt-1: a '{}' link is not allowed in a narrative",
                        clip(s)
                    )),
                    Some(s)
                        if name == "a"
                            && !LINK_SCHEMES.iter().any(|x| x.eq_ignore_ascii_case(s)) =>
                    {
                        bad_links.push(format!(
                            "Hyperlink scheme '{}' in '{}' is not a valid hyperlinkable scheme",
                            clip(s),
                            clip(&value)
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    });
    if let Err(e) = outcome {
        invalid.push(e);
    }
    f.invalid = invalid;
    f.bad_links = bad_links;
    f.empty = !content;
    f
}

/// The scheme of an absolute URL (`urn`, `http`…); None for relative links.
fn scheme(url: &str) -> Option<&str> {
    let (s, _) = url.split_once(':')?;
    let mut chars = s.chars();
    (chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(s)
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

fn local_name(e: &BytesStart<'_>) -> String {
    let name = e.name();
    let raw: &str = name.as_ref();
    raw.rsplit(':').next().unwrap_or(raw).to_ascii_lowercase()
}

fn attributes(e: &BytesStart<'_>) -> Vec<(String, String)> {
    e.attributes()
        .filter_map(Result::ok)
        .map(|a| {
            (
                a.key.as_ref().to_string(),
                a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// Calls `f` for every element; stops quietly at malformed XML.
fn walk(div: &str, f: impl FnMut(&str, &BytesStart<'_>) -> Result<(), String>) {
    let mut content = false;
    let _ = walk_all(div, &mut content, f);
}

/// Calls `f(local name, element)` for every element, sets `content` when there is
/// non-whitespace text or an image; Err for XML that is not well formed.
fn walk_all(
    div: &str,
    content: &mut bool,
    mut f: impl FnMut(&str, &BytesStart<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut reader = Reader::from_str(div);
    let mut depth = 0usize;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                let name = local_name(&e);
                *content |= name == "img";
                f(&name, &e)?;
            }
            Ok(Event::Empty(e)) => {
                let name = local_name(&e);
                *content |= name == "img";
                f(&name, &e)?;
            }
            Ok(Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(Event::Text(t)) => {
                *content |= !t
                    .xml_content(quick_xml::XmlVersion::Implicit1_0)
                    .trim()
                    .is_empty();
            }
            Ok(Event::CData(t)) => *content |= !t.into_inner().trim().is_empty(),
            Ok(Event::GeneralRef(_)) => *content = true,
            Ok(Event::Eof) => {
                return if depth == 0 {
                    Ok(())
                } else {
                    Err("The narrative is not well-formed XHTML (unclosed elements)".into())
                };
            }
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "The narrative is not well-formed XHTML ({})",
                    clip(&e.to_string())
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_html_passes() {
        let f = check(
            r##"<div xmlns="http://www.w3.org/1999/xhtml"><p>Hi <a href="https://x.org/a">x</a>
            <a href="#c1">c</a> <a href="Patient/1">p</a></p><table><tr><td>1</td></tr></table></div>"##,
        );
        assert!(
            f.invalid.is_empty() && f.bad_links.is_empty() && !f.empty,
            "{f:?}"
        );
    }

    #[test]
    fn scripts_handlers_and_javascript_links_break_txt_1() {
        let f = check(r#"<div xmlns="http://www.w3.org/1999/xhtml">t<script>x</script></div>"#);
        assert_eq!(f.invalid.len(), 1, "{f:?}");
        let f = check(r#"<div xmlns="http://www.w3.org/1999/xhtml"><p onclick="x()">t</p></div>"#);
        assert_eq!(f.invalid.len(), 1, "{f:?}");
        let f = check(
            r#"<div xmlns="http://www.w3.org/1999/xhtml"><a href="javascript:x()">t</a></div>"#,
        );
        assert_eq!(f.invalid.len(), 1, "{f:?}");
        let f = check(r#"<div xmlns="http://www.w3.org/1999/xhtml"><p>t</div>"#);
        assert_eq!(f.invalid.len(), 1, "{f:?}");
    }

    #[test]
    fn whitespace_only_is_empty_but_an_image_is_content() {
        assert!(check(r#"<div xmlns="http://www.w3.org/1999/xhtml"> <p> </p> </div>"#).empty);
        assert!(
            !check(r##"<div xmlns="http://www.w3.org/1999/xhtml"><img src="#i"/></div>"##).empty
        );
        assert!(!check(r#"<div xmlns="http://www.w3.org/1999/xhtml">&amp;</div>"#).empty);
    }

    #[test]
    fn urn_links_are_not_hyperlinks() {
        let f =
            check(r#"<div xmlns="http://www.w3.org/1999/xhtml"><a href="urn:uuid:1">x</a></div>"#);
        assert_eq!(f.bad_links.len(), 1);
        assert!(f.invalid.is_empty());
    }

    #[test]
    fn local_links_are_found() {
        let div = r##"<div xmlns="http://www.w3.org/1999/xhtml"><img src="#a"/><a href="#b">b</a><a href="c">c</a></div>"##;
        assert_eq!(local_links(div), vec!["#a", "#b"]);
    }
}
