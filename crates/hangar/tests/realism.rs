//! The AWS realism layer (`tests/support/realism.rs`) itself: its token bucket and its rewriting
//! as pure functions, then each switch against moto through the proxy with the real AWS SDK
//! clients (ECS and SSM): a task RunTask started missing from ListTasks and DescribeTasks until
//! the delay passes, the call past the burst throttled, `failures[]` injected, SSM's 4 KB and 8 KB
//! value limits, an answer lost after moto acted, and everything else passed through unchanged.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::LaunchType;
use aws_sdk_ssm::types::{ParameterTier, ParameterType};
use serde_json::json;
use support::moto::{Moto, awsvpc};
use support::realism::*;
use support::within;

const CLUSTER: &str = "realism";
const TASK_DEFINITION: &str = "realism-task";

// --- pure parts -------------------------------------------------------------------------------

#[test]
fn a_bucket_gives_its_burst_then_refills_at_its_rate_up_to_the_burst() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut bucket = TokenBucket::full(Limit::new(2.0, 3.0), t0);
    assert_eq!(bucket.tokens(t0), 3.0);
    for _ in 0..3 {
        assert!(bucket.try_take(t0));
    }
    assert!(!bucket.try_take(t0), "the call past the burst");
    assert!(
        !bucket.try_take(t0 + ms(499)),
        "half a second refills one token"
    );
    assert!(bucket.try_take(t0 + ms(500)));
    assert!(!bucket.try_take(t0 + ms(500)));
    // A long pause refills to the burst, never past it.
    assert_eq!(bucket.tokens(t0 + Duration::from_secs(60)), 3.0);
    // A clock read earlier than the last one changes nothing.
    assert_eq!(bucket.tokens(t0), 3.0);
}

#[test]
fn a_drained_bucket_refills_from_the_moment_it_was_drained() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut bucket = TokenBucket::full(Limit::new(3.0, 3.0), t0);
    bucket.drain(t0 + ms(100));
    assert_eq!(bucket.tokens(t0 + ms(100)), 0.0);
    assert!(!bucket.try_take(t0 + ms(300)));
    // 1/3 s after the drain: one token (rounding forgiven).
    assert!(bucket.try_take(t0 + ms(100) + Duration::from_secs_f64(1.0 / 3.0)));
    assert_eq!(
        bucket.time_until(1.0, t0 + ms(100) + Duration::from_secs_f64(1.0 / 3.0)),
        Some(Duration::from_secs_f64(1.0 / 3.0))
    );
    assert_eq!(bucket.time_until(0.0, t0 + ms(500)), Some(Duration::ZERO));
    assert_eq!(
        bucket.time_until(4.0, t0 + ms(500)),
        None,
        "more than the burst"
    );
    let mut stuck = TokenBucket::full(Limit::new(0.0, 1.0), t0);
    stuck.drain(t0);
    assert_eq!(
        stuck.time_until(1.0, t0),
        None,
        "a rate of zero never refills"
    );
    assert!(!stuck.try_take(t0 + Duration::from_secs(3600)));
}

#[test]
fn aws_rates_name_every_operation_hangar_calls_and_share_parameter_reads() {
    let rates = Rates::aws();
    for (op, rate, burst) in [
        ("RunTask", 20.0, 20.0),
        ("PutParameter", 3.0, 3.0),
        ("DeleteParameter", 5.0, 5.0),
        ("GetParameter", 40.0, 40.0),
        ("GetParameters", 40.0, 40.0),
        ("DescribeParameters", 2.0, 2.0),
    ] {
        let t = rates.get(op).unwrap_or_else(|| panic!("{op}"));
        assert_eq!(t.limit, Limit::new(rate, burst), "{op}");
        assert_eq!(t.code, THROTTLING, "{op}");
    }
    for op in ["ListTasks", "DescribeTasks", "StopTask", "DescribeClusters"] {
        assert!(rates.get(op).is_some(), "{op}");
    }
    assert_eq!(
        rates.get("GetParameter").unwrap().bucket,
        rates.get("GetParameters").unwrap().bucket,
        "one bucket for GetParameter and GetParameters"
    );
    assert_ne!(
        rates.get("PutParameter").unwrap().bucket,
        rates.get("DeleteParameter").unwrap().bucket
    );
    assert!(rates.get("DescribeTaskDefinition").is_none());
    let custom = Rates::default()
        .with(&["PutParameter"], "p", Limit::new(1.0, 1.0))
        .answering("PutParameter", "TooManyUpdates");
    assert_eq!(custom.get("PutParameter").unwrap().code, "TooManyUpdates");
}

