"""he_agg (placeholder during bring-up)."""
