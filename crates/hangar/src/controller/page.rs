//! The controller's web page (issue 14, second part): one read-only HTML page, served at `/`,
//! that shows each pool (scope, scale set, backend, session, runners wanted and had, why
//! launches are held, the last launch failure and error, GitHub budget left, totals, cost when
//! known) and its jobs in flight and recent ones, each with a bar on a shared timeline (queued
//! part and running part). It renders the same JSON `/status` and `/jobs` serve, so the page
//! never knows more than those routes do. `http` serves it, a small static script ([`SCRIPT`])
//! and a server-sent event stream whose events carry [`render_main`]'s HTML, which the script
//! puts in place of the page's `<main>`.
//!
//! Invariants:
//! - Pure: [`render_page`] and [`render_main`] read their arguments and nothing else (the time
//!   is given), do no I/O and never fail; a missing or odd field is left out, not an error.
//! - Every text from GitHub, the backend or the pool file (job and repository names come from
//!   untrusted workflow files) goes through [`escape`], in element text and attributes alike;
//!   numbers are formatted here. Nothing renders a value as markup.
//! - Self-contained: no external asset (no CDN, web font or image by URL: the controller runs
//!   in private subnets), no inline script (the content security policy allows only the
//!   controller's own `page.js`), and it works without script (a `<noscript>` refresh).
//! - Read-only: no form, no link that acts; the page only shows.
//! - Small: at most [`IN_FLIGHT_SHOWN`] jobs in flight and [`RECENT_SHOWN`] recent ones per pool.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::cost::dollars;

/// Jobs in flight shown per pool (oldest queued first); the rest are counted.
pub const IN_FLIGHT_SHOWN: usize = 100;
/// Finished jobs shown per pool (newest first).
pub const RECENT_SHOWN: usize = 50;

/// The timeline's spans, in minutes: the shortest that reaches back to the oldest job shown;
/// older parts are clipped at the left edge.
const TIMELINE_SPANS_MIN: [i64; 9] = [5, 10, 15, 30, 60, 120, 360, 720, 1440];

/// `page.js`: follows the server-sent events at `events` (relative, so the page works under a
/// path prefix) and puts each event's HTML in place of `<main id="live">`. Reconnecting is the
/// browser's; `data-updates` on `<main>` counts the events applied.
pub const SCRIPT: &str = r#""use strict";
(function () {
  var main = document.getElementById("live");
  var conn = document.getElementById("conn");
  if (!main || !window.EventSource) { return; }
  var updates = 0;
  var source = new EventSource("events");
  source.onopen = function () {
    if (conn) { conn.textContent = "live"; conn.className = "badge ok"; }
  };
  source.onerror = function () {
    if (conn) { conn.textContent = "reconnecting"; conn.className = "badge warn"; }
  };
  source.onmessage = function (event) {
    main.innerHTML = event.data;
    updates += 1;
    main.setAttribute("data-updates", String(updates));
  };
})();
"#;

const STYLE: &str = r#":root{color-scheme:light dark;--bg:#f4f6f8;--fg:#1b1f24;--muted:#5b6570;--card:#fff;--line:#d9dee4;--q:#e0a100;--r:#2f6fde;--ok:#15803d;--bad:#c62828;--warn:#a15c00;--track:#eceff3}
@media (prefers-color-scheme:dark){:root{--bg:#0f1216;--fg:#e4e7eb;--muted:#98a2ad;--card:#171b21;--line:#2b3139;--track:#232830;--ok:#3fb86a;--bad:#f0625d;--warn:#e0a23a}}
*{box-sizing:border-box}
body{margin:0;font:15px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;padding:.6rem 1rem;background:var(--card);border-bottom:1px solid var(--line)}
h1{font-size:1.15rem;margin:0}
main{display:block;padding:.75rem;max-width:1200px;margin:0 auto}
.summary{color:var(--muted);font-size:.85rem;margin:0 0 .75rem;overflow-wrap:anywhere}
.pool{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:.75rem;margin:0 0 1rem}
.pool h2{font-size:1.1rem;margin:0 0 .5rem;display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;overflow-wrap:anywhere}
h3{font-size:.95rem;margin:.8rem 0 .2rem}
.where{color:var(--muted);font-size:.85rem;margin:-.3rem 0 .5rem;overflow-wrap:anywhere}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(6.8rem,1fr));gap:.35rem .8rem;margin:0;font-variant-numeric:tabular-nums}
.facts div{min-width:0}
dt{font-size:.75rem;color:var(--muted)}
dd{margin:0;overflow-wrap:anywhere}
.alert{border-left:4px solid var(--warn);padding:.3rem .6rem;margin:.5rem 0;border-radius:4px;background:color-mix(in srgb,var(--warn) 10%,transparent);overflow-wrap:anywhere}
.alert.bad{border-color:var(--bad);background:color-mix(in srgb,var(--bad) 10%,transparent)}
.cost{margin:.5rem 0;overflow-wrap:anywhere}
.badge{display:inline-block;font-size:.72rem;font-weight:600;padding:.05rem .5rem;border-radius:999px;border:1px solid currentColor;white-space:nowrap}
.ok{color:var(--ok)}.bad{color:var(--bad)}.warn{color:var(--warn)}.muted{color:var(--muted)}
.jobs{list-style:none;padding:0;margin:0}
.job,.axis{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:.3rem 1rem;align-items:center}
.job{padding:.45rem 0;border-top:1px solid var(--line)}
.axis{font-size:.72rem;color:var(--muted);padding:.15rem 0}
.ticks{display:flex;justify-content:space-between}
.legend i{display:inline-block;width:.8rem;height:.6rem;border-radius:2px;margin:0 .2rem 0 .5rem}
.line1{display:flex;flex-wrap:wrap;gap:.2rem .5rem;align-items:baseline}
.name{font-weight:600;overflow-wrap:anywhere}
.repo{font-size:.85rem;overflow-wrap:anywhere}
.detail{font-size:.8rem;color:var(--muted);overflow-wrap:anywhere}
.bar{position:relative;height:.85rem;background:var(--track);border-radius:3px;overflow:hidden}
.bar i,.legend i{background:var(--r)}
.bar i{position:absolute;top:0;bottom:0;min-width:2px}
.bar i.q,.legend i.q{background:var(--q)}
.job[data-state=failed] .bar i.r{background:var(--bad)}
.job[data-state=canceled] .bar i.r,.job[data-state=unknown] .bar i.r{background:var(--muted)}
.empty{color:var(--muted);margin:.25rem 0}
@media (max-width:640px){main{padding:.5rem}.pool{padding:.6rem}.job,.axis{grid-template-columns:minmax(0,1fr)}.axis .legend{order:2}}
"#;

