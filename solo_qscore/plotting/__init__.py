"""All matplotlib figures."""