#[test]
fn operations_come_from_the_target_header() {
    assert_eq!(
        operation("AmazonEC2ContainerServiceV20141113.RunTask"),
        Some("RunTask")
    );
    assert_eq!(operation("AmazonSSM.PutParameter"), Some("PutParameter"));
    for bad in ["", "RunTask", "AmazonSSM.", ".RunTask"] {
        assert_eq!(operation(bad), None, "{bad:?}");
    }
}

#[test]
fn listings_hide_tasks_not_yet_visible_as_aws_answers_unknown_arns() {
    let hidden = |arn: &str| arn.ends_with("/new");
    let listed = json!({"taskArns": ["t/old", "t/new", "t/other"], "nextToken": "x"});
    assert_eq!(
        hide_listed(listed, hidden),
        json!({"taskArns": ["t/old", "t/other"], "nextToken": "x"})
    );
    let described = json!({
        "tasks": [{"taskArn": "t/old", "lastStatus": "RUNNING"}, {"taskArn": "t/new"}],
        "failures": [{"arn": "t/gone", "reason": "MISSING"}]
    });
    assert_eq!(
        hide_described(described, hidden),
        json!({
            "tasks": [{"taskArn": "t/old", "lastStatus": "RUNNING"}],
            "failures": [
                {"arn": "t/gone", "reason": "MISSING"},
                {"arn": "t/new", "reason": "MISSING"}
            ]
        })
    );
    // No failures list yet: one is made. Nothing hidden: nothing changes.
    let only_new = json!({"tasks": [{"taskArn": "t/new"}]});
    assert_eq!(
        hide_described(only_new, hidden),
        json!({"tasks": [], "failures": [{"arn": "t/new", "reason": "MISSING"}]})
    );
    let nothing_new = json!({"tasks": [{"taskArn": "t/old"}], "failures": []});
    assert_eq!(hide_described(nothing_new.clone(), hidden), nothing_new);
    // An answer of another shape is left alone.
    assert_eq!(hide_listed(json!({}), hidden), json!({}));
    assert_eq!(hide_described(json!({}), hidden), json!({}));
}

#[test]
fn run_task_answers_are_read_and_made() {
    let started = json!({"tasks": [{"taskArn": "a"}, {"taskArn": "b"}], "failures": []});
    assert_eq!(started_task_arns(&started), ["a", "b"]);
    assert!(started_task_arns(&json!({"failures": []})).is_empty());
    assert_eq!(
        run_task_failure("RESOURCE:FARGATE", None),
        json!({"tasks": [], "failures": [{"reason": "RESOURCE:FARGATE"}]})
    );
    assert_eq!(
        run_task_failure("Capacity is unavailable at this time", Some("try later")),
        json!({"tasks": [], "failures": [
            {"reason": "Capacity is unavailable at this time", "detail": "try later"}
        ]})
    );
    assert_eq!(
        error_body(THROTTLING, RATE_EXCEEDED),
        json!({"__type": "ThrottlingException", "message": "Rate exceeded"})
    );
}

#[test]
fn parameter_values_are_limited_by_tier() {
    let put = |bytes: usize, tier: Option<&str>| {
        let mut body = json!({"Name": "/p", "Value": "x".repeat(bytes), "Type": "SecureString"});
        if let Some(tier) = tier {
            body["Tier"] = json!(tier);
        }
        value_too_large(&body)
    };
    for tier in [None, Some("Standard")] {
        assert_eq!(put(4096, tier), None);
        let (code, message) = put(4097, tier).unwrap();
        assert_eq!(code, "ValidationException");
        assert!(message.contains("Standard tier"), "{message}");
        assert!(message.contains("4096"), "{message}");
    }
    for tier in ["Advanced", "Intelligent-Tiering"] {
        assert_eq!(put(8192, Some(tier)), None, "{tier}");
        let (code, message) = put(8193, Some(tier)).unwrap();
        assert_eq!(code, "ValidationException");
        assert!(message.contains("8192"), "{message}");
    }
    assert_eq!(value_too_large(&json!({"Name": "/p"})), None);
}