/// Escapes the five characters that matter in HTML text and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page: the document around [`render_main`].
pub fn render_page(status: &Value, jobs: &Value, now: DateTime<Utc>) -> String {
    let owner = status["controller"]["owner_name"]
        .as_str()
        .filter(|o| !o.is_empty());
    let title = match owner {
        Some(owner) => format!("Hangar · {}", escape(owner)),
        None => "Hangar controller".to_string(),
    };
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>\n\
         <title>{title}</title>\n<style>\n{STYLE}</style>\n\
         <script src=\"page.js\" defer></script>\n</head>\n<body>\n\
         <header><h1>{title}</h1><span id=\"conn\" class=\"badge muted\">snapshot</span></header>\n\
         <main id=\"live\">\n{main}</main>\n</body>\n</html>\n",
        main = render_main(status, jobs, now),
    );
    out
}

/// What live updates replace: the summary line and every pool with its jobs.
pub fn render_main(status: &Value, jobs: &Value, now: DateTime<Utc>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    summary(&mut out, &status["controller"], now);
    if let Some(error) = str_of(&status["controller"]["reload_error"]) {
        let _ = writeln!(
            out,
            "<p class=\"alert bad\">The pool file was not reloaded: {}</p>",
            escape(error)
        );
    }
    let pools = pool_views(status, jobs);
    if pools.is_empty() {
        out.push_str("<p class=\"empty\">No pools.</p>\n");
        return out;
    }
    let axis = Axis::of(&pools, now);
    for pool in &pools {
        render_pool(&mut out, pool, &axis, now);
    }
    out
}

/// One pool: its `/status` object and its `/jobs` object (either may be missing).
struct PoolView<'a> {
    name: &'a str,
    status: &'a Value,
    jobs: &'a Value,
    in_flight: Vec<&'a Value>,
    recent: Vec<&'a Value>,
}

static NULL: Value = Value::Null;

