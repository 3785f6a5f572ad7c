variable "name_prefix" {
  description = "Prefix for names of the role, log group and key alias (e.g. \"potato-dev\")."
  type        = string
}

variable "lake_bucket_arn" {
  description = "ARN of the data lake bucket the pipeline uses (landing/, bronze/, silver/, gold/)."
  type        = string
}

variable "lake_kms_key_arn" {
  description = "ARN of the KMS key encrypting the data lake bucket."
  type        = string
}

variable "landing_prefix" {
  description = "Prefix of the landing zone inside the lake bucket (read-only for the pipeline)."
  type        = string
  default     = "landing/"
}

variable "lake_layer_prefixes" {
  description = "Prefixes the pipeline reads and writes inside the lake bucket."
  type        = list(string)
  default     = ["bronze/", "silver/", "gold/"]
}

variable "mlflow_bucket_arn" {
  description = "ARN of the MLflow artifacts bucket."
  type        = string
}

variable "mlflow_kms_key_arn" {
  description = "ARN of the KMS key encrypting the MLflow artifacts bucket and the run-index table."
  type        = string
}

variable "compute_log_bucket_arn" {
  description = "ARN of the bucket holding Dagster's step logs (S3ComputeLogManager)."
  type        = string
}

variable "compute_log_kms_key_arn" {
  description = "ARN of the KMS key encrypting the compute-log bucket."
  type        = string
}

variable "compute_log_prefix" {
  description = "Prefix Dagster writes step logs under (the compute_logs prefix of dagster.yaml, with a trailing slash)."
  type        = string
  default     = "dagster/compute-logs/"
}

variable "mlflow_index_table_name" {
  description = "DynamoDB table indexing MLflow runs (hash experiment_id, range run_uuid)."
  type        = string
}

variable "table_replica" {
  description = "DR replica of the run-index table (a global-table replica), or null."
  type = object({
    region      = string
    kms_key_arn = string
  })
  default = null
}

variable "log_retention_days" {
  description = "Retention of the pipeline's CloudWatch log group (CIS asks for at least 365)."
  type        = number
  default     = 365
}

variable "runtime_service_principals" {
  description = "AWS services allowed to assume the runtime role (where the Dagster code runs)."
  type        = list(string)
  default     = ["ecs-tasks.amazonaws.com"]
}

variable "tags" {
  description = "Extra tags for every resource of the module."
  type        = map(string)
  default     = {}
}

variable "permissions_boundary_arn" {
  description = "Permissions boundary of the module's role (github_oidc's role_boundary_arn): the apply role may create only roles that carry it."
  type        = string
  default     = null
}
