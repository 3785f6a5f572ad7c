output "application_id" {
  description = "EMR Serverless application id (PipesEMRServerlessClient's start_job_run applicationId)."
  value       = aws_emrserverless_application.spark.id
}

output "application_arn" {
  description = "ARN of the EMR Serverless application."
  value       = aws_emrserverless_application.spark.arn
}

output "job_role_arn" {
  description = "Execution role of the Spark jobs (start_job_run executionRoleArn)."
  value       = aws_iam_role.job.arn
}

output "log_group_name" {
  description = "CloudWatch log group of the jobs (cloudWatchLoggingConfiguration.logGroupName; Pipes reads it)."
  value       = aws_cloudwatch_log_group.jobs.name
}

output "code_uri_prefix" {
  description = "Where the jobs' entry point and packaged project live."
  value       = "s3://${element(split(":::", var.lake_bucket_arn), 1)}/${var.code_prefix}"
}
