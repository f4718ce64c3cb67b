use std::collections::BTreeSet;

use meshfleet_tests::{TestApp, cluster_body};
use serde_json::json;

#[tokio::test]
async fn of_n_concurrent_writers_with_the_same_etag_exactly_one_wins() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let etag = app
        .create("acme", "c1", &cluster_body("1.27.1"))
        .await
        .etag();
    const N: usize = 16;
    let writes = (0..N).map(|i| {
        let (app, t, etag) = (&app, t.clone(), etag.clone());
        async move {
            let r = app
                .patch("/v1/clusters/c1")
                .token(&t)
                .header("if-match", &etag)
                .merge_patch(&json!({"labels": {"writer": format!("w{i}")}}))
                .send()
                .await;
            (i, r)
        }
    });
    let results = futures::future::join_all(writes).await;
    let winners: Vec<usize> = results
        .iter()
        .filter(|(_, r)| r.status == 200)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
    for (_, r) in results.iter().filter(|(_, r)| r.status != 200) {
        r.problem(412);
    }
    let now = app.get("/v1/clusters/c1").token(&t).send().await;
    assert_eq!(
        now.body["labels"]["writer"],
        format!("w{}", winners[0]),
        "the winner's write is what is stored"
    );
    let events = app.get("/v1/events?cluster=c1").token(&t).send().await;
    assert_eq!(
        events.body["items"].as_array().unwrap().len(),
        2,
        "one creation and one update"
    );
}

#[tokio::test]
async fn concurrent_creates_of_one_name_make_one_cluster() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    let body = cluster_body("1.27.1");
    let puts = (0..8).map(|_| app.put("/v1/clusters/same").token(&t).json(&body).send());
    let results = futures::future::join_all(puts).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    assert_eq!(created, 1);
    assert!(
        results.iter().all(|r| r.status == 201 || r.status == 200),
        "{results:?}"
    );
    let ids: BTreeSet<String> = results
        .iter()
        .map(|r| r.body["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn paging_sees_every_cluster_once_while_others_are_inserted() {
    let app = TestApp::spawn().await;
    let t = app.owner("acme");
    const EXISTING: usize = 130;
    let body = cluster_body("1.27.1");
    for chunk in (0..EXISTING).collect::<Vec<_>>().chunks(10) {
        let puts = chunk.iter().map(|i| {
            app.put(&format!("/v1/clusters/c-{i:04}"))
                .token(&t)
                .json(&body)
                .send()
        });
        for r in futures::future::join_all(puts).await {
            assert_eq!(r.status, 201);
        }
    }
    // Another tenant's clusters never show up.
    app.create("other", "c-0000x", &body).await;

    let inserter = async {
        for i in 0..40 {
            // names that sort between and after the existing ones
            let r = app
                .put(&format!("/v1/clusters/c-{:04}x", i * 3))
                .token(&t)
                .json(&body)
                .send()
                .await;
            assert_eq!(r.status, 201);
        }
    };
    let pager = async {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/clusters?limit=25&cursor={c}"),
                None => "/v1/clusters?limit=25".to_string(),
            };
            let page = app.get(&path).token(&t).send().await;
            assert_eq!(page.status, 200, "{}", page.text);
            let items = page.body["items"].as_array().unwrap();
            assert!(items.len() <= 25);
            seen.extend(
                items
                    .iter()
                    .map(|c| c["name"].as_str().unwrap().to_string()),
            );
            match page.body["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        seen
    };
    let ((), seen) = tokio::join!(inserter, pager);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "stable order by name");
    for i in 0..EXISTING {
        assert!(
            unique.contains(&format!("c-{i:04}")),
            "c-{i:04} was skipped"
        );
    }
    assert!(
        seen.iter()
            .all(|n| n != "c-0000x" || unique.len() > EXISTING),
        "only own clusters"
    );
}
