//! The controller's ECS backend against moto behind the AWS realism layer (`support::realism`,
//! AWS's rates and SSM's size limits on): RunTask with Hangar's tags and the one-shot SSM
//! handoff (taken by the agent's own code), listing and stopping by tag, configuration errors
//! that leave nothing behind, name clashes, leftover parameters, how many AWS calls each
//! operation makes (counted by an SDK interceptor on the backend's own clients), and what AWS
//! does that moto does not: throttled calls, RunTask's capacity `failures[]`, listings that lag
//! behind RunTask, and values too large for their SSM tier. Set-up and checks talk to moto
//! directly.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_ecs::types::{DesiredStatus, TaskField};
use hangar::controller::backend::ecs::{ENV_JIT_CONFIG_PARAMETER, ENV_RUNNER_NAME, EcsBackend};
use hangar::controller::backend::{
    Backend, BackendError, LaunchRequest, TAG_POOL, TAG_RUNNER_ID, TAG_RUNNER_NAME, TaskState,
};
use hangar::controller::config::EcsLaunch;
use hangar::credentials::SsmParameterStore;
use secrecy::{ExposeSecret, SecretString};
use support::moto::{Moto, sdk_config_at};
use support::realism::{Limit, Rates, Realism, THROTTLING};
use support::{LogBuffer, unused_loopback_port, within};

use support::ecs_rig::*;

#[tokio::test]
async fn launch_hands_over_the_jit_config_as_a_one_shot_secure_string() {
    within(60, async {
        let (world, launch) = deploy().await;
        let moto = &world.moto;
        let rig = rig(&world, launch);
        rig.backend.check().await.expect("the settings are right");
        rig.ecs_calls.clear();

        let runner = tags("standalone", 7);
        let jit = jit_for(&runner);
        let task = rig.backend.launch(request(&runner)).await.unwrap();
        assert_eq!(task.tags, runner);
        assert!(task.id.starts_with("arn:aws:ecs:"), "{}", task.id);
        assert!(matches!(
            task.state,
            TaskState::Pending | TaskState::Running
        ));
        // One SSM write and one ECS call per launch.
        assert_eq!(rig.ssm_calls.names(), ["PutParameter"]);
        assert_eq!(rig.ecs_calls.names(), ["RunTask"]);
        let run = &rig.ecs_calls.bodies("RunTask")[0];
        assert_eq!(run["startedBy"], "hangar/standalone");
        assert_eq!(run["count"], 1);
        assert_eq!(run["enableECSManagedTags"], true);
        assert_eq!(run["launchType"], "FARGATE");
        assert_eq!(
            run["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"],
            "DISABLED"
        );
        assert!(!run.to_string().contains(&jit), "the JIT value went to ECS");

        // What ECS holds: the tags and the parameter's name, never the value.
        let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config());
        let described = ecs
            .describe_tasks()
            .cluster(CLUSTER)
            .tasks(&task.id)
            .include(TaskField::Tags)
            .send()
            .await
            .unwrap();
        assert!(!format!("{described:?}").contains(&jit));
        let ecs_task = &described.tasks()[0];
        assert_eq!(tag(ecs_task, TAG_POOL).as_deref(), Some("standalone"));
        assert_eq!(
            tag(ecs_task, TAG_RUNNER_NAME).as_deref(),
            Some("hangar-standalone-7")
        );
        assert_eq!(tag(ecs_task, TAG_RUNNER_ID).as_deref(), Some("7"));
        let overrides = ecs_task.overrides().unwrap().container_overrides();
        assert_eq!(overrides.len(), 1);
        assert_eq!(overrides[0].name(), Some("runner"));
        let env: Vec<(&str, &str)> = overrides[0]
            .environment()
            .iter()
            .map(|kv| (kv.name().unwrap(), kv.value().unwrap()))
            .collect();
        let parameter = "/hangar/jit/standalone/hangar-standalone-7";
        assert_eq!(
            env,
            [
                (ENV_JIT_CONFIG_PARAMETER, parameter),
                (ENV_RUNNER_NAME, "hangar-standalone-7"),
                // Not in a service: no task protection to ask for.
                ("HANGAR_TASK_PROTECTION", "off"),
                // The agent's scope, so one task definition serves every pool.
                ("RUNNER_SCOPE", "repo"),
                ("GITHUB_REPOSITORY", support::REPO),
            ]
        );

        // The parameter is a SecureString holding the JIT config, listed as a handoff.
        let ssm = aws_sdk_ssm::Client::new(&moto.sdk_config());
        let stored = ssm
            .get_parameter()
            .name(parameter)
            .with_decryption(true)
            .send()
            .await
            .unwrap();
        let stored = stored.parameter().unwrap();
        assert_eq!(stored.value(), Some(jit.as_str()));
        assert_eq!(
            stored.r#type(),
            Some(&aws_sdk_ssm::types::ParameterType::SecureString)
        );
        let handoffs = rig.backend.list_handoffs("standalone").await.unwrap();
        assert_eq!(handoffs.len(), 1);
        assert_eq!(handoffs[0].name, parameter);
        assert_eq!(handoffs[0].runner_name, "hangar-standalone-7");
        let age = chrono::Utc::now() - handoffs[0].created_at;
        assert!(age.num_seconds().abs() < 60, "created {age} ago");

        // The agent's side takes it through the layer: read, then deleted.
        let agent = SsmParameterStore::from_config(&world.aws.sdk_config());
        let taken = agent.take_parameter(parameter).await.unwrap();
        assert_eq!(taken.expose_secret(), jit);
        assert!(!parameter_exists(moto, parameter).await);
        assert!(
            rig.backend
                .list_handoffs("standalone")
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(world.aws.calls("GetParameter"), 1);
        assert_eq!(world.aws.calls("DeleteParameter"), 1);
    })
    .await
}

