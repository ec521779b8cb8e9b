"""Using a logged or registered model: finding it from its URI, checking data against its signature, scoring
(transform, or a pyfunc in pandas UDFs on the executors), per-group models."""
