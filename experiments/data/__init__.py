"""Package data of experiments: the default tag library of `clv score` (tags.yaml, experiments.tags)."""
