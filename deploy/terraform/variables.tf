################################################################################
# Mode and GitHub scope (the seed's interface)
################################################################################

variable "runner_type" {
  description = "Which runners to deploy: `standalone` (one runner per repository in github_repository_name, authenticated with the PAT) or `org` (one organization runner, authenticated as the GitHub App). Required, as in the seed: `terraform apply -var='runner_type=standalone'`."
  type        = string

  validation {
    condition     = contains(["standalone", "org"], var.runner_type)
    error_message = "runner_type must be \"standalone\" or \"org\"."
  }
}

variable "github_repository_name" {
  description = "Standalone mode: the repositories (names only, without the owner) that each get a runner; one task definition, service and log group per name, keyed by the name. Ignored in org mode."
  type        = list(string)
  default     = ["your-repository-name"]

  validation {
    condition     = length(var.github_repository_name) > 0 && alltrue([for repo in var.github_repository_name : can(regex("^[A-Za-z0-9_.-]{1,100}$", repo))])
    error_message = "github_repository_name must list at least one repository name (1 to 100 letters, digits, '-', '_' or '.', without the owner)."
  }

  validation {
    condition     = length(distinct([for repo in var.github_repository_name : lower(replace(repo, ".", "-"))])) == length(var.github_repository_name)
    error_message = "github_repository_name must name each repository once (ECS names replace '.' with '-', so names differing only in case or in '.' versus '-' would collide)."
  }
}

variable "github_organization" {
  description = "The GitHub organization (or user) that owns the repositories; the organization the org runner registers with."
  type        = string
  default     = "your-organization"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,38}$", var.github_organization))
    error_message = "github_organization must be a GitHub account name: 1 to 39 letters, digits or '-', not starting with '-'."
  }
}

variable "runner_labels" {
  description = "Custom runner labels (RUNNER_LABELS), added to self-hosted, Linux and the architecture. Workflows select the runner with `runs-on: [self-hosted, <label>]`."
  type        = list(string)
  default     = ["your-runner-label"]

  validation {
    condition     = length(var.runner_labels) <= 100 && alltrue([for label in var.runner_labels : can(regex("^[^,\\s]{1,256}$", label))])
    error_message = "runner_labels: at most 100 labels, each 1 to 256 characters without spaces or commas."
  }
}

variable "runner_name_prefix" {
  description = "Runner name prefix (RUNNER_NAME_PREFIX); hangar agent appends the ECS task id, so a GitHub runner and its ECS task can be matched. At most 31 characters, so the whole task id fits in GitHub's 64."
  type        = string
  default     = "aws-github-runner"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,31}$", var.runner_name_prefix))
    error_message = "runner_name_prefix must be 1 to 31 letters, digits, '-', '_' or '.'."
  }
}

variable "runner_group" {
  description = "Org mode: the runner group to register the runner in (RUNNER_GROUP); null for the organization's default group. Ignored in standalone mode."
  type        = string
  default     = null

  validation {
    condition     = var.runner_group == null || can(regex("^[^,]{1,100}$", var.runner_group))
    error_message = "runner_group must be null or a group name of 1 to 100 characters."
  }
}

################################################################################
# Credentials in SSM Parameter Store
################################################################################

variable "ssm_parameter_prefix" {
  description = "The Parameter Store path holding the GitHub credentials: `<prefix>/pat` (standalone), `<prefix>/client-id`, `<prefix>/installation-id` and `<prefix>/private-key` (org). The task execution role can read exactly these parameters."
  type        = string
  default     = "/your-app-name/github-integration"

  validation {
    condition     = can(regex("^(/[A-Za-z0-9_.-]+)+$", var.ssm_parameter_prefix))
    error_message = "ssm_parameter_prefix must be a hierarchical parameter path such as /your-app-name/github-integration: it starts with '/', does not end with '/', and has letters, digits, '_', '.' or '-' between the slashes."
  }
}

variable "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the SecureString parameters; null means the AWS managed key `alias/aws/ssm` (looked up). The roles may decrypt with it only through SSM, and only for the runner's parameters."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn must be null or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<key-id>), not an alias."
  }
}

