//! SMART App Launch authorization, black-box: discovery, the authorization-code flow with
//! PKCE driven by the `oauth2` crate as a real client, standalone and EHR launch, refresh,
//! backend services with private_key_jwt (RS384 and ES384) and client secrets, introspection,
//! revocation, expiry, audience and replay checks, the 401 gate — on SQLite and PostgreSQL —
//! and the binary's `user add`, `client add`, `key rotate`, `--insecure-no-auth`, `--demo`.

use crate::common::secure::{self, APP_SCOPES, PASSWORD, REDIRECT_URI, pkce, request_field};
use crate::common::{Backend, SecureServer, TokenSet, start_secure_with};
use crate::secure_backends;
use base64::Engine;
use healporium::app::AppOptions;
use healporium::smart::accounts::ClientKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oauth2::basic::{
    BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
    BasicTokenIntrospectionResponse, BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, ExtraTokenFields, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

secure_backends!(
    discovery_and_metadata_are_public,
    fhir_api_requires_a_valid_token,
    authorization_code_flow_with_the_oauth2_crate,
    practitioner_picks_a_patient_and_ehr_launch,
    pkce_aud_and_redirects_are_enforced,
    backend_services_rs384_with_registered_jwks,
    backend_services_es384_with_jwks_url,
    client_secret_basic_introspection_and_revocation,
    key_rotation_keeps_old_tokens_valid,
);

/// The SMART fields of a token response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SmartFields {
    patient: Option<String>,
    encounter: Option<String>,
    need_patient_banner: Option<bool>,
    id_token: Option<String>,
}
impl ExtraTokenFields for SmartFields {}

type SmartToken = StandardTokenResponse<SmartFields, BasicTokenType>;

/// The oauth2 crate's HTTP client: a closure over reqwest.
fn http_client() -> impl Fn(
    oauth2::HttpRequest,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, reqwest::Error>> + Send>,
> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    move |req: oauth2::HttpRequest| {
        let http = http.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let resp = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut builder = oauth2::http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                builder = builder.header(k, v);
            }
            let bytes = resp.bytes().await?;
            Ok(builder.body(bytes.to_vec()).unwrap())
        })
    }
}

