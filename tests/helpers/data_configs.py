"""Data settings shared by the data, report and analysis tests."""

from __future__ import annotations

AUG = {
    "num_crops": 2, "crop_size": 32, "min_scale": 0.08, "max_scale": 1.0, "brightness": 0.4,
    "contrast": 0.4, "saturation": 0.2, "hue": 0.1, "color_jitter_prob": 0.8, "gray_scale_prob": 0.2,
    "gaussian_prob": 0.0, "solarization_prob": 0.0, "horizontal_flip_prob": 0.5,
}


def data_cfg(**kw) -> dict:
    cfg = {"dataset": "fashion_mnist", "root": "datasets", "fallback": None, "image_size": 32,
           "batch_size": 16, "num_workers": 0, "train_subset": 64, "val_subset": 40,
           "num_large_crops": 2, "num_small_crops": 0}
    cfg.update(kw)
    return cfg


FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
