output "lake_bucket" {
  description = "Data lake bucket (landing/, bronze/, silver/, gold/)."
  value       = module.lake.bucket_id
}

output "lake_replica_bucket" {
  description = "DR replica of the data lake in the replica region."
  value       = module.lake_replica.bucket_id
}

output "mlflow_artifacts_bucket" {
  description = "MLflow artifact bucket (the tracking server's --default-artifact-root)."
  value       = module.mlflow_artifacts.bucket_id
}

output "mlflow_artifacts_replica_bucket" {
  description = "DR replica of the MLflow artifacts in the replica region."
  value       = module.mlflow_artifacts_replica.bucket_id
}

output "compute_log_bucket" {
  description = "Dagster step logs (DAGSTER_COMPUTE_LOG_BUCKET of deploy/dagster.postgres.yaml)."
  value       = module.compute_logs.bucket_id
}

output "compute_log_replica_bucket" {
  description = "DR replica of the Dagster step logs in the replica region."
  value       = module.compute_logs_replica.bucket_id
}

output "pipeline_runtime_role_arn" {
  description = "Role the pipeline runs as."
  value       = module.pipeline_runtime.runtime_role_arn
}

output "pipeline_log_group" {
  description = "CloudWatch log group of the pipeline."
  value       = module.pipeline_runtime.log_group_name
}

output "spark_application_id" {
  description = "EMR Serverless application for silver on Spark (PipesEMRServerlessClient applicationId)."
  value       = module.spark_emr_serverless.application_id
}

output "spark_job_role_arn" {
  description = "Execution role of the Spark jobs (start_job_run executionRoleArn)."
  value       = module.spark_emr_serverless.job_role_arn
}

output "spark_job_log_group" {
  description = "CloudWatch log group the Spark jobs write and Dagster Pipes reads."
  value       = module.spark_emr_serverless.log_group_name
}

output "spark_code_uri_prefix" {
  description = "Where the Spark jobs' entry point and packaged project are uploaded."
  value       = module.spark_emr_serverless.code_uri_prefix
}

output "github_plan_role_arn" {
  description = "Set as repository variable AWS_PLAN_ROLE_ARN."
  value       = module.github_oidc.plan_role_arn
}

output "github_apply_role_arn" {
  description = "Set as variable AWS_APPLY_ROLE_ARN of the GitHub environment."
  value       = module.github_oidc.apply_role_arn
}

output "pipeline_environment" {
  description = "Environment variables for the pipeline (MLFLOW_TRACKING_URI and OTEL_EXPORTER_OTLP_ENDPOINT come from services outside this stack)."
  value = {
    POTATO_LAKE_URI            = "s3://${local.active_lake.bucket_id}"
    POTATO_LANDING_URI         = "s3://${local.active_lake.bucket_id}/landing"
    POTATO_MLFLOW_INDEX_TABLE  = module.pipeline_runtime.mlflow_index_table_name
    MLFLOW_ARTIFACT_ROOT       = "s3://${local.active_mlflow.bucket_id}"
    DAGSTER_COMPUTE_LOG_BUCKET = local.active_logs.bucket_id
    AWS_REGION                 = var.serve_from_replica ? var.replica_region : var.region
  }
}