/// The claims of a JWT, unverified.
fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("JWT payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("claims JSON")
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn discovery_and_metadata_are_public(s: SecureServer) {
    // an unknown discovery document is a plain 404, with or without a token
    let r = s.get(".well-known/udap").await.expect(404);
    assert_eq!(
        r.json()["issue"][0]["diagnostics"],
        "No such discovery document"
    );
    let resp = s.get(".well-known/smart-configuration").await.expect(200);
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let c = resp.json();
    let origin = s.origin();
    assert_eq!(c["issuer"], s.base.as_str());
    assert_eq!(
        c["authorization_endpoint"],
        format!("{origin}/auth/authorize")
    );
    assert_eq!(c["token_endpoint"], format!("{origin}/auth/token"));
    assert_eq!(
        c["introspection_endpoint"],
        format!("{origin}/auth/introspect")
    );
    assert_eq!(c["revocation_endpoint"], format!("{origin}/auth/revoke"));
    assert_eq!(c["code_challenge_methods_supported"], json!(["S256"]));
    for cap in [
        "launch-ehr",
        "launch-standalone",
        "client-public",
        "client-confidential-symmetric",
        "client-confidential-asymmetric",
        "sso-openid-connect",
        "context-standalone-patient",
        "context-ehr-patient",
        "permission-v1",
        "permission-v2",
        "permission-patient",
        "permission-user",
        "permission-offline",
    ] {
        assert!(
            c["capabilities"].as_array().unwrap().contains(&json!(cap)),
            "{cap}"
        );
    }
    for grant in ["authorization_code", "client_credentials", "refresh_token"] {
        assert!(
            c["grant_types_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(grant))
        );
    }
    for m in ["client_secret_basic", "private_key_jwt"] {
        assert!(
            c["token_endpoint_auth_methods_supported"]
                .as_array()
                .unwrap()
                .contains(&json!(m))
        );
    }
    assert!(
        c["scopes_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("launch/patient"))
    );
    // OpenID discovery, under the issuer and at the root
    for url in [
        format!("{}/.well-known/openid-configuration", s.base),
        format!("{origin}/.well-known/openid-configuration"),
    ] {
        let o: Value = s
            .client
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(o["issuer"], s.base.as_str());
        assert_eq!(o["jwks_uri"], c["jwks_uri"]);
    }
    // the JWKS: public RSA keys with kids
    let jwks: Value = s
        .client
        .get(c["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert!(key["kid"].is_string() && key["n"].is_string());
    assert!(key.get("d").is_none(), "never the private key");
    // the CapabilityStatement is public and carries the same endpoints
    let cs = s.get("metadata").await.expect(200).json();
    let sec = &cs["rest"][0]["security"];
    assert_eq!(
        sec["service"][0]["coding"][0]["code"], "SMART-on-FHIR",
        "{sec}"
    );
    let uris = &sec["extension"][0];
    assert_eq!(
        uris["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    let find = |name: &str| {
        uris["extension"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == name)
            .map(|e| e["valueUri"].clone())
    };
    assert_eq!(find("token"), Some(c["token_endpoint"].clone()));
    assert_eq!(find("authorize"), Some(c["authorization_endpoint"].clone()));
    assert!(
        !cs["implementation"]["description"]
            .as_str()
            .unwrap()
            .contains("WARNING")
    );
}

async fn fhir_api_requires_a_valid_token(s: SecureServer) {
    for (path, headers) in [
        ("Patient", vec![]),
        ("Patient/x", vec![]),
        ("_history", vec![]),
        ("Patient", vec![("authorization", "Bearer not-a-jwt")]),
        ("Patient", vec![("authorization", "Basic eDp5")]),
        (
            "Patient",
            vec![(
                "authorization",
                "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
            )],
        ),
    ] {
        let r = s.get_with(path, &headers).await.expect(401);
        let challenge = r.header("www-authenticate").unwrap();
        assert!(
            challenge.starts_with("Bearer realm=") && challenge.contains("error=\"invalid_token\""),
            "{challenge}"
        );
    }
    // writes too, and nothing is written
    s.post("Patient", &json!({"resourceType": "Patient"}))
        .await
        .expect(401);
    // a valid token passes the gate
    let admin = s.admin().await;
    let id = admin.create(&json!({"resourceType": "Patient"})).await;
    admin.get(&format!("Patient/{id}")).await.expect(200);
    assert_eq!(admin.version_count().await, 1);
    // a token for another server (aud) is refused: same token, other Host
    let token = admin.bearer.clone().unwrap();
    let r = s
        .get_with(
            "Patient",
            &[
                ("authorization", &format!("Bearer {token}")),
                ("host", "other.example.org"),
            ],
        )
        .await
        .expect(401);
    assert!(r.text.contains("another server"), "{}", r.text);
    // a tampered token is refused
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let mut claims = jwt_claims(&token);
    claims["scope"] = json!("system/*.cruds user/*.cruds");
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
    s.with_token(&parts.join("."))
        .get("Patient")
        .await
        .expect(401);
    // preflight requests of browser apps are answered without a token
    let pre = s
        .client
        .request(reqwest::Method::OPTIONS, s.url("Patient"))
        .header("origin", "https://app.example.org")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
}

/// The authorization-code dance as a SMART app would do it with the oauth2 crate: the
/// browser part (sign-in and consent forms) is posted with reqwest.
async fn authorization_code_flow_with_the_oauth2_crate(s: SecureServer) {
    let patient = s
        .create_as_admin(&json!({"resourceType": "Patient", "name": [{"family": "Doe"}]}))
        .await;
    s.add_user("pat", "patient", Some(&format!("Patient/{patient}")))
        .await;
    let app = s.add_public_app().await;
    let origin = s.origin();
    let client = oauth2::Client::<
        BasicErrorResponse,
        SmartToken,
        BasicTokenIntrospectionResponse,
        StandardRevocableToken,
        BasicRevocationErrorResponse,
    >::new(ClientId::new(app.clone()))
    .set_auth_uri(AuthUrl::new(format!("{origin}/auth/authorize")).unwrap())
    .set_token_uri(TokenUrl::new(format!("{origin}/auth/token")).unwrap())
    .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.to_string()).unwrap());
    let http = http_client();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf) = client
        .authorize_url(CsrfToken::new_random)
        .add_scopes(
            [
                "openid",
                "fhirUser",
                "launch/patient",
                "patient/*.rs",
                "offline_access",
            ]
            .map(|s| Scope::new(s.to_string())),
        )
        .add_extra_param("aud", s.base.clone())
        .set_pkce_challenge(challenge)
        .url();
    // the browser: sign-in page, wrong password, right password, consent
    let page = s.client.get(url.as_str()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Sign in") && html.contains("Test app"),
        "{html}"
    );
    let request = request_field(&html);
    let wrong = s
        .auth_post(
            "login",
            &[
                ("request", &request),
                ("username", "pat"),
                ("password", "nope-nope"),
            ],
            None,
        )
        .await;
    assert_eq!(wrong.status(), 401);
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("Wrong user name or password")
    );
    let consent = s
        .auth_post(
            "login",
            &[
                ("request", &request),
                ("username", "pat"),
                ("password", PASSWORD),
            ],
            None,
        )
        .await;
    assert_eq!(consent.status(), 200);
    let html = consent.text().await.unwrap();
    assert!(
        html.contains("patient/*.rs") && html.contains("Allow"),
        "{html}"
    );
    assert!(
        !html.contains("name=\"patient\""),
        "a patient picks no patient"
    );
    let done = s
        .auth_post(
            "consent",
            &[("request", &request), ("decision", "allow")],
            None,
        )
        .await;
    assert_eq!(done.status(), 303);
    let location = done.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(REDIRECT_URI), "{location}");
    let params = secure::redirect_params(&location);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("state").as_deref(), Some(csrf.secret().as_str()));
    let code = get("code").unwrap();
    // the pending request is single use
    let again = s
        .auth_post(
            "consent",
            &[("request", &request), ("decision", "allow")],
            None,
        )
        .await;
    assert_eq!(again.status(), 400);

    // the code exchange
    let token = client
        .exchange_code(AuthorizationCode::new(code.clone()))
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    assert_eq!(*token.token_type(), BasicTokenType::Bearer);
    let extra = token.extra_fields();
    assert_eq!(extra.patient.as_deref(), Some(patient.as_str()));
    assert_eq!(extra.need_patient_banner, Some(true));
    let granted: Vec<String> = token
        .scopes()
        .unwrap()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(granted.contains(&"patient/*.rs".to_string()), "{granted:?}");
    let claims = jwt_claims(token.access_token().secret());
    assert_eq!(claims["aud"], s.base.as_str());
    assert_eq!(claims["iss"], s.base.as_str());
    assert_eq!(claims["client_id"], app.as_str());
    assert_eq!(claims["patient"], patient.as_str());
    assert_eq!(claims["fhirUser"], format!("Patient/{patient}"));
    assert_eq!(claims["sub"], "pat");
    for k in ["exp", "iat", "jti", "scope"] {
        assert!(!claims[k].is_null(), "{k}");
    }
    let id_token = jwt_claims(extra.id_token.as_deref().expect("id_token"));
    assert_eq!(id_token["fhirUser"], format!("Patient/{patient}"));
    assert_eq!(id_token["aud"], app.as_str());
    assert_eq!(id_token["iss"], s.base.as_str());
    // the token opens the FHIR API (and the gate hands over the principal)
    let pat = s.with_token(token.access_token().secret());
    pat.get(&format!("Patient/{patient}")).await.expect(200);
    // a code works once
    let replay = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new("x".repeat(43)))
        .request_async(&http)
        .await;
    match replay {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant)
        }
        other => panic!("code replay must fail: {other:?}"),
    }

    // refresh (offline_access): a new access token; the old refresh token is spent
    let refresh = token.refresh_token().expect("refresh token").clone();
    let refreshed = client
        .exchange_refresh_token(&refresh)
        .request_async(&http)
        .await
        .expect("refresh");
    assert_eq!(
        refreshed.extra_fields().patient.as_deref(),
        Some(patient.as_str())
    );
    s.with_token(refreshed.access_token().secret())
        .get(&format!("Patient/{patient}"))
        .await
        .expect(200);
    // narrowing scopes on refresh is allowed, widening is not
    let next = refreshed.refresh_token().unwrap().clone();
    let wider = client
        .exchange_refresh_token(&next)
        .add_scope(Scope::new("user/*.cruds".into()))
        .request_async(&http)
        .await;
    match wider {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidScope)
        }
        other => panic!("widening must fail: {other:?}"),
    }
    let spent = client
        .exchange_refresh_token(&refresh)
        .request_async(&http)
        .await;
    assert!(
        matches!(spent, Err(RequestTokenError::ServerResponse(_))),
        "a rotated refresh token is spent"
    );
    // and its reuse ended the family: the token that replaced it is revoked too
    let family = client
        .exchange_refresh_token(&next)
        .request_async(&http)
        .await;
    assert!(
        matches!(family, Err(RequestTokenError::ServerResponse(_))),
        "reuse revokes the family"
    );
    let _ = RefreshToken::new(String::new());
}

