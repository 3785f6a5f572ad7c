variable "github_repository" {
  description = "The only repository whose workflow may assume the role, as \"OWNER/REPO\"."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$", var.github_repository))
    error_message = "github_repository must look like OWNER/REPO, without wildcards."
  }
}

variable "checks_environment" {
  description = "GitHub environment of the scheduled lake-checks job (deployment branches: main only)."
  type        = string
  default     = "lake-checks"
}

variable "oidc_provider_arn" {
  description = "ARN of the GitHub Actions OIDC provider (module github_oidc)."
  type        = string
}

variable "name_prefix" {
  description = "Prefix of the role's name (e.g. \"potato-dev\")."
  type        = string
}

variable "lake_bucket_arn" {
  description = "ARN of the lake bucket the checks read."
  type        = string
}

variable "lake_kms_key_arn" {
  description = "ARN of the KMS key that encrypts the lake bucket."
  type        = string
}

variable "lake_region" {
  description = "Region of the lake bucket and its key (kms:ViaService is s3.REGION.amazonaws.com)."
  type        = string
}

variable "lake_prefix" {
  description = "Key prefix of the lake inside the bucket (\"\" when POTATO_LAKE_URI is s3://BUCKET)."
  type        = string
  default     = ""
}

variable "lake_layer_prefixes" {
  description = "The layers whose tables the checks read; landing/ is not among them."
  type        = list(string)
  default     = ["bronze/", "silver/", "gold/"]
}

variable "tags" {
  description = "Extra tags for the role."
  type        = map(string)
  default     = {}
}

variable "permissions_boundary_arn" {
  description = "The permissions boundary every role of the stack carries (modules/github_oidc role_boundary)."
  type        = string
}
