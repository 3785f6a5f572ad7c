# The read-only role of the scheduled asset checks against the lake (lake-checks.yml).
# It reads the lake the pipeline currently serves from (primary, or the replica after a fail-over).

module "ci_checks_role" {
  source = "../../modules/ci_checks_role"

  github_repository = var.github_repository
  oidc_provider_arn = module.github_oidc.oidc_provider_arn
  name_prefix       = local.name_prefix
  lake_bucket_arn   = local.active_lake.bucket_arn
  lake_kms_key_arn  = local.active_lake.kms_key_arn
  lake_region       = var.serve_from_replica ? var.replica_region : var.region

  permissions_boundary_arn = module.github_oidc.role_boundary_arn
}

output "lake_checks_role_arn" {
  description = "Repository variable AWS_LAKE_CHECKS_ROLE_ARN of the scheduled lake checks."
  value       = module.ci_checks_role.role_arn
}
