# One log group per runner, named as in the seed, so `aws logs tail awslogs-github-runner-...`
# and `hangar logs` find them: awslogs-github-runner-standalone-<repo>, awslogs-github-runner-org-org.
resource "aws_cloudwatch_log_group" "github_runner" {
  #checkov:skip=CKV_AWS_338:Runner logs are operational (job starts and ends, registration, drain), not an audit trail; retention is the log_retention_in_days variable (default 30), which sites with a one-year policy raise to 365.
  #checkov:skip=CKV_AWS_158:CloudWatch Logs always encrypts at rest; a customer managed key is optional through cloudwatch_log_group_kms_key_id because it needs a key policy for logs.<region>.amazonaws.com that this module cannot write for a key it does not own.
  for_each = local.runners

  name              = each.value.log_group_name
  retention_in_days = var.log_retention_in_days
  kms_key_id        = var.cloudwatch_log_group_kms_key_id
}
