"""Feature metrics: CKA (from features or stored Grams) and clustering scores."""
