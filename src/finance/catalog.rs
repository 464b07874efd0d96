//! What a node's credit extension is made of: its canonical base (`--canonical-base`,
//! default `https://healporium.example/fhir`), its published artifacts rebased onto it, and
//! the credit products and repayment plans read from the CodeSystems `credit-product` and
//! `repayment-plan` — the compiled-in defaults, or an operator's `--credit-catalog` file.
//! Built once at start (a bad base or catalog is a one-line error) and shared by every
//! request.

use super::artifacts;
use super::products::{self, Plan, Product};
use crate::fhir::money::Currency;
use serde_json::Value;
use std::sync::{Arc, LazyLock};

/// The canonical base the artifacts are written with, and the default.
pub const DEFAULT_BASE: &str = "https://healporium.example/fhir";

/// The product a plan priced outside any line (a type-level quote) takes its APR from.
const DEFAULT_PRODUCT: &str = "standard";

#[derive(Debug)]
pub struct Catalog {
    base: String,
    artifacts: Vec<Value>,
    products: Vec<Product>,
    plans: Vec<Plan>,
}

static STANDARD: LazyLock<Arc<Catalog>> = LazyLock::new(|| {
    Arc::new(Catalog::new(None, None).unwrap_or_else(|_| Catalog {
        base: DEFAULT_BASE.to_string(),
        artifacts: Vec::new(),
        products: Vec::new(),
        plans: Vec::new(),
    }))
});

impl Catalog {
    /// The compiled-in catalog at the default base.
    pub fn standard() -> Arc<Catalog> {
        STANDARD.clone()
    }

    /// The catalog at `base` (default: [`DEFAULT_BASE`]), with the CodeSystems of
    /// `overrides` — (file name, JSON text: one CodeSystem or a Bundle of them) — in place of
    /// the compiled-in ones of the same id.
    pub fn new(base: Option<&str>, overrides: Option<(&str, &str)>) -> Result<Catalog, String> {
        let base = match base {
            None => DEFAULT_BASE.to_string(),
            Some(b) => check_base(b)?,
        };
        let mut artifacts = artifacts::embedded();
        if let Some((file, text)) = overrides {
            let replaced = override_systems(text).map_err(|e| format!("{file}: {e}"))?;
            for cs in replaced {
                let id = cs.get("id").and_then(Value::as_str).unwrap_or("");
                artifacts.retain(|a| {
                    !(a.get("resourceType").and_then(Value::as_str) == Some("CodeSystem")
                        && a.get("id").and_then(Value::as_str) == Some(id))
                });
                artifacts.push(cs);
            }
            artifacts.sort_by_key(artifacts::key);
        }
        let artifacts = if base == DEFAULT_BASE {
            artifacts
        } else {
            artifacts
                .into_iter()
                .map(|a| rebase_value(a, &base))
                .collect()
        };
        let system = |id: &str| {
            artifacts::find(&artifacts, "CodeSystem", id)
                .ok_or_else(|| format!("CodeSystem/{id} is missing"))
        };
        let products = products::products_from(system("credit-product")?)?;
        let plans = products::plans_from(system("repayment-plan")?)?;
        Ok(Catalog {
            base,
            artifacts,
            products,
            plans,
        })
    }

    /// The canonical base, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `{base}/{path}`: `url("CodeSystem/account-type")`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// The URL of one of the extension's StructureDefinitions (`credit-draw`, `statement`, …).
    pub fn extension_url(&self, name: &str) -> String {
        self.url(&format!("StructureDefinition/{name}"))
    }

    /// The URL of one of the extension's CodeSystems.
    pub fn system(&self, id: &str) -> String {
        self.url(&format!("CodeSystem/{id}"))
    }

