output "bucket_id" {
  description = "Bucket name."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "Bucket ARN."
  value       = aws_s3_bucket.this.arn
}

output "kms_key_arn" {
  description = "ARN of the customer managed KMS key that encrypts the bucket."
  value       = aws_kms_key.this.arn
}

output "replication_role_arn" {
  description = "ARN of the role S3 assumes to replicate objects (null for a replica bucket)."
  value       = one(aws_iam_role.replication[*].arn)
}
