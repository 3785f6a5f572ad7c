"""Checks of the infrastructure code: terraform/ and .github/workflows/."""
