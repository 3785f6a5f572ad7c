output "role_arn" {
  description = "Role of the scheduled lake checks (repository variable AWS_LAKE_CHECKS_ROLE_ARN)."
  value       = aws_iam_role.checks.arn
}
