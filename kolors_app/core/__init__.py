"""Settings, the request and its parts (typed), the one schema of its flat parameters, errors, schedulers."""