async fn practitioner_picks_a_patient_and_ehr_launch(s: SecureServer) {
    s.admin()
        .await
        .put(
            "Practitioner/7",
            &json!({"resourceType": "Practitioner", "id": "7", "name": [{"family": "Doc"}]}),
        )
        .await
        .expect(201);
    let gp = json!([{"reference": "Practitioner/7"}]);
    let a = s
        .create_as_admin(&json!({"resourceType": "Patient", "name": [{"family": "Alpha"}], "generalPractitioner": gp}))
        .await;
    let b = s
        .create_as_admin(&json!({"resourceType": "Patient", "name": [{"family": "Beta"}], "generalPractitioner": gp}))
        .await;
    // a patient the practitioner has no care relationship with
    let c = s
        .create_as_admin(&json!({"resourceType": "Patient", "name": [{"family": "Gamma"}]}))
        .await;
    let enc = s
        .create_as_admin(&json!({"resourceType": "Encounter", "status": "finished",
            "class": {"code": "AMB"}, "subject": {"reference": format!("Patient/{b}")}}))
        .await;
    s.add_user("doc", "practitioner", Some("Practitioner/7"))
        .await;
    let app = s.add_public_app().await;

    // standalone launch: the picker lists the patients; the picked one is in context
    let (_, challenge) = pkce();
    let q = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", app.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "launch/patient patient/*.rs openid fhirUser"),
        ("aud", s.base.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ])
    .unwrap();
    let html = s
        .client
        .get(format!("{}/auth/authorize?{q}", s.origin()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let request = request_field(&html);
    let consent = s
        .auth_post(
            "login",
            &[
                ("request", &request),
                ("username", "doc"),
                ("password", PASSWORD),
            ],
            None,
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(consent.contains(&format!("value=\"{a}\"")), "{consent}");
    assert!(consent.contains(&format!("value=\"{b}\"")) && consent.contains("Beta"));
    assert!(
        !consent.contains(&c) && !consent.contains("Gamma"),
        "the picker lists only patients the user may see"
    );
    assert!(!consent.contains(" checked"), "nothing is pre-selected");
    let t = s
        .authorize(
            &app,
            "doc",
            "launch/patient patient/*.rs openid fhirUser",
            Some(&b),
            None,
        )
        .await;
    assert_eq!(t.patient.as_deref(), Some(b.as_str()));
    assert_eq!(t.raw["need_patient_banner"], true);
    assert_eq!(jwt_claims(&t.access_token)["fhirUser"], "Practitioner/7");
    // picking a patient that does not exist is refused
    let doc_user_tokens = s
        .authorize(&app, "doc", "user/*.rs openid fhirUser", None, None)
        .await;
    assert!(doc_user_tokens.patient.is_none());

    // EHR launch: the practitioner's EHR session creates a launch context
    let resp = s
        .client
        .post(format!("{}/auth/launch", s.origin()))
        .bearer_auth(&doc_user_tokens.access_token)
        .json(&json!({"client_id": app, "patient": b, "encounter": enc}))
        .send()
        .await
        .unwrap();
    let (status, launch) = json_of(resp).await;
    assert_eq!(status, 201, "{launch}");
    let launch_id = launch["launch"].as_str().unwrap().to_string();
    let t: TokenSet = s
        .authorize(
            &app,
            "doc",
            "launch patient/*.rs openid fhirUser",
            None,
            Some(&launch_id),
        )
        .await;
    assert_eq!(t.patient.as_deref(), Some(b.as_str()));
    assert_eq!(t.encounter.as_deref(), Some(enc.as_str()));
    assert_eq!(t.raw["need_patient_banner"], false);
    // an unknown launch is an error sent back to the app
    let (_, challenge) = pkce();
    let q = serde_urlencoded::to_string([
        ("response_type", "code"),
        ("client_id", app.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "launch patient/*.rs"),
        ("state", "s1"),
        ("aud", s.base.as_str()),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("launch", "no-such-launch"),
    ])
    .unwrap();
    let r = s
        .client
        .get(format!("{}/auth/authorize?{q}", s.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(
        loc.contains("error=invalid_request") && loc.contains("state=s1"),
        "{loc}"
    );
    // patients cannot create launches; a missing token cannot either
    let pat_token = s.patient_token(&a, "patient/*.rs").await;
    let resp = s
        .client
        .post(format!("{}/auth/launch", s.origin()))
        .bearer_auth(&pat_token)
        .json(&json!({"client_id": app, "patient": a}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = s
        .client
        .post(format!("{}/auth/launch", s.origin()))
        .json(&json!({"client_id": app, "patient": a}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

async fn pkce_aud_and_redirects_are_enforced(s: SecureServer) {
    s.add_user("u1", "practitioner", None).await;
    let app = s.add_public_app().await;
    let authorize = |extra: Vec<(&'static str, String)>| {
        let s = &s;
        let app = app.clone();
        async move {
            let (_, challenge) = pkce();
            let mut q: Vec<(&str, String)> = vec![
                ("response_type", "code".into()),
                ("client_id", app),
                ("redirect_uri", REDIRECT_URI.into()),
                ("scope", "user/*.rs".into()),
                ("state", "xyz".into()),
                ("aud", s.base.clone()),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256".into()),
            ];
            for (k, v) in extra {
                q.retain(|(n, _)| *n != k);
                if !v.is_empty() {
                    q.push((k, v));
                }
            }
            s.client
                .get(format!(
                    "{}/auth/authorize?{}",
                    s.origin(),
                    serde_urlencoded::to_string(&q).unwrap()
                ))
                .send()
                .await
                .unwrap()
        }
    };
    // errors the client may hear about: a redirect with error and state
    for (extra, error) in [
        (
            vec![("aud", "https://other.example.org/fhir".to_string())],
            "invalid_request",
        ),
        (vec![("aud", String::new())], "invalid_request"),
        (vec![("code_challenge", String::new())], "invalid_request"),
        (
            vec![("code_challenge_method", "plain".to_string())],
            "invalid_request",
        ),
        (
            vec![("response_type", "token".to_string())],
            "unsupported_response_type",
        ),
        (
            vec![("scope", "system/*.cruds".to_string())],
            "invalid_scope",
        ),
    ] {
        let r = authorize(extra.clone()).await;
        assert_eq!(r.status(), 303, "{extra:?}");
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        assert!(loc.starts_with(REDIRECT_URI), "{loc}");
        assert!(
            loc.contains(&format!("error={error}")) && loc.contains("state=xyz"),
            "{extra:?}: {loc}"
        );
    }
    // errors the client must not hear about: a page, no redirect
    for extra in [
        vec![("client_id", "unknown-app".to_string())],
        vec![("redirect_uri", "https://evil.example.org/cb".to_string())],
    ] {
        let r = authorize(extra).await;
        assert_eq!(r.status(), 400);
        assert!(r.headers().get("location").is_none());
    }
    // PKCE mismatch at the token endpoint
    let (verifier, challenge) = pkce();
    let r = authorize(vec![("code_challenge", challenge)]).await;
    let request = request_field(&r.text().await.unwrap());
    s.auth_post(
        "login",
        &[
            ("request", &request),
            ("username", "u1"),
            ("password", PASSWORD),
        ],
        None,
    )
    .await;
    let done = s
        .auth_post(
            "consent",
            &[("request", &request), ("decision", "allow")],
            None,
        )
        .await;
    let loc = done.headers()["location"].to_str().unwrap().to_string();
    let code = secure::redirect_params(&loc)
        .into_iter()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1;
    let exchange = |verifier: String, redirect: &'static str| {
        let s = &s;
        let app = app.clone();
        let code = code.clone();
        async move {
            json_of(
                s.auth_post(
                    "token",
                    &[
                        ("grant_type", "authorization_code"),
                        ("client_id", &app),
                        ("code", &code),
                        ("redirect_uri", redirect),
                        ("code_verifier", &verifier),
                    ],
                    None,
                )
                .await,
            )
            .await
        }
    };
    let (status, body) = exchange("A".repeat(50), REDIRECT_URI).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant", "{body}");
    // the failed attempt used the code up: even the right verifier fails now
    let (status, body) = exchange(verifier, REDIRECT_URI).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    // denial sends access_denied
    let r = authorize(vec![]).await;
    let request = request_field(&r.text().await.unwrap());
    s.auth_post(
        "login",
        &[
            ("request", &request),
            ("username", "u1"),
            ("password", PASSWORD),
        ],
        None,
    )
    .await;
    let done = s
        .auth_post(
            "consent",
            &[("request", &request), ("decision", "deny")],
            None,
        )
        .await;
    let loc = done.headers()["location"].to_str().unwrap();
    assert!(loc.contains("error=access_denied"), "{loc}");
    // token endpoint input errors are RFC 6749 JSON, never 500
    for form in [
        vec![("grant_type", "password")],
        vec![],
        vec![
            ("grant_type", "authorization_code"),
            ("client_id", "nobody"),
        ],
    ] {
        let (status, body) = json_of(s.auth_post("token", &form, None).await).await;
        assert!(status == 400 || status == 401, "{form:?}: {status}");
        assert!(body["error"].is_string(), "{body}");
    }
    let r = s
        .client
        .post(format!("{}/auth/token", s.origin()))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// A client assertion for `client_id` signed with `key`.
fn assertion(
    client_id: &str,
    aud: &str,
    alg: Algorithm,
    kid: &str,
    key: &EncodingKey,
    exp_in: i64,
    jti: &str,
) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_string());
    header.typ = Some("JWT".into());
    jsonwebtoken::encode(
        &header,
        &json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now + exp_in,
            "iat": now, "jti": jti}),
        key,
    )
    .unwrap()
}

fn rsa_key(kid: &str) -> (EncodingKey, Value) {
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS384).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    (key, serde_json::to_value(jwk).unwrap())
}

fn ec_key(kid: &str) -> (EncodingKey, Value) {
    use p384::pkcs8::{EncodePrivateKey, LineEnding};
    let private = p384::SecretKey::random(&mut rand::rngs::OsRng);
    let pem = private.to_pkcs8_pem(LineEnding::LF).unwrap();
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES384).unwrap();
    jwk.common.key_id = Some(kid.to_string());
    (key, serde_json::to_value(jwk).unwrap())
}

async fn backend_token(s: &SecureServer, assertion: &str, scope: &str) -> (u16, Value) {
    json_of(
        s.auth_post(
            "token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", scope),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
            ],
            None,
        )
        .await,
    )
    .await
}

async fn backend_services_rs384_with_registered_jwks(s: SecureServer) {
    let (key, jwk) = rsa_key("rsa-1");
    let jwks = json!({"keys": [jwk]});
    s.add_client(
        "bulk",
        ClientKind::Backend,
        &[],
        "system/*.rs system/Patient.cruds",
        Some(&jwks),
        None,
    )
    .await;
    let aud = format!("{}/auth/token", s.origin());
    let a = assertion("bulk", &aud, Algorithm::RS384, "rsa-1", &key, 240, "jti-1");
    let (status, t) = backend_token(&s, &a, "system/Patient.cruds system/*.rs user/*.rs").await;
    assert_eq!(status, 200, "{t}");
    assert_eq!(t["scope"], "system/Patient.cruds system/*.rs");
    assert!(t.get("refresh_token").is_none() && t.get("patient").is_none());
    let claims = jwt_claims(t["access_token"].as_str().unwrap());
    assert_eq!(claims["sub"], "bulk");
    assert!(claims.get("fhirUser").is_none());
    let bulk = s.with_token(t["access_token"].as_str().unwrap());
    bulk.create(&json!({"resourceType": "Patient"})).await;
    // the same assertion again: a replay
    let (status, body) = backend_token(&s, &a, "system/*.rs").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("replay")
    );
    // exp more than five minutes ahead
    let far = assertion("bulk", &aud, Algorithm::RS384, "rsa-1", &key, 900, "jti-2");
    let (status, _) = backend_token(&s, &far, "system/*.rs").await;
    assert_eq!(status, 401);
    // wrong aud
    let wrong_aud = assertion(
        "bulk",
        &s.base,
        Algorithm::RS384,
        "rsa-1",
        &key,
        60,
        "jti-3",
    );
    let (status, _) = backend_token(&s, &wrong_aud, "system/*.rs").await;
    assert_eq!(status, 401);
    // unknown kid, a key not registered, an expired assertion
    let unknown = assertion("bulk", &aud, Algorithm::RS384, "other", &key, 60, "jti-4");
    assert_eq!(backend_token(&s, &unknown, "system/*.rs").await.0, 401);
    let (other_key, _) = rsa_key("rsa-1");
    let forged = assertion(
        "bulk",
        &aud,
        Algorithm::RS384,
        "rsa-1",
        &other_key,
        60,
        "jti-5",
    );
    assert_eq!(backend_token(&s, &forged, "system/*.rs").await.0, 401);
    let expired = assertion("bulk", &aud, Algorithm::RS384, "rsa-1", &key, -120, "jti-6");
    assert_eq!(backend_token(&s, &expired, "system/*.rs").await.0, 401);
    // no grantable scope
    let a = assertion("bulk", &aud, Algorithm::RS384, "rsa-1", &key, 60, "jti-7");
    let (status, body) = backend_token(&s, &a, "patient/*.rs").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
}

async fn backend_services_es384_with_jwks_url(s: SecureServer) {
    let (key, jwk) = ec_key("ec-1");
    assert_eq!(jwk["crv"], "P-384");
    let jwks = json!({"keys": [jwk]});
    // the client publishes its JWKS at a URL of its own
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let served = jwks.clone();
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let v = served.clone();
            async move { axum::Json(v) }
        }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    s.add_client(
        "ec-service",
        ClientKind::Backend,
        &[],
        "system/*.rs",
        None,
        Some(&jwks_url),
    )
    .await;
    let aud = format!("{}/auth/token", s.origin());
    let a = assertion(
        "ec-service",
        &aud,
        Algorithm::ES384,
        "ec-1",
        &key,
        120,
        "e-1",
    );
    let (status, t) = backend_token(&s, &a, "system/*.rs").await;
    assert_eq!(status, 200, "{t}");
    s.with_token(t["access_token"].as_str().unwrap())
        .get("Patient")
        .await
        .expect(200);
    assert_eq!(backend_token(&s, &a, "system/*.rs").await.0, 401, "replay");
    // an assertion signed with RS256 (not RS384/ES384) is refused
    let (rkey, _) = rsa_key("ec-1");
    let weak = assertion(
        "ec-service",
        &aud,
        Algorithm::RS256,
        "ec-1",
        &rkey,
        60,
        "e-2",
    );
    assert_eq!(backend_token(&s, &weak, "system/*.rs").await.0, 401);
    task.abort();
}

async fn client_secret_basic_introspection_and_revocation(s: SecureServer) {
    let secret = s
        .add_client(
            "svc",
            ClientKind::Confidential,
            &[REDIRECT_URI],
            // `introspect`: a resource server, which may introspect other clients' tokens
            "system/*.rs user/*.rs openid introspect",
            None,
            None,
        )
        .await
        .expect("a confidential client gets a secret");
    // wrong secret: 401 invalid_client with a Basic challenge
    let r = s
        .auth_post(
            "token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "system/*.rs"),
            ],
            Some(("svc", "wrong")),
        )
        .await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert_eq!(json_of(r).await.1["error"], "invalid_client");
    // a public client cannot use client_credentials
    let app = s.add_public_app().await;
    let (status, body) = json_of(
        s.auth_post(
            "token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &app),
                ("scope", "system/*.rs"),
            ],
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    // a confidential app: the code exchange needs its secret (client_secret_basic)
    s.add_user("nurse", "practitioner", None).await;
    let (code, verifier) = s.code("svc", "nurse", "user/*.rs openid", None, None).await;
    let (status, body) = s.exchange("svc", None, &code, &verifier).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (code, verifier) = s.code("svc", "nurse", "user/*.rs openid", None, None).await;
    let (status, body) = s
        .exchange("svc", Some(("svc", &secret)), &code, &verifier)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        jwt_claims(body["access_token"].as_str().unwrap())["sub"],
        "nurse"
    );
    // unknown OAuth paths are 404, not 401
    let r = s
        .client
        .get(format!("{}/auth/nothing", s.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let t = s.client_credentials("svc", &secret, "system/*.rs").await;
    let access = t["access_token"].as_str().unwrap().to_string();
    s.with_token(&access).get("Patient").await.expect(200);
    // introspection (RFC 7662) by the authenticated client
    let introspect = |token: String| {
        let s = &s;
        let secret = secret.clone();
        async move {
            json_of(
                s.auth_post("introspect", &[("token", &token)], Some(("svc", &secret)))
                    .await,
            )
            .await
        }
    };
    let (status, i) = introspect(access.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(i["active"], true);
    assert_eq!(i["scope"], "system/*.rs");
    assert_eq!(i["client_id"], "svc");
    assert!(i["exp"].is_i64());
    // a user token shows its SMART context
    let p = s.create_as_admin(&json!({"resourceType": "Patient"})).await;
    let user = s
        .user_tokens(
            "patient",
            Some(&format!("Patient/{p}")),
            None,
            "launch/patient patient/*.rs offline_access",
        )
        .await;
    let (_, i) = introspect(user.access_token.clone()).await;
    assert_eq!(i["active"], true);
    assert_eq!(i["patient"], p.as_str());
    assert_eq!(i["fhirUser"], format!("Patient/{p}"));
    let (_, i) = introspect(user.refresh_token.clone().unwrap()).await;
    assert_eq!(i["active"], true);
    let (_, i) = introspect("garbage".into()).await;
    assert_eq!(i, json!({"active": false}));
    // introspection needs authentication
    let r = s.auth_post("introspect", &[("token", &access)], None).await;
    assert_eq!(r.status(), 401);

    // revocation (RFC 7009): the access token stops working at once
    let r = s
        .auth_post("revoke", &[("token", &access)], Some(("svc", &secret)))
        .await;
    assert_eq!(r.status(), 200);
    s.with_token(&access).get("Patient").await.expect(401);
    assert_eq!(introspect(access.clone()).await.1["active"], false);
    // another client cannot revoke someone else's token (silently ignored)
    let t2 = s.client_credentials("svc", &secret, "system/*.rs").await;
    let access2 = t2["access_token"].as_str().unwrap().to_string();
    let r = s
        .auth_post("revoke", &[("token", &access2), ("client_id", &app)], None)
        .await;
    assert_eq!(r.status(), 200);
    s.with_token(&access2).get("Patient").await.expect(200);
    // a public client revokes its user's refresh token; refreshing then fails
    let user_app = user.raw["access_token"].as_str().map(jwt_claims).unwrap()["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let refresh = user.refresh_token.unwrap();
    let r = s
        .auth_post(
            "revoke",
            &[("token", &refresh), ("client_id", &user_app)],
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let (status, body) = json_of(
        s.auth_post(
            "token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", &user_app),
            ],
            None,
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

async fn key_rotation_keeps_old_tokens_valid(s: SecureServer) {
    let old = s.system_token("system/*.rs").await;
    let old_kid = jsonwebtoken::decode_header(&old).unwrap().kid.unwrap();
    let (new_kid, _) = healporium::smart::keys::rotate(
        s.store.auth().as_ref(),
        healporium::smart::now_ms(),
        3600 * 1000,
    )
    .await
    .unwrap();
    assert_ne!(old_kid, new_kid);
    // tokens signed with the retired key keep working until they expire
    s.with_token(&old).get("Patient").await.expect(200);
    // the JWKS publishes both (a node reloads keys within 30 s; a fresh one at once)
    let fresh = healporium::smart::Smart::new(s.store.auth(), Default::default());
    let jwks = fresh.jwks().await.unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );
    // the fresh node signs with the new key (for a registered client: tokens of unknown
    // clients are refused)
    s.add_client(
        "x",
        ClientKind::Confidential,
        &[],
        "system/*.rs",
        None,
        None,
    )
    .await;
    let grant = healporium::smart::tokens::Grant {
        client_id: "x".into(),
        scope: "system/*.rs".into(),
        aud: s.base.clone(),
        ..Default::default()
    };
    let (token, _) = fresh.access_token(&grant).await.unwrap();
    assert_eq!(
        jsonwebtoken::decode_header(&token).unwrap().kid.unwrap(),
        new_kid
    );
    s.with_token(&token).get("Patient").await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_rejected() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let mut options = AppOptions::default();
        options.smart.access_token_ttl_secs = 1;
        let Some(s) = start_secure_with(backend, options).await else {
            continue;
        };
        let token = s.system_token("system/*.rs").await;
        s.with_token(&token).get("Patient").await.expect(200);
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let r = s.with_token(&token).get("Patient").await.expect(401);
        assert!(r.text.contains("expired"), "{}", r.text);
        assert!(
            r.header("www-authenticate")
                .unwrap()
                .contains("invalid_token")
        );
    }
}

#[test]
fn app_scopes_are_all_grantable_scopes() {
    // the harness's public app may be granted every v1/v2 patient and user scope
    for s in APP_SCOPES.split_whitespace() {
        assert!(!s.is_empty());
    }
}
