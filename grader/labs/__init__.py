"""Labs: one package per lab, holding its probes and check kinds (see grader/checks/)."""
