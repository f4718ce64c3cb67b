//! The portal as HTTP: the page and its files come from the binary with
//! their content types, ETags and a strict Content-Security-Policy, and the
//! portal shadows no API route.

use meshfleet_tests::TestApp;
use reqwest::StatusCode;

#[tokio::test]
async fn the_portal_is_served_from_the_binary_without_shadowing_the_api() {
    let app = TestApp::spawn().await;

    for path in ["/", "/ui", "/ui/", "/ui/clusters/prod-eu-1", "/ui/rollouts"] {
        let r = app.get(path).send().await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(
            r.header("content-type"),
            Some("text/html; charset=utf-8"),
            "{path}"
        );
        assert!(r.text.contains("/ui/assets/app.js"), "{path}: {}", r.text);
        let csp = r.header("content-security-policy").expect("a CSP");
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }

    for (file, content_type) in [
        ("app.js", "text/javascript; charset=utf-8"),
        ("views/cluster.js", "text/javascript; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ] {
        let path = format!("/ui/assets/{file}");
        let r = app.get(&path).send().await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header("content-type"), Some(content_type), "{path}");
        assert_eq!(r.header("cache-control"), Some("no-cache"));
        let etag = r.etag();
        // An unchanged file is a 304 with no body.
        let again = app.get(&path).header("if-none-match", &etag).send().await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(again.text.is_empty());
        assert_eq!(again.etag(), etag);
        let other = app
            .get(&path)
            .header("if-none-match", "\"something-else\"")
            .send()
            .await;
        assert_eq!(other.status, StatusCode::OK);
    }
    // Nothing on the page comes from another origin.
    let page = app.get("/").send().await;
    for outside in ["http://", "https://", "//fonts", "cdn"] {
        assert!(!page.text.contains(outside), "the page loads {outside}");
    }

    let missing = app.get("/ui/assets/nope.js").send().await;
    missing.problem(404);

    // The API, its docs and the probes keep their own answers.
    app.get("/v1/nothing-here").send().await.problem(404);
    app.get("/v1/clusters").send().await.problem(401);
    let doc = app.get("/openapi.json").send().await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["paths"].is_object());
    assert!(
        doc.body["paths"]
            .as_object()
            .unwrap()
            .keys()
            .all(|p| !p.starts_with("/ui")),
        "the portal is not part of the API document"
    );
    let docs = app.get("/docs/").send().await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.text.contains("swagger"), "{}", docs.text);
    assert_eq!(app.get("/healthz").send().await.text, "ok\n");
    let post = app.req(reqwest::Method::POST, "/").send().await;
    post.problem(405);
}
