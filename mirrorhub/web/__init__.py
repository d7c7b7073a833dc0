"""HTTP layer: the redirect hot path and the pages under /-/."""
