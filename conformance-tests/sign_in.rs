//! Sign-in and token protections, each finding of the hostile-input review as a regression
//! test: a request id that dies after a few failures, account and address lockout, no CORS
//! on the pages, a public client's refresh without client_id, refresh-token reuse revoking
//! the family, and introspection only of the caller's own tokens — on both databases.

use crate::common::secure::{PASSWORD, REDIRECT_URI, SecureServer, pkce, request_field, unique};
use crate::secure_backends;
use healporium::smart::accounts::ClientKind;
use serde_json::Value;

secure_backends!(
    sixty_wrong_passwords_on_one_request_id_end_it_and_lock_the_account,
    many_names_from_one_address_lock_the_address,
    the_sign_in_and_consent_pages_send_no_cors_headers,
    a_public_clients_refresh_without_client_id_works,
    a_replayed_refresh_token_revokes_its_family,
    a_token_cannot_introspect_another_clients_token,
    the_issuer_is_never_an_arbitrary_host,
);

async fn the_issuer_is_never_an_arbitrary_host(s: SecureServer) {
    let r = s
        .client
        .get(format!("{}/.well-known/smart-configuration", s.base))
        .header("host", "evil.example")
        .send()
        .await
        .expect("discovery");
    let text = r.text().await.expect("body");
    assert!(!text.contains("evil.example"), "{text}");
}

/// Opens the sign-in page of a new authorization request; its request id.
async fn sign_in_page(s: &SecureServer, app: &str) -> String {
    let (_, challenge) = pkce();
    let query = [
        ("response_type", "code"),
        ("client_id", app),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "openid fhirUser user/*.rs"),
        ("state", "x"),
        ("aud", s.base.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    let url = format!(
        "{}/auth/authorize?{}",
        s.origin(),
        serde_urlencoded::to_string(query).expect("query")
    );
    let page = s.client.get(url).send().await.expect("authorize");
    assert_eq!(page.status(), 200);
    request_field(&page.text().await.expect("page"))
}

async fn login(s: &SecureServer, request: &str, user: &str, password: &str) -> u16 {
    s.auth_post(
        "login",
        &[
            ("request", request),
            ("username", user),
            ("password", password),
        ],
        None,
    )
    .await
    .status()
    .as_u16()
}

async fn sixty_wrong_passwords_on_one_request_id_end_it_and_lock_the_account(s: SecureServer) {
    let user = unique("victim");
    s.add_user(&user, "practitioner", None).await;
    let app = s.add_public_app().await;
    let request = sign_in_page(&s, &app).await;
    let mut statuses = Vec::new();
    for _ in 0..60 {
        statuses.push(login(&s, &request, &user, "wrong").await);
    }
    // two failures show the form again; the third ends the request
    assert_eq!(&statuses[..2], &[401, 401]);
    assert!(statuses[2..].iter().all(|&c| c != 200), "{statuses:?}");
    assert_ne!(
        login(&s, &request, &user, PASSWORD).await,
        200,
        "the request is gone"
    );
    // the account: after five failures (over two requests) it is locked, even for the
    // right password, and the answer is 429
    let request = sign_in_page(&s, &app).await;
    login(&s, &request, &user, "wrong").await;
    login(&s, &request, &user, "wrong").await;
    let request = sign_in_page(&s, &app).await;
    assert_eq!(login(&s, &request, &user, PASSWORD).await, 429);
    // another account is not affected
    let other = unique("other");
    s.add_user(&other, "practitioner", None).await;
    assert_eq!(login(&s, &request, &other, PASSWORD).await, 200);
}

async fn many_names_from_one_address_lock_the_address(s: SecureServer) {
    let app = s.add_public_app().await;
    let user = unique("late");
    s.add_user(&user, "practitioner", None).await;
    for i in 0..20 {
        let request = sign_in_page(&s, &app).await;
        login(&s, &request, &format!("guess{i}"), "wrong").await;
    }
    let request = sign_in_page(&s, &app).await;
    assert_eq!(login(&s, &request, &user, PASSWORD).await, 429);
}

async fn the_sign_in_and_consent_pages_send_no_cors_headers(s: SecureServer) {
    let app = s.add_public_app().await;
    let request = sign_in_page(&s, &app).await;
    for path in ["login", "consent"] {
        let r = s
            .client
            .post(format!("{}/auth/{path}", s.origin()))
            .header("origin", "https://evil.example")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("request={request}"))
            .send()
            .await
            .expect("post");
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{path} allows other origins"
        );
    }
    // the API and the token endpoint keep CORS (browser apps call them)
    let r = s
        .client
        .get(format!("{}/metadata", s.base))
        .header("origin", "https://app.example")
        .send()
        .await
        .expect("metadata");
    assert!(r.headers().get("access-control-allow-origin").is_some());
}

