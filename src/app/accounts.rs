//! The operator's account commands: `healporium user add|list|show|disable|enable|remove|
//! reset-password` and `healporium client add|list|show|disable|enable|remove|rotate-secret`.
//! Each opens the database, runs one `smart::accounts` / `smart::manage` call and returns the
//! text to print: never a password, a hash or key material — only a new client secret, once.

use super::admin_store;
use crate::smart::PasswordCost;
use crate::smart::accounts::{NewClient, NewUser};
use crate::smart::manage::{self, AccountView, ClientView};

fn fmt_time(ms: i64) -> String {
    crate::fhir::types::Instant::from_millis(ms).to_fhir()
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Runs `healporium user add`: registers an account (password hashed with argon2).
pub async fn user_add(database_url: &str, user: NewUser) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    let name = user.username.clone();
    let role = user.role.as_str();
    let fhir_user = user.fhir_user.clone();
    crate::smart::accounts::add_user(store.auth().as_ref(), user, PasswordCost::Standard)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(format!(
        "added user {name} ({role}{})",
        fhir_user.map(|f| format!(", {f}")).unwrap_or_default()
    ))
}

/// Runs `healporium user list`: one line per account.
pub async fn user_list(database_url: &str) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    let users = manage::users(store.auth().as_ref())
        .await
        .map_err(anyhow::Error::msg)?;
    let mut out = format!(
        "{:<32}  {:<12}  {:<32}  {:<24}  disabled",
        "username", "role", "fhirUser", "created"
    );
    for u in &users {
        out.push_str(&format!(
            "\n{:<32}  {:<12}  {:<32}  {:<24}  {}",
            u.username,
            u.role,
            u.fhir_user.as_deref().unwrap_or("-"),
            fmt_time(u.created),
            yes_no(u.disabled)
        ));
    }
    out.push_str(&format!("\n({} user(s))", users.len()));
    Ok(out)
}

fn show_user(u: &AccountView) -> String {
    format!(
        "username: {}\nrole: {}\nfhirUser: {}\ncreated: {}\ndisabled: {}",
        u.username,
        u.role,
        u.fhir_user.as_deref().unwrap_or("-"),
        fmt_time(u.created),
        yes_no(u.disabled)
    )
}

/// Runs `healporium user show USERNAME`.
pub async fn user_show(database_url: &str, username: &str) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    let user = manage::show_user(store.auth().as_ref(), username)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(show_user(&user))
}

/// Runs `healporium user disable|enable USERNAME`.
pub async fn user_set_disabled(
    database_url: &str,
    username: &str,
    disabled: bool,
) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    manage::set_user_disabled(store.auth().as_ref(), username, disabled)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(if disabled {
        format!(
            "disabled user {username}: sign-in, refresh and its access tokens are refused \
             until `user enable`"
        )
    } else {
        format!("enabled user {username}")
    })
}

/// Runs `healporium user remove USERNAME`.
pub async fn user_remove(database_url: &str, username: &str) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    manage::remove_user(store.auth().as_ref(), username)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(format!(
        "removed user {username} (its tokens are refused from now on)"
    ))
}

/// Runs `healporium user reset-password USERNAME`: a new password (hashed like `user add`
/// hashes), and the account's refresh tokens revoked.
pub async fn user_reset_password(
    database_url: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    manage::reset_password(
        store.auth().as_ref(),
        username,
        password,
        PasswordCost::Standard,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    Ok(format!(
        "new password for user {username}; its refresh tokens are revoked"
    ))
}

/// Runs `healporium client add`: registers a client; a confidential client's secret is in
/// the returned text, the only time it is shown.
pub async fn client_add(database_url: &str, client: NewClient) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    let kind = client.kind.as_str();
    let reg =
        crate::smart::accounts::add_client(store.auth().as_ref(), client, PasswordCost::Standard)
            .await
            .map_err(anyhow::Error::msg)?;
    let mut out = format!("added {kind} client\nclient_id: {}", reg.client_id);
    if let Some(secret) = reg.secret {
        out.push_str(&format!(
            "\nclient_secret: {secret}\n(store the secret now: it is not shown again)"
        ));
    }
    Ok(out)
}

/// Runs `healporium client list`: one line per client.
pub async fn client_list(database_url: &str) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    let clients = manage::clients(store.auth().as_ref())
        .await
        .map_err(anyhow::Error::msg)?;
    let mut out = format!(
        "{:<32}  {:<12}  {:<24}  {:<8}  name",
        "client_id", "type", "created", "disabled"
    );
    for c in &clients {
        out.push_str(&format!(
            "\n{:<32}  {:<12}  {:<24}  {:<8}  {}",
            c.client_id,
            c.kind,
            fmt_time(c.created),
            yes_no(c.disabled),
            c.name
        ));
    }
    out.push_str(&format!("\n({} client(s))", clients.len()));
    Ok(out)
}

fn show_client(c: &ClientView) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(" ")
        }
    };
    format!(
        "client_id: {}\nname: {}\ntype: {}\nredirect URIs: {}\nscopes: {}\nkeys: {}\n\
         jwks_url: {}\ncreated: {}\ndisabled: {}",
        c.client_id,
        c.name,
        c.kind,
        list(&c.redirect_uris),
        c.scopes,
        list(&c.keys),
        c.jwks_url.as_deref().unwrap_or("-"),
        fmt_time(c.created),
        yes_no(c.disabled)
    )
}

/// Runs `healporium client show ID`.
pub async fn client_show(database_url: &str, client_id: &str) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    let client = manage::show_client(store.auth().as_ref(), client_id)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(show_client(&client))
}

/// Runs `healporium client disable|enable ID`.
pub async fn client_set_disabled(
    database_url: &str,
    client_id: &str,
    disabled: bool,
) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    manage::set_client_disabled(store.auth().as_ref(), client_id, disabled)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(if disabled {
        format!(
            "disabled client {client_id}: it gets no tokens and its access tokens are refused \
             until `client enable`"
        )
    } else {
        format!("enabled client {client_id}")
    })
}

/// Runs `healporium client remove ID`.
pub async fn client_remove(database_url: &str, client_id: &str) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    manage::remove_client(store.auth().as_ref(), client_id)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(format!(
        "removed client {client_id} (its tokens are refused from now on)"
    ))
}

/// Runs `healporium client rotate-secret ID`: a confidential client's new secret, printed
/// once; the old one stops working.
pub async fn client_rotate_secret(database_url: &str, client_id: &str) -> anyhow::Result<String> {
    let store = admin_store(database_url).await?;
    let secret = manage::rotate_secret(store.auth().as_ref(), client_id, PasswordCost::Standard)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(format!(
        "new secret for client {client_id} (the old one no longer works)\n\
         client_secret: {secret}\n(store the secret now: it is not shown again)"
    ))
}
