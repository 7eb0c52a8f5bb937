//! Every asset the page names is served, so a new script cannot be left out of `asset`.

use axum::extract::Path;

use super::{asset, INDEX};

/// The `assets/...` paths named in `src="..."` and `href="..."` attributes of the page.
fn named_assets() -> Vec<String> {
    INDEX
        .split("\"assets/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_asset_the_page_names_is_served() {
    let names = named_assets();
    assert!(
        names.iter().any(|n| n == "workflows.js"),
        "the page loads the workflows view: {names:?}"
    );
    for name in names {
        let served = asset(Path(name.clone())).await;
        assert!(
            served.is_ok(),
            "`/assets/{name}` is named by the page but not served"
        );
    }
    assert!(asset(Path("nope.js".into())).await.is_err());
}

#[test]
fn the_page_names_nothing_by_an_absolute_path() {
    // An application may nest the router under a prefix: every link is relative.
    for attr in ["src=\"/", "href=\"/"] {
        assert!(!INDEX.contains(attr), "the page has {attr}...");
    }
    for script in [super::APP_JS, super::WORKFLOWS_JS] {
        assert!(
            !script.contains("fetch(\"/") && !script.contains("EventSource(\"/"),
            "a script calls the API by an absolute path"
        );
    }
}

#[test]
fn the_queue_card_shows_when_load_shedding_is_on() {
    assert!(
        INDEX.contains("id=\"c-shedding\""),
        "the badge is on the page"
    );
    for read in ["q.shedding", "q.shedding_up_to", "q.shed.low"] {
        assert!(
            super::APP_JS.contains(read),
            "the page reads {read} from /stats"
        );
    }
}
