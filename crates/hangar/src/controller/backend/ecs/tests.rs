use super::*;

fn launch() -> EcsLaunch {
    EcsLaunch::new(
        "runners",
        "hangar-runner:3",
        vec!["subnet-1".into()],
        vec!["sg-1".into()],
    )
}

fn service(code: &str, message: &str, status: u16) -> Refusal {
    Refusal::Service(Answer {
        code: code.into(),
        message: message.into(),
        status,
    })
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

#[test]
fn run_task_failure_reasons_sort_into_variants() {
    let l = launch();
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("RESOURCE:MEMORY", None, "capacity"),
        ("RESOURCE:CPU", Some("arn:aws:ecs:i-1"), "capacity"),
        ("RESOURCE:ENI", None, "capacity"),
        ("AGENT", None, "capacity"),
        (
            "Capacity is unavailable at this time. Please try again later or in a different availability zone",
            None,
            "capacity",
        ),
        (
            "You've reached the limit on the number of vCPUs you can run concurrently",
            None,
            "capacity",
        ),
        (
            "Tasks provisioning capacity limit exceeded.",
            None,
            "capacity",
        ),
        ("ThrottlingException", None, "throttled"),
        ("ATTRIBUTE", None, "config"),
        ("MISSING", None, "config"),
        ("TaskDefinition is inactive", None, "config"),
        ("something new", None, "unavailable"),
    ];
    for (reason, detail, want) in cases {
        let got = failure_error(reason, *detail, &l);
        assert_eq!(got.reason(), *want, "{reason}: {got}");
        assert!(got.to_string().contains(reason), "{got}");
    }
    let attribute = failure_error("ATTRIBUTE", None, &l).to_string();
    assert!(
        attribute.contains("Fix:") && attribute.contains("`task_definition`"),
        "{attribute}"
    );
}

#[test]
fn ecs_error_codes_sort_into_variants_and_name_the_setting() {
    let l = launch();
    let sort = |refused: Refusal| ecs_error("ecs:RunTask", refused, &l, "us-east-1");
    // (code, message, HTTP status, variant)
    for (code, message, status, want) in [
        ("ThrottlingException", "Rate exceeded", 400, "throttled"),
        ("Unknown", "Rate exceeded", 400, "throttled"),
        ("Whatever", "slow down", 429, "throttled"),
        ("ServerException", "Service unavailable", 500, "unavailable"),
        ("Exception", "Could not find task", 500, "unavailable"),
    ] {
        let got = sort(service(code, message, status));
        assert_eq!(got.reason(), want, "{code}: {got}");
    }
    let no_answer = sort(Refusal::NoAnswer(
        "dispatch failure: connection refused".into(),
    ));
    assert_eq!(no_answer.reason(), "unavailable");
    for m in ["connection refused", "AWS_PROFILE"] {
        assert!(no_answer.to_string().contains(m), "{no_answer} lacks {m}");
    }
    // Every other refusal (HTTP 400) is a configuration error naming what to fix.
    let config: &[(&str, &str, &[&str])] = &[
        (
            "ClusterNotFoundException",
            "Cluster not found.",
            &["`cluster`", "\"runners\"", "us-east-1"],
        ),
        (
            "ClientException",
            "Unable to describe task definition.",
            &["`task_definition`", "\"hangar-runner:3\""],
        ),
        (
            "InvalidParameterException",
            "Error retrieving subnet information for [subnet-1]: The subnet ID 'subnet-1' does not exist",
            &["`subnets`", "subnet-1"],
        ),
        (
            "InvalidSubnetID.NotFound",
            "The subnet ID 'subnet-1' does not exist",
            &["`subnets`"],
        ),
        (
            "InvalidParameterException",
            "Override for container named runner is not a container in the TaskDefinition.",
            &["`container_name`"],
        ),
        (
            "InvalidParameterException",
            "Security group sg-1 does not exist",
            &["`security_groups`"],
        ),
        (
            "InvalidParameterException",
            "Task definition does not support launch_type FARGATE.",
            &["`launch_type`", "`task_definition`"],
        ),
        (
            "InvalidParameterException",
            "The specified capacity provider was not found",
            &["`capacity_providers`"],
        ),
        (
            "PlatformTaskDefinitionIncompatibilityException",
            "The specified platform does not satisfy the task definition's required capabilities.",
            &["`launch_type`", "`task_definition`"],
        ),
        (
            "AccessDeniedException",
            "User is not authorized to perform ecs:RunTask",
            &["Fix: allow ecs:RunTask", "iam:PassRole", "ecs:TagResource"],
        ),
        (
            "SomethingNew",
            "odd",
            &["\"runners\"", "\"hangar-runner:3\""],
        ),
    ];
    for (code, message, mentions) in config {
        let got = sort(service(code, message, 400));
        assert_eq!(got.reason(), "config", "{code}: {got}");
        let text = got.to_string();
        for m in mentions.iter().chain(&["Fix:"]) {
            assert!(text.contains(m), "{code}: {text} lacks {m}");
        }
    }
}