#[tokio::test]
async fn list_sees_only_its_pool_and_stop_works_by_id() {
    within(60, async {
        let (world, launch) = deploy().await;
        let moto = &world.moto;
        let rig = rig(&world, launch.clone());
        let a1 = rig.backend.launch(request(&tags("a", 1))).await.unwrap();
        let a2 = rig.backend.launch(request(&tags("a", 2))).await.unwrap();
        let b1 = rig.backend.launch(request(&tags("b", 3))).await.unwrap();
        // A task nobody tagged, and one whose tags are incomplete: neither is Hangar's.
        for tags in [vec![], vec![(TAG_POOL, "a".to_string())]] {
            run_task_by_hand(moto, &launch, "hangar/a", &tags).await;
        }

        let listed = rig.backend.list("a").await.unwrap();
        let ids: Vec<&str> = listed.iter().map(|t| t.id.as_str()).collect();
        let mut want = vec![a1.id.as_str(), a2.id.as_str()];
        want.sort();
        let mut got = ids.clone();
        got.sort();
        assert_eq!(got, want);
        assert!(listed.iter().all(|t| t.tags.pool == "a"));
        assert!(listed.iter().all(|t| t.state == TaskState::Running));
        let a1_listed = listed.iter().find(|t| t.id == a1.id).unwrap();
        assert_eq!(a1_listed.tags, tags("a", 1));
        // moto's tasks have no createdAt, so the backend dates them when it sees them.
        let age = chrono::Utc::now() - a1_listed.created_at;
        assert!(age.num_seconds().abs() < 60, "created {age} ago");
        let b = rig.backend.list("b").await.unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].id, b1.id);
        assert!(rig.backend.list("c").await.unwrap().is_empty());
        // ListTasks is narrowed by startedBy, its only filter (as the API reference requires):
        // one call a listing, no desiredStatus (ECS then lists the tasks it wants running).
        let lists = rig.ecs_calls.bodies("ListTasks");
        assert_eq!(lists.len(), 3, "one ListTasks per listing: {lists:?}");
        for body in &lists {
            assert!(body["startedBy"].as_str().unwrap().starts_with("hangar/"));
            assert!(body.get("desiredStatus").is_none(), "{body}");
        }

        // Stop by id, with a reason longer than ECS takes.
        let reason = format!("idle runner scaled in: {}", "x".repeat(400));
        rig.backend.stop(&a1.id, &reason).await.unwrap();
        let stop = &rig.ecs_calls.bodies("StopTask")[0];
        assert_eq!(stop["reason"].as_str().unwrap().chars().count(), 255);
        let listed = rig.backend.list("a").await.unwrap();
        // ECS no longer lists a stopped task (desired STOPPED); moto still does: either way it
        // is not live, and where it is listed it carries the reason.
        if let Some(stopped) = listed.iter().find(|t| t.id == a1.id) {
            assert_eq!(stopped.state, TaskState::Stopped);
            assert_eq!(
                stopped.stop_reason.as_deref(),
                Some(&reason[..reason.char_indices().nth(255).unwrap().0])
            );
        }
        let other = listed.iter().find(|t| t.id == a2.id).unwrap();
        assert_eq!(other.state, TaskState::Running);

        // Stopping again, or a task ECS never had, succeeds.
        rig.backend.stop(&a1.id, "again").await.unwrap();
        let unknown = a1.id.rsplit_once('/').unwrap().0.to_string() + "/0123456789abcdef";
        rig.backend.stop(&unknown, "gone").await.unwrap();
    })
    .await
}

#[tokio::test]
async fn bad_settings_are_config_errors_that_leave_no_parameter() {
    within(60, async {
        let (world, good) = deploy().await;
        let moto = &world.moto;
        let cases: Vec<(EcsLaunch, &str)> = vec![
            (
                EcsLaunch {
                    task_definition: "no-such-family".into(),
                    ..good.clone()
                },
                "`task_definition`",
            ),
            (
                EcsLaunch {
                    subnets: vec!["subnet-00000000000000000".into()],
                    ..good.clone()
                },
                "`subnets`",
            ),
            (
                EcsLaunch {
                    cluster: "no-such-cluster".into(),
                    ..good.clone()
                },
                "`cluster`",
            ),
        ];
        for (launch, setting) in cases {
            // Four launches and listings in a row outrun SSM's write and listing rates; this
            // test is about the settings, so it keeps to the rates.
            world.aws.wait_for_tokens("PutParameter", 1.0).await;
            world.aws.wait_for_tokens("DescribeParameters", 1.0).await;
            let rig = rig(&world, launch);
            let runner = tags("p", 1);
            let err = rig.backend.launch(request(&runner)).await.unwrap_err();
            let BackendError::Config(message) = &err else {
                panic!("{setting}: not a configuration error: {err:?}");
            };
            assert!(message.contains(setting), "{message}");
            assert!(message.contains("Fix:"), "{message}");
            assert!(!format!("{err:?}").contains(&jit_for(&runner)));
            // Written, then deleted: nothing is left for anyone to read.
            assert_eq!(rig.ssm_calls.names(), ["PutParameter", "DeleteParameter"]);
            assert!(!parameter_exists(moto, "/hangar/jit/p/hangar-p-1").await);
            assert!(rig.backend.list_handoffs("p").await.unwrap().is_empty());
        }
        assert!(
            rig(&world, good.clone())
                .backend
                .list("p")
                .await
                .unwrap()
                .is_empty()
        );

        // A wrong setting that ECS would refuse before writing anything: rejected locally.
        let both = EcsLaunch {
            launch_type: Some("FARGATE".into()),
            capacity_provider: Some("FARGATE_SPOT".into()),
            ..good.clone()
        };
        let rig_both = rig(&world, both);
        let err = rig_both
            .backend
            .launch(request(&tags("p", 2)))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "config");
        assert!(rig_both.ssm_calls.names().is_empty());
    })
    .await
}

