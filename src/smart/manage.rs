//! The operator's changes to registered accounts and clients (`healporium user …` and
//! `client …` besides `add`): what is shown about them (never a hash, a secret or private key
//! material), disabling, enabling and removing them, a new password, a new client secret.
//! Enforcement is elsewhere: a disabled or missing row is refused by every flow
//! ([`super::accounts::user`], [`super::accounts::client`]) and by the per-request token check.

use super::crypto::{self, PasswordCost};
use crate::store::AuthStore;
use crate::store::auth::{ClientRow, UserRow};

/// What is shown about an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountView {
    pub username: String,
    pub role: String,
    pub fhir_user: Option<String>,
    pub created: i64,
    pub disabled: bool,
}

impl From<UserRow> for AccountView {
    fn from(r: UserRow) -> AccountView {
        AccountView {
            username: r.username,
            role: r.role,
            fhir_user: r.fhir_user,
            created: r.created,
            disabled: r.disabled,
        }
    }
}

/// What is shown about a client: its keys by id and type only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    pub client_id: String,
    pub name: String,
    pub kind: String,
    pub redirect_uris: Vec<String>,
    pub scopes: String,
    /// `kid (kty)` of each key of a registered JWK Set.
    pub keys: Vec<String>,
    pub jwks_url: Option<String>,
    pub created: i64,
    pub disabled: bool,
}

impl From<ClientRow> for ClientView {
    fn from(r: ClientRow) -> ClientView {
        let redirect_uris = serde_json::from_str(&r.redirect_uris).unwrap_or_default();
        let keys = r
            .jwks
            .as_deref()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .and_then(|v| v.get("keys").and_then(|k| k.as_array()).cloned())
            .unwrap_or_default()
            .iter()
            .map(|k| {
                let field = |f: &str| k.get(f).and_then(|v| v.as_str()).unwrap_or("?").to_string();
                format!("{} ({})", field("kid"), field("kty"))
            })
            .collect();
        ClientView {
            client_id: r.client_id,
            name: r.name,
            kind: r.kind,
            redirect_uris,
            scopes: r.scopes,
            keys,
            jwks_url: r.jwks_url,
            created: r.created,
            disabled: r.disabled,
        }
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("cannot {what}: {e}")
}

fn no_user(username: &str) -> String {
    format!("no user '{}'", shown(username))
}

fn no_client(client_id: &str) -> String {
    format!("no client '{}'", shown(client_id))
}

/// A name as echoed in a message: at most 40 characters.
fn shown(name: &str) -> String {
    name.chars().take(40).collect()
}

/// Every account, by name.
pub async fn users(store: &dyn AuthStore) -> Result<Vec<AccountView>, String> {
    let rows = store
        .users()
        .await
        .map_err(|e| failed("read the users", e))?;
    Ok(rows.into_iter().map(AccountView::from).collect())
}

/// One account, disabled or not.
pub async fn show_user(store: &dyn AuthStore, username: &str) -> Result<AccountView, String> {
    store
        .user(username)
        .await
        .map_err(|e| failed("read the user", e))?
        .map(AccountView::from)
        .ok_or_else(|| no_user(username))
}

/// Disables (`true`) or enables an account.
pub async fn set_user_disabled(
    store: &dyn AuthStore,
    username: &str,
    disabled: bool,
) -> Result<(), String> {
    match store.set_user_disabled(username, disabled).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(no_user(username)),
        Err(e) => Err(failed("change the user", e)),
    }
}

/// Deletes an account (its refresh tokens and break-glass grants go with it).
pub async fn remove_user(store: &dyn AuthStore, username: &str) -> Result<(), String> {
    match store.remove_user(username).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(no_user(username)),
        Err(e) => Err(failed("remove the user", e)),
    }
}

/// Gives an account a new password (hashed at `cost`) and revokes its refresh tokens.
pub async fn reset_password(
    store: &dyn AuthStore,
    username: &str,
    password: &str,
    cost: PasswordCost,
) -> Result<(), String> {
    super::accounts::check_password(password)?;
    if store
        .user(username)
        .await
        .map_err(|e| failed("read the user", e))?
        .is_none()
    {
        return Err(no_user(username));
    }
    let hash = crypto::hash_password(password, cost)?;
    match store.set_password(username, &hash).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(no_user(username)),
        Err(e) => Err(failed("store the password", e)),
    }
}

/// Every client, by id.
pub async fn clients(store: &dyn AuthStore) -> Result<Vec<ClientView>, String> {
    let rows = store
        .clients()
        .await
        .map_err(|e| failed("read the clients", e))?;
    Ok(rows.into_iter().map(ClientView::from).collect())
}

/// One client, disabled or not.
pub async fn show_client(store: &dyn AuthStore, client_id: &str) -> Result<ClientView, String> {
    store
        .client(client_id)
        .await
        .map_err(|e| failed("read the client", e))?
        .map(ClientView::from)
        .ok_or_else(|| no_client(client_id))
}

/// Disables (`true`) or enables a client.
pub async fn set_client_disabled(
    store: &dyn AuthStore,
    client_id: &str,
    disabled: bool,
) -> Result<(), String> {
    match store.set_client_disabled(client_id, disabled).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(no_client(client_id)),
        Err(e) => Err(failed("change the client", e)),
    }
}

/// Deletes a client (its refresh tokens and launch contexts go with it).
pub async fn remove_client(store: &dyn AuthStore, client_id: &str) -> Result<(), String> {
    match store.remove_client(client_id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(no_client(client_id)),
        Err(e) => Err(failed("remove the client", e)),
    }
}

/// A new secret for a confidential client (hashed at `cost`); returns it — the only time it
/// is shown. The old secret stops working at once.
pub async fn rotate_secret(
    store: &dyn AuthStore,
    client_id: &str,
    cost: PasswordCost,
) -> Result<String, String> {
    let row = store
        .client(client_id)
        .await
        .map_err(|e| failed("read the client", e))?
        .ok_or_else(|| no_client(client_id))?;
    if row.kind != "confidential" {
        return Err(format!(
            "client '{}' is a {} client: only confidential clients have a secret",
            shown(client_id),
            row.kind
        ));
    }
    let secret = crypto::random_token(32);
    let hash = crypto::hash_password(&secret, cost)?;
    match store.set_client_secret(client_id, &hash).await {
        Ok(true) => Ok(secret),
        Ok(false) => Err(no_client(client_id)),
        Err(e) => Err(failed("store the secret", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_view_names_keys_but_holds_no_secret() {
        let row = ClientRow {
            client_id: "c".into(),
            name: "C".into(),
            kind: "backend".into(),
            secret_hash: Some("$argon2id$secret".into()),
            redirect_uris: r#"["https://a.example/cb"]"#.into(),
            scopes: "system/*.rs".into(),
            jwks: Some(r#"{"keys":[{"kid":"k1","kty":"EC","x":"X","y":"Y"}]}"#.into()),
            jwks_url: None,
            created: 0,
            disabled: true,
        };
        let view = ClientView::from(row);
        assert_eq!(view.keys, vec!["k1 (EC)".to_string()]);
        assert_eq!(view.redirect_uris, vec!["https://a.example/cb".to_string()]);
        assert!(!format!("{view:?}").contains("argon2"));
        assert!(view.disabled);
    }
}
