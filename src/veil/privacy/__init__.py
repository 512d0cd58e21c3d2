"""Differential privacy: DP-SGD at a site, client-level DP stages, the privacy ledger."""