#[tokio::test]
async fn check_names_the_setting_to_fix() {
    within(60, async {
        let (world, good) = deploy().await;
        rig(&world, good.clone()).backend.check().await.unwrap();
        let cases: Vec<(EcsLaunch, &str)> = vec![
            (
                EcsLaunch {
                    cluster: "no-such-cluster".into(),
                    ..good.clone()
                },
                "`cluster`",
            ),
            (
                EcsLaunch {
                    task_definition: "no-such-family".into(),
                    ..good.clone()
                },
                "`task_definition`",
            ),
            (
                EcsLaunch {
                    container_name: "agent".into(),
                    ..good.clone()
                },
                "`container_name`",
            ),
            (
                EcsLaunch {
                    subnets: vec![],
                    ..good.clone()
                },
                "`subnets`",
            ),
            (
                EcsLaunch {
                    parameter_prefix: "hangar/jit".into(),
                    ..good.clone()
                },
                "`parameter_prefix`",
            ),
            (
                EcsLaunch {
                    launch_type: Some("EXTERNAL".into()),
                    ..good.clone()
                },
                "`launch_type`",
            ),
        ];
        for (launch, setting) in cases {
            let err = rig(&world, launch).backend.check().await.unwrap_err();
            let BackendError::Config(message) = &err else {
                panic!("{setting}: {err:?}");
            };
            assert!(message.contains(setting), "{setting}: {message}");
        }
    })
    .await
}

#[tokio::test]
async fn a_name_clash_is_refused_and_leaves_the_existing_parameter_alone() {
    within(60, async {
        let (world, launch) = deploy().await;
        let moto = &world.moto;
        let rig = rig(&world, launch);
        let runner = tags("org", 5);
        let name = "/hangar/jit/org/hangar-org-5";
        moto.put(name, "somebody else's handoff", true).await;

        let err = rig.backend.launch(request(&runner)).await.unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(err.to_string().contains(name), "{err}");
        // The backend looked at the parameter's description (no value) to see whose it is.
        assert_eq!(
            rig.ssm_calls.names(),
            ["PutParameter", "DescribeParameters"]
        );
        assert!(rig.ecs_calls.names().is_empty(), "no task was started");
        let ssm = aws_sdk_ssm::Client::new(&moto.sdk_config());
        let kept = ssm
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
            .unwrap();
        assert_eq!(
            kept.parameter().unwrap().value(),
            Some("somebody else's handoff")
        );
    })
    .await
}

#[tokio::test]
async fn handoffs_are_listed_per_pool_across_pages_and_deleted() {
    within(60, async {
        let (world, launch) = deploy().await;
        let moto = &world.moto;
        let rig = rig(&world, launch);
        for i in 0..23 {
            moto.put(&format!("{PREFIX}/a/runner-{i:02}"), "jit", true)
                .await;
        }
        for name in [
            format!("{PREFIX}/b/runner-x"),
            format!("{PREFIX}/a/deeper/runner-y"),
            format!("{PREFIX}x/a/runner-z"),
            "/elsewhere/a/runner-w".to_string(),
        ] {
            moto.put(&name, "jit", true).await;
        }

        // moto pages DescribeParameters by 10 where AWS gives the 50 the backend asks for, so 23
        // handoffs take three calls here (one on AWS). With AWS's guessed burst of 2 the third
        // page is throttled, and the whole listing says so: no partial answer.
        let err = rig.backend.list_handoffs("a").await.unwrap_err();
        assert!(matches!(err, BackendError::Throttled(_)), "{err:?}");
        assert_eq!(world.aws.throttled("DescribeParameters"), 1);
        rig.ssm_calls.clear();
        // The same rate with a burst five times larger, as moto's pages are five times smaller.
        world
            .aws
            .throttle("DescribeParameters", Limit::new(2.0, 10.0), THROTTLING);
        let listed = rig.backend.list_handoffs("a").await.unwrap();
        let names: Vec<&str> = listed.iter().map(|h| h.runner_name.as_str()).collect();
        let want: Vec<String> = (0..23).map(|i| format!("runner-{i:02}")).collect();
        assert_eq!(names, want);
        assert!(listed.iter().all(|h| h.pool == "a"));
        assert!(
            listed
                .iter()
                .all(|h| h.name == format!("{PREFIX}/a/{}", h.runner_name))
        );
        // moto pages DescribeParameters by 10: three pages, each asked for.
        assert_eq!(rig.ssm_calls.bodies("DescribeParameters").len(), 3);
        let b = rig.backend.list_handoffs("b").await.unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].runner_name, "runner-x");

        rig.backend.delete_handoff(&listed[0].name).await.unwrap();
        assert!(!parameter_exists(moto, &listed[0].name).await);
        assert_eq!(rig.backend.list_handoffs("a").await.unwrap().len(), 22);
        // A missing parameter is already deleted.
        rig.backend.delete_handoff(&listed[0].name).await.unwrap();
    })
    .await
}

