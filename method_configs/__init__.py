"""Configs users start from, in solo-learn main's Hydra format (installed as ``solo_qscore.method_configs``)."""
