"""Core math (plain torch): activations, statistics, D, Q, the regulariser."""