#[tokio::test]
async fn list_describes_tasks_in_batches_of_one_hundred() {
    within(90, async {
        let (world, launch) = deploy().await;
        let moto = &world.moto;
        let rig = rig(&world, launch.clone());
        let mut started = 0;
        while started < 105 {
            let id = started + 1;
            let tags = [
                (TAG_POOL, "big".to_string()),
                (TAG_RUNNER_NAME, format!("r-{id}")),
                (TAG_RUNNER_ID, id.to_string()),
            ];
            started += run_task_by_hand(moto, &launch, "hangar/big", &tags).await;
        }

        let listed = rig.backend.list("big").await.unwrap();
        assert_eq!(listed.len(), 105);
        let mut ids: Vec<u64> = listed.iter().map(|t| t.tags.runner_id).collect();
        ids.sort();
        assert_eq!(ids, (1..=105).collect::<Vec<u64>>());
        let batches: Vec<usize> = rig
            .ecs_calls
            .bodies("DescribeTasks")
            .iter()
            .map(|b| b["tasks"].as_array().unwrap().len())
            .collect();
        assert_eq!(batches, [100, 5]);
        assert!(
            rig.ecs_calls
                .bodies("DescribeTasks")
                .iter()
                .all(|b| b["include"] == serde_json::json!(["TAGS"]))
        );
    })
    .await
}

#[tokio::test]
async fn a_capacity_provider_replaces_the_launch_type() {
    within(60, async {
        let (world, deployed) = deploy().await;
        let launch = EcsLaunch {
            capacity_provider: Some("FARGATE_SPOT".into()),
            assign_public_ip: true,
            ..deployed
        };
        let rig = rig(&world, launch);
        rig.backend.check().await.unwrap();
        rig.backend.launch(request(&tags("spot", 1))).await.unwrap();
        let run = &rig.ecs_calls.bodies("RunTask")[0];
        assert_eq!(run.get("launchType"), None);
        let strategy = run["capacityProviderStrategy"].as_array().unwrap();
        assert_eq!(strategy.len(), 1);
        assert_eq!(strategy[0]["capacityProvider"], "FARGATE_SPOT");
        assert_eq!(strategy[0]["weight"], 1);
        assert_eq!(
            run["networkConfiguration"]["awsvpcConfiguration"]["assignPublicIp"],
            "ENABLED"
        );
        assert_eq!(rig.backend.list("spot").await.unwrap().len(), 1);
    })
    .await
}

#[tokio::test]
async fn a_configured_kms_key_encrypts_the_one_shot_parameter() {
    within(60, async {
        let (world, deployed) = deploy().await;
        let key = "alias/hangar-jit";
        let with_key = rig(
            &world,
            EcsLaunch {
                kms_key_id: Some(key.into()),
                ..deployed.clone()
            },
        );
        with_key
            .backend
            .launch(request(&tags("kms", 1)))
            .await
            .unwrap();
        assert_eq!(with_key.ssm_calls.bodies("PutParameter")[0]["KeyId"], key);
        // Without one, no KeyId: SSM uses the account's aws/ssm key.
        let without = rig(&world, deployed);
        without
            .backend
            .launch(request(&tags("kms", 2)))
            .await
            .unwrap();
        assert_eq!(
            without.ssm_calls.bodies("PutParameter")[0].get("KeyId"),
            None
        );
    })
    .await
}

/// The tasks moto has in the cluster that are meant to run (RunTask's ground truth).
async fn tasks_on_moto(moto: &Moto) -> usize {
    let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config());
    let listed = ecs.list_tasks().cluster(CLUSTER).send().await.unwrap();
    listed.task_arns().len()
}

#[tokio::test]
async fn throttled_launches_are_throttled_and_leave_no_parameter() {
    within(60, async {
        let (world, launch) = deploy().await;
        let moto = &world.moto;
        let rig = rig(&world, launch);

        // RunTask's bucket kept empty (a drained one refills a token every 50 ms, before the
        // parameter is even written): throttled, and the parameter written for it deleted again.
        world.aws.starve("RunTask");
        let runner = tags("busy", 1);
        let err = rig.backend.launch(request(&runner)).await.unwrap_err();
        let BackendError::Throttled(message) = &err else {
            panic!("not throttled: {err:?}");
        };
        assert!(message.contains("ecs:RunTask"), "{message}");
        assert!(!format!("{err:?}").contains(JIT_MARK));
        assert_eq!(world.aws.throttled("RunTask"), 1);
        assert_eq!(rig.ssm_calls.names(), ["PutParameter", "DeleteParameter"]);
        assert!(!parameter_exists(moto, "/hangar/jit/busy/hangar-busy-1").await);
        assert_eq!(tasks_on_moto(moto).await, 0);
        // Tokens again (AWS's 20 a second): the next launch works.
        world.aws.set_throttling(Some(Rates::aws()));
        rig.backend.launch(request(&tags("busy", 2))).await.unwrap();
        assert_eq!(tasks_on_moto(moto).await, 1);

        // PutParameter's bucket kept empty: nothing written, nothing started.
        rig.ssm_calls.clear();
        rig.ecs_calls.clear();
        world.aws.starve("PutParameter");
        let err = rig
            .backend
            .launch(request(&tags("busy", 3)))
            .await
            .unwrap_err();
        let BackendError::Throttled(message) = &err else {
            panic!("not throttled: {err:?}");
        };
        assert!(message.contains("ssm:PutParameter"), "{message}");
        assert_eq!(rig.ssm_calls.names(), ["PutParameter"]);
        assert!(
            rig.ecs_calls.names().is_empty(),
            "no task without its parameter"
        );
        assert!(!parameter_exists(moto, "/hangar/jit/busy/hangar-busy-3").await);
        assert_eq!(tasks_on_moto(moto).await, 1);
    })
    .await
}