#[test]
fn ssm_error_codes_sort_into_variants() {
    let l = launch();
    let sort = |refused: Refusal| {
        ssm_error(
            "ssm:PutParameter",
            refused,
            "/hangar/jit/p/r",
            &l,
            "us-east-1",
        )
    };
    let denied_put = "ssm:PutParameter on arn:aws:ssm:us-east-1:ACCOUNT:parameter/hangar/jit/*";
    // (code, HTTP status, variant, what the message mentions)
    for (code, status, want, mention) in [
        (
            "ParameterAlreadyExists",
            400,
            "unavailable",
            "already exists",
        ),
        ("TooManyUpdates", 400, "throttled", "ssm_writes_per_second"),
        ("ThrottlingException", 400, "throttled", "backing off"),
        ("AccessDeniedException", 400, "config", denied_put),
        ("KMSAccessDeniedException", 400, "config", "kms:"),
        ("ParameterLimitExceeded", 400, "capacity", "delete"),
        (
            "HierarchyLevelLimitExceededException",
            400,
            "config",
            "`parameter_prefix`",
        ),
        ("ValidationException", 400, "config", "`parameter_prefix`"),
        ("InternalServerError", 500, "unavailable", "next pass"),
    ] {
        let got = sort(service(code, "AWS's words", status));
        assert_eq!(got.reason(), want, "{code}: {got}");
        assert!(got.to_string().contains(mention), "{got} lacks {mention}");
    }
    let no_answer = sort(Refusal::NoAnswer("timeout".into()));
    assert_eq!(no_answer.reason(), "unavailable");
    assert!(no_answer.to_string().contains("timeout"), "{no_answer}");
}

#[test]
fn unknown_task_answers_are_recognised() {
    assert!(is_unknown_task(&service(
        "InvalidParameterException",
        "The referenced task was not found.",
        400
    )));
    assert!(!is_unknown_task(&service(
        "InvalidParameterException",
        "reason too long",
        400
    )));
    assert!(!is_unknown_task(&service(
        "ServerException",
        "not found",
        500
    )));
}

