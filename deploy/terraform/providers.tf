# This folder is applied directly (`terraform apply -var='runner_type=...'`, as in the seed), so it
# configures its own provider. Every resource gets var.tags through default_tags; ECS services
# propagate their tags to the tasks they start.
provider "aws" {
  region = var.aws_region

  default_tags {
    tags = var.tags
  }
}