/// A public app signed in with `offline_access`: (app, refresh token).
async fn offline(s: &SecureServer) -> (String, String) {
    let user = unique("offline");
    s.add_user(&user, "practitioner", None).await;
    let app = s.add_public_app().await;
    let t = s
        .authorize(
            &app,
            &user,
            "openid fhirUser offline_access user/*.rs",
            None,
            None,
        )
        .await;
    (app, t.refresh_token.expect("a refresh token"))
}

async fn refresh(s: &SecureServer, token: &str, client_id: Option<&str>) -> (u16, Value) {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    if let Some(c) = client_id {
        form.push(("client_id", c));
    }
    let r = s.auth_post("token", &form, None).await;
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON"))
}

async fn a_public_clients_refresh_without_client_id_works(s: SecureServer) {
    let (_, token) = offline(&s).await;
    let (status, body) = refresh(&s, &token, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["access_token"].is_string());
    // a confidential client's refresh still needs its authentication
    let secret = s
        .add_client(
            "conf",
            ClientKind::Confidential,
            &[REDIRECT_URI],
            "openid fhirUser offline_access user/*.rs",
            None,
            None,
        )
        .await
        .expect("secret");
    let user = unique("c");
    s.add_user(&user, "practitioner", None).await;
    let (code, verifier) = s
        .code("conf", &user, "openid offline_access user/*.rs", None, None)
        .await;
    let (status, t) = s
        .exchange("conf", Some(("conf", &secret)), &code, &verifier)
        .await;
    assert_eq!(status, 200, "{t}");
    let (status, _) = refresh(&s, t["refresh_token"].as_str().expect("rt"), None).await;
    assert_eq!(status, 401);
}

async fn a_replayed_refresh_token_revokes_its_family(s: SecureServer) {
    let (app, first) = offline(&s).await;
    let (status, second) = refresh(&s, &first, Some(&app)).await;
    assert_eq!(status, 200);
    let second = second["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_string();
    // the first token again: refused, and the token that replaced it dies with it
    let (status, _) = refresh(&s, &first, Some(&app)).await;
    assert_eq!(status, 400);
    let (status, body) = refresh(&s, &second, Some(&app)).await;
    assert_eq!(status, 400, "{body}");
}

async fn a_token_cannot_introspect_another_clients_token(s: SecureServer) {
    let user = unique("u");
    s.add_user(&user, "practitioner", None).await;
    let a = s.add_public_app().await;
    let b = s.add_public_app().await;
    let ta = s.authorize(&a, &user, "openid user/*.rs", None, None).await;
    let tb = s.authorize(&b, &user, "openid user/*.rs", None, None).await;
    let introspect = |bearer: String, token: String| {
        let s = &s;
        async move {
            let r = s
                .client
                .post(format!("{}/auth/introspect", s.origin()))
                .bearer_auth(bearer)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string([("token", token)]).expect("form"))
                .send()
                .await
                .expect("introspect");
            let v: Value = r.json().await.expect("JSON");
            v["active"].as_bool()
        }
    };
    assert_eq!(
        introspect(ta.access_token.clone(), ta.access_token.clone()).await,
        Some(true)
    );
    assert_eq!(
        introspect(ta.access_token.clone(), tb.access_token.clone()).await,
        Some(false),
        "another client's token is not described"
    );
}
