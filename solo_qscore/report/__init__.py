"""The Q-Score report: metrics, compression study, per-sample table, writing, wandb."""
