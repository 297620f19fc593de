"""``mgmrn data download``: fetch, verify and extract the benchmarks (:mod:`.fetch`, :mod:`.archives`)."""
