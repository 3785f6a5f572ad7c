output "oidc_provider_arn" {
  description = "ARN of the GitHub Actions OIDC provider."
  value       = local.oidc_provider_arn
}

output "plan_role_arn" {
  description = "Role for `terraform plan` on pull requests (repository variable AWS_PLAN_ROLE_ARN)."
  value       = aws_iam_role.plan.arn
}

output "apply_role_arn" {
  description = "Role for `terraform apply` from workflows on the apply ref (repository variable AWS_APPLY_ROLE_ARN)."
  value       = aws_iam_role.apply.arn
}

output "role_boundary_arn" {
  description = "Permissions boundary every role the apply role creates must carry."
  value       = aws_iam_policy.role_boundary.arn
}
