"""The linear probe and the backbone lookup."""
