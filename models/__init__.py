"""TailorMind domain code: data, models and metrics that know nothing of Ray."""
