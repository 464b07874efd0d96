//! What pages show, in plain words: the shell every page shares (navigation for the role,
//! the CSRF token, what the page watches for live updates), and the formatting of FHIR
//! values for people — names, codes, money in the currency's format, dates in the person's
//! zone.

use super::session::Session;
use crate::auth::Role;
use rust_decimal::Decimal;
use serde_json::Value;
use std::str::FromStr;

/// A link of the main navigation.
pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// What every signed-in page carries.
pub struct Shell {
    pub title: String,
    pub user: String,
    pub role: &'static str,
    pub nav: Vec<NavItem>,
    pub csrf: String,
    /// Resource types whose changes reload the page's content (live updates), comma-separated.
    pub watch: String,
    /// A message about what was just done.
    pub flash: Option<&'static str>,
    /// The time zone dates are shown in (IANA name).
    pub zone: String,
}

impl Shell {
    /// The shell of a page titled `title`, watching `watch` (comma-separated types).
    pub fn new(session: &Session, title: &str, watch: &str) -> Shell {
        let section = title.to_string();
        let items: &[(&'static str, &'static str)] = match session.role() {
            Some(Role::Patient) => &[
                ("/app/", "Home"),
                ("/app/health", "Health log"),
                ("/app/records", "Records"),
                ("/app/appointments", "Appointments"),
                ("/app/bills", "Bills"),
                ("/app/messages", "Messages"),
                ("/app/profile", "Profile"),
            ],
            Some(Role::Practitioner) => &[
                ("/app/", "Today"),
                ("/app/patients", "Patients"),
                ("/app/inbox", "Inbox"),
                ("/app/availability", "Availability"),
            ],
            Some(Role::Pharmacist) => &[("/app/", "Prescriptions")],
            Some(Role::Insurer) => &[("/app/", "Claims"), ("/app/members", "Members")],
            Some(Role::Admin) => &[("/app/", "Overview")],
            None => &[],
        };
        Shell {
            nav: items
                .iter()
                .map(|(href, label)| NavItem {
                    href,
                    label,
                    current: nav_matches(label, &section),
                })
                .collect(),
            title: section,
            user: session.username.clone(),
            role: if session.caregiver() {
                "caregiver"
            } else {
                session.role().map_or("", role_words)
            },
            csrf: session.csrf.clone(),
            watch: watch.to_string(),
            flash: None,
            zone: session.zone.iana_name().unwrap_or("UTC").to_string(),
        }
    }

    pub fn with_flash(mut self, flash: Option<&'static str>) -> Shell {
        self.flash = flash;
        self
    }
}

fn nav_matches(label: &str, title: &str) -> bool {
    title.starts_with(label)
        || matches!(
            (label, title),
            ("Home", "Welcome")
                | ("Today", "Today's schedule")
                | ("Prescriptions", "Prescriptions to fill")
                | ("Claims", "Claims to review")
                | ("Overview", "Administration")
        )
}

fn role_words(role: Role) -> &'static str {
    match role {
        Role::Patient => "patient",
        Role::Practitioner => "doctor",
        Role::Pharmacist => "pharmacist",
        Role::Insurer => "insurer",
        Role::Admin => "administrator",
    }
}

/// A string at `pointer`, or "".
pub fn text(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// A string, or `other` when it is empty.
pub trait OrIfEmpty {
    fn or_if_empty(self, other: &str) -> String;
}

impl OrIfEmpty for String {
    fn or_if_empty(self, other: &str) -> String {
        if self.is_empty() {
            other.to_string()
        } else {
            self
        }
    }
}

/// The newest ClaimResponse of `Claim/{claim}` among `responses` (by `created`, then
/// `meta.lastUpdated`).
pub fn newest_response<'a>(responses: &'a [Value], claim: &str) -> Option<&'a Value> {
    let request = format!("Claim/{claim}");
    responses
        .iter()
        .filter(|r| text(r, "/request/reference") == request)
        .max_by(|a, b| {
            (text(a, "/created"), text(a, "/meta/lastUpdated"))
                .cmp(&(text(b, "/created"), text(b, "/meta/lastUpdated")))
        })
}

/// The Money of the total of `category` in a ClaimResponse or ExplanationOfBenefit.
pub fn claim_total<'v>(cr: &'v Value, category: &str) -> Option<&'v Value> {
    cr.get("total")
        .and_then(Value::as_array)?
        .iter()
        .find(|t| text(t, "/category/coding/0/code") == category)
        .and_then(|t| t.get("amount"))
}

/// A CodeableConcept in words: its text, else the first coding's display, else its code.
pub fn concept(cc: Option<&Value>) -> String {
    let Some(cc) = cc else {
        return String::new();
    };
    if let Some(t) = cc.get("text").and_then(Value::as_str) {
        return t.to_string();
    }
    let codings = cc.get("coding").and_then(Value::as_array);
    codings
        .and_then(|cs| {
            cs.iter()
                .find_map(|c| c.get("display").and_then(Value::as_str))
                .or_else(|| {
                    cs.iter()
                        .find_map(|c| c.get("code").and_then(Value::as_str))
                })
        })
        .unwrap_or("")
        .to_string()
}