#[test]
fn tasks_are_told_the_parameter_the_runner_and_the_scope() {
    let base = [
        (ENV_JIT_CONFIG_PARAMETER, "/hangar/jit/p/r".to_string()),
        (ENV_RUNNER_NAME, "r".to_string()),
        (ENV_TASK_PROTECTION, "off".to_string()),
    ];
    let with = |extra: &[(&'static str, &str)]| {
        let mut want = base.to_vec();
        want.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        want
    };
    let environment =
        |scope: Option<Scope>| task_environment("/hangar/jit/p/r", "r", scope.as_ref());
    assert_eq!(environment(None), with(&[]));
    assert_eq!(
        environment(Some(Scope::repo("acme/widgets").unwrap())),
        with(&[
            ("RUNNER_SCOPE", "repo"),
            ("GITHUB_REPOSITORY", "acme/widgets")
        ])
    );
    assert_eq!(
        environment(Some(Scope::org("acme").unwrap())),
        with(&[("RUNNER_SCOPE", "org"), ("GITHUB_ORG", "acme")])
    );
}

#[test]
fn placements_follow_the_settings_in_order() {
    let mut l = launch();
    assert_eq!(
        placements(&l),
        Ok(vec![Placement::LaunchType(LaunchType::Fargate)])
    );
    l.launch_type = Some("ec2".into());
    assert_eq!(
        placements(&l),
        Ok(vec![Placement::LaunchType(LaunchType::Ec2)])
    );
    l.launch_type = Some("LAMBDA".into());
    let err = placements(&l).unwrap_err();
    assert!(err.to_string().contains("`launch_type`"), "{err}");
    l.launch_type = Some("FARGATE".into());
    l.capacity_provider = Some("FARGATE_SPOT".into());
    assert_eq!(placements(&l).unwrap_err().reason(), "config");
    l.launch_type = None;
    let spot = placements(&l).unwrap();
    assert_eq!(spot, [Placement::CapacityProvider("FARGATE_SPOT".into())]);
    assert_eq!(spot[0].compatibility(), Some("FARGATE"));
    assert_eq!(
        Placement::CapacityProvider("my-asg".into()).compatibility(),
        None
    );
    // The list wins over the single name, and keeps its order.
    l.capacity_providers = vec!["FARGATE_SPOT".into(), "FARGATE".into()];
    l.capacity_provider = None;
    let both = placements(&l).unwrap();
    assert_eq!(
        both,
        [
            Placement::CapacityProvider("FARGATE_SPOT".into()),
            Placement::CapacityProvider("FARGATE".into())
        ]
    );
    assert_eq!(both[0].to_string(), "capacity provider FARGATE_SPOT");
    l.capacity_providers.push(" ".into());
    assert_eq!(placements(&l).unwrap_err().reason(), "config");
}

#[test]
fn a_provider_that_refused_for_capacity_rests_unless_it_is_the_last() {
    let spot = Placement::CapacityProvider("FARGATE_SPOT".into());
    let on_demand = Placement::CapacityProvider("FARGATE".into());
    let both = [spot.clone(), on_demand.clone()];
    let now = Instant::now();
    let mut resting = HashMap::new();
    assert_eq!(placements_to_try(&both, &resting, now), both);
    resting.insert(spot.to_string(), now + REFUSED_PROVIDER_REST);
    assert_eq!(placements_to_try(&both, &resting, now), both[1..]);
    // Its rest over, it is asked first again.
    assert_eq!(
        placements_to_try(&both, &resting, now + REFUSED_PROVIDER_REST),
        both
    );
    // The last one is always tried, resting or not.
    resting.insert(on_demand.to_string(), now + REFUSED_PROVIDER_REST);
    assert_eq!(placements_to_try(&both, &resting, now), both[1..]);
    assert_eq!(
        placements_to_try(std::slice::from_ref(&spot), &resting, now),
        [spot]
    );
}

#[test]
fn started_by_fits_ecs_and_tells_pools_apart() {
    assert_eq!(started_by("standalone"), "hangar/standalone");
    let allowed = |s: &str| {
        s.len() <= STARTED_BY_MAX_CHARS
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_/".contains(c))
    };
    let long_a = "your-organization-your-repository-name-a";
    let long_b = "your-organization-your-repository-name-b";
    for pool in [long_a, long_b, "org.pool", "päöl", "x"] {
        let s = started_by(pool);
        assert!(allowed(&s), "{pool} -> {s}");
        assert!(s.starts_with("hangar/"), "{s}");
        assert_eq!(s, started_by(pool), "stable");
    }
    assert_ne!(started_by(long_a), started_by(long_b));
    assert_ne!(started_by("org.pool"), started_by("org-pool"));
}

#[test]
fn handoff_names_follow_ssm_rules() {
    assert_eq!(
        handoff_name("/hangar/jit", "org", "hangar-org-7", "us-east-1").unwrap(),
        "/hangar/jit/org/hangar-org-7"
    );
    assert_eq!(
        handoff_name("/hangar/jit/", "org", "r", "us-east-1").unwrap(),
        "/hangar/jit/org/r"
    );
    for bad in ["hangar/jit", "/hangar jit", "/aws/jit", "/SSM/x", "/a//b"] {
        let err = handoff_name(bad, "org", "r", "us-east-1").unwrap_err();
        assert!(
            err.to_string().contains("`parameter_prefix`"),
            "{bad}: {err}"
        );
    }
    assert!(handoff_name("/h", "a/b", "r", "us-east-1").is_err());
    assert!(handoff_name("/h", "org", "", "us-east-1").is_err());
    let deep = "/a/b/c/d/e/f/g/h/i/j/k/l/m/n";
    assert!(handoff_name(deep, "p", "r", "us-east-1").is_err());
    // The limit counts the ARN: a name that fits alone may not fit with it.
    let region = "ap-southeast-4";
    let room = PARAMETER_ARN_MAX - PARAMETER_ARN_OVERHEAD - region.len();
    let prefix = |len: usize| format!("/{}", "p".repeat(len - 1));
    let tail = "/pool/runner".len();
    assert!(handoff_name(&prefix(room - tail), "pool", "runner", region).is_ok());
    let err = handoff_name(&prefix(room - tail + 1), "pool", "runner", region).unwrap_err();
    assert!(err.to_string().contains("counting its ARN"), "{err}");
    assert!(
        room - tail + 1 + tail < 1011,
        "the name alone would have passed"
    );
    assert_eq!(handoff_path("/hangar/jit/", "org"), "/hangar/jit/org");
}

#[test]
fn tier_grows_with_the_value() {
    assert_eq!(tier_for(4096).unwrap(), ParameterTier::Standard);
    assert_eq!(tier_for(4097).unwrap(), ParameterTier::Advanced);
    assert_eq!(tier_for(8192).unwrap(), ParameterTier::Advanced);
    assert_eq!(tier_for(8193).unwrap_err().reason(), "config");
}

#[test]
fn states_map_from_ecs_statuses() {
    let cases = [
        (Some("PROVISIONING"), Some("RUNNING"), TaskState::Pending),
        (Some("PENDING"), Some("RUNNING"), TaskState::Pending),
        (Some("ACTIVATING"), Some("RUNNING"), TaskState::Pending),
        (Some("RUNNING"), Some("RUNNING"), TaskState::Running),
        (Some("RUNNING"), Some("STOPPED"), TaskState::Stopping),
        (Some("PENDING"), Some("STOPPED"), TaskState::Stopping),
        (Some("DEACTIVATING"), Some("STOPPED"), TaskState::Stopping),
        (Some("STOPPING"), Some("STOPPED"), TaskState::Stopping),
        (Some("DEPROVISIONING"), Some("STOPPED"), TaskState::Stopping),
        (Some("STOPPED"), Some("STOPPED"), TaskState::Stopped),
        (Some("DELETED"), None, TaskState::Stopped),
        (Some("SOMETHING_NEW"), Some("RUNNING"), TaskState::Pending),
        (None, None, TaskState::Pending),
    ];
    for (last, desired, want) in cases {
        assert_eq!(state_of(last, desired), want, "{last:?}/{desired:?}");
    }
}

#[test]
fn tasks_need_all_three_tags() {
    let full = vec![
        tag(TAG_POOL, "org"),
        tag(TAG_RUNNER_NAME, "hangar-org-1"),
        tag(TAG_RUNNER_ID, "42"),
        tag("aws:ecs:clusterName", "runners"),
    ];
    assert_eq!(
        tags_of(&full),
        Some(TaskTags {
            pool: "org".into(),
            runner_name: "hangar-org-1".into(),
            runner_id: 42
        })
    );
    for drop in 0..3 {
        let mut partial = full.clone();
        partial.remove(drop);
        assert_eq!(tags_of(&partial), None, "without tag {drop}");
    }
    let mut bad_id = full.clone();
    bad_id[2] = tag(TAG_RUNNER_ID, "forty-two");
    assert_eq!(tags_of(&bad_id), None);

    let created = aws_sdk_ecs::primitives::DateTime::from_secs(1_700_000_000);
    let ecs_task = aws_sdk_ecs::types::Task::builder()
        .task_arn("arn:aws:ecs:us-east-1:1:task/runners/abc")
        .last_status("STOPPED")
        .desired_status("STOPPED")
        .created_at(created)
        .stopped_reason("Essential container in task exited")
        .set_tags(Some(full))
        .build();
    let now = Utc::now();
    let task = task_of(&ecs_task, now).unwrap();
    assert_eq!(task.id, "arn:aws:ecs:us-east-1:1:task/runners/abc");
    assert_eq!(task.state, TaskState::Stopped);
    assert_eq!(task.created_at.timestamp(), 1_700_000_000);
    assert_eq!(
        task.stop_reason.as_deref(),
        Some("Essential container in task exited")
    );
    let untagged = aws_sdk_ecs::types::Task::builder()
        .task_arn("arn:aws:ecs:us-east-1:1:task/runners/def")
        .build();
    assert_eq!(task_of(&untagged, now), None);
}

#[test]
fn stop_reasons_are_cut_at_ecs_limit_on_a_char_boundary() {
    let long = "é".repeat(300);
    let cut = truncate_chars(&long, STOP_REASON_MAX_CHARS);
    assert_eq!(cut.chars().count(), 255);
    assert_eq!(truncate_chars("short", 255), "short");
}

#[test]
fn a_note_keeps_the_variant() {
    let e = with_note(BackendError::Capacity("full".into()), "; and more");
    assert_eq!(e, BackendError::Capacity("full; and more".into()));
}
