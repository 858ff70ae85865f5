output "runner_type" {
  description = "The deployed mode: standalone or org."
  value       = var.runner_type
}

output "runner_keys" {
  description = "The runner keys: the repository names (standalone) or [\"org\"], then one <key>-<shape> per key and shape of pool_shapes; the instance keys of every per-runner resource."
  value       = keys(local.runners)
}

output "service_names" {
  description = "ECS service name per runner key (github-runner-<type>-<key>)."
  value       = { for key, service in aws_ecs_service.github_runner : key => service.name }
}

output "service_arns" {
  description = "ECS service ARN per runner key."
  value       = { for key, service in aws_ecs_service.github_runner : key => service.id }
}

output "service_replace_arguments" {
  description = "The -replace arguments that redeploy every runner service (the update procedure in README.md): `terraform apply -var=... <these>`. With enable_controller, the controller's service (runners it starts pull the image anew each time)."
  value = join(" ", concat(
    [for key in keys(local.runners) : "-replace='aws_ecs_service.github_runner[\"${key}\"]'" if !var.enable_controller],
    var.enable_controller ? ["-replace='aws_ecs_service.controller[0]'"] : [],
  ))
}

output "task_definition_arns" {
  description = "Task definition ARN (with revision) per runner key."
  value       = { for key, definition in aws_ecs_task_definition.github_runner : key => definition.arn }
}

output "log_group_names" {
  description = "CloudWatch log group per runner key (awslogs-github-runner-<type>-<key>), for `aws logs tail` and `hangar logs`."
  value       = { for key, group in aws_cloudwatch_log_group.github_runner : key => group.name }
}

output "log_group_arns" {
  description = "CloudWatch log group ARN per runner key."
  value       = { for key, group in aws_cloudwatch_log_group.github_runner : key => group.arn }
}

output "task_execution_role_arn" {
  description = "ARN of the runners' task execution role (writes their logs, pulls the image and, for the fixed services only, reads the credential parameters)."
  value       = aws_iam_role.execution.arn
}

output "task_role_arns" {
  description = "Task role ARN per runner key (hangar agent's own AWS calls: task scale-in protection, that key's one-shot JIT parameters under <prefix>/jit/<pool name>/ when enabled, ECS Exec)."
  value       = { for key, role in aws_iam_role.task : key => role.arn }
}

output "jit_parameter_prefixes" {
  description = "Per runner key, the Parameter Store folder its task role may take one-shot JIT configurations from (<prefix>/jit/<pool name>): RUNNER_JIT_CONFIG_PARAMETER must name a parameter in it. Empty unless enable_jit_config_parameters or enable_controller."
  value       = { for key, runner in local.runners : key => "${local.jit_parameter_prefix}/${runner.pool_name}" if local.grant_jit_config_parameters }
}

output "ssm_parameter_names" {
  description = "The Parameter Store names the GitHub credentials are read from in this mode (by the runners' execution role for the fixed services, by the controller's with enable_controller)."
  value       = [for credential in local.credential_parameters : "${var.ssm_parameter_prefix}/${credential.parameter}"]
}

output "controller_service_name" {
  description = "With enable_controller: the ECS service running `hangar controller` (hangar-controller); null without."
  value       = one(aws_ecs_service.controller[*].name)
}

output "controller_config_parameter_name" {
  description = "With enable_controller: the String parameter holding the generated pool file (<prefix>/controller/config), for `aws ssm get-parameter`; null without."
  value       = one(aws_ssm_parameter.controller_config[*].name)
}

output "controller_log_group_name" {
  description = "With enable_controller: the controller's log group (awslogs-hangar-controller), for `aws logs tail`; null without."
  value       = one(aws_cloudwatch_log_group.controller[*].name)
}

output "controller_security_group_id" {
  description = "With enable_controller: the controller's own security group (its service's only group), which admits its HTTP port 9464 from controller_ingress_security_group_ids and controller_ingress_cidr_blocks only; add rules to it for other sources. Null without."
  value       = one(aws_security_group.controller[*].id)
}

output "pool_names" {
  description = "With enable_controller: the controller's pool name per runner key (and <key>-<shape> of pool_shapes), the scale set a workflow selects with runs-on; empty without."
  value       = { for key, pool in local.controller_pools : key => pool.name if var.enable_controller }
}

output "docker_capacity_provider_name" {
  description = "With docker_capacity: the EC2 capacity provider of the Docker shapes (hangar-docker-<cluster>); null without."
  value       = one(aws_ecs_capacity_provider.docker[*].name)
}

output "docker_autoscaling_group_name" {
  description = "With docker_capacity: the Auto Scaling group of the Docker instances; null without."
  value       = one(aws_autoscaling_group.docker[*].name)
}