// --- against moto, through the proxy ----------------------------------------------------------

/// A moto server with an ECS cluster, and RunTask settings for it.
async fn ecs_world() -> (Moto, aws_sdk_ecs::types::NetworkConfiguration) {
    let moto = Moto::start();
    moto.ecs_cluster(CLUSTER, &[TASK_DEFINITION]).await;
    let (subnet, security_group) = moto.default_network().await;
    (moto, awsvpc(vec![subnet], vec![security_group]))
}

async fn run_task(
    ecs: &aws_sdk_ecs::Client,
    network: &aws_sdk_ecs::types::NetworkConfiguration,
) -> aws_sdk_ecs::operation::run_task::RunTaskOutput {
    ecs.run_task()
        .cluster(CLUSTER)
        .task_definition(TASK_DEFINITION)
        .launch_type(LaunchType::Fargate)
        .count(1)
        .network_configuration(network.clone())
        .send()
        .await
        .expect("RunTask answers")
}

async fn listed(ecs: &aws_sdk_ecs::Client) -> Vec<String> {
    ecs.list_tasks()
        .cluster(CLUSTER)
        .send()
        .await
        .unwrap()
        .task_arns()
        .to_vec()
}

#[tokio::test]
async fn a_started_task_is_missing_from_listings_until_the_delay_passes() {
    within(60, async {
        let (moto, network) = ecs_world().await;
        let realism = Realism::start(&moto.url);
        let delay = Duration::from_millis(1500);
        realism.set_visibility_delay(delay);
        let ecs = aws_sdk_ecs::Client::new(&realism.sdk_config());
        let truth = aws_sdk_ecs::Client::new(&moto.sdk_config());

        let started_at = Instant::now();
        let run = run_task(&ecs, &network).await;
        // The layer dates the task between these two instants.
        let answered_at = Instant::now();
        let arn = run.tasks()[0].task_arn().unwrap().to_string();
        // moto has it at once; through the layer it is not there yet.
        assert!(listed(&truth).await.contains(&arn));
        assert!(!listed(&ecs).await.contains(&arn));
        let described = ecs
            .describe_tasks()
            .cluster(CLUSTER)
            .tasks(&arn)
            .send()
            .await
            .unwrap();
        assert!(described.tasks().is_empty());
        assert_eq!(described.failures().len(), 1);
        assert_eq!(described.failures()[0].arn(), Some(arn.as_str()));
        assert_eq!(described.failures()[0].reason(), Some("MISSING"));
        assert!(started_at.elapsed() < delay, "checked within the delay");

        // Once the delay has passed: listed and described.
        tokio::time::sleep(delay.saturating_sub(answered_at.elapsed())).await;
        assert!(listed(&ecs).await.contains(&arn));
        let described = ecs
            .describe_tasks()
            .cluster(CLUSTER)
            .tasks(&arn)
            .send()
            .await
            .unwrap();
        assert_eq!(described.tasks()[0].task_arn(), Some(arn.as_str()));
        assert!(described.failures().is_empty());

        // With the switch off, a new task is visible at once.
        realism.set_visibility_delay(Duration::ZERO);
        let arn = run_task(&ecs, &network).await.tasks()[0]
            .task_arn()
            .unwrap()
            .to_string();
        assert!(listed(&ecs).await.contains(&arn));
        assert_eq!(realism.calls("RunTask"), 2);
        assert_eq!(realism.calls("ListTasks"), 3);
    })
    .await
}

