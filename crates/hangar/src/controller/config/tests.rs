//! The pool file's rules, one test a rule: every mistake names its field and its fix.
use super::*;
use crate::controller::cost::PRICES_AS_OF;

const SEED: &str = r#"
[controller]
resync_interval = "20s"
listen = "127.0.0.1:9464"
credentials_ssm_prefix = "/your-app-name/github-integration"

[defaults]
max = 4

[[pool]]
name = "your-repository-name"
repository = "your-organization/your-repository-name"
labels = ["linux", "x64"]
[pool.ecs]
cluster = "github-runners"
task_definition = "hangar-runner"
subnets = ["subnet-1", "subnet-2", "subnet-3"]
security_groups = ["sg-1"]

[[pool]]
name = "org"
organization = "your-organization"
min_idle = 1
max = 8
runner_group = "ci"
[pool.ecs]
cluster = "github-runners"
task_definition = "hangar-runner:3"
subnets = ["subnet-1"]
security_groups = []
capacity_provider = "FARGATE_SPOT"
"#;

fn err(text: &str) -> String {
    ControllerConfig::parse(text, "hangar.toml")
        .unwrap_err()
        .to_string()
}

fn with_pool(pool: &str) -> String {
    format!("[[pool]]\n{pool}\n")
}

const LOCAL: &str = "[pool.local]\nwork_root = \"/tmp/x\"";

#[test]
fn the_seeds_two_set_ups_are_two_pools() {
    let config = ControllerConfig::parse(SEED, "hangar.toml").unwrap();
    assert_eq!(config.settings.resync_interval, Duration::from_secs(20));
    assert_eq!(config.settings.github_api_url, "https://api.github.com");
    assert_eq!(config.settings.github_budget_share, defaults::BUDGET_SHARE);
    assert_eq!(
        config.settings.ssm_writes_per_second,
        defaults::SSM_WRITES_PER_SECOND
    );
    assert_eq!(
        config.settings.github_creations_per_minute,
        crate::controller::creations::DEFAULT_PER_MINUTE
    );
    let repo = config.pool("your-repository-name").unwrap();
    assert_eq!(
        repo.scope,
        Scope::repo("your-organization/your-repository-name").unwrap()
    );
    assert_eq!(repo.scale_set, "your-repository-name");
    assert_eq!(repo.runner_group, "Default");
    assert_eq!(
        (repo.limits.min_idle, repo.limits.max),
        (0, 4),
        "max from [defaults]"
    );
    let BackendConfig::Ecs(ecs) = &repo.backend else {
        panic!()
    };
    assert_eq!(ecs.container_name, "runner");
    assert_eq!(ecs.parameter_prefix, "/hangar/jit");
    let org = config.pool("org").unwrap();
    assert!(org.scope.is_org());
    assert_eq!((org.limits.min_idle, org.limits.max), (1, 8));
    assert_eq!(org.runner_group, "ci");
}

