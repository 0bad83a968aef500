"""The Q-Score report, compute -> draw -> write/log, one module per concept.

``config`` (:class:`~solo_qscore.report.config.ReportConfig`, the settings), ``build``
(:func:`~solo_qscore.report.build.qscore_report`, the computation) over ``separation`` (AUROC/AUPRC
and curves), ``compression``, ``heatmap`` and ``samples`` (the per-sample table and ``samples.csv``);
``result`` (the typed report); ``figures`` (the report's figures, drawn by :mod:`solo_qscore.plotting`);
``writer`` (the report folder, whole or not at all); ``wandb`` (panels, tables, the artifact).
Nothing is imported here: computing a report (``build``) imports neither the figures nor wandb.
"""
