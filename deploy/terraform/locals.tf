# The whole mode switch lives here, in plain expressions (conditionals, `for` expressions and a
# few functions, no dynamic blocks): tests/module_plan.py evaluates these same parsed expressions
# to derive the resource addresses of each mode, so keep them this simple.

locals {
  is_org = var.runner_type == "org"

  # One runner (task definition, service and log group) per key: each repository name in
  # standalone mode, the single key "org" in org mode. Every per-runner resource uses
  # `for_each = local.runners`, so the seed's addresses hold:
  #   aws_ecs_service.github_runner["your-repository-name"] and aws_ecs_service.github_runner["org"].
  runner_keys = local.is_org ? ["org"] : var.github_repository_name

  runners = {
    for key in local.runner_keys : key => {
      # ECS service, task definition family and container name. ECS names allow no '.', which
      # repository names may contain (variables.tf rejects names that would then collide).
      name = "github-runner-${var.runner_type}-${replace(key, ".", "-")}"
      # The seed's log group names: awslogs-github-runner-standalone-<repo>, awslogs-github-runner-org-org.
      log_group_name = "awslogs-github-runner-${var.runner_type}-${key}"
      # The controller's pool name, and this key's folder of one-shot JIT configurations,
      # <prefix>/jit/<pool_name>/: 1 to 32 of [a-z0-9-] without a leading or trailing '-' (it
      # becomes part of runner names, ECS tags and SSM paths). The key lowercased, every run of
      # other characters replaced by '-', cut to 32. Preconditions refuse keys that would give an
      # empty or shared name (aws_ssm_parameter.controller_config, aws_iam_role_policy.task_jit).
      pool_name = trim(substr(trim(replace(lower(key), "/[^a-z0-9-]+/", "-"), "-"), 0, 32), "-")
      # This key's own task role (IAM allows 38 characters of prefix): github-runner-org-task-
      # in org mode (the name the single task role had), github-runner-<repo, cut to 18>-task-.
      task_role_name_prefix = "github-runner-${substr(key, 0, 18)}-task-"
      # What this runner registers with (hangar agent's RUNNER_SCOPE and its target).
      scope_environment = local.is_org ? [
        { name = "RUNNER_SCOPE", value = "org" },
        { name = "GITHUB_ORG", value = var.github_organization },
        ] : [
        { name = "RUNNER_SCOPE", value = "repo" },
        { name = "GITHUB_REPOSITORY", value = "${var.github_organization}/${key}" },
      ]
    }
  }

  # Everything else hangar agent reads from the environment, the same for every runner.
  common_environment = concat(
    [
      { name = "RUNNER_LABELS", value = join(",", var.runner_labels) },
      { name = "RUNNER_NAME_PREFIX", value = var.runner_name_prefix },
      { name = "HANGAR_LOG_FORMAT", value = "json" },
      { name = "HANGAR_DRAIN_TIMEOUT", value = "${var.drain_timeout_seconds}s" },
      { name = "AWS_REGION", value = var.aws_region },
      # The container runs as the image's default user, root (tini and hangar agent); the agent
      # starts Runner.Listener, and so every job, as this user (uid 1001). The image sets the same.
      { name = "RUNNER_USER", value = local.runner_user },
    ],
    local.is_org && var.runner_group != null ? [{ name = "RUNNER_GROUP", value = var.runner_group }] : [],
  )

  # The credentials, injected by ECS from Parameter Store as container `secrets` (never as plain
  # environment), each from `<prefix>/<parameter>` in the seed's layout.
  credential_parameters = local.is_org ? [
    { name = "GITHUB_APP_CLIENT_ID", parameter = "client-id" },
    { name = "GITHUB_APP_INSTALLATION_ID", parameter = "installation-id" },
    { name = "GITHUB_APP_PRIVATE_KEY", parameter = "private-key" },
    ] : [
    { name = "GITHUB_PAT", parameter = "pat" },
  ]

  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id

  # arn:aws:ssm:<region>:<account>:parameter/your-app-name/github-integration (the prefix starts with '/').
  ssm_parameter_arn_prefix = "arn:${local.partition}:ssm:${var.aws_region}:${local.account_id}:parameter${var.ssm_parameter_prefix}"
  container_secrets        = [for credential in local.credential_parameters : { name = credential.name, valueFrom = "${local.ssm_parameter_arn_prefix}/${credential.parameter}" }]
  # What an execution role that injects them may read and decrypt: exactly these parameters.
  credential_parameter_arns = [for secret in local.container_secrets : secret.valueFrom]

  # The runner container's `secrets`: the credentials for the fixed services, which register their
  # runners themselves. None at all with the controller: it owns the registration and hands each
  # runner a one-shot JIT configuration, so its runner tasks (and their execution role) never see
  # a credential. (A `for` expression, so that the key is absent rather than an empty list.)
  runner_container_credentials = { for name, value in { secrets = local.container_secrets } : name => value if !var.enable_controller }

  # One-shot JIT configurations (RUNNER_JIT_CONFIG_PARAMETER) live under <prefix>/jit/, in one
  # folder per runner key: <prefix>/jit/<pool_name>/<runner name>. Each key's task role may take
  # only its own folder's, so a task role leaked by one pool's job cannot take (and register as)
  # another pool's pending runners.
  runner_jit_parameter_arn_patterns = { for key, runner in local.runners : key => "${local.ssm_parameter_arn_prefix}/jit/${runner.pool_name}/*" }
  # The controller writes every pool's folder: all of <prefix>/jit/ (one ARN, not one per pool,
  # which with a long prefix would outgrow IAM's 10,240 characters of inline policy per role; the
  # controller holds every pool's credentials anyway).
  jit_parameter_arn_pattern = "${local.ssm_parameter_arn_prefix}/jit/*"

  # The AWS managed alias/aws/ssm key (looked up only without kms_key_arn).
  ssm_managed_key_arn = one(data.aws_kms_alias.ssm[*].target_key_arn)
  # The key of the SecureString parameters: the given one, or the AWS managed alias/aws/ssm key.
  kms_key_arn = var.kms_key_arn != null ? var.kms_key_arn : local.ssm_managed_key_arn

  # Pulling runner_image (both task definitions run it). An ECR image URI is
  # <account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]/<repository>[:tag][@sha256:<digest>]; the
  # same pattern validates runner_image (variables.tf). Its groups: account, region, repository.
  ecr_image_pattern = "^([0-9]{12})\\.dkr\\.ecr(?:-fips)?\\.([a-z]{2}(?:-[a-z]+)+-[0-9])\\.amazonaws\\.com(?:\\.cn)?/((?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*)(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
  # The image's ECR repository (of any account and region; the partition follows the region),
  # which both execution roles may pull from; null for an image in another registry.
  image_ecr_repository_arn = one([
    for m in regexall(local.ecr_image_pattern, var.runner_image) :
    "arn:${can(regex("^cn-", m[1])) ? "aws-cn" : (can(regex("^us-gov-", m[1])) ? "aws-us-gov" : "aws")}:ecr:${m[1]}:${m[0]}:repository/${m[2]}"
  ])
  # What both containers get for a private registry outside ECR: repositoryCredentials (absent
  # without repository_credentials_secret_arn; a `for` expression, so the key is left out).
  image_pull_container_settings = {
    for name, value in { repositoryCredentials = { credentialsParameter = var.repository_credentials_secret_arn } } :
    name => value if var.repository_credentials_secret_arn != null
  }

  # Tasks of the cluster, for task scale-in protection (task ARNs carry the cluster name).
  cluster_task_arn_pattern = "arn:${local.partition}:ecs:${var.aws_region}:${local.account_id}:task/${var.ecs_cluster_name}/*"

  # The image's unprivileged user: every job runs as it (RUNNER_USER), never as root.
  runner_user = "runner"
  # The controller runs no untrusted code and holds its credentials alone: it runs as the
  # image's `runner` user (uid 1001) rather than root.
  controller_user = "1001"

  # The awslogs options of both task definitions but their log group and stream prefix. Non-blocking:
  # a CloudWatch hiccup must not block a container's stdout (a runner's jobs, the controller).
  awslogs_options = {
    awslogs-region  = var.aws_region
    mode            = "non-blocking"
    max-buffer-size = "25m"
  }

  ##############################################################################
  # hangar controller (enable_controller)
  ##############################################################################

  # The controller hands each new runner its JIT configuration as a one-shot SecureString, so the
  # task role needs the <prefix>/jit/ permissions whenever the controller runs.
  grant_jit_config_parameters = var.enable_jit_config_parameters || var.enable_controller
  # The controller writes the one-shot parameters with kms_key_arn when it is given (its pools'
  # kms_key_id), else with the AWS managed alias/aws/ssm key: the same key as the credentials.
  jit_kms_key_arn = local.kms_key_arn

  jit_parameter_prefix             = "${var.ssm_parameter_prefix}/jit"
  controller_config_parameter_name = "${var.ssm_parameter_prefix}/controller/config"
  controller_config_parameter_arn  = "${local.ssm_parameter_arn_prefix}/controller/config"
  controller_name                  = "hangar-controller"
  controller_log_group_name        = "awslogs-hangar-controller"
  # /metrics, /healthz and /status ([controller] listen).
  controller_port = 9464

  cluster_arn = "arn:${local.partition}:ecs:${var.aws_region}:${local.account_id}:cluster/${var.ecs_cluster_name}"
  # Every revision of the runners' task definitions: the controller runs the family's latest.
  runner_task_definition_arn_patterns = [for key, runner in local.runners : "arn:${local.partition}:ecs:${var.aws_region}:${local.account_id}:task-definition/${runner.name}:*"]

  # One pool per runner key, named runners[key].pool_name; the preconditions of
  # aws_ssm_parameter.controller_config refuse keys that would give an empty or shared name.
  controller_pools = {
    for key, runner in local.runners : key => {
      name   = runner.pool_name
      family = runner.name
    }
  }

  # The pool file (TOML). Each value is written with jsonencode: a JSON string or array of
  # strings is also a valid TOML basic string or array, so quotes and backslashes in labels or
  # group names are escaped. No secret in here: the controller gets the credentials as ECS secrets
  # (credentials_ssm_prefix stays unset), so the file can be a plain String parameter.
  controller_config_toml = join("\n", concat(
    [
      "# Generated by deploy/terraform (enable_controller): change the module's variables, not this parameter.",
      "[controller]",
      "listen = \"0.0.0.0:${local.controller_port}\"",
    ],
    [
      for key, pool in local.controller_pools : join("\n", concat(
        [
          "",
          "[[pool]]",
          "name = ${jsonencode(pool.name)}",
          local.is_org ? "organization = ${jsonencode(var.github_organization)}" : "repository = ${jsonencode("${var.github_organization}/${key}")}",
          "labels = ${jsonencode(var.runner_labels)}",
        ],
        local.is_org && var.runner_group != null ? ["runner_group = ${jsonencode(var.runner_group)}"] : [],
        [
          "min_idle = ${var.controller_min_idle}",
          "max = ${var.controller_max}",
          "",
          "[pool.ecs]",
          "cluster = ${jsonencode(var.ecs_cluster_name)}",
          "task_definition = ${jsonencode(pool.family)}",
          "container_name = ${jsonencode(pool.family)}",
          "subnets = ${jsonencode(var.private_subnet_ids)}",
          "security_groups = ${jsonencode(var.security_group_ids)}",
          "assign_public_ip = false",
          "launch_type = \"FARGATE\"",
          "parameter_prefix = ${jsonencode(local.jit_parameter_prefix)}",
        ],
        var.kms_key_arn != null ? ["kms_key_id = ${jsonencode(var.kms_key_arn)}"] : [],
      ))
    ],
    [""],
  ))
  # The controller reads the file only at start: a label with its hash gives the task definition a
  # new revision when the file changes, so `apply` also rolls the controller onto it.
  controller_config_sha256 = sha256(local.controller_config_toml)
}
