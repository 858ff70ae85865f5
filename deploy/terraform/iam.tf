################################################################################
# Trust: every role here is assumed by ECS tasks only (execution roles: the first document; task
# roles: the second).
################################################################################

# The execution role trusts ECS tasks with no condition, as AWS documents it: ECS assumes it
# before the task exists, and a role cannot be passed to ECS from another account anyway.
data "aws_iam_policy_document" "execution_assume" {
  statement {
    sid     = "EcsTasks"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# Task roles only for tasks of this account (AWS's confused-deputy conditions for task roles).
data "aws_iam_policy_document" "task_assume" {
  statement {
    sid     = "EcsTasksOfThisAccount"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${var.aws_region}:${local.account_id}:*"]
    }
  }
}

################################################################################
# Execution role: used by ECS (not by the container) to start a runner task: create the task's
# log stream and, for the fixed services only, resolve the credential `secrets` from Parameter
# Store. With the controller the runner tasks have no `secrets`, and this role reads no credential.
################################################################################

resource "aws_iam_role" "execution" {
  name_prefix          = "github-runner-${var.runner_type}-exec-"
  description          = var.enable_controller ? "ECS task execution role of the Hangar ${var.runner_type} GitHub runners started by hangar controller: writes their logs (no credential)." : "ECS task execution role of the Hangar ${var.runner_type} GitHub runners: reads their credentials from SSM and writes their logs."
  assume_role_policy   = data.aws_iam_policy_document.execution_assume.json
  permissions_boundary = var.iam_role_permissions_boundary
}

data "aws_iam_policy_document" "execution" {
  # The awslogs driver: streams in the runners' own log groups (created above, so no CreateLogGroup).
  statement {
    sid       = "WriteRunnerLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [for group in aws_cloudwatch_log_group.github_runner : "${group.arn}:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "runner-logs"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# The fixed services' credentials (not with the controller, whose runners get none).
data "aws_iam_policy_document" "execution_credentials" {
  count = var.enable_controller ? 0 : 1

  # Exactly the parameters this mode injects: <prefix>/pat (standalone), or <prefix>/client-id,
  # <prefix>/installation-id and <prefix>/private-key (org).
  statement {
    sid       = "ReadRunnerCredentials"
    effect    = "Allow"
    actions   = ["ssm:GetParameters"]
    resources = local.credential_parameter_arns
  }

  # SecureString values are decrypted by SSM on the role's behalf, for these parameters only.
  statement {
    sid       = "DecryptRunnerCredentials"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${var.aws_region}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:PARAMETER_ARN"
      values   = local.credential_parameter_arns
    }
  }
}

resource "aws_iam_role_policy" "execution_credentials" {
  count = var.enable_controller ? 0 : 1

  name   = "runner-credentials"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution_credentials[0].json
}

################################################################################
# Pulling runner_image, for both execution roles (the runners' and the controller's run the same
# image): from its ECR repository, or from another private registry with the credentials in
# repository_credentials_secret_arn. A public image outside ECR needs neither.
################################################################################

data "aws_iam_policy_document" "ecr_pull" {
  count = local.image_ecr_repository_arn != null ? 1 : 0

  # GetAuthorizationToken supports no resource-level permissions: AWS accepts only "*". The token
  # alone reads nothing; each repository's pull is the next statement.
  statement {
    sid       = "GetEcrAuthorizationToken"
    effect    = "Allow"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  # The image's own repository (its account and region, taken from the image URI). A repository
  # in another account must also allow these actions to this account in its repository policy.
  statement {
    sid       = "PullImage"
    effect    = "Allow"
    actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    resources = [local.image_ecr_repository_arn]
  }
}

data "aws_iam_policy_document" "registry_credentials" {
  count = var.repository_credentials_secret_arn != null ? 1 : 0

  # The secret ECS reads for the containers' repositoryCredentials, and no other.
  statement {
    sid       = "ReadRegistryCredentials"
    effect    = "Allow"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.repository_credentials_secret_arn]
  }
}

resource "aws_iam_role_policy" "execution_ecr_pull" {
  count = local.image_ecr_repository_arn != null ? 1 : 0

  name   = "pull-image-ecr"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.ecr_pull[0].json
}

resource "aws_iam_role_policy" "execution_registry_credentials" {
  count = var.repository_credentials_secret_arn != null ? 1 : 0

  name   = "pull-image-registry-credentials"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.registry_credentials[0].json

  lifecycle {
    precondition {
      condition     = local.image_ecr_repository_arn == null
      error_message = "repository_credentials_secret_arn is for an image in a registry outside ECR, but runner_image is an ECR image, which the execution roles pull with ECR permissions on its repository: set repository_credentials_secret_arn = null."
    }
  }
}

################################################################################
# Task roles: what `hangar agent` itself calls AWS for, one role per runner key (each
# repository, or "org"), as each key has its own task definition. GitHub credentials arrive as
# secrets (or not at all, with the controller), so no task role reads them from Parameter Store.
################################################################################

resource "aws_iam_role" "task" {
  for_each = local.runners

  name_prefix          = each.value.task_role_name_prefix
  description          = "ECS task role of the Hangar ${var.runner_type} GitHub runners of ${each.key}: task scale-in protection while a job runs${local.grant_jit_config_parameters ? ", and this key's one-shot JIT configurations only (${local.jit_parameter_prefix}/${each.value.pool_name}/)" : ""}."
  assume_role_policy   = data.aws_iam_policy_document.task_assume.json
  permissions_boundary = var.iam_role_permissions_boundary
}

# The single task role before there was one per key: in org mode it becomes the "org" key's role
# (its name prefix is the same) with its policies. In standalone mode it moves to a key "org" that
# does not exist and is destroyed, and each repository gets its own new role.
moved {
  from = aws_iam_role.task
  to   = aws_iam_role.task["org"]
}

moved {
  from = aws_iam_role_policy.task
  to   = aws_iam_role_policy.task["org"]
}

moved {
  from = aws_iam_role_policy.task_jit[0]
  to   = aws_iam_role_policy.task_jit["org"]
}

moved {
  from = aws_iam_role_policy.task_exec[0]
  to   = aws_iam_role_policy.task_exec["org"]
}

data "aws_iam_policy_document" "task" {
  # The agent turns scale-in protection on for the length of each job through the ECS agent
  # endpoint ($ECS_AGENT_URI/task-protection/v1/state). The ECS agent makes that call with the
  # task role's credentials, so the role needs these two actions; only tasks of this cluster.
  statement {
    sid       = "ProtectRunningJobs"
    effect    = "Allow"
    actions   = ["ecs:GetTaskProtection", "ecs:UpdateTaskProtection"]
    resources = [local.cluster_task_arn_pattern]
  }
}

resource "aws_iam_role_policy" "task" {
  for_each = local.runners

  name   = "task-scale-in-protection"
  role   = aws_iam_role.task[each.key].id
  policy = data.aws_iam_policy_document.task.json
}

# Optional (forced on by enable_controller): one-shot JIT configurations
# (RUNNER_JIT_CONFIG_PARAMETER), which the agent reads and then deletes, under this key's own
# folder <prefix>/jit/<pool name>/ only.
data "aws_iam_policy_document" "task_jit" {
  for_each = { for key, runner in local.runners : key => runner if local.grant_jit_config_parameters }

  statement {
    sid       = "TakeOneShotJitConfig"
    effect    = "Allow"
    actions   = ["ssm:DeleteParameter", "ssm:GetParameter"]
    resources = [local.runner_jit_parameter_arn_patterns[each.key]]
  }

  statement {
    sid       = "DecryptOneShotJitConfig"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = [local.jit_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${var.aws_region}.amazonaws.com"]
    }

    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:PARAMETER_ARN"
      values   = [local.runner_jit_parameter_arn_patterns[each.key]]
    }
  }
}

resource "aws_iam_role_policy" "task_jit" {
  for_each = { for key, runner in local.runners : key => runner if local.grant_jit_config_parameters }

  name   = "one-shot-jit-config"
  role   = aws_iam_role.task[each.key].id
  policy = data.aws_iam_policy_document.task_jit[each.key].json

  lifecycle {
    # The controller's pool file checks the same names (aws_ssm_parameter.controller_config);
    # without it, each key still needs a folder of its own.
    precondition {
      condition     = var.enable_controller || can(regex("^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$", each.value.pool_name))
      error_message = "enable_jit_config_parameters: the repository name \"${each.key}\" gives no one-shot JIT folder name (lowercase letters, digits and '-'; a name made only of '.' and '_' gives none). Rename the repository entry or deploy it without enable_jit_config_parameters."
    }
    precondition {
      condition     = var.enable_controller || length([for key, runner in local.runners : key if runner.pool_name == each.value.pool_name]) == 1
      error_message = "enable_jit_config_parameters: the repositories ${join(", ", [for key, runner in local.runners : key if runner.pool_name == each.value.pool_name])} give the same one-shot JIT folder ${local.jit_parameter_prefix}/${each.value.pool_name}/, so each could take the other's runners. Shorten or rename them."
    }
  }
}

# Optional: ECS Exec. These ssmmessages actions support no resource-level permissions, so "*"
# is the only resource they accept.
data "aws_iam_policy_document" "task_exec" {
  count = var.enable_execute_command ? 1 : 0

  statement {
    sid    = "EcsExecChannels"
    effect = "Allow"
    actions = [
      "ssmmessages:CreateControlChannel",
      "ssmmessages:CreateDataChannel",
      "ssmmessages:OpenControlChannel",
      "ssmmessages:OpenDataChannel",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "task_exec" {
  for_each = { for key, runner in local.runners : key => runner if var.enable_execute_command }

  name   = "ecs-exec"
  role   = aws_iam_role.task[each.key].id
  policy = data.aws_iam_policy_document.task_exec[0].json
}

################################################################################
# hangar controller (enable_controller): its own two roles, each statement scoped.
################################################################################

resource "aws_iam_role" "controller_execution" {
  count = var.enable_controller ? 1 : 0

  name_prefix          = "hangar-controller-exec-"
  description          = "ECS task execution role of hangar controller: reads its pool file and the GitHub credentials from SSM and writes its logs."
  assume_role_policy   = data.aws_iam_policy_document.execution_assume.json
  permissions_boundary = var.iam_role_permissions_boundary
}

data "aws_iam_policy_document" "controller_execution" {
  count = var.enable_controller ? 1 : 0

  # Exactly what the controller's `secrets` name: the pool file and this mode's credentials.
  statement {
    sid       = "ReadControllerConfigAndCredentials"
    effect    = "Allow"
    actions   = ["ssm:GetParameters"]
    resources = concat([local.controller_config_parameter_arn], local.credential_parameter_arns)
  }

  # The SecureString credentials only (the pool file is a String), through SSM only.
  statement {
    sid       = "DecryptControllerCredentials"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = [local.kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${var.aws_region}.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "kms:EncryptionContext:PARAMETER_ARN"
      values   = local.credential_parameter_arns
    }
  }

  statement {
    sid       = "WriteControllerLogs"
    effect    = "Allow"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.controller[0].arn}:*"]
  }
}

resource "aws_iam_role_policy" "controller_execution" {
  count = var.enable_controller ? 1 : 0

  name   = "controller-config-credentials-and-logs"
  role   = aws_iam_role.controller_execution[0].id
  policy = data.aws_iam_policy_document.controller_execution[0].json
}

# The same image as the runners: the same pull permissions.
resource "aws_iam_role_policy" "controller_ecr_pull" {
  count = var.enable_controller && local.image_ecr_repository_arn != null ? 1 : 0

  name   = "pull-image-ecr"
  role   = aws_iam_role.controller_execution[0].id
  policy = data.aws_iam_policy_document.ecr_pull[0].json
}

resource "aws_iam_role_policy" "controller_registry_credentials" {
  count = var.enable_controller && var.repository_credentials_secret_arn != null ? 1 : 0

  name   = "pull-image-registry-credentials"
  role   = aws_iam_role.controller_execution[0].id
  policy = data.aws_iam_policy_document.registry_credentials[0].json
}

resource "aws_iam_role" "controller_task" {
  count = var.enable_controller ? 1 : 0

  name_prefix          = "hangar-controller-task-"
  description          = "ECS task role of hangar controller: starts, tags, lists and stops the runner tasks of its cluster and writes their one-shot JIT parameters."
  assume_role_policy   = data.aws_iam_policy_document.task_assume.json
  permissions_boundary = var.iam_role_permissions_boundary
}

data "aws_iam_policy_document" "controller_task" {
  count = var.enable_controller ? 1 : 0

  # RunTask of the runners' task definitions (any revision), in this cluster only.
  statement {
    sid       = "RunRunnerTasks"
    effect    = "Allow"
    actions   = ["ecs:RunTask"]
    resources = local.runner_task_definition_arn_patterns

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [local.cluster_arn]
    }
  }

  # The hangar:pool / hangar:runner-name / hangar:runner-id tags RunTask puts on a new task
  # (tagging on create needs ecs:TagResource), and no tagging of existing tasks.
  statement {
    sid       = "TagRunnerTasksAtLaunch"
    effect    = "Allow"
    actions   = ["ecs:TagResource"]
    resources = [local.cluster_task_arn_pattern]

    condition {
      test     = "StringEquals"
      variable = "ecs:CreateAction"
      values   = ["RunTask"]
    }
  }

  statement {
    sid       = "ObserveAndStopClusterTasks"
    effect    = "Allow"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask"]
    resources = [local.cluster_task_arn_pattern]
  }

  # ListTasks is authorized on container instances, not tasks; the cluster condition keeps it to
  # this cluster (Fargate tasks have no container instance, hence "*").
  statement {
    sid       = "ListClusterTasks"
    effect    = "Allow"
    actions   = ["ecs:ListTasks"]
    resources = ["*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [local.cluster_arn]
    }
  }

  statement {
    sid       = "CheckCluster"
    effect    = "Allow"
    actions   = ["ecs:DescribeClusters"]
    resources = [local.cluster_arn]
  }

  # Checked at start (the runner container exists). DescribeTaskDefinition supports no
  # resource-level permissions: AWS accepts only "*" for it.
  statement {
    sid       = "CheckTaskDefinitions"
    effect    = "Allow"
    actions   = ["ecs:DescribeTaskDefinition"]
    resources = ["*"]
  }

  # RunTask hands the runners' roles to ECS, and to ECS tasks only: their execution role and
  # each runner key's own task role.
  statement {
    sid       = "PassRunnerRoles"
    effect    = "Allow"
    actions   = ["iam:PassRole"]
    resources = concat([aws_iam_role.execution.arn], [for role in aws_iam_role.task : role.arn])

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  # One-shot JIT configurations (<prefix>/jit/<pool name>/<runner name>): written before RunTask,
  # deleted when a launch fails or is reaped. Under <prefix>/jit/ only, never the credentials.
  statement {
    sid       = "WriteOneShotJitConfig"
    effect    = "Allow"
    actions   = ["ssm:DeleteParameter", "ssm:PutParameter"]
    resources = [local.jit_parameter_arn_pattern]
  }

  # Finds leftover one-shot parameters; DescribeParameters supports no resource-level
  # permissions, AWS accepts only "*" (it returns names and metadata, never values).
  statement {
    sid       = "FindLeftoverJitConfig"
    effect    = "Allow"
    actions   = ["ssm:DescribeParameters"]
    resources = ["*"]
  }

  # PutParameter of a SecureString encrypts with the pools' kms_key_id (kms_key_arn), or the AWS
  # managed alias/aws/ssm key without one; through SSM, for the one-shot parameters only.
  statement {
    sid       = "EncryptOneShotJitConfig"
    effect    = "Allow"
    actions   = ["kms:Encrypt", "kms:GenerateDataKey"]
    resources = [local.jit_kms_key_arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["ssm.${var.aws_region}.amazonaws.com"]
    }

    condition {
      test     = "StringLike"
      variable = "kms:EncryptionContext:PARAMETER_ARN"
      values   = [local.jit_parameter_arn_pattern]
    }
  }
}

resource "aws_iam_role_policy" "controller_task" {
  count = var.enable_controller ? 1 : 0

  name   = "controller-runner-tasks-and-jit-config"
  role   = aws_iam_role.controller_task[0].id
  policy = data.aws_iam_policy_document.controller_task[0].json
}
