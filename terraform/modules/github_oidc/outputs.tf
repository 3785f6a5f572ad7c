output "oidc_provider_arn" {
  description = "ARN of the GitHub Actions OIDC provider."
  value       = local.oidc_provider_arn
}

output "plan_role_arn" {
  description = "Role for `terraform plan` on pull requests (repository variable AWS_PLAN_ROLE_ARN)."
  value       = aws_iam_role.plan.arn
}

output "apply_role_arn" {
  description = "Role for `terraform apply` in the protected environment (variable AWS_APPLY_ROLE_ARN)."
  value       = aws_iam_role.apply.arn
}