#[test]
fn mistakes_name_the_field_and_the_fix() {
    let cases: &[(&str, &[&str])] = &[
        ("", &["no pools", "[[pool]]"]),
        (
            "[[pool]]\nname = \"a\"\nrepository = \"o/r\"\nmax = \"3\"\n[pool.local]\nwork_root = \"/x\"",
            &["invalid type"],
        ),
        (
            &with_pool(&format!("name = \"A b\"\nrepository = \"o/r\"\n{LOCAL}")),
            &["pool[0].name", "lowercase"],
        ),
        (
            &with_pool(&format!("name = \"a\"\n{LOCAL}")),
            &[
                "neither repository nor organization",
                "organization = \"ORG\"",
            ],
        ),
        (
            &with_pool(&format!(
                "name = \"a\"\nrepository = \"o/r\"\norganization = \"o\"\n{LOCAL}"
            )),
            &["both repository and organization"],
        ),
        (
            &with_pool(&format!("name = \"a\"\nrepository = \"justrepo\"\n{LOCAL}")),
            &["pool \"a\"", "OWNER/REPO"],
        ),
        (
            &with_pool("name = \"a\"\nrepository = \"o/r\""),
            &["no backend", "[pool.ecs]"],
        ),
        (
            &with_pool(&format!(
                "name = \"a\"\nrepository = \"o/r\"\nmin_idle = 5\nmax = 2\n{LOCAL}"
            )),
            &["min_idle 5 is above max 2"],
        ),
        (
            &with_pool(&format!(
                "name = \"a\"\nrepository = \"o/r\"\nmax_runtime = \"5 days\"\n{LOCAL}"
            )),
            &["max_runtime", "unit"],
        ),
        (
            &with_pool(&format!(
                "name = \"a\"\nrepository = \"o/r\"\nrunner_group = \"ci\"\n{LOCAL}"
            )),
            &["runner groups exist only for organizations"],
        ),
        (
            &with_pool(&format!(
                "name = \"a\"\nrepository = \"o/r\"\nlabels = [\"a,b\"]\n{LOCAL}"
            )),
            &["without commas"],
        ),
        (
            &with_pool(&format!(
                "name = \"a\"\nrepository = \"o/r\"\nbogus = 1\n{LOCAL}"
            )),
            &["unknown field `bogus`"],
        ),
        (
            &format!(
                "{}{}",
                with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}")),
                with_pool(&format!("name = \"a\"\nrepository = \"o/s\"\n{LOCAL}"))
            ),
            &["used by two pools"],
        ),
        (
            &format!(
                "{}{}",
                with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}")),
                with_pool(&format!(
                    "name = \"b\"\nscale_set = \"a\"\nrepository = \"O/R\"\n{LOCAL}"
                ))
            ),
            &["used by another pool"],
        ),
        (
            &with_pool(
                "name = \"a\"\nrepository = \"o/r\"\n[pool.ecs]\ncluster = \"c\"\ntask_definition = \"t\"\nsubnets = []\nsecurity_groups = []",
            ),
            &["no subnets", "private subnets"],
        ),
        (
            &with_pool(
                "name = \"a\"\nrepository = \"o/r\"\n[pool.ecs]\ncluster = \"c\"\ntask_definition = \"t\"\nsubnets = [\"s\"]\nsecurity_groups = []\nlaunch_type = \"FARGATE\"\ncapacity_provider = \"FARGATE_SPOT\"",
            ),
            &["one or the other"],
        ),
        (
            &with_pool(
                "name = \"a\"\nrepository = \"o/r\"\n[pool.ecs]\ncluster = \"c\"\ntask_definition = \"t\"\nsubnets = [\"s\"]\nsecurity_groups = []\nlaunch_type = \"fargate\"",
            ),
            &["use FARGATE, EC2 or EXTERNAL"],
        ),
        (
            &with_pool(
                "name = \"a\"\nrepository = \"o/r\"\n[pool.ecs]\ncluster = \"c\"\ntask_definition = \"t\"\nsubnets = [\"s\"]\nsecurity_groups = []\nparameter_prefix = \"hangar/\"",
            ),
            &["SSM path prefix"],
        ),
        (
            &format!(
                "[controller]\ngithub_budget_share = 1.5\n{}",
                with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}"))
            ),
            &["outside (0, 1]"],
        ),
        (
            &format!(
                "[controller]\nssm_writes_per_second = 0\n{}",
                with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}"))
            ),
            &["controller.ssm_writes_per_second", "outside (0, 1000]"],
        ),
        (
            &format!(
                "[controller]\ngithub_creations_per_minute = 0.5\n{}",
                with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}"))
            ),
            &[
                "controller.github_creations_per_minute",
                "outside [1, 10000]",
                "about 180",
            ],
        ),
        (
            &format!(
                "[controller]\nlisten = \"nowhere\"\n{}",
                with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}"))
            ),
            &["controller.listen", "127.0.0.1:0"],
        ),
        (
            &format!(
                "[controller]\nresync_interval = \"0s\"\n{}",
                with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}"))
            ),
            &["never resync"],
        ),
        (
            &format!(
                "[controller]\nwebhook_secret_env = \"my secret\"\n{}",
                with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}"))
            ),
            &["never goes in this file"],
        ),
        (
            &format!(
                "[controller]\nhttp_token_env = \"s3cr3t-token\"\n{}",
                with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}"))
            ),
            &["controller.http_token_env", "never goes in this file"],
        ),
    ];
    for (text, wanted) in cases {
        let message = err(text);
        assert!(message.starts_with("hangar.toml"), "{message}");
        for w in *wanted {
            assert!(
                message.contains(w),
                "{text}\n -> {message}\n (wanted {w:?})"
            );
        }
    }
}

#[test]
fn pools_on_one_credential_split_its_budget_share() {
    let config = ControllerConfig::parse(
        &format!(
            "[controller]\ngithub_budget_share = 0.6\n{}{}{}",
            with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}")),
            with_pool(&format!("name = \"b\"\nrepository = \"o/s\"\n{LOCAL}")),
            with_pool(&format!("name = \"c\"\norganization = \"o\"\n{LOCAL}"))
        ),
        "t",
    )
    .unwrap();
    let share = |name: &str| config.budget_share(config.pool(name).unwrap());
    assert!((share("a") - 0.3).abs() < 1e-9, "two PAT pools halve it");
    assert!((share("b") - 0.3).abs() < 1e-9);
    assert!((share("c") - 0.6).abs() < 1e-9, "the App pool has it alone");
}

