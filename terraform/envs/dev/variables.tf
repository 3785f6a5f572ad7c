variable "project" {
  description = "Project name; prefixes every resource name and is the Project tag."
  type        = string
  default     = "potato"
}

variable "environment" {
  description = "Environment name (dev, prod, ...)."
  type        = string
  default     = "dev"
}

variable "region" {
  description = "Primary AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "replica_region" {
  description = "Disaster-recovery region holding the replica buckets."
  type        = string
  default     = "eu-central-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.replica_region))
    error_message = "replica_region must be an AWS region name such as eu-central-1."
  }

  validation {
    condition     = var.replica_region != var.region
    error_message = "replica_region must differ from region: the replicas are the DR copy."
  }
}

variable "github_repository" {
  description = "The only GitHub repository (\"OWNER/REPO\") whose workflows may assume the CI roles."
  type        = string
}

variable "github_apply_ref" {
  description = "The branch whose workflows may assume the apply role (the apply job in infra.yml runs on it)."
  type        = string
  default     = "refs/heads/main"
}

variable "create_github_oidc_provider" {
  description = "Create the account's GitHub OIDC provider (false if the account already has one)."
  type        = bool
  default     = true
}

variable "state_bucket" {
  description = "Bucket holding the Terraform state (same as in backend.hcl)."
  type        = string
}

variable "state_key" {
  description = "State object key (same as in backend.hcl)."
  type        = string
  default     = "potato/dev/terraform.tfstate"
}

variable "state_kms_key_arn" {
  description = "KMS key of the state bucket, or null for SSE-S3."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the pipeline log group, in days."
  type        = number
  default     = 365
}

variable "runtime_service_principals" {
  description = "AWS services that may assume the pipeline runtime role."
  type        = list(string)
  default     = ["ecs-tasks.amazonaws.com"]
}

variable "serve_from_replica" {
  description = "DR fail-over switch: grant the runtime role the replica buckets and keys instead of the primary ones."
  type        = bool
  default     = false
}
