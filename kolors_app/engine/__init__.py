"""The job engine: every entrance submits jobs here; it validates, costs, queues and runs them."""
