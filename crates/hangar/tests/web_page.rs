//! The controller's web page in a real browser (headless Chromium, see `support/browser.rs`):
//! the real controller on the local backend against the GitHub emulator, a job that runs for a
//! few seconds, and the page's DOM as Chromium built it, while the job runs and after it ended;
//! the live update (the page's script applying server-sent events) under virtual time; a phone
//! screenshot; and a protected controller's page, refused without the token (to the browser too)
//! and shown with it as a Basic password (to an HTTP client).

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::time::Duration;

use browser::Chromium;
use hangar_emulator::{Conclusion, JobSpec};
use reqwest::StatusCode;
use serde_json::Value;
use support::e2e::{Controller, Pools, REPO_POOL};
use support::{REPO, emulator, within};

/// Untrusted, like any job name from a workflow file: it must show as text.
const JOB_NAME: &str = "deploy <script>alert(1)</script> \"onmouseover=x";

/// The record of the job named [`JOB_NAME`] in `/jobs`, and whether it is in flight.
async fn job_record(addr: std::net::SocketAddr) -> Option<(Value, bool)> {
    let jobs: Value = reqwest::get(format!("http://{addr}/jobs"))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let pool = jobs["pools"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == REPO_POOL)?;
    for (key, in_flight) in [("in_flight", true), ("recent", false)] {
        if let Some(job) = pool[key]
            .as_array()?
            .iter()
            .find(|j| j["job_name"] == JOB_NAME)
        {
            return Some((job.clone(), in_flight));
        }
    }
    None
}

