"""target-sage: a Singer target that writes to Sage Business Cloud Accounting (API v3.1)."""
