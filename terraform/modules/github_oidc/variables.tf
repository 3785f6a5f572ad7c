variable "github_repository" {
  description = "The only repository whose workflows may assume the roles, as \"OWNER/REPO\"."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must look like OWNER/REPO, without wildcards."
  }
}

variable "apply_ref" {
  description = "The only git ref whose workflows may assume the apply role (sub = repo:OWNER/REPO:ref:REF)."
  type        = string
  default     = "refs/heads/main"

  validation {
    condition     = can(regex("^refs/heads/[A-Za-z0-9_./-]+$", var.apply_ref))
    error_message = "apply_ref must be one branch, refs/heads/NAME, without wildcards."
  }
}

variable "project" {
  description = "Value of the Project tag (provider default_tags) on every resource of the stack."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of every resource this stack manages (e.g. \"potato-dev\"); the CI roles are scoped to it."
  type        = string
}

variable "mlflow_index_table_name" {
  description = "DynamoDB table managed by the stack (its name does not carry name_prefix)."
  type        = string
}

variable "log_group_name" {
  description = "CloudWatch log group managed by the stack."
  type        = string
}

variable "state_bucket" {
  description = "S3 bucket holding the Terraform state (created once by hand, see README)."
  type        = string
}

variable "state_key" {
  description = "Object key of this stack's state inside state_bucket."
  type        = string
}

variable "state_kms_key_arn" {
  description = "KMS key encrypting the state bucket, or null when it uses SSE-S3."
  type        = string
  default     = null
}

variable "create_oidc_provider" {
  description = "Create the GitHub OIDC provider (false when the account already has one: only one per URL)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Extra tags for every resource of the module."
  type        = map(string)
  default     = {}
}
