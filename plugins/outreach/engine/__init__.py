"""Engine orchestration: the claim -> gate -> intent -> call -> record cycle, polling, ingest, metrics."""
