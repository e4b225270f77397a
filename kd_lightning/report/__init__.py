"""The study's table and figures, regenerated from run folders: `python -m kd_lightning.report [RUNS_DIR]`.

RUNS_DIR (default outputs/runs) holds one folder per run with metrics.json and tb/ (a paths.root
folder that contains runs/ is accepted too). The report goes next to the runs it describes, into
RUNS_DIR/../report/ (outputs/report/, outputs/mini/report/, ...; --out DIR to choose), and is
rewritten whole each time:

- results.md and results.csv: test accuracy (%) of the teacher, then of each student depth without
  and with distillation, mean ± sample std over seeds with n; the KD delta; the paired KD-minus-
  baseline difference over the seeds both have (is the gain larger than the seed spread?); the
  teacher-student test agreement; the study's own numbers beside ours; and, when several alpha/T
  settings were run, the best one per depth on validation accuracy. Missing cells are "-" in
  results.md and empty in results.csv.
- curves/<run>.png (train and val loss per epoch of each run) and curves_overview.png.
- accuracy_vs_depth.png (baseline and KD with seed std as error bars) and, when a sweep exists,
  kd_sweep_val_acc.png (alpha x T heatmap of mean validation accuracy per depth).

Models are chosen on validation accuracy only: the KD column uses the runs at alpha/T given by
--alpha/--temperature (the config default), or with --kd-select val the setting of best mean
validation accuracy per depth. Test accuracy is reported, never used to choose.

The package is split by job so that the numbers can be imported and tested without matplotlib:
`stats` (statistics and table rows), `tables` (results.md and results.csv), `figures` (every PNG)
and `cli` (`make_report` and the command line). Runs are read through `kd_lightning.runs`.
"""
