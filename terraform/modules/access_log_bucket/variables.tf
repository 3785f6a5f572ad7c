variable "name" {
  description = "Globally unique name of the access-log bucket."
  type        = string
}

variable "source_bucket_arns" {
  description = "ARNs of the buckets allowed to deliver server access logs here (same region)."
  type        = list(string)
}

variable "log_retention_days" {
  description = "Days to keep access logs."
  type        = number
  default     = 365
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a non-empty bucket."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Extra tags for every resource of the module."
  type        = map(string)
  default     = {}
}