    /// A canonical written against the default base, moved onto this one.
    pub fn rebase(&self, url: &str) -> String {
        match url.strip_prefix(DEFAULT_BASE) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                format!("{}{rest}", self.base)
            }
            _ => url.to_string(),
        }
    }

    /// The value (`value[x]` under `value_key`) of part `part` of the complex extension
    /// `extension` (one of ours, by name) of `resource`.
    pub fn extension_part<'a>(
        &self,
        resource: &'a Value,
        extension: &str,
        part: &str,
        value_key: &str,
    ) -> Option<&'a Value> {
        let url = self.extension_url(extension);
        resource
            .get("extension")?
            .as_array()?
            .iter()
            .find(|e| e.get("url").and_then(Value::as_str) == Some(url.as_str()))?
            .get("extension")?
            .as_array()?
            .iter()
            .find(|e| e.get("url").and_then(Value::as_str) == Some(part))?
            .get(value_key)
    }

    /// The currency of a credit-line Account (its `credit-line` extension's `limit`), if it is
    /// one.
    pub fn line_currency(&self, account: &Value) -> Option<Currency> {
        self.extension_part(account, "credit-line", "limit", "valueMoney")?
            .get("currency")?
            .as_str()
            .and_then(|c| Currency::parse(c).ok())
    }

    /// The product of a credit-line Account.
    pub fn line_product(&self, line: &Value) -> Option<&Product> {
        let code = self
            .extension_part(line, "credit-line", "product", "valueCoding")?
            .get("code")?
            .as_str()?;
        self.product(code)
    }

    pub fn product(&self, code: &str) -> Option<&Product> {
        self.products.iter().find(|p| p.code == code)
    }

    pub fn plan(&self, code: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.code == code)
    }

    pub fn plan_codes(&self) -> Vec<&str> {
        self.plans.iter().map(|p| p.code.as_str()).collect()
    }

    /// The APR `plan` charges on a line of `product` (none: a quote outside any line).
    pub fn plan_apr(&self, plan: &Plan, product: Option<&Product>) -> rust_decimal::Decimal {
        plan.apr_on(
            product,
            self.product(DEFAULT_PRODUCT).or(self.products.first()),
        )
    }

    /// Every artifact.
    pub fn artifacts(&self) -> &[Value] {
        &self.artifacts
    }

    /// The artifact `resource_type/id`, if it is one of ours.
    pub fn get(&self, resource_type: &str, id: &str) -> Option<&Value> {
        artifacts::find(&self.artifacts, resource_type, id)
    }

    /// The custom SearchParameters every node knows.
    pub fn search_parameters(&self) -> impl Iterator<Item = &Value> {
        self.artifacts
            .iter()
            .filter(|v| v.get("resourceType").and_then(Value::as_str) == Some("SearchParameter"))
    }

    /// The URLs of the profiles on `resource_type`.
    pub fn profiles_of(&self, resource_type: &str) -> Vec<&str> {
        self.artifacts
            .iter()
            .filter(|v| {
                v.get("resourceType").and_then(Value::as_str) == Some("StructureDefinition")
                    && v.get("kind").and_then(Value::as_str) == Some("resource")
                    && v.get("type").and_then(Value::as_str) == Some(resource_type)
            })
            .filter_map(|v| v.get("url").and_then(Value::as_str))
            .collect()
    }

    /// Why `resource` does not conform to the profiles of ours it claims: each problem with
    /// the FHIRPath of the element.
    pub fn check(&self, resource: &Value) -> Vec<(String, String)> {
        artifacts::check(&self.artifacts, resource)
    }
}

/// A canonical base: an absolute http(s) URL without query or fragment; the trailing slash
/// dropped.
fn check_base(b: &str) -> Result<String, String> {
    let b = b.trim_end_matches('/');
    let rest = b
        .strip_prefix("https://")
        .or_else(|| b.strip_prefix("http://"))
        .ok_or_else(|| format!("--canonical-base {b}: an absolute http(s) URL"))?;
    if rest.is_empty()
        || rest.starts_with('/')
        || rest.contains(['?', '#', ' ', '"', '\\'])
        || rest.chars().any(char::is_control)
    {
        return Err(format!(
            "--canonical-base {b}: a host and path, without query, fragment or spaces"
        ));
    }
    Ok(b.to_string())
}

/// Every string in `v` that is a canonical on the default base, moved onto `base`.
fn rebase_value(v: Value, base: &str) -> Value {
    match v {
        // also inside text: a SearchParameter's expression names extension URLs
        Value::String(s) if s == DEFAULT_BASE => Value::String(base.to_string()),
        Value::String(s) => {
            Value::String(s.replace(&format!("{DEFAULT_BASE}/"), &format!("{base}/")))
        }
        Value::Array(a) => Value::Array(a.into_iter().map(|x| rebase_value(x, base)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, x)| (k, rebase_value(x, base)))
                .collect(),
        ),
        other => other,
    }
}