#[test]
fn runner_names_belong_to_exactly_one_pool() {
    let config = ControllerConfig::parse(
        &format!(
            "{}{}",
            with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}")),
            with_pool(&format!("name = \"a-b\"\nrepository = \"o/r\"\n{LOCAL}"))
        ),
        "t",
    )
    .unwrap();
    let (a, ab) = (config.pool("a").unwrap(), config.pool("a-b").unwrap());
    assert!(a.owns_runner_name("a-x1y2z3w4"));
    assert!(!a.owns_runner_name("a-b-x1y2z3w4"));
    assert!(ab.owns_runner_name("a-b-x1y2z3w4"));
    assert!(!a.owns_runner_name("a-X1Y2Z3W4"));
    assert!(!a.owns_runner_name("aws-github-runner-1234"));
}

#[test]
fn a_reload_applies_valid_changes_and_keeps_the_running_config_otherwise() {
    let dir = std::env::temp_dir().join(format!("hangar-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("hangar.toml");
    let one = with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}"));
    std::fs::write(&path, &one).unwrap();
    let first = ControllerConfig::load(&path).unwrap();
    let mut watcher = ConfigWatcher::new(&path);
    assert!(matches!(watcher.check(), Reload::Unchanged));
    let two = format!(
        "{one}{}",
        with_pool(&format!("name = \"b\"\norganization = \"o\"\n{LOCAL}"))
    )
    .replace("name = \"a\"\n", "name = \"a\"\nmax = 3\n");
    std::fs::write(&path, &two).unwrap();
    let Reload::Changed(second) = watcher.check() else {
        panic!("a valid change applies")
    };
    let change = ConfigChange::between(&first, &second);
    assert_eq!(
        change,
        ConfigChange {
            added: vec!["b".into()],
            removed: vec![],
            changed: vec!["a".into()]
        }
    );
    std::fs::write(&path, "[[pool]]\nname = ").unwrap();
    assert!(matches!(
        watcher.check(),
        Reload::Rejected(ConfigError::Syntax { .. })
    ));
    assert!(
        matches!(watcher.check(), Reload::Unchanged),
        "reported once"
    );
    std::fs::write(&path, &one).unwrap();
    let Reload::Changed(third) = watcher.check() else {
        panic!()
    };
    assert_eq!(
        ConfigChange::between(&second, &third).removed,
        vec!["b".to_string()]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn github_urls_from_the_environment_fill_only_what_the_file_leaves_unset() {
    let pool = "[[pool]]\nname = \"p\"\nrepository = \"o/r\"\n[pool.local]\nwork_root = \"/w\"\n";
    let none = ControllerConfig::parse(pool, "t")
        .unwrap()
        .with_github_urls("https://ghe.example.com/api/v3/", "https://ghe.example.com");
    assert_eq!(
        none.settings.github_api_url,
        "https://ghe.example.com/api/v3"
    );
    assert_eq!(none.settings.github_web_url, "https://ghe.example.com");
    let text = format!("[controller]\ngithub_api_url = \"https://file.example/api/v3\"\n{pool}");
    let api_in_file = ControllerConfig::parse(&text, "t")
        .unwrap()
        .with_github_urls("https://ghe.example.com/api/v3", "https://ghe.example.com");
    assert_eq!(
        api_in_file.settings.github_api_url,
        "https://file.example/api/v3"
    );
    assert_eq!(
        api_in_file.settings.github_web_url,
        "https://ghe.example.com"
    );
}

fn ecs_pool(name: &str, scope: &str, extra_pool: &str, extra_ecs: &str) -> String {
    format!(
        "[[pool]]\nname = \"{name}\"\n{scope}\n{extra_pool}\n[pool.ecs]\ncluster = \"c\"\ntask_definition = \"t\"\nsubnets = [\"s\"]\nsecurity_groups = []\n{extra_ecs}\n"
    )
}

#[test]
fn capacity_providers_are_an_ordered_list_exclusive_with_launch_type() {
    let org = "organization = \"o\"";
    let parsed = ControllerConfig::parse(
        &ecs_pool(
            "a",
            org,
            "",
            "capacity_providers = [\"FARGATE_SPOT\", \"FARGATE\"]",
        ),
        "hangar.toml",
    )
    .unwrap();
    let BackendConfig::Ecs(ecs) = &parsed.pools[0].backend else {
        panic!()
    };
    assert_eq!(ecs.providers(), ["FARGATE_SPOT", "FARGATE"]);
    // The single name is a one-item list.
    let parsed = ControllerConfig::parse(
        &ecs_pool("a", org, "", "capacity_provider = \"FARGATE_SPOT\""),
        "hangar.toml",
    )
    .unwrap();
    let BackendConfig::Ecs(ecs) = &parsed.pools[0].backend else {
        panic!()
    };
    assert_eq!(ecs.capacity_providers, ["FARGATE_SPOT"]);
    assert_eq!(ecs.capacity_provider, None);
    for (extra, needle) in [
        (
            "capacity_provider = \"X\"\ncapacity_providers = [\"Y\"]",
            "both capacity_provider and capacity_providers",
        ),
        (
            "capacity_providers = [\"FARGATE\", \"fargate\"]",
            "listed twice",
        ),
        (
            "capacity_providers = [\"\"]",
            "not a capacity provider name",
        ),
        (
            "launch_type = \"FARGATE\"\ncapacity_providers = [\"FARGATE_SPOT\"]",
            "both launch_type and capacity providers",
        ),
        ("cpu_architecture = \"riscv\"", "X86_64 or ARM64"),
        ("ephemeral_storage_gib = 500", "21 to 200"),
        ("cpu = 0", "is 0"),
        (
            "cpu_architecture = \"ARM64\"\ncapacity_providers = [\"FARGATE_SPOT\", \"FARGATE\"]",
            "X86_64 tasks only",
        ),
    ] {
        let message = err(&ecs_pool("a", org, "", extra));
        assert!(message.contains(needle), "{extra}: {message}");
    }
}

#[test]
fn a_pools_shape_is_stated_and_docker_jobs_are_sent_to_a_docker_pool() {
    let text = [
        ecs_pool(
            "repo",
            "repository = \"o/r\"",
            "",
            "cpu = 4096\nmemory = 8192\ncpu_architecture = \"arm64\"\nephemeral_storage_gib = 50",
        ),
        ecs_pool(
            "org-docker",
            "organization = \"O\"",
            "docker = true",
            "capacity_providers = [\"docker-ec2\"]",
        ),
        ecs_pool("other", "organization = \"elsewhere\"", "", ""),
    ]
    .concat();
    let config = ControllerConfig::parse(&text, "hangar.toml").unwrap();
    let [repo, docker, other] = &config.pools[..] else {
        panic!()
    };
    let BackendConfig::Ecs(ecs) = &repo.backend else {
        panic!()
    };
    assert_eq!(ecs.shape().unwrap(), "4 vCPU, 8 GiB, ARM64, 50 GiB disk");
    // The organization's Docker pool can take the repository's jobs; another organization's
    // pool cannot.
    assert_eq!(repo.docker_runs_on.as_deref(), Some("org-docker"));
    assert_eq!(other.docker_runs_on, None);
    assert_eq!(docker.docker_runs_on, None);
    assert!(docker.can_run().contains("Docker too"));
    assert!(repo.can_run().contains("runs-on: org-docker"));
    assert!(other.can_run().contains("none in this file"));
    assert!(
        docker
            .runner_environment()
            .contains(&("HANGAR_DOCKER", "1".to_string()))
    );
    // A Docker pool where Fargate would run it is refused: no privileged container there.
    for placement in [
        "",
        "launch_type = \"FARGATE\"",
        "capacity_providers = [\"FARGATE_SPOT\", \"FARGATE\"]",
    ] {
        let message = err(&ecs_pool(
            "d",
            "organization = \"o\"",
            "docker = true",
            placement,
        ));
        assert!(
            message.contains("cannot run on Fargate"),
            "{placement}: {message}"
        );
    }
    // EC2 capacity first with Fargate behind it is refused too? No: a mix can run Docker on
    // its EC2 part, so only an all-Fargate pool is refused.
    ControllerConfig::parse(
        &ecs_pool(
            "d",
            "organization = \"o\"",
            "docker = true",
            "launch_type = \"EC2\"",
        ),
        "hangar.toml",
    )
    .unwrap();
}

/// The pool file deploy/terraform writes for the organization with `pool_shapes` (its Python
/// tests keep this golden copy equal to what the module generates): every key parses, and the
/// shapes come out as the module meant them.
#[test]
fn the_terraform_modules_shaped_pool_file_parses_as_meant() {
    let text =
        include_str!("../../../../../deploy/terraform/tests/golden/pool-file-shaped-org.toml");
    let config = ControllerConfig::parse(text, "pool-file-shaped-org.toml").unwrap();
    let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["org", "org-arm64", "org-docker", "org-large"]);
    let ecs = |name: &str| -> (&PoolConfig, &EcsLaunch) {
        let pool = config.pools.iter().find(|p| p.name == name).unwrap();
        let BackendConfig::Ecs(launch) = &pool.backend else {
            panic!("{name} is an ECS pool")
        };
        (pool, launch)
    };
    let (org, launch) = ecs("org");
    assert!(!org.docker);
    assert_eq!(launch.launch_type.as_deref(), Some("FARGATE"));
    assert_eq!(org.docker_runs_on.as_deref(), Some("org-docker"));
    let (_, launch) = ecs("org-arm64");
    assert_eq!(launch.shape().unwrap(), "2 vCPU, 4 GiB, ARM64");
    let (docker, launch) = ecs("org-docker");
    assert!(docker.docker);
    assert!(!launch.fargate_only());
    assert_eq!(launch.providers(), ["hangar-docker-your-ecs-cluster-name"]);
    let (large, launch) = ecs("org-large");
    assert_eq!(launch.providers(), ["FARGATE_SPOT", "FARGATE"]);
    assert_eq!(
        launch.shape().unwrap(),
        "4 vCPU, 16 GiB, X86_64, 100 GiB disk"
    );
    assert!(large.can_run().contains("runs-on: org-docker"));
}

const PRICES_EU: &str = r#"
[[prices]]
region = "eu-west-1"
as_of = "2026-12-01"
x86_64 = { vcpu_hour = 0.0444, gb_hour = 0.0049, storage_gb_hour = 0.0001 }
arm64 = { vcpu_hour = 0.0355, gb_hour = 0.0039, storage_gb_hour = 0.0001 }
spot_x86_64 = { vcpu_hour = 0.0133, gb_hour = 0.0015, storage_gb_hour = 0.0001 }
"#;

#[test]
fn a_price_table_in_the_file_replaces_its_regions_and_the_job_store_is_read() {
    let text = format!(
        "[controller]\njob_store = \"/var/lib/hangar/jobs.json\"\n{PRICES_EU}\n{}",
        with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}"))
    );
    let config = ControllerConfig::parse(&text, "hangar.toml").unwrap();
    let settings = &config.settings;
    assert_eq!(
        settings.job_store.as_deref(),
        Some(Path::new("/var/lib/hangar/jobs.json"))
    );
    let eu = settings.prices_for("eu-west-1").unwrap();
    assert_eq!(eu.as_of, "2026-12-01");
    assert_eq!(eu.x86_64.vcpu_hour, 0.0444);
    // The built-in table still prices its region; a region with neither has none.
    assert_eq!(
        settings.prices_for("us-east-1").unwrap().as_of,
        PRICES_AS_OF
    );
    assert!(settings.prices_for("ap-south-2").is_none());
    // Without the file's table, eu-west-1 has no prices at all.
    let plain = ControllerConfig::parse(
        &with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}")),
        "hangar.toml",
    )
    .unwrap();
    assert!(plain.settings.prices_for("eu-west-1").is_none());
    assert!(plain.settings.job_store.is_none());
}

#[test]
fn bad_price_tables_name_the_field_and_the_fix() {
    let pool = with_pool(&format!("name = \"a\"\nrepository = \"o/r\"\n{LOCAL}"));
    let cases: &[(String, &[&str])] = &[
        (
            format!("{PRICES_EU}{PRICES_EU}{pool}"),
            &["prices[1].region", "once"],
        ),
        (
            format!("{}{pool}", PRICES_EU.replace("0.0444", "-1.0")),
            &["prices[0].x86_64.vcpu_hour", "not a price", "USD per hour"],
        ),
        (
            format!(
                "{}{pool}",
                PRICES_EU.replace("as_of = \"2026-12-01\"", "as_of = \"\"")
            ),
            &["prices[0].as_of", "when the prices were read"],
        ),
        (
            format!("{}{pool}", PRICES_EU.replace("arm64 = ", "arm = ")),
            &["arm"],
        ),
    ];
    for (text, wanted) in cases {
        let message = err(text);
        for w in *wanted {
            assert!(
                message.contains(w),
                "{text}\n -> {message}\n (wanted {w:?})"
            );
        }
    }
}