#[tokio::test]
async fn capacity_failures_are_capacity_and_leave_no_parameter() {
    within(60, async {
        let (world, launch) = deploy().await;
        let moto = &world.moto;
        let rig = rig(&world, launch);
        let reasons = [
            "RESOURCE:FARGATE",
            "Capacity is unavailable at this time. Please try again later or in a different \
             availability zone",
        ];
        for (i, reason) in reasons.into_iter().enumerate() {
            world.aws.fail_run_tasks(1, reason, None);
            rig.ssm_calls.clear();
            let runner = tags("full", i as u64 + 1);
            let err = rig.backend.launch(request(&runner)).await.unwrap_err();
            let BackendError::Capacity(message) = &err else {
                panic!("{reason}: not a capacity error: {err:?}");
            };
            assert!(message.contains(reason), "{message}");
            assert_eq!(rig.ssm_calls.names(), ["PutParameter", "DeleteParameter"]);
            let name = format!("/hangar/jit/full/{}", runner.runner_name);
            assert!(!parameter_exists(moto, &name).await, "{name} left behind");
        }
        assert_eq!(world.aws.calls("RunTask"), 2);
        assert_eq!(tasks_on_moto(moto).await, 0);
        assert!(rig.backend.list_handoffs("full").await.unwrap().is_empty());

        // When even the delete is throttled, the error says so and the reaper's listing finds
        // the parameter, to delete once SSM lets it.
        world.aws.fail_run_tasks(1, "RESOURCE:FARGATE", None);
        world.aws.starve("DeleteParameter");
        let runner = tags("full", 3);
        let err = rig.backend.launch(request(&runner)).await.unwrap_err();
        let BackendError::Capacity(message) = &err else {
            panic!("not a capacity error: {err:?}");
        };
        assert!(message.contains("could not be deleted either"), "{message}");
        assert_eq!(world.aws.throttled("DeleteParameter"), 1);
        let left = rig.backend.list_handoffs("full").await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].runner_name, runner.runner_name);
        world.aws.set_throttling(Some(Rates::aws()));
        rig.backend.delete_handoff(&left[0].name).await.unwrap();
        assert!(!parameter_exists(moto, &left[0].name).await);
    })
    .await
}

#[tokio::test]
async fn a_listing_that_lags_behind_run_task_is_no_error() {
    within(60, async {
        let (world, launch) = deploy().await;
        let rig = rig(&world, launch);
        let lag = Duration::from_millis(1500);
        world.aws.set_visibility_delay(lag);
        let kept = rig.backend.launch(request(&tags("lag", 1))).await.unwrap();
        let stopped = rig.backend.launch(request(&tags("lag", 2))).await.unwrap();
        let launched = std::time::Instant::now();
        // ECS does not list them yet: an empty listing, not a failure.
        assert!(rig.backend.list("lag").await.unwrap().is_empty());
        // Stopping one it does not list yet works.
        rig.backend.stop(&stopped.id, "scaled in").await.unwrap();
        assert!(launched.elapsed() < lag, "all of it within the lag");

        tokio::time::sleep(lag.saturating_sub(launched.elapsed())).await;
        let listed = rig.backend.list("lag").await.unwrap();
        let live: Vec<&str> = listed
            .iter()
            .filter(|t| matches!(t.state, TaskState::Pending | TaskState::Running))
            .map(|t| t.id.as_str())
            .collect();
        assert_eq!(live, [kept.id.as_str()]);
    })
    .await
}

#[tokio::test]
async fn jit_configs_over_4_kb_take_the_advanced_tier_and_over_8_kb_are_refused_unwritten() {
    within(60, async {
        let (world, launch) = deploy().await;
        let moto = &world.moto;
        let rig = rig(&world, launch);
        let truth = aws_sdk_ssm::Client::new(&moto.sdk_config());
        // The layer refuses Standard values over 4096 bytes and Advanced ones over 8192, as AWS.
        for (bytes, tier) in [(4096, "Standard"), (4097, "Advanced"), (8192, "Advanced")] {
            world.aws.wait_for_tokens("PutParameter", 1.0).await;
            let runner = tags("big", bytes as u64);
            let jit = "j".repeat(bytes);
            rig.backend
                .launch(LaunchRequest {
                    tags: runner.clone(),
                    jit_config: SecretString::from(jit.clone()),
                })
                .await
                .unwrap_or_else(|e| panic!("{bytes} bytes: {e}"));
            let put = rig.ssm_calls.bodies("PutParameter").pop().unwrap();
            assert_eq!(put["Tier"], tier, "{bytes} bytes");
            let stored = truth
                .get_parameter()
                .name(format!("/hangar/jit/big/{}", runner.runner_name))
                .with_decryption(true)
                .send()
                .await
                .unwrap();
            assert_eq!(stored.parameter().unwrap().value(), Some(jit.as_str()));
        }
        rig.ssm_calls.clear();
        let err = rig
            .backend
            .launch(LaunchRequest {
                tags: tags("big", 8193),
                jit_config: SecretString::from("j".repeat(8193)),
            })
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "config", "{err}");
        assert!(rig.ssm_calls.names().is_empty(), "refused before writing");
    })
    .await
}