/// The CodeSystems of an operator's catalog file: `credit-product` and/or `repayment-plan`,
/// alone or as the entries of a Bundle. Their `url` is set from the base.
fn override_systems(text: &str) -> Result<Vec<Value>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list: Vec<Value> = match v.get("resourceType").and_then(Value::as_str) {
        Some("CodeSystem") => vec![v],
        Some("Bundle") => v
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource").cloned())
            .collect(),
        _ => return Err("resourceType: a CodeSystem or a Bundle of CodeSystems".into()),
    };
    if list.is_empty() {
        return Err("entry: no CodeSystem".into());
    }
    let mut out = Vec::new();
    for (i, mut cs) in list.into_iter().enumerate() {
        let id = cs
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if cs.get("resourceType").and_then(Value::as_str) != Some("CodeSystem")
            || !["credit-product", "repayment-plan"].contains(&id.as_str())
        {
            return Err(format!(
                "entry[{i}]: a CodeSystem with id credit-product or repayment-plan"
            ));
        }
        // check the terms now, so the error names this file
        if id == "credit-product" {
            products::products_from(&cs)?;
        } else {
            products::plans_from(&cs)?;
        }
        if let Some(o) = cs.as_object_mut() {
            o.insert(
                "url".into(),
                Value::String(format!("{DEFAULT_BASE}/CodeSystem/{id}")),
            );
            o.entry("status").or_insert_with(|| "active".into());
            o.entry("content").or_insert_with(|| "complete".into());
        }
        out.push(cs);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn the_standard_catalog_has_the_default_products_and_plans() {
        let c = Catalog::new(None, None).unwrap();
        assert_eq!(
            c.plan_codes(),
            ["installments-0", "installments-apr", "deferred-12"]
        );
        let standard = c.product("standard").unwrap();
        assert_eq!(standard.max_limit_minor, 500_000);
        assert!(!standard.deferred_interest);
        assert!(c.product("promo").unwrap().deferred_interest);
        assert_eq!(
            c.product("standard-kwd").unwrap().max_limit_minor,
            1_500_000
        );
        let apr = c.plan("installments-apr").unwrap();
        assert_eq!(c.plan_apr(apr, None), "9.90".parse::<Decimal>().unwrap());
        assert_eq!(
            c.plan_apr(c.plan("installments-0").unwrap(), None),
            Decimal::ZERO
        );
        assert_eq!(c.artifacts().len(), 25);
        assert_eq!(c.search_parameters().count(), 3);
        assert_eq!(c.profiles_of("Account").len(), 2);
    }

    #[test]
    fn a_base_moves_every_canonical() {
        let c = Catalog::new(Some("https://fhir.example.org/r4/"), None).unwrap();
        assert_eq!(c.base(), "https://fhir.example.org/r4");
        let sd = c.get("StructureDefinition", "credit-line").unwrap();
        assert_eq!(
            sd["url"],
            "https://fhir.example.org/r4/StructureDefinition/credit-line"
        );
        let text = serde_json::to_string(c.artifacts()).unwrap();
        assert!(!text.contains(DEFAULT_BASE));
        assert_eq!(
            c.rebase("https://healporium.example/fhir/OperationDefinition/payoff"),
            "https://fhir.example.org/r4/OperationDefinition/payoff"
        );
        assert_eq!(c.rebase("http://hl7.org/fhir/x"), "http://hl7.org/fhir/x");
        for bad in ["ftp://x", "https://", "https://a/b?c", "healporium.example"] {
            assert!(Catalog::new(Some(bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_operator_catalog_replaces_the_products() {
        let file = r#"{"resourceType": "CodeSystem", "id": "credit-product", "concept": [
            {"code": "clinic", "property": [{"code": "currency", "valueCode": "EUR"},
              {"code": "apr", "valueDecimal": 12.5}, {"code": "reducedApr", "valueDecimal": 4},
              {"code": "maxLimit", "valueDecimal": 2500}]}]}"#;
        let c = Catalog::new(None, Some(("products.json", file))).unwrap();
        assert!(c.product("standard").is_none());
        let clinic = c.product("clinic").unwrap();
        assert_eq!(clinic.max_limit_minor, 250_000);
        // the reduced-APR plan of a quote outside a line falls back to the first product
        assert_eq!(
            c.plan_apr(c.plan("installments-apr").unwrap(), None),
            Decimal::from(4)
        );
        assert_eq!(
            c.get("CodeSystem", "credit-product").unwrap()["concept"][0]["code"],
            "clinic"
        );
        let bad = file.replace("12.5", "\"x\"");
        let e = Catalog::new(None, Some(("products.json", &bad))).unwrap_err();
        assert!(e.starts_with("products.json: "), "{e}");
        assert!(e.contains("('clinic') property apr"), "{e}");
        let e = Catalog::new(None, Some(("p.json", r#"{"resourceType": "Patient"}"#))).unwrap_err();
        assert!(e.contains("resourceType"), "{e}");
    }
}
