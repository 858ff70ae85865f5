################################################################################
# Docker capacity (docker_capacity, off by default): EC2 instances for the Docker shapes of
# pool_shapes, whose task runs a privileged Docker daemon sidecar that Fargate would refuse. An
# Auto Scaling group of ECS-optimized Amazon Linux 2023 instances, sized for one runner task each
# (the controller places Docker tasks with a distinctInstance constraint), its ECS capacity
# provider, and the cluster's capacity provider list. The task definitions are in main.tf, the
# instance user data (ecs.config) in locals.tf.
################################################################################

# The current ECS-optimized Amazon Linux 2023 AMI of the instances' architecture, from AWS's
# public parameter (not read when docker_capacity.ami_id is given).
data "aws_ssm_parameter" "docker_ami" {
  count = var.docker_capacity == null ? 0 : (var.docker_capacity.ami_id == null ? 1 : 0)

  name = local.docker_ami_parameter
}

################################################################################
# The instances' role: what the ECS agent needs, on this cluster only. No ECR, no CloudWatch
# Logs, no SSM: images are pulled and logs written with each task's execution role
# (ECS_ENABLE_AWSLOGS_EXECUTIONROLE_OVERRIDE), and the instances are not managed through SSM.
################################################################################

data "aws_iam_policy_document" "docker_instance_assume" {
  count = var.docker_capacity == null ? 0 : 1

  statement {
    sid     = "Ec2Instances"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "docker_instance" {
  count = var.docker_capacity == null ? 0 : 1

  name_prefix          = "hangar-docker-instance-"
  description          = "EC2 instance role of the Hangar Docker capacity of ${var.ecs_cluster_name}: the ECS agent's calls for this cluster only."
  assume_role_policy   = data.aws_iam_policy_document.docker_instance_assume[0].json
  permissions_boundary = var.iam_role_permissions_boundary
}

data "aws_iam_policy_document" "docker_instance" {
  count = var.docker_capacity == null ? 0 : 1

  # Joining and leaving the cluster, and reporting task and container states: authorized on
  # the cluster itself.
  statement {
    sid    = "RegisterWithTheCluster"
    effect = "Allow"
    actions = [
      "ecs:DeregisterContainerInstance",
      "ecs:RegisterContainerInstance",
      "ecs:SubmitAttachmentStateChanges",
      "ecs:SubmitContainerStateChange",
      "ecs:SubmitTaskStateChange",
    ]
    resources = [local.cluster_arn]
  }

  # Polling for work, telemetry and draining: authorized on the container instance, which
  # exists only once registered; the instances of this cluster only.
  statement {
    sid       = "ServeTheCluster"
    effect    = "Allow"
    actions   = ["ecs:Poll", "ecs:StartTelemetrySession", "ecs:UpdateContainerInstancesState"]
    resources = ["arn:${local.partition}:ecs:${var.aws_region}:${local.account_id}:container-instance/${var.ecs_cluster_name}/*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [local.cluster_arn]
    }
  }

  # DiscoverPollEndpoint supports no resource-level permissions: AWS accepts only "*" (it
  # returns the endpoints to poll, nothing of any cluster).
  statement {
    sid       = "DiscoverPollEndpoint"
    effect    = "Allow"
    actions   = ["ecs:DiscoverPollEndpoint"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "docker_instance" {
  count = var.docker_capacity == null ? 0 : 1

  name   = "ecs-agent-of-the-cluster"
  role   = aws_iam_role.docker_instance[0].id
  policy = data.aws_iam_policy_document.docker_instance[0].json
}

resource "aws_iam_instance_profile" "docker_instance" {
  count = var.docker_capacity == null ? 0 : 1

  name_prefix = "hangar-docker-instance-"
  role        = aws_iam_role.docker_instance[0].name
}

################################################################################
# Launch template and Auto Scaling group
################################################################################

resource "aws_launch_template" "docker" {
  count = var.docker_capacity == null ? 0 : 1

  name_prefix            = "hangar-docker-"
  description            = "Hangar Docker capacity of ${var.ecs_cluster_name}: ECS-optimized Amazon Linux 2023, one privileged-daemon runner task per instance."
  image_id               = var.docker_capacity.ami_id != null ? var.docker_capacity.ami_id : one(data.aws_ssm_parameter.docker_ami[*].value)
  instance_type          = var.docker_capacity.instance_type
  ebs_optimized          = true
  update_default_version = true
  user_data              = base64encode(local.docker_instance_user_data)

  iam_instance_profile {
    arn = aws_iam_instance_profile.docker_instance[0].arn
  }

  # IMDSv2 only, and one hop: a container behind the host's bridge gets no answer (awsvpc tasks
  # are also cut off by ECS_AWSVPC_BLOCK_IMDS).
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  # Private subnets only (var.private_subnet_ids, in the Auto Scaling group): no public address.
  # The instance's own interface reaches ECS and the registries through the same security groups
  # as the tasks (outbound HTTPS).
  network_interfaces {
    associate_public_ip_address = false
    delete_on_termination       = true
    security_groups             = var.security_group_ids
  }

  # The root volume holds Docker's images and the task volumes: encrypted, gone with the instance.
  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = var.docker_capacity.root_volume_size_gib
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.docker_capacity.root_volume_kms_key_arn
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  # default_tags do not reach instances an Auto Scaling group launches.
  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "hangar-docker-${var.ecs_cluster_name}" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = "hangar-docker-${var.ecs_cluster_name}" })
  }
}

resource "aws_autoscaling_group" "docker" {
  count = var.docker_capacity == null ? 0 : 1

  name_prefix         = "hangar-docker-"
  min_size            = var.docker_capacity.min_size
  max_size            = var.docker_capacity.max_size
  vpc_zone_identifier = var.private_subnet_ids
  health_check_type   = "EC2"
  # Managed termination protection (the capacity provider) needs it: ECS lifts the protection of
  # an instance once it runs no task, so scale-in never stops a running job.
  protect_from_scale_in = true

  launch_template {
    id      = aws_launch_template.docker[0].id
    version = aws_launch_template.docker[0].latest_version
  }

  # ECS adds this tag when the capacity provider manages the group; declared so that Terraform
  # keeps it (and instances carry it).
  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }

  lifecycle {
    # ECS managed scaling sets the desired capacity.
    ignore_changes = [desired_capacity]
  }
}

################################################################################
# Capacity provider and the cluster's capacity provider list
################################################################################

resource "aws_ecs_capacity_provider" "docker" {
  count = var.docker_capacity == null ? 0 : 1

  name = local.docker_capacity_provider_name

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.docker[0].arn
    managed_termination_protection = "ENABLED"

    # ECS scales the group to the tasks waiting for it (one per instance), and back to min_size
    # once instances are idle.
    managed_scaling {
      status                    = "ENABLED"
      target_capacity           = var.docker_capacity.target_capacity
      minimum_scaling_step_size = 1
      maximum_scaling_step_size = 10
      instance_warmup_period    = 180
    }
  }
}

# This resource owns the cluster's whole capacity provider list (and its default strategy, which
# it leaves empty): FARGATE and FARGATE_SPOT are listed too, for the Fargate pools and the
# controller. Any other provider attached to the cluster outside this module is removed: give
# the Docker capacity a dedicated cluster (see README).
resource "aws_ecs_cluster_capacity_providers" "docker" {
  count = var.docker_capacity == null ? 0 : 1

  cluster_name       = var.ecs_cluster_name
  capacity_providers = ["FARGATE", "FARGATE_SPOT", aws_ecs_capacity_provider.docker[0].name]
}