/// A PutParameter that lands but whose answer is lost is the backend's own parameter: with
/// the SDK's retries off (as in these rigs) the backend sees no answer and deletes it.
#[tokio::test]
async fn a_lost_put_parameter_answer_is_unavailable_and_its_parameter_deleted() {
    within(60, async {
        let (world, launch) = deploy().await;
        let moto = &world.moto;
        let rig = rig(&world, launch);
        world.aws.lose_answers("PutParameter", 1);
        let err = rig
            .backend
            .launch(request(&tags("lost", 1)))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), "unavailable", "{err}");
        assert_eq!(rig.ssm_calls.names(), ["PutParameter", "DeleteParameter"]);
        assert!(rig.ecs_calls.names().is_empty());
        assert!(!parameter_exists(moto, "/hangar/jit/lost/hangar-lost-1").await);
    })
    .await
}

/// The same lost answer with the SDK's standard retries, as `hangar controller` runs
/// (`aws::load_config`): the SDK sends PutParameter again and SSM refuses it with
/// ParameterAlreadyExists (the first one landed). The backend knows its own write by the mark
/// in its description and the launch goes on; before, it took its own write for a name clash,
/// failed the launch and left the JIT configuration for the reaper.
#[tokio::test]
async fn a_lost_put_parameter_answer_leaves_no_parameter_when_the_sdk_retries() {
    within(60, async {
        let (world, launch) = deploy().await;
        let moto = &world.moto;
        let retrying = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&world.aws.url)
            .credentials_provider(aws_sdk_ssm::config::SharedCredentialsProvider::new(
                aws_sdk_ssm::config::Credentials::new("testing", "testing", None, None, "static"),
            ))
            .retry_config(aws_config::retry::RetryConfig::standard())
            .build();
        let backend = EcsBackend::new(&retrying, launch);
        world.aws.lose_answers("PutParameter", 1);
        let result = backend.launch(request(&tags("lost", 2))).await;
        assert_eq!(world.aws.calls("PutParameter"), 2, "the SDK sent it again");
        let task = result.expect("a lost answer does not fail the launch");
        assert!(
            parameter_exists(moto, "/hangar/jit/lost/hangar-lost-2").await,
            "the started task needs its parameter"
        );
        assert_eq!(tasks_on_moto(moto).await, 1, "{task:?}");
    })
    .await
}

#[tokio::test]
async fn the_jit_value_stays_out_of_trace_logs() {
    let logs = LogBuffer::default();
    let subscriber = logs.subscriber();
    // Global: with a thread-local one (`set_default`), SDK events went missing while the other
    // tests of this binary ran in parallel. Their events land here too, which widens the search:
    // every JIT value of these tests starts with JIT_MARK.
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
    within(60, async {
        let (world, launch) = deploy().await;
        let good = EcsBackend::new(&world.aws.sdk_config(), launch.clone());
        let bad = EcsBackend::new(
            &world.aws.sdk_config(),
            EcsLaunch {
                task_definition: "no-such-family".into(),
                ..launch
            },
        );
        let started = tags("logged", 1);
        let failed = tags("logged", 2);
        good.launch(request(&started)).await.unwrap();
        bad.launch(request(&failed)).await.unwrap_err();
        good.list("logged").await.unwrap();
        good.list_handoffs("logged").await.unwrap();

        let text = logs.text();
        assert!(text.len() > 1000, "trace logging is on: {text}");
        assert!(
            text.contains("RunTask"),
            "the SDK's events are captured: {text}"
        );
        assert!(jit_for(&started).starts_with(JIT_MARK));
        assert!(!text.contains(JIT_MARK), "a JIT value was logged");
    })
    .await
}

#[tokio::test]
async fn no_answer_from_aws_is_unavailable_and_names_what_to_check() {
    within(30, async {
        let port = unused_loopback_port();
        let sdk = sdk_config_at(&format!("http://127.0.0.1:{port}"));
        let backend = EcsBackend::new(&sdk, launch_settings(vec![], vec![]));
        let runner = tags("p", 1);
        let err = backend.launch(request(&runner)).await.unwrap_err();
        let BackendError::Unavailable(message) = &err else {
            panic!("{err:?}");
        };
        assert!(message.contains("ssm:PutParameter"), "{message}");
        assert!(message.contains("AWS_PROFILE"), "{message}");
        // The write may have landed with its answer lost, so its delete was tried too.
        assert!(message.contains("could not be deleted either"), "{message}");
        assert!(!format!("{err:?}").contains(&jit_for(&runner)));
        for result in [
            backend.list("p").await.map(|_| ()),
            backend.stop("arn:aws:ecs:us-east-1:1:task/c/0", "r").await,
            backend.list_handoffs("p").await.map(|_| ()),
            backend.delete_handoff("/hangar/jit/p/x").await,
        ] {
            assert_eq!(result.unwrap_err().reason(), "unavailable");
        }
    })
    .await
}

