"""tap-sage: a Singer tap for Sage Business Cloud Accounting (API v3.1)."""