/// The `<li>` of the job with `id`, as Chromium serialized it.
fn job_row<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("data-job-id=\"{id}\""))
        .unwrap_or_else(|| panic!("no row for job {id} in {dom}"));
    let end = dom[start..].find("</li>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_shows_a_running_job_then_its_result_in_a_real_browser() {
    const TEST: &str = "the_page_shows_a_running_job_then_its_result_in_a_real_browser";
    let Some(chromium) = Chromium::find(TEST) else {
        return;
    };
    let started = std::time::Instant::now();
    let emu = emulator().await;
    let mut controller = Controller::start(&emu, "web", &Pools::default()).await;
    controller.wait_live().await;
    let url = format!("http://{}/", controller.addr);
    let id = emu.enqueue_job(
        JobSpec::new(REPO, JOB_NAME)
            .labels([REPO_POOL])
            .step("work", "echo working; sleep 6"),
    );

    // Running: the controller has heard the job start.
    let record = within(30, async {
        loop {
            if let Some((job, true)) = job_record(controller.addr).await
                && job["started_at"].is_string()
            {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let job_id = record["job_id"].as_str().expect("a job id").to_string();

    let dom = within(30, chromium.dump_dom(&url, None)).await;
    assert!(
        dom.contains(&format!("id=\"pool-{REPO_POOL}\"")),
        "no pool section: {dom}"
    );
    let row = job_row(&dom, &job_id);
    assert!(row.contains("data-state=\"running\""), "{row}");
    // The name is text in the DOM, not an element or an attribute.
    assert!(
        row.contains("deploy &lt;script&gt;alert(1)&lt;/script&gt; \"onmouseover=x"),
        "{row}"
    );
    assert!(!dom.contains("<script>alert"), "{dom}");
    assert_eq!(dom.matches("<script").count(), 1, "only page.js: {dom}");
    // Its running bar reaches the axis' right edge (now); the queued part may be too short to
    // draw (the emulator hands out a job at once).
    assert!(
        row.contains("<i class=\"r\" style=\"left:"),
        "a running bar: {row}"
    );
    let right_edge = row
        .split("<i class=\"r\" style=\"left:")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|style| {
            let (left, width) = style.split_once("%;width:")?;
            Some(left.parse::<f64>().ok()? + width.trim_end_matches('%').parse::<f64>().ok()?)
        })
        .expect("a bar's geometry");
    assert!((right_edge - 100.0).abs() < 0.02, "{row}");
    assert!(
        row.contains(record["runner_name"].as_str().unwrap()),
        "{row}"
    );

    // A phone's screenshot while the job runs.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-page");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("phone-running.png");
    let _ = std::fs::remove_file(&shot);
    within(30, chromium.screenshot(&url, &shot, 390, 844)).await;
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    println!("{TEST}: phone screenshot at {}", shot.display());

    // The live update: the page's script follows /events and swaps <main> (data-updates counts
    // the events applied). Virtual time lets the page run for a while before the DOM is taken;
    // the proxy cuts each event stream after its first event so that virtual time can run.
    let proxy = browser::one_event_proxy(controller.addr).await;
    let proxied = format!("http://{proxy}/");
    let dom = within(30, chromium.dump_dom(&proxied, Some(5000))).await;
    let updates = dom
        .split("data-updates=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse::<u32>().ok());
    assert!(
        updates.is_some_and(|n| n >= 1),
        "no live update applied: {dom}"
    );
    println!("{TEST}: {updates:?} live updates applied in 5 s of virtual time");
    assert!(dom.contains(&format!("data-job-id=\"{job_id}\"")), "{dom}");
    assert!(
        !dom.contains("class=\"badge muted\">snapshot<"),
        "the script marks the page live: {dom}"
    );

    // Done: a later load shows the result.
    let view = emu
        .wait_for_job(id, Duration::from_secs(30))
        .await
        .expect("the job finishes");
    assert_eq!(view.conclusion, Some(Conclusion::Success), "{view:?}");
    within(30, async {
        while !matches!(job_record(controller.addr).await, Some((_, false))) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let dom = within(30, chromium.dump_dom(&url, None)).await;
    let row = job_row(&dom, &job_id);
    assert!(row.contains("data-state=\"succeeded\""), "{row}");
    assert!(row.contains(">succeeded<"), "{row}");
    assert!(row.contains("ran "), "its run time: {row}");
    let shot = dir.join("phone-done.png");
    within(30, chromium.screenshot(&url, &shot, 390, 844)).await;
    println!("{TEST}: phone screenshot at {}", shot.display());
    controller.stop().await;
    println!("{TEST}: took {:?}", started.elapsed());
}

/// With `controller.http_token_env`, the page answers 401 and asks for Basic or Bearer; the
/// token as a Basic password opens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_controllers_page_needs_the_token() {
    const TEST: &str = "a_protected_controllers_page_needs_the_token";
    const TOKEN: &str = "page-token-1234";
    let emu = emulator().await;
    let mut controller = Controller::start_custom(
        &emu,
        "web-token",
        &Pools::default(),
        |toml| {
            toml.replacen(
                "[controller]\n",
                "[controller]\nhttp_token_env = \"HANGAR_PAGE_TEST_TOKEN\"\n",
                1,
            )
        },
        |options| {
            if let hangar::commands::CredentialEnv::Given(env) = &mut options.credential_env {
                env.insert("HANGAR_PAGE_TEST_TOKEN".into(), TOKEN.into());
            }
        },
    )
    .await;
    let url = format!("http://{}/", controller.addr);
    let client = reqwest::Client::new();
    let bare = client.get(&url).send().await.unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        bare.headers()["www-authenticate"],
        "Basic realm=\"hangar controller\", Bearer"
    );
    let body = bare.text().await.unwrap();
    assert!(!body.contains("pool-"), "{body}");
    let basic = client
        .get(&url)
        .basic_auth("me", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::OK);
    assert!(
        basic
            .text()
            .await
            .unwrap()
            .contains(&format!("id=\"pool-{REPO_POOL}\""))
    );

    // A browser without the token gets the 401 and its explanation (headless, nobody answers
    // the prompt; headless Chromium does not send credentials written in the URL either, so
    // Basic auth is proven above with an HTTP client, not here).
    if let Some(chromium) = Chromium::find(TEST) {
        let dom = within(30, chromium.dump_dom(&url, None)).await;
        assert!(!dom.contains("pool-"), "{dom}");
        assert!(dom.contains("HTTP Basic auth"), "{dom}");
    }
    controller.stop().await;
}
