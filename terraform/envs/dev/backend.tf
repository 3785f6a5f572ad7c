# Remote state: S3 with S3-native locking (a `<key>.tflock` object next to the state; needs
# Terraform >= 1.10, no DynamoDB lock table). Partial configuration: the bucket, key and region
# come from a backend config file at init time, so nothing account-specific is committed:
#
#   cp backend.hcl.example backend.hcl   # edit bucket/region
#   terraform init -backend-config=backend.hcl
#
# The state bucket is created once by hand before the first init (see terraform/README.md).
terraform {
  backend "s3" {
    encrypt      = true
    use_lockfile = true
  }
}
