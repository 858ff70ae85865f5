# scripts/lint-terraform runs checkov a second time with these values, so that it also sees the
# optional resources and policies (ECS Exec, one-shot JIT parameters, hangar controller, an image
# in a private registry outside ECR with its credentials, pool shapes: a large Fargate Spot one,
# an ARM64 one and a Docker one with its EC2 capacity, the controller's inbound rules from a
# monitoring group and network), which are off by default. The default
# run sees the ECR pull policy (the default runner_image is an ECR image).
runner_type                       = "org"
enable_execute_command            = true
enable_jit_config_parameters      = true
enable_controller                 = true
runner_image                      = "ghcr.io/your-organization/hangar-runner:latest"
repository_credentials_secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:hangar/registry-AbC123"

controller_ingress_security_group_ids = ["sg-0aaaaaaaaaaaaaaa1"]
controller_ingress_cidr_blocks        = ["10.20.0.0/24"]

pool_shapes = {
  large  = { cpu = 4096, memory = 16384, ephemeral_storage_gib = 100, capacity_providers = ["FARGATE_SPOT", "FARGATE"] }
  arm64  = { cpu = 2048, memory = 4096, cpu_architecture = "ARM64" }
  docker = { cpu = 2048, memory = 7168, docker = true, max = 4 }
}

docker_capacity = {
  instance_type           = "m7i.large"
  max_size                = 4
  root_volume_kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
}
