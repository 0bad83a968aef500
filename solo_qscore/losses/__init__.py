"""Losses, one per file: IFM (Robinson et al., NeurIPS 2021), hard negatives."""