#[tokio::test]
async fn the_call_past_the_burst_is_throttled_as_aws_answers_and_the_bucket_refills() {
    within(60, async {
        let moto = Moto::start();
        let realism = Realism::start(&moto.url);
        // A bucket of 3 that does not refill within the test: calls 1-3 pass, call 4 does not.
        realism.throttle("PutParameter", Limit::new(0.001, 3.0), THROTTLING);
        let ssm = aws_sdk_ssm::Client::new(&realism.sdk_config());
        let put = |i: u32| {
            ssm.put_parameter()
                .name(format!("/realism/p{i}"))
                .value("v")
                .r#type(ParameterType::String)
                .send()
        };
        for i in 1..=3 {
            put(i).await.unwrap();
        }
        let err = put(4).await.unwrap_err();
        let raw = err.raw_response().expect("an answer").status().as_u16();
        assert_eq!(raw, 400);
        let err = err.into_service_error();
        assert_eq!(err.code(), Some("ThrottlingException"));
        assert_eq!(err.message(), Some("Rate exceeded"));
        assert_eq!(realism.calls("PutParameter"), 4);
        assert_eq!(realism.throttled("PutParameter"), 1);
        // The throttled call never reached moto.
        let truth = aws_sdk_ssm::Client::new(&moto.sdk_config());
        assert!(
            truth
                .get_parameter()
                .name("/realism/p4")
                .send()
                .await
                .is_err()
        );
        // Other operations are not throttled by it.
        truth
            .get_parameter()
            .name("/realism/p3")
            .send()
            .await
            .unwrap();
        ssm.get_parameter()
            .name("/realism/p3")
            .send()
            .await
            .unwrap();
        assert_eq!(realism.throttled("GetParameter"), 0);

        // A drained bucket refills at its rate: 2 a second, one token after half a second.
        realism.throttle("DeleteParameter", Limit::new(2.0, 1.0), "TooManyUpdates");
        realism.drain("DeleteParameter");
        let err = ssm
            .delete_parameter()
            .name("/realism/p1")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(err.code(), Some("TooManyUpdates"));
        realism.wait_for_tokens("DeleteParameter", 1.0).await;
        ssm.delete_parameter()
            .name("/realism/p1")
            .send()
            .await
            .unwrap();
        assert_eq!(realism.throttled("DeleteParameter"), 1);
        assert_eq!(realism.calls("DeleteParameter"), 2);

        // AWS's own rates: RunTask's bucket of 20, drained, refuses the next call.
        realism.set_throttling(Some(Rates::aws()));
        realism.drain("RunTask");
        let ecs = aws_sdk_ecs::Client::new(&realism.sdk_config());
        let err = ecs
            .run_task()
            .cluster(CLUSTER)
            .task_definition(TASK_DEFINITION)
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert_eq!(err.code(), Some("ThrottlingException"));
        assert_eq!(realism.throttled("RunTask"), 1);
    })
    .await
}

#[tokio::test]
async fn run_task_failures_are_answered_for_the_next_n_calls_without_reaching_moto() {
    within(60, async {
        let (moto, network) = ecs_world().await;
        let realism = Realism::start(&moto.url);
        realism.fail_run_tasks(
            2,
            "Capacity is unavailable at this time. Please try again later or in a different availability zone",
            None,
        );
        let ecs = aws_sdk_ecs::Client::new(&realism.sdk_config());
        for _ in 0..2 {
            let run = run_task(&ecs, &network).await;
            assert!(run.tasks().is_empty());
            assert_eq!(run.failures().len(), 1);
            assert!(
                run.failures()[0]
                    .reason()
                    .unwrap()
                    .starts_with("Capacity is unavailable")
            );
        }
        let truth = aws_sdk_ecs::Client::new(&moto.sdk_config());
        assert!(listed(&truth).await.is_empty(), "moto started nothing");
        let run = run_task(&ecs, &network).await;
        assert_eq!(run.tasks().len(), 1, "the third call is forwarded");
        assert!(run.failures().is_empty());
        assert_eq!(listed(&truth).await.len(), 1);

        realism.fail_run_tasks(1, "RESOURCE:FARGATE", Some("no room"));
        let run = run_task(&ecs, &network).await;
        assert_eq!(run.failures()[0].reason(), Some("RESOURCE:FARGATE"));
        assert_eq!(run.failures()[0].detail(), Some("no room"));
        assert_eq!(realism.calls("RunTask"), 4);
    })
    .await
}