variable "enable_jit_config_parameters" {
  description = "Let each runner key's task role read and delete one-shot JIT runner configurations in its own folder `<prefix>/jit/<pool name>/` (the key lowercased, other characters than letters, digits and '-' replaced by '-', cut to 32; the output jit_parameter_prefixes lists them): a task started with RUNNER_JIT_CONFIG_PARAMETER must name a parameter in its key's folder. Off by default: the services here register with the credentials above."
  type        = bool
  default     = false

  validation {
    condition     = var.enable_jit_config_parameters != null
    error_message = "enable_jit_config_parameters must be true or false."
  }
}

################################################################################
# AWS placement
################################################################################

variable "aws_region" {
  description = "The AWS region of the cluster, the parameters and the log groups."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.aws_region))
    error_message = "aws_region must be a region name such as us-east-1."
  }
}

variable "ecs_cluster_name" {
  description = "Name of the existing ECS cluster the services run in."
  type        = string
  default     = "your-ecs-cluster-name"

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,255}$", var.ecs_cluster_name))
    error_message = "ecs_cluster_name must be a cluster name (1 to 255 letters, digits, '-' or '_'), not an ARN."
  }
}

variable "private_subnet_ids" {
  description = "The private subnets the tasks run in (the seed uses 3). They need a route to GitHub and to the AWS APIs (a NAT gateway or VPC endpoints): tasks get no public IP."
  type        = list(string)
  default     = ["subnet-00000000000000001", "subnet-00000000000000002", "subnet-00000000000000003"]

  validation {
    condition     = length(var.private_subnet_ids) > 0 && length(var.private_subnet_ids) <= 16 && alltrue([for id in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]+$", id))])
    error_message = "private_subnet_ids must list 1 to 16 subnet ids (subnet-xxxxxxxx)."
  }
}

variable "security_group_ids" {
  description = "Security groups of the tasks. Runners need outbound HTTPS only (GitHub, ECR, SSM, CloudWatch Logs); no inbound rule is needed."
  type        = list(string)
  default     = ["sg-00000000000000001"]

  validation {
    condition     = length(var.security_group_ids) > 0 && length(var.security_group_ids) <= 5 && alltrue([for id in var.security_group_ids : can(regex("^sg-[0-9a-f]+$", id))])
    error_message = "security_group_ids must list 1 to 5 security group ids (sg-xxxxxxxx)."
  }
}

################################################################################
# Tasks and services
################################################################################

variable "runner_image" {
  description = "The Hangar runner image (deploy/docker/Dockerfile), whose entrypoint is `tini -- hangar agent`. With a mutable tag, `terraform apply -replace=...` (see README) starts tasks on the newly pushed image."
  type        = string
  default     = "123456789012.dkr.ecr.us-east-1.amazonaws.com/hangar-runner:latest"

  validation {
    condition     = can(regex("^[^\\s]+$", var.runner_image))
    error_message = "runner_image must be an image reference without spaces."
  }

  # The same pattern as local.ecr_image_pattern (locals.tf).
  validation {
    condition     = !can(regex("^[^/]*\\.dkr\\.ecr", var.runner_image)) || can(regex("^([0-9]{12})\\.dkr\\.ecr(?:-fips)?\\.([a-z]{2}(?:-[a-z]+)+-[0-9])\\.amazonaws\\.com(?:\\.cn)?/((?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*)(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$", var.runner_image))
    error_message = "runner_image names an ECR registry but is not an ECR image URI: use <12-digit account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>[:tag][@sha256:<64 hex digits>], with the repository in lowercase (letters, digits, '.', '_', '-' and '/')."
  }
}

variable "repository_credentials_secret_arn" {
  description = "For a runner_image in a private registry outside ECR: the full ARN of the Secrets Manager secret holding its credentials ({\"username\": ..., \"password\": ...}). Both task definitions (runners and controller) get it as repositoryCredentials, and both execution roles may read exactly this secret (secretsmanager:GetSecretValue). Encrypt the secret with the AWS managed aws/secretsmanager key: the roles get no KMS permission. Null (the default) for an ECR image, which the execution roles pull with ECR permissions on its repository, or a public image."
  type        = string
  default     = null

  validation {
    condition     = var.repository_credentials_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z]{2}(-[a-z]+)+-[0-9]:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$", var.repository_credentials_secret_arn))
    error_message = "repository_credentials_secret_arn must be null or the full ARN of a Secrets Manager secret, arn:aws:secretsmanager:<region>:<account>:secret:<name>-<6 characters> (with the random suffix the console shows: IAM matches the full ARN)."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the tasks: X86_64 or ARM64 (Graviton); the image must be built for it."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture must be X86_64 or ARM64."
  }
}

