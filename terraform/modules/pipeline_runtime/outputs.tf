output "runtime_role_arn" {
  description = "ARN of the pipeline runtime role."
  value       = aws_iam_role.runtime.arn
}

output "mlflow_index_table_name" {
  description = "Name of the MLflow run-index table (POTATO_MLFLOW_INDEX_TABLE)."
  value       = aws_dynamodb_table.mlflow_index.name
}

output "mlflow_index_table_arn" {
  description = "ARN of the MLflow run-index table."
  value       = aws_dynamodb_table.mlflow_index.arn
}

output "log_group_name" {
  description = "Name of the pipeline's CloudWatch log group."
  value       = aws_cloudwatch_log_group.pipeline.name
}

output "log_group_arn" {
  description = "ARN of the pipeline's CloudWatch log group."
  value       = aws_cloudwatch_log_group.pipeline.arn
}

output "runtime_role_name" {
  description = "Name of the pipeline runtime role (other modules attach their policies to it)."
  value       = aws_iam_role.runtime.name
}
