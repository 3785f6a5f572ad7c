"""The study's science: plain functions on tables. No Dagster, no storage, no process tuning."""