variable "task_cpu" {
  description = "Fargate task CPU units (1024 = 1 vCPU) for each runner task."
  type        = number
  default     = 1024

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.task_cpu)
    error_message = "task_cpu must be a Fargate CPU size: 256, 512, 1024, 2048, 4096, 8192 or 16384."
  }
}

variable "task_memory" {
  description = "Fargate task memory in MiB for each runner task; must be a valid combination with task_cpu (e.g. 2048 to 8192 for 1024 CPU units)."
  type        = number
  default     = 2048

  validation {
    condition     = var.task_memory >= 512 && var.task_memory <= 122880 && floor(var.task_memory) == var.task_memory
    error_message = "task_memory must be a whole number of MiB between 512 and 122880."
  }
}

variable "desired_count" {
  description = "Runner tasks per service (per repository in standalone mode, for the organization in org mode). Each task registers its own runner."
  type        = number
  default     = 1

  validation {
    condition     = var.desired_count >= 0 && var.desired_count <= 100 && floor(var.desired_count) == var.desired_count
    error_message = "desired_count must be a whole number from 0 to 100."
  }
}

variable "drain_timeout_seconds" {
  description = "HANGAR_DRAIN_TIMEOUT: on SIGTERM, how long a running job may take to finish before it is cancelled. With the agent's 30 s cancel grace and its deregistration it must fit in the container's 120 s stopTimeout (Fargate's maximum), hence at most 85."
  type        = number
  default     = 80

  validation {
    condition     = var.drain_timeout_seconds >= 0 && var.drain_timeout_seconds <= 85 && floor(var.drain_timeout_seconds) == var.drain_timeout_seconds
    error_message = "drain_timeout_seconds must be a whole number from 0 to 85."
  }
}

variable "enable_execute_command" {
  description = "Allow `aws ecs execute-command` into runner tasks (grants each task role the four ssmmessages actions ECS Exec needs). Off by default. A session is a root shell in the container, which can read the agent's credentials: allow ecs:ExecuteCommand only to those trusted with them."
  type        = bool
  default     = false

  validation {
    condition     = var.enable_execute_command != null
    error_message = "enable_execute_command must be true or false."
  }
}

################################################################################
# Autoscaling: hangar controller
################################################################################

variable "enable_controller" {
  description = "Run `hangar controller` (one ECS service) to start ephemeral runners on demand instead of the fixed per-key services: the per-key task definitions stay as the runners' templates, the per-key services are not created, the runner task definitions get no credential secrets, and each key's task role may take one-shot JIT configurations from its own pool's folder `<prefix>/jit/<pool name>/` only. The pool file is generated into the String parameter `<prefix>/controller/config`. Off by default."
  type        = bool
  default     = false

  validation {
    condition     = var.enable_controller != null
    error_message = "enable_controller must be true or false."
  }
}

variable "controller_min_idle" {
  description = "With enable_controller: idle runners the controller keeps ready per pool (each repository in standalone mode, the organization in org mode), as the pools' min_idle. 0 starts a runner only when a job is assigned."
  type        = number
  default     = 0

  validation {
    condition     = var.controller_min_idle >= 0 && var.controller_min_idle <= 1000 && floor(var.controller_min_idle) == var.controller_min_idle
    error_message = "controller_min_idle must be a whole number from 0 to 1000 (and not above controller_max)."
  }
}

variable "controller_max" {
  description = "With enable_controller: the most runners (idle and busy) per pool, as the pools' max."
  type        = number
  default     = 10

  validation {
    condition     = var.controller_max >= 1 && var.controller_max <= 1000 && floor(var.controller_max) == var.controller_max
    error_message = "controller_max must be a whole number from 1 to 1000."
  }
}