/// A HumanName list in words: "Dr. Dana Smith".
pub fn name(v: &Value) -> String {
    let Some(n) = v
        .get("name")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    else {
        return v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
    };
    if let Some(t) = n.get("text").and_then(Value::as_str) {
        return t.to_string();
    }
    let mut parts: Vec<&str> = Vec::new();
    for key in ["prefix", "given"] {
        if let Some(a) = n.get(key).and_then(Value::as_array) {
            parts.extend(a.iter().filter_map(Value::as_str));
        }
    }
    if let Some(f) = n.get("family").and_then(Value::as_str) {
        parts.push(f);
    }
    parts.join(" ")
}

/// The id of a `Type/id` reference at `pointer` when it is of `resource_type`.
pub fn ref_id(v: &Value, pointer: &str, resource_type: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(resource_type))
        .and_then(|r| r.strip_prefix('/'))
        .map(str::to_string)
}

/// An amount in the currency's own format: "$1,234.50", "¥750,000", "1,500.000 KWD".
pub fn money(value: &Value, currency: &str) -> String {
    let amount = match value {
        Value::Number(n) => Decimal::from_str(&n.to_string()).ok(),
        Value::String(s) => Decimal::from_str(s).ok(),
        _ => None,
    };
    let Some(amount) = amount else {
        return String::new();
    };
    let (symbol, places) = match currency {
        "USD" => ("$", 2),
        "EUR" => ("€", 2),
        "GBP" => ("£", 2),
        "JPY" => ("¥", 0),
        "KWD" => ("", 3),
        _ => ("", 2),
    };
    let rounded = amount.round_dp(places);
    let negative = rounded.is_sign_negative() && !rounded.is_zero();
    let digits = format!("{:.*}", places as usize, rounded.abs());
    let (int, frac) = digits.split_once('.').unwrap_or((&digits, ""));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if !frac.is_empty() {
        grouped.push('.');
        grouped.push_str(frac);
    }
    let sign = if negative { "−" } else { "" };
    if symbol.is_empty() {
        format!("{sign}{grouped} {currency}")
    } else {
        format!("{sign}{symbol}{grouped}")
    }
}

/// A Money element (`{value, currency}`) in the currency's format.
pub fn money_of(m: Option<&Value>) -> String {
    let Some(m) = m else {
        return String::new();
    };
    let currency = m.get("currency").and_then(Value::as_str).unwrap_or("USD");
    m.get("value")
        .map_or_else(String::new, |v| money(v, currency))
}

/// A FHIR date or dateTime in words, in `zone`: "Tue 8 Dec 2026, 09:30" (a date alone:
/// "8 Dec 2026").
pub fn when(value: &str, zone: &jiff::tz::TimeZone) -> String {
    if let Ok(ts) = value.parse::<jiff::Timestamp>() {
        return ts
            .to_zoned(zone.clone())
            .strftime("%a %-d %b %Y, %H:%M")
            .to_string();
    }
    if let Ok(d) = value.parse::<jiff::civil::Date>() {
        return d.strftime("%-d %b %Y").to_string();
    }
    value.to_string()
}

/// Today in `zone`.
pub fn today(zone: &jiff::tz::TimeZone) -> jiff::civil::Date {
    jiff::Timestamp::now().to_zoned(zone.clone()).date()
}

/// The instant a local date and time in `zone` stands for, as a FHIR instant.
pub fn instant(date: &str, time: &str, zone: &jiff::tz::TimeZone) -> Option<String> {
    let d: jiff::civil::Date = date.parse().ok()?;
    let t: jiff::civil::Time = if time.is_empty() {
        jiff::civil::Time::midnight()
    } else {
        time.parse().ok()?
    };
    let zoned = d.to_datetime(t).to_zoned(zone.clone()).ok()?;
    Some(zoned.timestamp().strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// A short, fixed message for a `?done=` code after a form (never text from the request).
pub fn flash(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "logged" => "Saved to your health log.",
        "booked" => "Your appointment is booked.",
        "cancelled" => "The appointment is cancelled.",
        "deferred" => "The bill is now on your payment plan.",
        "paid" => "Thank you — your payment is recorded.",
        "opened" => "Your credit line is open.",
        "sent" => "Your message is sent.",
        "refill" => "Your refill request is sent to your doctor.",
        "saved" => "Your details are saved.",
        "prescribed" => "The prescription is sent.",
        "recorded" => "Recorded in the chart.",
        "dispensed" => "Dispensed. The patient can see it now.",
        "flagged" => "The prescriber has been told.",
        "finished" => "The claim is finished.",
        "updated" => "Updated.",
        "statement" => "Your statement is ready.",
        "zone" => "Times are now shown in the time zone you chose.",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn money_reads_as_the_currency_is_written() {
        for (v, c, out) in [
            (json!(1234.5), "USD", "$1,234.50"),
            (json!(640.00), "USD", "$640.00"),
            (json!(750000), "JPY", "¥750,000"),
            (json!(1500), "KWD", "1,500.000 KWD"),
            (json!(-20), "EUR", "−€20.00"),
            (json!(0.05), "USD", "$0.05"),
        ] {
            assert_eq!(money(&v, c), out);
        }
    }

    #[test]
    fn dates_read_in_the_persons_zone() {
        let ny = jiff::tz::TimeZone::get("America/New_York").unwrap();
        assert_eq!(when("2026-12-08T14:30:00Z", &ny), "Tue 8 Dec 2026, 09:30");
        assert_eq!(when("2026-12-08", &ny), "8 Dec 2026");
        assert_eq!(
            instant("2026-12-08", "09:30", &ny).as_deref(),
            Some("2026-12-08T14:30:00Z")
        );
    }
}
