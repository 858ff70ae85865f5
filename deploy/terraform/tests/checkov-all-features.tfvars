# scripts/lint-terraform runs checkov a second time with these values, so that it also sees the
# optional resources and policies (ECS Exec, one-shot JIT parameters, hangar controller, an image
# in a private registry outside ECR with its credentials), which are off by default. The default
# run sees the ECR pull policy (the default runner_image is an ECR image).
runner_type                       = "org"
enable_execute_command            = true
enable_jit_config_parameters      = true
enable_controller                 = true
runner_image                      = "ghcr.io/your-organization/hangar-runner:latest"
repository_credentials_secret_arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:hangar/registry-AbC123"