variable "controller_ingress_security_group_ids" {
  description = "With enable_controller: the security groups (e.g. your Prometheus' or a bastion's) whose members may reach the controller's HTTP port 9464 (/metrics, /healthz, /status, /jobs and the jobs page, which shows every pool's jobs), each through an inbound rule of the controller's own security group. The controller never runs in security_group_ids: jobs run untrusted code in the runner tasks and must not reach it, so the runners' groups are refused here. Empty (the default): nothing may connect."
  type        = list(string)
  default     = []

  validation {
    condition     = var.controller_ingress_security_group_ids == null ? false : alltrue([for id in var.controller_ingress_security_group_ids : can(regex("^sg-[0-9a-f]+$", id))])
    error_message = "controller_ingress_security_group_ids must be a list ([] for none) of security group ids (sg-xxxxxxxx)."
  }
}

variable "controller_ingress_cidr_blocks" {
  description = "With enable_controller: IPv4 CIDR blocks (network form, e.g. 10.20.0.0/24) that may reach the controller's HTTP port 9464, each through an inbound rule of the controller's own security group. A block that covers private_subnet_ids lets the runner tasks, and so every job, in: list only your monitoring or bastion networks. Empty (the default): nothing may connect."
  type        = list(string)
  default     = []

  validation {
    condition = var.controller_ingress_cidr_blocks == null ? false : alltrue([
      for block in var.controller_ingress_cidr_blocks :
      can(regex("^[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}$", block)) && can(cidrhost(block, 0)) && try(cidrsubnet(block, 0, 0) == block, false)
    ])
    error_message = "controller_ingress_cidr_blocks must be a list ([] for none) of IPv4 CIDR blocks in network form, such as 10.20.0.0/24 (not 10.20.0.5/24)."
  }
}

################################################################################
# Pool shapes and Docker capacity (with enable_controller)
################################################################################

variable "pool_shapes" {
  description = "With enable_controller: extra pools for every runner key, one per shape: <key>-<shape> (e.g. org-large, org-arm64, org-docker), each with its own task definition, log group and task role (its own one-shot JIT folder). cpu (CPU units) and memory (MiB); cpu_architecture (X86_64 or ARM64; null: var.cpu_architecture); ephemeral_storage_gib (21 to 200 GiB of Fargate task storage; null: Fargate's default 20, no ephemeral_storage block); docker (true: a Docker daemon sidecar, on the EC2 capacity of docker_capacity, never Fargate); capacity_providers (Fargate shapes: FARGATE and/or FARGATE_SPOT in order of preference, e.g. [\"FARGATE_SPOT\", \"FARGATE\"]; [] launches with launch_type FARGATE; Docker shapes: leave [], they use docker_capacity's provider); labels, min_idle, max (null: runner_labels, controller_min_idle, controller_max). Refused without enable_controller. Empty (the default) adds nothing."
  type = map(object({
    cpu                   = number
    memory                = number
    cpu_architecture      = optional(string)
    ephemeral_storage_gib = optional(number)
    docker                = optional(bool, false)
    capacity_providers    = optional(list(string), [])
    labels                = optional(list(string))
    min_idle              = optional(number)
    max                   = optional(number)
  }))
  default = {}

  validation {
    condition     = var.pool_shapes == null ? false : alltrue([for name, shape in var.pool_shapes : can(regex("^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$", name))])
    error_message = "pool_shapes must be a map ({} for none), and each shape name 1 to 16 lowercase letters, digits or '-', not starting or ending with '-' (it becomes part of the pool name <key>-<shape>)."
  }

  validation {
    condition     = var.pool_shapes == null ? true : alltrue([for name, shape in var.pool_shapes : contains(["X86_64", "ARM64"], shape.cpu_architecture == null ? "X86_64" : shape.cpu_architecture)])
    error_message = "pool_shapes: cpu_architecture must be X86_64 or ARM64 (or null for var.cpu_architecture)."
  }

  validation {
    condition = var.pool_shapes == null ? true : alltrue([
      for name, shape in var.pool_shapes : shape.docker ?
      (shape.cpu >= 256 && shape.cpu <= 196608 && floor(shape.cpu) == shape.cpu && shape.memory >= 512 && shape.memory <= 786432 && floor(shape.memory) == shape.memory) :
      (contains([256, 512, 1024, 2048, 4096, 8192, 16384], shape.cpu) && shape.memory >= 512 && shape.memory <= 122880 && floor(shape.memory) == shape.memory)
    ])
    error_message = "pool_shapes: a Fargate shape's cpu must be a Fargate CPU size (256, 512, 1024, 2048, 4096, 8192 or 16384) and its memory a whole number of MiB from 512 to 122880 (valid with the cpu: ECS checks the pair at apply); a Docker shape's cpu is a whole number of CPU units from 256 and its memory a whole number of MiB from 512, both fitting docker_capacity's instance type."
  }

  validation {
    condition = var.pool_shapes == null ? true : alltrue([
      for name, shape in var.pool_shapes : shape.ephemeral_storage_gib == null ? true :
      (!shape.docker && shape.ephemeral_storage_gib >= 21 && shape.ephemeral_storage_gib <= 200 && floor(shape.ephemeral_storage_gib) == shape.ephemeral_storage_gib)
    ])
    error_message = "pool_shapes: ephemeral_storage_gib must be null or a whole number of GiB from 21 to 200 (Fargate task storage), and null for a Docker shape (its tasks use the instance's disk: docker_capacity.root_volume_size_gib)."
  }

  validation {
    condition = var.pool_shapes == null ? true : alltrue([
      for name, shape in var.pool_shapes : shape.capacity_providers == null ? false :
      (shape.docker ? length(shape.capacity_providers) == 0 : (
        length(distinct(shape.capacity_providers)) == length(shape.capacity_providers) &&
        alltrue([for provider in shape.capacity_providers : contains(["FARGATE", "FARGATE_SPOT"], provider)])
      ))
    ])
    error_message = "pool_shapes: capacity_providers lists FARGATE and/or FARGATE_SPOT, each once, in the order to try them ([] for launch_type FARGATE); a Docker shape cannot run on Fargate and leaves it [] (it runs on docker_capacity's EC2 capacity provider)."
  }

  validation {
    condition = var.pool_shapes == null ? true : alltrue([
      for name, shape in var.pool_shapes : shape.labels == null ? true :
      (length(shape.labels) <= 100 && alltrue([for label in shape.labels : can(regex("^[^,\\s]{1,256}$", label))]))
    ])
    error_message = "pool_shapes: labels (null for runner_labels): at most 100 labels, each 1 to 256 characters without spaces or commas."
  }

  validation {
    condition = var.pool_shapes == null ? true : alltrue([
      for name, shape in var.pool_shapes :
      (shape.min_idle == null ? true : (shape.min_idle >= 0 && shape.min_idle <= 1000 && floor(shape.min_idle) == shape.min_idle)) &&
      (shape.max == null ? true : (shape.max >= 1 && shape.max <= 1000 && floor(shape.max) == shape.max))
    ])
    error_message = "pool_shapes: min_idle must be null or a whole number from 0 to 1000, and max null or a whole number from 1 to 1000 (min_idle not above max)."
  }
}

