# scripts/lint-terraform runs checkov a second time with these values, so that it also sees the
# optional resources and policies (ECS Exec, one-shot JIT parameters, hangar controller), which
# are off by default.
runner_type                  = "org"
enable_execute_command       = true
enable_jit_config_parameters = true
enable_controller            = true
