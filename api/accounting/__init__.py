"""What requests use: `record` (one finished request), `usage` (records aggregated per day and
flushed to Redis once a second, and Prometheus metrics) and `budgets` (spend limits)."""
