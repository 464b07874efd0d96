//! The administrator's page: accounts and apps (list, add, disable, enable, new password),
//! jobs and their failures, and when the audit chain and the ledger were last verified.
//! These are the operator's views of the authorization server and the job queue — the same
//! calls as the `healporium user`, `client` and `jobs` commands — shown only to a session
//! whose verified token carries the administrator role.

use super::session::{Form, Session};
use super::view::{self, Shell};
use super::{WebState, message, page, see_other};
use crate::auth::Role;
use crate::smart::accounts::{self, NewUser};
use crate::smart::manage;
use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/app/admin/users", post(add_user))
        .route("/app/admin/users/{name}/{action}", post(user_action))
        .route("/app/admin/clients", post(add_client))
        .route("/app/admin/clients/{id}/{action}", post(client_action))
}

fn admin(session: &Session) -> Result<(), Box<Response>> {
    match session.role() {
        Some(Role::Admin) => Ok(()),
        _ => Err(Box::new(message(
            StatusCode::NOT_FOUND,
            session,
            "Not found",
            "This page is for administrators.",
        ))),
    }
}

pub struct UserRow {
    pub name: String,
    pub role: String,
    pub record: String,
    pub disabled: bool,
}

pub struct ClientRow {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub disabled: bool,
}

pub struct JobView {
    pub kind: String,
    pub attempts: String,
    pub error: String,
    pub when: String,
}

#[derive(Template)]
#[template(path = "admin.html", config = "src/web/templates/askama.toml")]
struct AdminPage {
    shell: Shell,
    users: Vec<UserRow>,
    clients: Vec<ClientRow>,
    counts: Vec<(String, String, i64)>,
    failed: Vec<JobView>,
    checks: Vec<(String, String, bool)>,
    error: Option<String>,
    roles: Vec<&'static str>,
    /// A client id and secret just made, shown once.
    secret: Option<(String, String)>,
}

pub async fn home(state: &WebState, session: &Session) -> Response {
    if let Err(r) = admin(session) {
        return *r;
    }
    admin_page(state, session, None, None, None).await
}

fn at(ms: i64, zone: &jiff::tz::TimeZone) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| view::when(&t.to_string(), zone))
        .unwrap_or_default()
}

async fn admin_page(
    state: &WebState,
    session: &Session,
    done: Option<&str>,
    error: Option<String>,
    secret: Option<(String, String)>,
) -> Response {
    let auth = state.ctx.store.auth();
    let users = manage::users(auth.as_ref())
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|u| UserRow {
            name: u.username,
            role: u.role,
            record: u.fhir_user.unwrap_or_default(),
            disabled: u.disabled,
        })
        .collect();
    let clients = manage::clients(auth.as_ref())
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|c| ClientRow {
            id: c.client_id,
            name: c.name,
            kind: c.kind,
            disabled: c.disabled,
        })
        .collect();
    let jobs = state.ctx.store.jobs();
    let counts = jobs.counts().await.unwrap_or_default();
    let failed = jobs
        .list(Some(crate::store::JobState::Dead), None, 20)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|j| JobView {
            kind: j.kind,
            attempts: format!("{} of {}", j.attempts, j.max_attempts),
            error: j.last_error.unwrap_or_default().chars().take(200).collect(),
            when: at(j.updated, &session.zone),
        })
        .collect();
    let checks = state
        .ctx
        .store
        .verifications()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(kind, when, passed)| (kind, at(when, &session.zone), passed))
        .collect();
    page(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        &AdminPage {
            shell: Shell::new(session, "Administration", "").with_flash(view::flash(done)),
            users,
            clients,
            counts,
            failed,
            checks,
            error,
            roles: vec!["patient", "practitioner", "pharmacist", "insurer", "admin"],
            secret,
        },
    )
}