#[tokio::test]
async fn parameter_values_over_their_tier_limit_are_refused_as_aws_does() {
    within(60, async {
        let moto = Moto::start();
        let realism = Realism::aws(&moto.url);
        let ssm = aws_sdk_ssm::Client::new(&realism.sdk_config());
        let put = |name: &'static str, bytes: usize, tier: Option<ParameterTier>| {
            ssm.put_parameter()
                .name(name)
                .value("j".repeat(bytes))
                .r#type(ParameterType::SecureString)
                .set_tier(tier)
                .send()
        };
        put("/realism/standard-max", 4096, None).await.unwrap();
        for tier in [None, Some(ParameterTier::Standard)] {
            let err = put("/realism/standard-over", 4097, tier)
                .await
                .unwrap_err()
                .into_service_error();
            assert_eq!(err.code(), Some("ValidationException"));
            assert!(err.message().unwrap().contains("4096"), "{err:?}");
        }
        put("/realism/advanced", 4097, Some(ParameterTier::Advanced))
            .await
            .unwrap();
        realism.wait_for_tokens("PutParameter", 3.0).await;
        put("/realism/advanced-max", 8192, Some(ParameterTier::Advanced))
            .await
            .unwrap();
        let err = put(
            "/realism/advanced-over",
            8193,
            Some(ParameterTier::Advanced),
        )
        .await
        .unwrap_err()
        .into_service_error();
        assert_eq!(err.code(), Some("ValidationException"));
        assert!(err.message().unwrap().contains("8192"), "{err:?}");
        let truth = aws_sdk_ssm::Client::new(&moto.sdk_config());
        for (name, stored) in [
            ("/realism/standard-max", true),
            ("/realism/standard-over", false),
            ("/realism/advanced", true),
            ("/realism/advanced-max", true),
            ("/realism/advanced-over", false),
        ] {
            let found = truth.get_parameter().name(name).send().await.is_ok();
            assert_eq!(found, stored, "{name}");
        }
        // moto alone takes any size: the limit is the layer's.
        realism.wait_for_tokens("PutParameter", 1.0).await;
        realism.set_size_limits(false);
        put("/realism/standard-over", 4097, None).await.unwrap();
    })
    .await
}

#[tokio::test]
async fn a_lost_answer_reaches_moto_and_never_the_client() {
    within(60, async {
        let moto = Moto::start();
        let realism = Realism::start(&moto.url);
        realism.lose_answers("PutParameter", 1);
        let ssm = aws_sdk_ssm::Client::new(&realism.sdk_config());
        let put = |name: &'static str| {
            ssm.put_parameter()
                .name(name)
                .value("v")
                .r#type(ParameterType::String)
                .send()
        };
        let err = put("/realism/lost").await.unwrap_err();
        assert!(
            matches!(
                err,
                aws_sdk_ssm::error::SdkError::DispatchFailure(_)
                    | aws_sdk_ssm::error::SdkError::ResponseError(_)
            ),
            "no answer: {err:?}"
        );
        let truth = aws_sdk_ssm::Client::new(&moto.sdk_config());
        truth
            .get_parameter()
            .name("/realism/lost")
            .send()
            .await
            .expect("the call reached moto");
        // Only the next one: the one after is answered.
        put("/realism/answered").await.unwrap();
        assert_eq!(realism.calls("PutParameter"), 2);
    })
    .await
}

#[tokio::test]
async fn everything_else_passes_through_unchanged() {
    within(60, async {
        let moto = Moto::start();
        let realism = Realism::aws(&moto.url);
        let ssm = aws_sdk_ssm::Client::new(&realism.sdk_config());
        // moto's error answers come back as they are.
        let err = ssm
            .get_parameter()
            .name("/realism/none")
            .send()
            .await
            .unwrap_err()
            .into_service_error();
        assert!(err.is_parameter_not_found(), "{err:?}");
        // Query-protocol calls (no X-Amz-Target) and moto's own API are forwarded and not
        // counted: a default VPC read through the proxy matches one read from moto.
        let through = Moto::ec2_query_at(&realism.url, "DescribeSubnets").await;
        let direct = Moto::ec2_query_at(&moto.url, "DescribeSubnets").await;
        assert!(through.contains("<subnetId>"), "{through}");
        assert_eq!(
            through.matches("<subnetId>").count(),
            direct.matches("<subnetId>").count()
        );
        let reset = reqwest::Client::new()
            .post(format!("{}/moto-api/reset", realism.url))
            .send()
            .await
            .unwrap();
        assert!(reset.status().is_success());
        assert_eq!(realism.calls("GetParameter"), 1);
        assert_eq!(realism.calls("DescribeSubnets"), 0);
    })
    .await
}
