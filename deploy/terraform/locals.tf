# The whole mode switch lives here, in plain expressions (conditionals, `for` expressions and a
# few functions): tests/module_plan.py evaluates these same parsed expressions
# to derive the resource addresses of each mode, so keep them this simple.

locals {
  is_org = var.runner_type == "org"

  # One runner (task definition, service and log group) per key: each repository name in
  # standalone mode, the single key "org" in org mode; with pool_shapes, also one per key and
  # shape (<key>-<shape>, controller only). Every per-runner resource uses
  # `for_each = local.runners`, so the seed's addresses hold:
  #   aws_ecs_service.github_runner["your-repository-name"] and aws_ecs_service.github_runner["org"].
  runner_keys = local.is_org ? ["org"] : var.github_repository_name

  # Every pool, as one spec: each key's own pool (today's, sized by task_cpu, task_memory and
  # cpu_architecture), then one pool per key and shape of pool_shapes, keyed <key>-<shape>. A
  # shape key that repeats another key (repositories "a" and "a-large" with a shape "large") is
  # Terraform's "Duplicate object key" error in local.runners.
  runner_pool_specs = concat(
    [
      for key in local.runner_keys : {
        key                   = key
        base_key              = key
        shape                 = null
        pool_suffix           = ""
        cpu                   = var.task_cpu
        memory                = var.task_memory
        cpu_architecture      = var.cpu_architecture
        ephemeral_storage_gib = null
        docker                = false
        capacity_providers    = []
        labels                = var.runner_labels
        min_idle              = var.controller_min_idle
        max                   = var.controller_max
      }
    ],
    flatten([
      for key in local.runner_keys : [
        for name, shape in var.pool_shapes : {
          key                   = "${key}-${name}"
          base_key              = key
          shape                 = name
          pool_suffix           = "-${name}"
          cpu                   = shape.cpu
          memory                = shape.memory
          cpu_architecture      = shape.cpu_architecture == null ? var.cpu_architecture : shape.cpu_architecture
          ephemeral_storage_gib = shape.ephemeral_storage_gib
          docker                = shape.docker
          # A Docker shape runs on the module's EC2 capacity provider (docker_capacity) only.
          capacity_providers = shape.docker ? [local.docker_capacity_provider_name] : shape.capacity_providers
          labels             = shape.labels == null ? var.runner_labels : shape.labels
          min_idle           = shape.min_idle == null ? var.controller_min_idle : shape.min_idle
          max                = shape.max == null ? var.controller_max : shape.max
        }
      ]
    ]),
  )

  runners = {
    for spec in local.runner_pool_specs : spec.key => {
      # ECS service, task definition family and container name. ECS names allow no '.', which
      # repository names may contain (variables.tf rejects names that would then collide).
      name = "github-runner-${var.runner_type}-${replace(spec.key, ".", "-")}"
      # The seed's log group names: awslogs-github-runner-standalone-<repo>, awslogs-github-runner-org-org.
      log_group_name = "awslogs-github-runner-${var.runner_type}-${spec.key}"
      # The controller's pool name, and this key's folder of one-shot JIT configurations,
      # <prefix>/jit/<pool_name>/: 1 to 32 of [a-z0-9-] without a leading or trailing '-' (it
      # becomes part of runner names, ECS tags and SSM paths). The key lowercased, every run of
      # other characters replaced by '-', cut to 32; a shape's pool appends -<shape> to its key's
      # (uncut: a name over 32 is refused rather than cut into another). Preconditions refuse
      # keys that would give an empty, too long or shared name (aws_ssm_parameter.controller_config,
      # aws_iam_role_policy.task_jit).
      pool_name = "${trim(substr(trim(replace(lower(spec.base_key), "/[^a-z0-9-]+/", "-"), "-"), 0, 32), "-")}${spec.pool_suffix}"
      # This key's own task role (IAM allows 38 characters of prefix): github-runner-org-task-
      # in org mode (the name the single task role had), github-runner-<repo, cut to 18>-task-.
      task_role_name_prefix = "github-runner-${substr(spec.key, 0, 18)}-task-"
      # What this runner registers with (hangar agent's RUNNER_SCOPE and its target).
      scope_environment = local.is_org ? [
        { name = "RUNNER_SCOPE", value = "org" },
        { name = "GITHUB_ORG", value = var.github_organization },
        ] : [
        { name = "RUNNER_SCOPE", value = "repo" },
        { name = "GITHUB_REPOSITORY", value = "${var.github_organization}/${spec.base_key}" },
      ]
      # The runner key this pool serves, and its shape (null for the key's own pool).
      base_key = spec.base_key
      shape    = spec.shape
      # The task's size and placement, and the pool's limits (the key's own pool: task_cpu,
      # task_memory, cpu_architecture, Fargate, runner_labels, controller_min_idle, controller_max).
      cpu                   = spec.cpu
      memory                = spec.memory
      cpu_architecture      = spec.cpu_architecture
      ephemeral_storage_gib = spec.ephemeral_storage_gib
      docker                = spec.docker
      capacity_providers    = spec.capacity_providers
      labels                = spec.labels
      min_idle              = spec.min_idle
      max                   = spec.max
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

  # One pool per runner key and shape, named runners[key].pool_name; the preconditions of
  # aws_ssm_parameter.controller_config refuse keys that would give an empty, too long or shared name.
  controller_pools = {
    for key, runner in local.runners : key => {
      name   = runner.pool_name
      family = runner.name
      # The repository a standalone pool serves (a shape's pool: its key's repository).
      base_key = runner.base_key
      shape    = runner.shape
    }
  }

  # The pool file (TOML). Each value is written with jsonencode: a JSON string or array of
  # strings is also a valid TOML basic string or array, so quotes and backslashes in labels or
  # group names are escaped. No secret in here: the controller gets the credentials as ECS secrets
  # (credentials_ssm_prefix stays unset), so the file can be a plain String parameter. Each key's
  # own pool has the lines it always had; a shape's pool (pool_shapes) also states `docker`
  # (when true), its capacity providers (instead of launch_type, when it has any) and its task's
  # size (cpu, memory, cpu_architecture, ephemeral_storage_gib: informational for the controller).
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
          local.is_org ? "organization = ${jsonencode(var.github_organization)}" : "repository = ${jsonencode("${var.github_organization}/${pool.base_key}")}",
          "labels = ${jsonencode(local.runners[key].labels)}",
        ],
        local.is_org && var.runner_group != null ? ["runner_group = ${jsonencode(var.runner_group)}"] : [],
        local.runners[key].docker ? ["docker = true"] : [],
        [
          "min_idle = ${local.runners[key].min_idle}",
          "max = ${local.runners[key].max}",
          "",
          "[pool.ecs]",
          "cluster = ${jsonencode(var.ecs_cluster_name)}",
          "task_definition = ${jsonencode(pool.family)}",
          "container_name = ${jsonencode(pool.family)}",
          "subnets = ${jsonencode(var.private_subnet_ids)}",
          "security_groups = ${jsonencode(var.security_group_ids)}",
          "assign_public_ip = false",
        ],
        # Exclusive: an ordered list of capacity providers, or today's launch type.
        length(local.runners[key].capacity_providers) > 0 ? ["capacity_providers = ${jsonencode(local.runners[key].capacity_providers)}"] : ["launch_type = \"FARGATE\""],
        pool.shape == null ? [] : [
          "cpu = ${local.runners[key].cpu}",
          "memory = ${local.runners[key].memory}",
          "cpu_architecture = ${jsonencode(local.runners[key].cpu_architecture)}",
        ],
        local.runners[key].ephemeral_storage_gib == null ? [] : ["ephemeral_storage_gib = ${local.runners[key].ephemeral_storage_gib}"],
        ["parameter_prefix = ${jsonencode(local.jit_parameter_prefix)}"],
        var.kms_key_arn != null ? ["kms_key_id = ${jsonencode(var.kms_key_arn)}"] : [],
      ))
    ],
    [""],
  ))
  ##############################################################################
  # Docker shapes (pool_shapes with docker = true) and their EC2 capacity (docker_capacity)
  ##############################################################################

  # The capacity provider of docker_capacity (names are unique per account and region; none may
  # start with "aws", "ecs" or "fargate"). Docker pools launch on it alone.
  docker_capacity_provider_name = substr("hangar-docker-${var.ecs_cluster_name}", 0, 255)

  # The daemon listens on a unix socket in a task volume mounted in the runner and the sidecar
  # only; gid 1001 is the runner user's group (RUNNER_USER=runner), so jobs can use it.
  docker_socket_volume             = "docker-socket"
  docker_data_volume               = "docker-data"
  docker_socket_directory          = "/var/run/hangar-docker"
  docker_host                      = "unix:///var/run/hangar-docker/docker.sock"
  docker_daemon_container_name     = "docker"
  docker_daemon_command            = ["dockerd", "--host=${local.docker_host}", "--group=1001"]
  docker_daemon_memory_reservation = 512

  # What a Docker shape adds to the runner container: the daemon's address, the socket directory,
  # and a start after the daemon's (ECS then also stops the runner first).
  docker_runner_environment = [
    { name = "HANGAR_DOCKER", value = "1" },
    { name = "DOCKER_HOST", value = local.docker_host },
  ]
  docker_runner_settings = {
    mountPoints = [{ sourceVolume = local.docker_socket_volume, containerPath = local.docker_socket_directory, readOnly = false }]
    dependsOn   = [{ containerName = local.docker_daemon_container_name, condition = "START" }]
  }

  # The ECS agent's configuration on the Docker instances (/etc/ecs/ecs.config): join the
  # cluster; block IMDS from awsvpc tasks; task roles for awsvpc tasks only (no host-network
  # task gets one); privileged containers allowed (this capacity only: the sidecar); the
  # awslogs driver with each task's execution role, not the instance role; stopped tasks'
  # containers and volumes removed after a minute instead of three hours.
  docker_ecs_config = [
    "ECS_CLUSTER=${var.ecs_cluster_name}",
    "ECS_AWSVPC_BLOCK_IMDS=true",
    "ECS_ENABLE_TASK_IAM_ROLE=true",
    "ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST=false",
    "ECS_DISABLE_PRIVILEGED=false",
    "ECS_ENABLE_AWSLOGS_EXECUTIONROLE_OVERRIDE=true",
    "ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION=1m",
  ]
  docker_instance_user_data = join("\n", concat(
    ["#!/bin/bash", "set -euo pipefail", "cat > /etc/ecs/ecs.config <<'HANGAR_ECS_CONFIG'"],
    local.docker_ecs_config,
    ["HANGAR_ECS_CONFIG", ""],
  ))
  # AWS's public parameters of the current ECS-optimized Amazon Linux 2023 AMI, per architecture.
  docker_ami_parameter = var.docker_capacity == null ? null : (
    var.docker_capacity.cpu_architecture == "ARM64" ?
    "/aws/service/ecs/optimized-ami/amazon-linux-2023/arm64/recommended/image_id" :
    "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"
  )

  # The controller reads the file only at start: a label with its hash gives the task definition a
  # new revision when the file changes, so `apply` also rolls the controller onto it.
  controller_config_sha256 = sha256(local.controller_config_toml)
}