fn pool_views<'a>(status: &'a Value, jobs: &'a Value) -> Vec<PoolView<'a>> {
    let status_pools = status["pools"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let jobs_pools = jobs["pools"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut names: Vec<&str> = Vec::new();
    for pool in status_pools.iter().chain(jobs_pools) {
        if let Some(name) = pool["name"].as_str()
            && !names.contains(&name)
        {
            names.push(name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let find = |pools: &'a [Value]| {
                pools
                    .iter()
                    .find(|p| p["name"].as_str() == Some(name))
                    .unwrap_or(&NULL)
            };
            let jobs = find(jobs_pools);
            let list = |key: &str, cap: usize| -> Vec<&'a Value> {
                jobs[key]
                    .as_array()
                    .map(|a| a.iter().take(cap).collect())
                    .unwrap_or_default()
            };
            PoolView {
                name,
                status: find(status_pools),
                jobs,
                in_flight: list("in_flight", IN_FLIGHT_SHOWN),
                recent: list("recent", RECENT_SHOWN),
            }
        })
        .collect()
}

fn summary(out: &mut String, controller: &Value, now: DateTime<Utc>) {
    let mut parts = vec![format!(
        "Updated <time datetime=\"{}\">{}</time>",
        now.to_rfc3339_opts(SecondsFormat::Secs, true),
        now.format("%Y-%m-%d %H:%M:%S UTC")
    )];
    if let Some(started) = time_of(&controller["started_at"]) {
        parts.push(format!("up {}", duration(seconds(started, now))));
    }
    if let Some(owner) = str_of(&controller["owner_name"]) {
        parts.push(format!("owner {}", escape(owner)));
    }
    if let Some(secs) = controller["resync_interval_secs"].as_f64() {
        parts.push(format!("resync every {}", duration(secs)));
    }
    let _ = writeln!(out, "<p class=\"summary\">{}</p>", parts.join(" · "));
}

fn render_pool(out: &mut String, pool: &PoolView, axis: &Axis, now: DateTime<Utc>) {
    let s = pool.status;
    let report = &s["report"];
    let st = &report["status"];
    let name = escape(pool.name);
    let session = str_of(&s["session"]).or_else(|| str_of(&report["session"]));
    let _ = writeln!(out, "<section class=\"pool\" id=\"pool-{name}\">");
    let _ = write!(out, "<h2>{name}");
    if let Some(session) = session {
        let class = if session == "live" {
            "ok"
        } else if session.starts_with("failed") {
            "bad"
        } else {
            "warn"
        };
        let word = session.split(':').next().unwrap_or(session);
        let _ = write!(
            out,
            " <span class=\"badge {class}\" title=\"{}\">session {}</span>",
            escape(session),
            escape(word)
        );
    }
    out.push_str("</h2>\n");

    // Where it runs, on one line under the name.
    let text = |v: &Value| str_of(v).map(escape);
    let mut whereabouts = Vec::new();
    if let Some(scope) = text(&s["scope"]).or_else(|| text(&report["scope"])) {
        whereabouts.push(scope);
    }
    if let Some(set) = text(&s["scale_set"]).or_else(|| text(&report["scale_set"])) {
        let id = s["scale_set_id"]
            .as_u64()
            .map(|id| format!(" #{id}"))
            .unwrap_or_default();
        whereabouts.push(format!("scale set {set}{id}"));
    }
    if let Some(backend) = text(&s["backend"]).or_else(|| text(&report["backend"])) {
        whereabouts.push(format!("{backend} backend"));
    }
    if !whereabouts.is_empty() {
        let _ = writeln!(out, "<p class=\"where\">{}</p>", whereabouts.join(" · "));
    }
    if let Some(session) = session.filter(|s| *s != "live") {
        let class = if session.starts_with("failed") {
            "alert bad"
        } else {
            "alert"
        };
        let _ = writeln!(out, "<p class=\"{class}\">Session {}</p>", escape(session));
    }

    out.push_str("<dl class=\"facts\">\n");
    let mut facts: Vec<(&str, String)> = Vec::new();
    if st.is_object() {
        let n = |key: &str| st[key].as_u64().unwrap_or(0);
        facts.push((
            "Busy/idle/pending",
            format!("{} / {} / {}", n("busy"), n("idle"), n("pending")),
        ));
        facts.push(("Desired", n("desired").to_string()));
        if let Some(assigned) = st["assigned_jobs"].as_u64() {
            facts.push(("Jobs assigned", assigned.to_string()));
        }
    }
    let limit = |key: &str| s[key].as_u64().map(|n| n.to_string());
    if let (Some(min_idle), Some(max)) = (limit("min_idle"), limit("max")) {
        facts.push(("Min idle/max", format!("{min_idle} / {max}")));
    }
    if let Some(left) = report["budget_left"].as_u64() {
        facts.push(("GitHub budget", left.to_string()));
    }
    if report.is_object() {
        let n = |key: &str| report[key].as_u64().unwrap_or(0);
        facts.push((
            "Launched/retired",
            format!("{} / {}", n("launched_total"), n("retired_total")),
        ));
        facts.push(("Interrupted", n("interrupted_total").to_string()));
        facts.push(("Fell back", n("fallbacks_total").to_string()));
        let last_pass = match time_of(&report["last_pass_at"]) {
            Some(at) => format!("{} ago", duration(seconds(at, now))),
            None => "none yet".to_string(),
        };
        facts.push(("Last pass", last_pass));
    }
    for (label, value) in facts {
        let _ = writeln!(out, "<div><dt>{label}</dt><dd>{value}</dd></div>");
    }
    out.push_str("</dl>\n");

    if let Some(held) = str_of(&st["launch_held"]) {
        let _ = writeln!(
            out,
            "<p class=\"alert\">Launches held: {}</p>",
            escape(held)
        );
    }
    if let Some(waiting) = st["awaiting_statistics"].as_u64().filter(|n| *n > 0) {
        let _ = writeln!(
            out,
            "<p class=\"alert\">{waiting} launches wait for fresher job statistics (finished runners still count)</p>"
        );
    }
    let failure = &report["launch_failure"];
    if failure.is_object() {
        let at = time_of(&failure["at"])
            .map(|at| format!(" ({} ago, {})", duration(seconds(at, now)), clock(at)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "<p class=\"alert bad\">Last launch failed{at}: <b>{}</b> {}</p>",
            escape(str_of(&failure["reason"]).unwrap_or("unknown")),
            escape(str_of(&failure["message"]).unwrap_or_default())
        );
    }
    if let Some(error) = str_of(&report["last_error"]) {
        let _ = writeln!(
            out,
            "<p class=\"alert bad\">Last error: {}</p>",
            escape(error)
        );
    }
    if let Some(error) = str_of(&s["listener_error"]) {
        let _ = writeln!(
            out,
            "<p class=\"alert bad\">Listener: {}</p>",
            escape(error)
        );
    }
    // `/status` carries it in the pool's report.
    let cost = if pool.jobs["cost"].is_object() {
        &pool.jobs["cost"]
    } else {
        &s["report"]["cost"]
    };
    render_pool_cost(out, cost);

    // The controller sends the page the first of each list and the totals.
    let total = |list: &str| {
        pool.jobs[format!("{list}_total")]
            .as_u64()
            .map(|n| n as usize)
            .unwrap_or_else(|| pool.jobs[list].as_array().map_or(0, Vec::len))
    };
    let (total_in_flight, total_recent) = (total("in_flight"), total("recent"));
    let shown = |n: usize, total: usize| {
        if total > n {
            format!(" <span class=\"muted\">({n} of {total} shown)</span>")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        out,
        "<h3>In flight: {total_in_flight}{}</h3>",
        shown(pool.in_flight.len(), total_in_flight)
    );
    render_jobs(out, &pool.in_flight, true, axis, now);
    let let_go = pool.jobs["let_go"]
        .as_u64()
        .filter(|n| *n > 0)
        .map(|n| format!(" <span class=\"muted\">({n} let go without news)</span>"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "<h3>Recent: {total_recent}{}{let_go}</h3>",
        shown(pool.recent.len(), total_recent)
    );
    render_jobs(out, &pool.recent, false, axis, now);
    out.push_str("</section>\n");
}

fn render_pool_cost(out: &mut String, cost: &Value) {
    if !cost.is_object() {
        return;
    }
    let mut parts = Vec::new();
    let dollars_of = |key: &str| cost[key].as_f64().map(dollars);
    match (
        dollars_of("job_dollars_total"),
        dollars_of("idle_dollars_total"),
    ) {
        (Some(job), Some(idle)) => parts.push(format!("job time {job}, idle {idle}")),
        (Some(job), None) => parts.push(format!("job time {job}")),
        (None, Some(idle)) => parts.push(format!("idle {idle}")),
        (None, None) => {}
    }
    if let Some(per_hour) = dollars_of("min_idle_dollars_per_hour") {
        parts.push(format!("min idle {per_hour}/h"));
    }
    if let Some(size) = str_of(&cost["size"]) {
        parts.push(format!("size {}", escape(size)));
    }
    let mut prices = String::from("prices");
    if let Some(region) = str_of(&cost["region"]) {
        let _ = write!(prices, " of {}", escape(region));
    }
    if let Some(as_of) = str_of(&cost["prices_as_of"]) {
        let _ = write!(prices, " as of {}", escape(as_of));
    }
    if prices.len() > "prices".len() {
        parts.push(prices);
    }
    if !parts.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"cost\"><b>Cost</b>: {}</p>",
            parts.join(" · ")
        );
    }
}

/// The shared time axis: from `start` to `now`.
struct Axis {
    start: DateTime<Utc>,
    span_secs: f64,
}

impl Axis {
    /// The shortest of [`TIMELINE_SPANS_MIN`] that reaches back to the oldest shown job.
    fn of(pools: &[PoolView], now: DateTime<Utc>) -> Axis {
        let oldest = pools
            .iter()
            .flat_map(|p| p.in_flight.iter().chain(&p.recent))
            .filter_map(|job| job_start(job))
            .min();
        let needed_min = oldest.map_or(0, |at| (now - at).num_seconds().max(0) / 60 + 1);
        let span_min = TIMELINE_SPANS_MIN
            .iter()
            .copied()
            .find(|m| *m >= needed_min)
            .unwrap_or(TIMELINE_SPANS_MIN[TIMELINE_SPANS_MIN.len() - 1]);
        Axis {
            start: now - chrono::Duration::minutes(span_min),
            span_secs: (span_min * 60) as f64,
        }
    }

    /// Where `at` falls, in percent of the axis, clipped to it.
    fn percent(&self, at: DateTime<Utc>) -> f64 {
        let secs = (at - self.start).num_milliseconds() as f64 / 1000.0;
        (secs / self.span_secs * 100.0).clamp(0.0, 100.0)
    }

    fn label(&self, fraction: f64) -> String {
        let ago = self.span_secs * (1.0 - fraction);
        if ago <= 0.0 {
            "now".to_string()
        } else {
            format!("−{}", duration(ago))
        }
    }
}

fn job_start(job: &Value) -> Option<DateTime<Utc>> {
    time_of(&job["queued_at"])
        .or_else(|| time_of(&job["assigned_at"]))
        .or_else(|| time_of(&job["started_at"]))
}

fn render_jobs(
    out: &mut String,
    jobs: &[&Value],
    in_flight: bool,
    axis: &Axis,
    now: DateTime<Utc>,
) {
    if jobs.is_empty() {
        return; // the heading says 0
    }
    let _ = writeln!(
        out,
        "<div class=\"axis\"><span class=\"legend\"><i class=\"q\"></i>queued<i class=\"r\"></i>running</span>\
         <span class=\"ticks\"><span>{}</span><span>{}</span><span>{}</span></span></div>",
        axis.label(0.0),
        axis.label(0.5),
        axis.label(1.0)
    );
    out.push_str("<ul class=\"jobs\">\n");
    for job in jobs {
        render_job(out, job, in_flight, axis, now);
    }
    out.push_str("</ul>\n");
}

/// The state a job row is marked with (`data-state`): one of a fixed few words.
fn state_of(job: &Value, in_flight: bool) -> &'static str {
    if in_flight {
        return if time_of(&job["started_at"]).is_some() {
            "running"
        } else {
            "queued"
        };
    }
    match job["result"].as_str() {
        Some("succeeded") => "succeeded",
        Some("failed") => "failed",
        Some("canceled" | "cancelled") => "canceled",
        _ => "unknown",
    }
}

fn render_job(out: &mut String, job: &Value, in_flight: bool, axis: &Axis, now: DateTime<Utc>) {
    let state = state_of(job, in_flight);
    let shown_state = if in_flight {
        state.to_string()
    } else {
        escape(str_of(&job["result"]).unwrap_or("unknown"))
    };
    let class = match state {
        "succeeded" => "ok",
        "failed" => "bad",
        "running" | "queued" => "warn",
        _ => "muted",
    };
    let id = job["job_id"]
        .as_str()
        .map(str::to_string)
        .or_else(|| job["job_id"].as_u64().map(|n| n.to_string()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "<li class=\"job\" data-job-id=\"{}\" data-state=\"{state}\"><div class=\"meta\">\
         <div class=\"line1\"><span class=\"badge {class}\">{shown_state}</span>\
         <span class=\"name\">{}</span><span class=\"repo muted\">{}</span></div>",
        escape(&id),
        escape(str_of(&job["job_name"]).unwrap_or("(unnamed job)")),
        escape(str_of(&job["repository"]).unwrap_or_default()),
    );

    let queued = job_start(job);
    let started = time_of(&job["started_at"]);
    let completed = time_of(&job["completed_at"]);
    let mut details = Vec::new();
    if let Some(run) = job["run_id"].as_u64().filter(|r| *r > 0) {
        details.push(format!("run {run}"));
    }
    if let Some(runner) = str_of(&job["runner_name"]) {
        details.push(format!("runner {}", escape(runner)));
    }
    if let Some(task) = str_of(&job["task"]["id"]) {
        let short = task.rsplit('/').next().unwrap_or(task);
        details.push(format!(
            "task <span title=\"{}\">{}</span>",
            escape(task),
            escape(short)
        ));
    }
    let open_end = in_flight.then_some(now);
    if let Some(q) = queued {
        match started.or(completed).or(open_end) {
            Some(end) if started.is_some() => {
                details.push(format!("waited {}", duration(seconds(q, end))))
            }
            Some(end) => details.push(format!("queued {}", duration(seconds(q, end)))),
            None => {}
        }
    }
    if let Some(s) = started
        && let Some(end) = completed.or(open_end)
    {
        let word = if completed.is_some() {
            "ran"
        } else {
            "running"
        };
        details.push(format!("{word} {}", duration(seconds(s, end))));
    }
    let cost = &job["cost"];
    if let Some(job_dollars) = cost["job_dollars"].as_f64() {
        let mut text = format!("cost {}", dollars(job_dollars));
        if let Some(task) = cost["task_dollars"].as_f64() {
            let _ = write!(text, " of task {}", dollars(task));
        }
        if cost["final"].as_bool() == Some(false) {
            text.push_str(" so far");
        }
        details.push(text);
    }
    if let Some(at) = completed.or(started).or(queued) {
        details.push(format!(
            "<time datetime=\"{}\">{}</time>",
            at.to_rfc3339_opts(SecondsFormat::Secs, true),
            clock(at)
        ));
    }
    let _ = writeln!(
        out,
        "<div class=\"detail\">{}</div></div>",
        details.join(" · ")
    );

    // The bar: queued from its queue time to its start (or its end, or now), running from its
    // start to its end (or now).
    let mut bar = String::new();
    let mut part = |class: &str, from: DateTime<Utc>, to: DateTime<Utc>| {
        let (left, right) = (axis.percent(from), axis.percent(to));
        if right > left || (to > from && left > 0.0 && left < 100.0) {
            let _ = write!(
                bar,
                "<i class=\"{class}\" style=\"left:{left:.2}%;width:{:.2}%\"></i>",
                right - left
            );
        }
    };
    if let Some(q) = queued
        && let Some(end) = started.or(completed).or(open_end)
    {
        part("q", q, end);
    }
    if let Some(s) = started
        && let Some(end) = completed.or(open_end)
    {
        part("r", s, end);
    }
    let title = [
        ("queued", queued),
        ("started", started),
        ("finished", completed),
    ]
    .iter()
    .filter_map(|(word, at)| at.map(|at| format!("{word} {}", clock(at))))
    .collect::<Vec<_>>()
    .join(", ");
    let _ = writeln!(out, "<div class=\"bar\" title=\"{title}\">{bar}</div></li>");
}

fn str_of(value: &Value) -> Option<&str> {
    value.as_str().filter(|s| !s.is_empty())
}

fn time_of(value: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(value.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds() as f64 / 1000.0).max(0.0)
}

/// `HH:MM:SS` in UTC.
fn clock(at: DateTime<Utc>) -> String {
    at.format("%H:%M:%S").to_string()
}

/// A short duration: `0.4 s`, `42 s`, `3 min 05 s`, `2 h 05 min`, `3 d 4 h`.
fn duration(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs < 10.0 {
        let tenths = (secs * 10.0).round() / 10.0;
        return if tenths.fract() == 0.0 {
            format!("{tenths:.0} s")
        } else {
            format!("{tenths:.1} s")
        };
    }
    let whole = secs.round() as u64;
    match whole {
        0..60 => format!("{whole} s"),
        60..3600 if whole.is_multiple_of(60) => format!("{} min", whole / 60),
        60..3600 => format!("{} min {:02} s", whole / 60, whole % 60),
        3600..86400 if whole.is_multiple_of(3600) => format!("{} h", whole / 3600),
        3600..86400 => format!("{} h {:02} min", whole / 3600, whole % 3600 / 60),
        _ => format!("{} d {} h", whole / 86400, whole % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 5, 1, 12, 0, 0).unwrap()
    }

    fn at(ago_secs: i64) -> String {
        (now() - chrono::Duration::seconds(ago_secs)).to_rfc3339()
    }

    fn status() -> Value {
        json!({
            "controller": {"started_at": at(3600), "owner_name": "prod", "reload_error": null,
                           "resync_interval_secs": 30.0},
            "pools": [{
                "name": "org", "scope": "org your-organization", "scale_set": "hangar",
                "scale_set_id": 3, "backend": "ecs", "min_idle": 1, "max": 20,
                "session": "live", "listener_error": null,
                "report": {
                    "pool": "org", "status": {"assigned_jobs": 2, "desired": 3, "busy": 1,
                        "idle": 1, "pending": 1, "launch_held": "at max (20)",
                        "awaiting_statistics": 0},
                    "passes": 9, "last_pass_at": at(5), "last_error": null,
                    "launch_failure": {"reason": "capacity", "message": "no Spot capacity",
                                       "at": at(120)},
                    "launched_total": 12, "retired_total": 10, "interrupted_total": 1,
                    "fallbacks_total": 2, "budget_left": 4321
                }
            }]
        })
    }

    fn running_job(name: &str) -> Value {
        json!({"job_id": "41", "repository": "acme/app", "job_name": name, "run_id": 77,
               "queued_at": at(600), "assigned_at": at(598), "started_at": at(300),
               "completed_at": null, "result": null, "runner_name": "org-abc",
               "task": {"id": "arn:aws:ecs:us-east-1:1:task/hangar/0123abcd"}})
    }

    fn done_job() -> Value {
        json!({"job_id": "40", "repository": "acme/app", "job_name": "lint", "run_id": 76,
               "queued_at": at(1200), "started_at": at(1190), "completed_at": at(900),
               "result": "failed", "runner_name": "org-xyz", "task": null})
    }

    fn jobs(in_flight: Vec<Value>, recent: Vec<Value>) -> Value {
        json!({"pools": [{"name": "org", "scale_set": "hangar", "in_flight": in_flight,
                          "recent": recent, "let_go": 0}]})
    }

    #[test]
    fn the_escaper_covers_the_five_characters() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn job_and_repository_names_cannot_inject_markup() {
        let mut job = running_job("<script>alert(1)</script>");
        job["repository"] = json!("acme/\"onmouseover=alert(2) x=\"");
        job["job_id"] = json!("\"><img src=x>");
        job["task"]["id"] = json!("arn:x:task/c/\" onclick=\"alert(3)");
        job["runner_name"] = json!("<b>r</b>");
        let mut st = status();
        st["pools"][0]["report"]["launch_failure"]["message"] = json!("<iframe>");
        st["controller"]["owner_name"] = json!("</title><script>");
        let page = render_page(&st, &jobs(vec![job], vec![]), now());
        for raw in [
            "<script>alert",
            "\"onmouseover",
            "\"><img",
            "\" onclick",
            "<b>r</b>",
            "<iframe>",
            "</title><script>",
        ] {
            assert!(!page.contains(raw), "{raw} unescaped in the page");
        }
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("acme/&quot;onmouseover=alert(2) x=&quot;"));
        assert!(page.contains("data-job-id=\"&quot;&gt;&lt;img src=x&gt;\""));
        // The only script is the controller's own file.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains("<script src=\"page.js\" defer></script>"));
    }

    #[test]
    fn a_pool_shows_its_runners_holds_failure_budget_and_totals() {
        let main = render_main(&status(), &jobs(vec![], vec![]), now());
        assert!(
            main.contains("<section class=\"pool\" id=\"pool-org\">"),
            "{main}"
        );
        for text in [
            "<p class=\"where\">org your-organization · scale set hangar #3 · ecs backend</p>",
            "session live",
            "<dt>Busy/idle/pending</dt><dd>1 / 1 / 1</dd>",
            "<dt>Desired</dt><dd>3</dd>",
            "<dt>Jobs assigned</dt><dd>2</dd>",
            "<dt>Min idle/max</dt><dd>1 / 20</dd>",
            "<dt>GitHub budget</dt><dd>4321</dd>",
            "<dt>Launched/retired</dt><dd>12 / 10</dd>",
            "<dt>Interrupted</dt><dd>1</dd>",
            "<dt>Fell back</dt><dd>2</dd>",
            "Launches held: at max (20)",
            "Last launch failed (2 min ago, 11:58:00): <b>capacity</b> no Spot capacity",
            "owner prod",
            "up 1 h",
        ] {
            assert!(main.contains(text), "missing {text:?} in {main}");
        }
        assert!(
            main.contains("<h3>In flight: 0</h3>\n<h3>Recent: 0</h3>"),
            "{main}"
        );
        assert!(!main.contains("class=\"axis\""), "no timeline without jobs");
        assert!(!main.contains("Session "), "a live session is only a badge");

        let mut st = status();
        st["pools"][0]["session"] = json!("failed: <401> bad credentials");
        let main = render_main(&st, &jobs(vec![], vec![]), now());
        assert!(
            main.contains("<p class=\"alert bad\">Session failed: &lt;401&gt; bad credentials</p>"),
            "{main}"
        );
    }

    #[test]
    fn a_running_job_has_a_queued_part_and_a_running_part_up_to_now() {
        let main = render_main(&status(), &jobs(vec![running_job("build")], vec![]), now());
        assert!(
            main.contains("data-job-id=\"41\" data-state=\"running\""),
            "{main}"
        );
        // Queued 10 min ago, so the axis spans 15 minutes: queued from 33.33 % to 66.67 %,
        // running from there to the right edge.
        assert!(
            main.contains("<i class=\"q\" style=\"left:33.33%;width:33.33%\"></i>"),
            "{main}"
        );
        assert!(
            main.contains("<i class=\"r\" style=\"left:66.67%;width:33.33%\"></i>"),
            "{main}"
        );
        assert!(main.contains("<span>−15 min</span><span>−7 min 30 s</span><span>now</span>"));
        assert!(main.contains("waited 5 min"), "{main}");
        assert!(main.contains("running 5 min"), "{main}");
        assert!(main.contains("run 77"));
        assert!(main.contains("runner org-abc"));
        assert!(main.contains(">0123abcd</span>"), "the task id's last part");
    }

    #[test]
    fn a_queued_job_and_a_finished_one() {
        let mut queued = running_job("wait");
        queued["started_at"] = Value::Null;
        queued["job_id"] = json!("42");
        let main = render_main(&status(), &jobs(vec![queued], vec![done_job()]), now());
        assert!(main.contains("data-job-id=\"42\" data-state=\"queued\""));
        assert!(main.contains("queued 10 min"), "{main}");
        assert!(main.contains("data-job-id=\"40\" data-state=\"failed\""));
        assert!(main.contains("waited 10 s · ran 4 min 50 s"), "{main}");
        // The oldest job was queued 20 minutes ago: a 30-minute axis.
        assert!(main.contains("<span>−30 min</span>"), "{main}");
    }

    #[test]
    fn cost_is_shown_when_present_and_absent_when_not() {
        let plain = render_main(&status(), &jobs(vec![running_job("b")], vec![]), now());
        assert!(!plain.contains("Cost"), "{plain}");
        assert!(!plain.contains('$'), "{plain}");

        let mut job = running_job("b");
        job["cost"] = json!({"task_dollars": 0.0125, "job_dollars": 0.0081,
                             "overhead_dollars": 0.0044, "billed_seconds": 600.0,
                             "final": false});
        let mut done = done_job();
        done["cost"] = json!({"task_dollars": 1.5, "job_dollars": 1.25, "final": true});
        let mut with_cost = jobs(vec![job], vec![done]);
        with_cost["pools"][0]["cost"] = json!({"job_dollars_total": 12.5,
            "idle_dollars_total": 0.75, "region": "us-east-1", "prices_as_of": "2026-01-15",
            "min_idle_dollars_per_hour": 0.0494, "size": "2 vCPU 4 GiB"});
        let main = render_main(&status(), &with_cost, now());
        for text in [
            "<b>Cost</b>: job time $12.50, idle $0.7500 · min idle $0.0494/h · size 2 vCPU 4 GiB · prices of us-east-1 as of 2026-01-15",
            "cost $0.008100 of task $0.0125 so far",
            "cost $1.25 of task $1.50",
        ] {
            assert!(main.contains(text), "missing {text:?} in {main}");
        }

        // The /status pool's cost stands in when /jobs has none; a null cost shows nothing.
        let mut st = status();
        st["pools"][0]["report"]["cost"] =
            json!({"job_dollars_total": 2.0, "idle_dollars_total": 1.0});
        let main = render_main(&st, &jobs(vec![], vec![]), now());
        assert!(main.contains("job time $2.00, idle $1.00"), "{main}");
        st["pools"][0]["report"]["cost"] = Value::Null;
        let main = render_main(&st, &jobs(vec![], vec![]), now());
        assert!(!main.contains("Cost"), "{main}");
    }

    #[test]
    fn no_pools_or_nothing_at_all_still_renders() {
        let main = render_main(&json!({}), &json!({}), now());
        assert!(main.contains("No pools."), "{main}");
        let page = render_page(&json!(null), &json!(null), now());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<main id=\"live\">"));
        assert!(
            page.contains(
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            )
        );
        assert!(page.contains("<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"));
        // No external asset of any kind.
        for external in ["http:", "https:", "\"//", "url(", "@import", "href="] {
            assert!(!page.contains(external), "{external}");
        }
        assert_eq!(page.matches("src=").count(), 1, "only page.js");
    }

    #[test]
    fn jobs_are_capped() {
        let many: Vec<Value> = (0..(IN_FLIGHT_SHOWN + 7))
            .map(|n| {
                let mut job = running_job("j");
                job["job_id"] = json!(n.to_string());
                job
            })
            .collect();
        let recent: Vec<Value> = (0..(RECENT_SHOWN + 3)).map(|_| done_job()).collect();
        let main = render_main(&status(), &jobs(many, recent), now());
        assert_eq!(
            main.matches("data-state=\"running\"").count(),
            IN_FLIGHT_SHOWN
        );
        assert_eq!(main.matches("data-state=\"failed\"").count(), RECENT_SHOWN);
        assert!(main.contains("In flight: 107 <span class=\"muted\">(100 of 107 shown)</span>"));
        assert!(main.contains("Recent: 53 <span class=\"muted\">(50 of 53 shown)</span>"));
        // The controller sends the page a capped view with the lists' totals.
        let mut capped = jobs(vec![running_job("j")], vec![]);
        capped["pools"][0]["in_flight_total"] = json!(9_000);
        capped["pools"][0]["recent_total"] = json!(200);
        let main = render_main(&status(), &capped, now());
        assert!(main.contains("In flight: 9000 <span class=\"muted\">(1 of 9000 shown)</span>"));
        assert!(main.contains("Recent: 200 <span class=\"muted\">(0 of 200 shown)</span>"));
    }

    #[test]
    fn durations_and_dollars_read_well() {
        assert_eq!(duration(0.42), "0.4 s");
        assert_eq!(duration(3.0), "3 s");
        assert_eq!(duration(42.0), "42 s");
        assert_eq!(duration(185.0), "3 min 05 s");
        assert_eq!(duration(7500.0), "2 h 05 min");
        assert_eq!(duration(3.0 * 86400.0 + 4.0 * 3600.0), "3 d 4 h");
        assert_eq!(dollars(0.0421), "$0.0421");
        assert_eq!(dollars(0.0000274), "$0.000027");
        assert_eq!(dollars(12.5), "$12.50");
    }
}
