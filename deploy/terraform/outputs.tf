output "runner_type" {
  description = "The deployed mode: standalone or org."
  value       = var.runner_type
}

output "runner_keys" {
  description = "The runner keys: the repository names (standalone) or [\"org\"]; the instance keys of every per-runner resource."
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
  description = "The -replace arguments that redeploy every runner service (the update procedure in README.md): `terraform apply -var=... <these>`."
  value       = join(" ", [for key in keys(local.runners) : "-replace='aws_ecs_service.github_runner[\"${key}\"]'"])
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
  description = "ARN of the task execution role (reads the credential parameters, writes the logs)."
  value       = aws_iam_role.execution.arn
}

output "task_role_arn" {
  description = "ARN of the task role (hangar agent's own AWS calls: task scale-in protection, optional JIT parameters and ECS Exec)."
  value       = aws_iam_role.task.arn
}

output "ssm_parameter_names" {
  description = "The Parameter Store names the runners' credentials are read from in this mode."
  value       = [for credential in local.credential_parameters : "${var.ssm_parameter_prefix}/${credential.parameter}"]
}