/// A scratch directory holding a `hangar.toml`: the emulator's URLs, `settings` (more
/// `[controller]` keys, then any further tables), and the pool `standalone` of the seed
/// repository, at most two runners, launching with `launch`. Removed on drop.
struct ControllerConfig {
    dir: PathBuf,
    path: PathBuf,
}

impl ControllerConfig {
    fn write(emu: &hangar_emulator::Emulator, launch: &EcsLaunch, settings: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "hangar-ecs-controller-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hangar.toml");
        // Debug-printed string lists are TOML arrays for the plain ids used here.
        let toml = format!(
            r#"
[controller]
github_api_url = "{api}"
github_web_url = "{web}"
{settings}

[[pool]]
name = "standalone"
repository = "{repo}"
max = 2
[pool.ecs]
cluster = "{cluster}"
task_definition = "{task_definition}"
subnets = {subnets:?}
security_groups = {security_groups:?}
parameter_prefix = "{prefix}"
"#,
            api = emu.api_url(),
            web = emu.web_url(),
            repo = support::REPO,
            cluster = launch.cluster,
            task_definition = launch.task_definition,
            subnets = launch.subnets,
            security_groups = launch.security_groups,
            prefix = launch.parameter_prefix,
        );
        std::fs::write(&path, toml).unwrap();
        ControllerConfig { dir, path }
    }
}

impl Drop for ControllerConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What `hangar controller` needs besides PATH: the realism layer's endpoint and test
/// credentials, and the seed PAT.
fn controller_env(aws: &Realism) -> Vec<(&'static str, String)> {
    let mut env = aws.env();
    env.push(("GITHUB_PAT", hangar_emulator::SEED_PAT.to_string()));
    env
}

