"""Remote exposure scanning: targets, fingerprints, behavioural probes, verdict fusion and the engine."""