/// `POST /app/admin/users`: a new account.
async fn add_user(State(state): State<WebState>, form: Form) -> Response {
    let session = &form.session;
    if let Err(r) = admin(session) {
        return *r;
    }
    let role = match form.get("role").map(Role::parse) {
        Some(Ok(r)) => r,
        _ => return admin_page(&state, session, None, Some("Choose a role.".into()), None).await,
    };
    let user = NewUser {
        username: form.get("username").unwrap_or("").to_string(),
        password: form.get("password").unwrap_or("").to_string(),
        role,
        fhir_user: form.get("record").map(str::to_string),
    };
    match accounts::add_user(
        state.ctx.store.auth().as_ref(),
        user,
        state.smart.config.password_cost,
    )
    .await
    {
        Ok(()) => see_other("/app/?done=saved"),
        Err(e) => admin_page(&state, session, None, Some(e), None).await,
    }
}

async fn user_action(
    State(state): State<WebState>,
    Path((name, action)): Path<(String, String)>,
    form: Form,
) -> Response {
    let session = &form.session;
    if let Err(r) = admin(session) {
        return *r;
    }
    let auth = state.ctx.store.auth();
    let result = match action.as_str() {
        "disable" if name != session.username => {
            manage::set_user_disabled(auth.as_ref(), &name, true).await
        }
        "disable" => Err("You cannot disable your own account.".to_string()),
        "enable" => manage::set_user_disabled(auth.as_ref(), &name, false).await,
        "password" => {
            manage::reset_password(
                auth.as_ref(),
                &name,
                form.get("password").unwrap_or(""),
                state.smart.config.password_cost,
            )
            .await
        }
        _ => return super::not_found().await,
    };
    match result {
        Ok(()) => see_other("/app/?done=updated"),
        Err(e) => admin_page(&state, session, None, Some(e), None).await,
    }
}

async fn client_action(
    State(state): State<WebState>,
    Path((id, action)): Path<(String, String)>,
    form: Form,
) -> Response {
    let session = &form.session;
    if let Err(r) = admin(session) {
        return *r;
    }
    let auth = state.ctx.store.auth();
    let result = match action.as_str() {
        "disable" if id != crate::smart::WEB_CLIENT_ID => {
            manage::set_client_disabled(auth.as_ref(), &id, true).await
        }
        "disable" => {
            Err("The web app cannot disable itself; use `healporium client disable`.".to_string())
        }
        "enable" => manage::set_client_disabled(auth.as_ref(), &id, false).await,
        "secret" => {
            return match manage::rotate_secret(auth.as_ref(), &id, state.smart.config.password_cost)
                .await
            {
                Ok(secret) => {
                    admin_page(&state, session, Some("updated"), None, Some((id, secret))).await
                }
                Err(e) => admin_page(&state, session, None, Some(e), None).await,
            };
        }
        _ => return super::not_found().await,
    };
    match result {
        Ok(()) => see_other("/app/?done=updated"),
        Err(e) => admin_page(&state, session, None, Some(e), None).await,
    }
}

/// `POST /app/admin/clients`: registers an app (public or confidential, with its redirect
/// URI and the scopes it may be granted); a confidential app's secret is shown once.
async fn add_client(State(state): State<WebState>, form: Form) -> Response {
    let session = &form.session;
    if let Err(r) = admin(session) {
        return *r;
    }
    let kind = match form.get("kind") {
        Some("confidential") => crate::smart::accounts::ClientKind::Confidential,
        _ => crate::smart::accounts::ClientKind::Public,
    };
    let client = crate::smart::accounts::NewClient {
        client_id: form.get("client_id").map(str::to_string),
        name: form.get("name").unwrap_or("App").to_string(),
        kind,
        redirect_uris: form
            .get("redirect_uri")
            .map(|u| vec![u.to_string()])
            .unwrap_or_default(),
        scopes: form.get("scopes").unwrap_or("").to_string(),
        jwks: None,
        jwks_url: None,
    };
    match accounts::add_client(
        state.ctx.store.auth().as_ref(),
        client,
        state.smart.config.password_cost,
    )
    .await
    {
        Ok(r) => {
            let shown = r.secret.map(|s| (r.client_id.clone(), s));
            if shown.is_some() {
                admin_page(&state, session, Some("saved"), None, shown).await
            } else {
                see_other("/app/?done=saved")
            }
        }
        Err(e) => admin_page(&state, session, None, Some(e), None).await,
    }
}
