"""Registry pulls: the extract of standardized records (CSV, NDJSON, de-identified) and the case-series
summary with Kaplan-Meier survival, read from stored cases (``source``)."""
