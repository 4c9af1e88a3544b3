"""The notifier's outside world: the platforms' send APIs, Redis, the delivery-state bucket."""