variable "docker_capacity" {
  description = "EC2 capacity for the Docker shapes of pool_shapes (docker = true), off (null) by default: an Auto Scaling group of ECS-optimized Amazon Linux 2023 instances (instance_type, sized for ONE runner task: the controller places one Docker task per instance) of cpu_architecture (X86_64 or ARM64; every Docker shape must match), min_size..max_size instances (managed scaling towards target_capacity percent), the AMI from AWS's public SSM parameter unless ami_id is given, an encrypted gp3 root volume of root_volume_size_gib (with root_volume_kms_key_arn, or the account's default EBS key), and its capacity provider hangar-docker-<cluster>, associated with the cluster together with FARGATE and FARGATE_SPOT (this replaces the cluster's capacity provider list: see README). A privileged Docker job can reach its instance: use a dedicated cluster."
  type = object({
    instance_type           = string
    cpu_architecture        = optional(string, "X86_64")
    min_size                = optional(number, 0)
    max_size                = optional(number, 10)
    target_capacity         = optional(number, 100)
    ami_id                  = optional(string)
    root_volume_size_gib    = optional(number, 100)
    root_volume_kms_key_arn = optional(string)
  })
  default = null

  validation {
    condition     = var.docker_capacity == null ? true : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", var.docker_capacity.instance_type))
    error_message = "docker_capacity.instance_type must be an EC2 instance type such as m7i.large (x86_64) or m7g.large (arm64)."
  }

  validation {
    condition     = var.docker_capacity == null ? true : contains(["X86_64", "ARM64"], var.docker_capacity.cpu_architecture == null ? "" : var.docker_capacity.cpu_architecture)
    error_message = "docker_capacity.cpu_architecture must be X86_64 or ARM64 (the instance type's architecture)."
  }

  validation {
    condition = var.docker_capacity == null ? true : (
      var.docker_capacity.min_size >= 0 && var.docker_capacity.max_size >= 1 && var.docker_capacity.max_size <= 1000 &&
      var.docker_capacity.min_size <= var.docker_capacity.max_size &&
      floor(var.docker_capacity.min_size) == var.docker_capacity.min_size && floor(var.docker_capacity.max_size) == var.docker_capacity.max_size &&
      var.docker_capacity.target_capacity >= 1 && var.docker_capacity.target_capacity <= 100 && floor(var.docker_capacity.target_capacity) == var.docker_capacity.target_capacity
    )
    error_message = "docker_capacity: min_size (from 0) and max_size (1 to 1000) are whole numbers of instances with min_size <= max_size, and target_capacity a whole percentage from 1 to 100."
  }

  validation {
    condition     = var.docker_capacity == null ? true : (var.docker_capacity.ami_id == null ? true : can(regex("^ami-[0-9a-f]{8,17}$", var.docker_capacity.ami_id)))
    error_message = "docker_capacity.ami_id must be null (the ECS-optimized Amazon Linux 2023 AMI from AWS's public SSM parameter) or an AMI id (ami-xxxxxxxx) of an ECS-optimized image."
  }

  validation {
    condition = var.docker_capacity == null ? true : (
      var.docker_capacity.root_volume_size_gib >= 30 && var.docker_capacity.root_volume_size_gib <= 16384 && floor(var.docker_capacity.root_volume_size_gib) == var.docker_capacity.root_volume_size_gib &&
      (var.docker_capacity.root_volume_kms_key_arn == null ? true : can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.docker_capacity.root_volume_kms_key_arn)))
    )
    error_message = "docker_capacity: root_volume_size_gib must be a whole number of GiB from 30 (the AMI's own size) to 16384, and root_volume_kms_key_arn null (the account's default EBS key) or a KMS key ARN."
  }
}