/// The `hangar controller` binary end to end on ECS (moto) and GitHub (the emulator): a queued
/// job becomes a tagged RunTask whose container is given only the name of a one-shot SecureString
/// holding the runner's JIT configuration. moto runs no container, so the runner never comes
/// online: the controller retires it after `registration_timeout` (registration removed, task
/// stopped with the reason) and deletes the unread parameter, then tries again. AWS's rates are
/// on, and a new task stays out of listings for 1.5 s: the controller must not launch a second
/// runner for the job while its listing lags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_binary_launches_on_ecs_and_reaps_a_runner_that_never_comes_online() {
    within(180, async {
        let (world, launch) = deploy().await;
        let moto = &world.moto;
        let lag = Duration::from_millis(1500);
        world.aws.set_visibility_delay(lag);
        let emu = support::emulator().await;
        let config = ControllerConfig::write(
            &emu,
            &launch,
            r#"resync_interval = "1s"

[defaults]
registration_timeout = "3s"
handoff_max_age = "4s""#,
        );
        let log_path = config.dir.join("controller.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut controller = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar"))
            .args(["controller", "--config"])
            .arg(&config.path)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(controller_env(&world.aws))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let job = emu.enqueue_job(
            hangar_emulator::JobSpec::new(support::REPO, "on-ecs")
                .labels(["standalone"])
                .step("noop", "true"),
        );
        let ecs = aws_sdk_ecs::Client::new(&moto.sdk_config());
        let ssm = aws_sdk_ssm::Client::new(&moto.sdk_config());
        let describe = |arns: Vec<String>| {
            let ecs = ecs.clone();
            async move {
                if arns.is_empty() {
                    return vec![];
                }
                ecs.describe_tasks()
                    .cluster(CLUSTER)
                    .set_tasks(Some(arns))
                    .include(TaskField::Tags)
                    .send()
                    .await
                    .unwrap()
                    .tasks()
                    .to_vec()
            }
        };
        let all_tasks = || {
            let ecs = ecs.clone();
            async move {
                let mut arns = Vec::new();
                for status in [DesiredStatus::Running, DesiredStatus::Stopped] {
                    let listed = ecs
                        .list_tasks()
                        .cluster(CLUSTER)
                        .desired_status(status)
                        .send()
                        .await
                        .unwrap();
                    arns.extend(listed.task_arns().iter().cloned());
                }
                arns
            }
        };
        // The first launch: a tagged task, told only the parameter's name.
        let first = within(60, async {
            loop {
                let tasks = describe(all_tasks().await).await;
                if let Some(task) = tasks.into_iter().next() {
                    return task;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        // Seen on moto within 200 ms of its launch. A pass of the controller (every second) has
        // listed nothing since, as the lag hides the task: one launch all the same.
        tokio::time::sleep(lag - Duration::from_millis(200)).await;
        assert_eq!(world.aws.calls("RunTask"), 1, "one launch for one job");
        assert!(world.aws.calls("ListTasks") >= 1);
        assert_eq!(tag(&first, TAG_POOL).as_deref(), Some("standalone"));
        let runner_name = tag(&first, TAG_RUNNER_NAME).unwrap();
        let runner_id: u64 = tag(&first, TAG_RUNNER_ID).unwrap().parse().unwrap();
        let env: Vec<(String, String)> = first.overrides().unwrap().container_overrides()[0]
            .environment()
            .iter()
            .map(|kv| {
                (
                    kv.name().unwrap().to_string(),
                    kv.value().unwrap().to_string(),
                )
            })
            .collect();
        let parameter = format!("{PREFIX}/standalone/{runner_name}");
        assert!(
            env.contains(&(ENV_JIT_CONFIG_PARAMETER.to_string(), parameter.clone())),
            "{env:?}"
        );
        assert!(env.contains(&("GITHUB_REPOSITORY".to_string(), support::REPO.to_string())));
        let stored = ssm
            .get_parameter()
            .name(&parameter)
            .with_decryption(true)
            .send()
            .await
            .unwrap();
        let stored = stored.parameter().unwrap();
        assert_eq!(
            stored.r#type(),
            Some(&aws_sdk_ssm::types::ParameterType::SecureString)
        );
        let jit = stored.value().unwrap().to_string();
        assert!(
            !env.iter().any(|(_, v)| v.contains(&jit)),
            "the JIT value is not in the task's overrides"
        );
        // The registration the JIT created exists, offline, on the emulated GitHub.
        let emu_repo = hangar_emulator::Scope::repo("your-organization", "your-repository-name");
        assert!(emu.runners(&emu_repo).iter().any(|r| r.id == runner_id));

        // Never online: retired (registration first, then the task), the parameter deleted.
        within(60, async {
            loop {
                let gone = !emu.runners(&emu_repo).iter().any(|r| r.id == runner_id);
                let task = describe(vec![first.task_arn().unwrap().to_string()]).await;
                let stopped = task.first().is_some_and(|t| {
                    t.desired_status() == Some("STOPPED")
                        && t.stopped_reason()
                            .is_some_and(|r| r.contains("never_registered"))
                });
                let parameter_gone = ssm.get_parameter().name(&parameter).send().await.is_err();
                if gone && stopped && parameter_gone {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        // The job is still queued, so the controller launches again (on this pass or the next).
        within(30, async {
            while all_tasks().await.len() < 2 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        assert_eq!(
            emu.job(job).unwrap().status,
            hangar_emulator::JobStatus::Queued
        );

        // SIGTERM: the controller deletes its session and exits 0.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(controller.id().unwrap() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = within(30, controller.wait()).await.unwrap();
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(status.success(), "{log}");
        for set in emu.scale_sets() {
            assert_eq!(emu.scale_set_sessions(set.id), 0, "session deleted on stop");
        }
        assert!(!log.contains(&jit), "the JIT value is never logged");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_refuses_to_start_on_a_missing_cluster_with_the_fix() {
    within(120, async {
        let (world, deployed) = deploy().await;
        let launch = EcsLaunch {
            cluster: "no-such-cluster".into(),
            security_groups: vec![],
            ..deployed
        };
        let emu = support::emulator().await;
        let config = ControllerConfig::write(&emu, &launch, "");
        let out = support::hangar(
            &["controller", "--config", config.path.to_str().unwrap()],
            &controller_env(&world.aws),
        )
        .await;
        let err = support::text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("no-such-cluster") && err.contains("Fix"),
            "{err}"
        );
        assert!(
            emu.scale_sets().is_empty()
                || emu
                    .scale_sets()
                    .iter()
                    .all(|s| emu.scale_set_sessions(s.id) == 0)
        );
    })
    .await
}

/// A burst of launches against AWS's PutParameter rate (3 a second): without a pace, SSM
/// throttles some of them; with the process-wide pacer at a rate under AWS's, none.
#[tokio::test]
async fn the_ssm_pacer_keeps_a_burst_of_launches_under_the_put_parameter_rate() {
    within(60, async {
        let (world, launch) = deploy().await;
        let burst = |backend: EcsBackend, pool: &'static str| async move {
            let mut launches = tokio::task::JoinSet::new();
            for runner in 1..=6 {
                let backend = backend.clone();
                launches.spawn(async move { backend.launch(request(&tags(pool, runner))).await });
            }
            let mut throttled = 0;
            while let Some(done) = launches.join_next().await {
                if let Err(BackendError::Throttled(_)) = done.unwrap() {
                    throttled += 1;
                }
            }
            throttled
        };
        let unpaced = rig(&world, launch.clone()).backend;
        assert!(
            burst(unpaced, "unpaced").await > 0,
            "the control: six at once exceed the bucket"
        );
        // Let SSM's bucket fill again, then go through the pacer (a little under AWS's rate).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let pacer = std::sync::Arc::new(hangar::controller::pace::Pacer::new(2.5));
        let paced = rig(&world, launch).backend.with_ssm_pacer(pacer.clone());
        let before = world.aws.throttled("PutParameter");
        assert_eq!(burst(paced, "paced").await, 0, "no launch throttled");
        assert_eq!(world.aws.throttled("PutParameter"), before);
        assert!(pacer.waited() > Duration::ZERO, "the pacer made them wait");
    })
    .await
}

/// A clean-up listing of several pages at AWS's guessed DescribeParameters rate (2 a second,
/// burst 2): paced as `hangar controller` paces it, it is never throttled.
#[tokio::test]
async fn a_paced_listing_of_many_pages_is_not_throttled() {
    within(60, async {
        let (world, launch) = deploy().await;
        for i in 0..23 {
            world
                .moto
                .put(&format!("{PREFIX}/many/runner-{i:02}"), "jit", true)
                .await;
        }
        let pacer = std::sync::Arc::new(hangar::controller::pace::Pacer::new(
            hangar::controller::pace::SSM_DESCRIBES_PER_SECOND,
        ));
        let backend = rig(&world, launch).backend.with_ssm_describe_pacer(pacer);
        // moto pages by 10: three pages where AWS would answer in one.
        let listed = backend.list_handoffs("many").await.unwrap();
        assert_eq!(listed.len(), 23);
        assert_eq!(world.aws.throttled("DescribeParameters"), 0);
    })
    .await
}
