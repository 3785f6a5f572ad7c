variable "name_prefix" {
  description = "Prefix for the application, role, policy, log group and key alias names (e.g. \"potato-dev\")."
  type        = string
}

variable "release_label" {
  description = "EMR release of the application: emr-spark-8.0.0 is Spark 4.0.2, the line of the project's pyspark 4.0.x."
  type        = string
  default     = "emr-spark-8.0.0"
}

variable "maximum_capacity" {
  description = "Upper bound of what all jobs of the application may hold at once (bounds the bill)."
  type = object({
    cpu    = string
    memory = string
    disk   = string
  })
  default = {
    cpu    = "16 vCPU"
    memory = "64 GB"
    disk   = "200 GB"
  }
}

variable "idle_timeout_minutes" {
  description = "The application stops this long after its last job (it restarts on the next one)."
  type        = number
  default     = 15
}

variable "lake_bucket_arn" {
  description = "ARN of the data lake bucket (bronze/ read, silver/ read and write, the job code prefix read)."
  type        = string
}

variable "lake_kms_key_arn" {
  description = "ARN of the KMS key encrypting the lake bucket."
  type        = string
}

variable "read_prefixes" {
  description = "Lake prefixes the Spark jobs only read."
  type        = list(string)
  default     = ["bronze/"]
}

variable "write_prefixes" {
  description = "Lake prefixes the Spark jobs read and write."
  type        = list(string)
  default     = ["silver/"]
}

variable "code_prefix" {
  description = "Lake prefix holding the jobs' entry point and the packaged project (written by the Dagster runtime before a run, read by the jobs)."
  type        = string
  default     = "spark-jobs/"
}

variable "log_bucket_arn" {
  description = "ARN of the bucket receiving the jobs' driver and executor logs (the compute-log bucket)."
  type        = string
}

variable "log_kms_key_arn" {
  description = "ARN of the KMS key encrypting the log bucket."
  type        = string
}

variable "log_prefix" {
  description = "Prefix of the jobs' S3 logs in the log bucket (monitoringConfiguration.s3MonitoringConfiguration.logUri)."
  type        = string
  default     = "emr-serverless/"
}

variable "log_retention_days" {
  description = "Retention of the jobs' CloudWatch log group (Dagster Pipes reads its messages there)."
  type        = number
  default     = 365
}

variable "runtime_role_name" {
  description = "Name of the role Dagster runs as (pipeline_runtime); it gets the submit policy."
  type        = string
}

variable "permissions_boundary_arn" {
  description = "Permissions boundary of the job role (github_oidc's role_boundary_arn)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Extra tags for every resource of the module."
  type        = map(string)
  default     = {}
}
