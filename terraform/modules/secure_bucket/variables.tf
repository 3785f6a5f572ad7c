variable "name" {
  description = "Globally unique bucket name. Also used for the KMS key alias and the replication role."
  type        = string
}

variable "access_log_bucket" {
  description = "Name of the access-log bucket (same region) that receives this bucket's server access logs."
  type        = string
}

variable "current_version_transition_prefixes" {
  description = <<-EOT
    Prefixes whose *current* objects move to STANDARD_IA and then GLACIER (e.g. ["landing/"]).
    Objects under any other prefix stay in STANDARD while current: the pipeline reads them.
  EOT
  type        = list(string)
  default     = []
}

variable "transition_to_ia_days" {
  description = "Days before landing files and noncurrent versions move to STANDARD_IA."
  type        = number
  default     = 30
}

variable "transition_to_glacier_days" {
  description = "Days before landing files and noncurrent versions move to GLACIER."
  type        = number
  default     = 90
}

variable "replication" {
  description = <<-EOT
    Cross-region replication target, or null for a bucket that is itself a replica.
    Replication uses S3 Replication Time Control (99.99 % of objects within 15 minutes).
  EOT
  type = object({
    destination_bucket_arn  = string
    destination_kms_key_arn = string
  })
  default = null
}

variable "kms_deletion_window_days" {
  description = "Waiting period before the bucket's KMS key is deleted after destroy."
  type        = number
  default     = 30
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a non-empty bucket. Keep false outside throwaway stacks."
  type        = bool
  default     = false
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
