data "aws_partition" "current" {}

data "aws_caller_identity" "current" {}

# The existing cluster the services run in (also checks at plan time that it exists).
data "aws_ecs_cluster" "this" {
  cluster_name = var.ecs_cluster_name
}

# The AWS managed key of Parameter Store, when no kms_key_arn is given (the credentials and the
# controller's one-shot JIT parameters are then encrypted with it).
data "aws_kms_alias" "ssm" {
  count = var.kms_key_arn == null ? 1 : 0

  name = "alias/aws/ssm"
}

# The VPC of the tasks' subnets, where the controller's own security group is made.
data "aws_subnet" "controller" {
  count = var.enable_controller ? 1 : 0

  id = var.private_subnet_ids[0]
}