variable "docker_daemon_image" {
  description = "The Docker daemon image of the Docker shapes' sidecar (`dockerd`, privileged). A public image, pulled without credentials: the runners' execution role has pull permissions on runner_image's repository only. Pinned to a tag; move it on Docker releases."
  type        = string
  default     = "public.ecr.aws/docker/library/docker:28.3.3-dind"

  validation {
    condition     = can(regex("^[^\\s]+$", var.docker_daemon_image))
    error_message = "docker_daemon_image must be an image reference without spaces."
  }
}

################################################################################
# Logs, IAM and tags
################################################################################

variable "log_retention_in_days" {
  description = "Retention of the runner log groups (awslogs-github-runner-<type>-<key>), in days; 0 keeps logs forever."
  type        = number
  default     = 30

  validation {
    condition     = contains([0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_in_days)
    error_message = "log_retention_in_days must be one of the values CloudWatch Logs accepts: 0, 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653."
  }
}

variable "cloudwatch_log_group_kms_key_id" {
  description = "ARN of a customer managed KMS key to encrypt the log groups with; null keeps CloudWatch Logs' default encryption. The key policy must allow logs.<region>.amazonaws.com to use it."
  type        = string
  default     = null

  validation {
    condition     = var.cloudwatch_log_group_kms_key_id == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/[A-Za-z0-9-]+$", var.cloudwatch_log_group_kms_key_id))
    error_message = "cloudwatch_log_group_kms_key_id must be null or a KMS key ARN (arn:aws:kms:<region>:<account>:key/<key-id>)."
  }
}

variable "iam_role_permissions_boundary" {
  description = "ARN of a permissions boundary policy for every IAM role of the module (the runners' execution role, each runner key's task role, the controller's two); null for none."
  type        = string
  default     = null

  validation {
    condition     = var.iam_role_permissions_boundary == null || can(regex("^arn:aws[a-z-]*:iam::([0-9]{12}|aws):policy/.+$", var.iam_role_permissions_boundary))
    error_message = "iam_role_permissions_boundary must be null or an IAM policy ARN."
  }
}

variable "tags" {
  description = "Tags for every resource (provider default_tags); services propagate them to their tasks."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for key, value in var.tags : length(key) > 0 && length(key) <= 128 && length(value) <= 256])
    error_message = "tags: keys must be 1 to 128 characters and values at most 256."
  }
}
