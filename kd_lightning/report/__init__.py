"""The study's table and figures, regenerated from run folders: `python -m kd_lightning.report [RUNS_DIR]`.

RUNS_DIR (default outputs/runs) holds one folder per run with metrics.json and tb/ (a paths.root
folder that contains runs/ is accepted too). The report goes next to the runs it describes, into
RUNS_DIR/../report/ (outputs/report/, outputs/mini/report/, ...; --out DIR to choose), and is
rewritten whole each time:

- results.md and results.csv: test accuracy (%) of the teacher, then of each student network without
  and with distillation, mean ± sample std over seeds with n; the KD delta; the paired KD-minus-
  baseline difference over the seeds both have (is the gain larger than the seed spread?); the
  teacher-student test agreement; the study's own numbers beside ours; and, when several alpha/T
  settings were run, the best one per network on validation accuracy. A row is one network: depth,
  width, reading or plan ("ResNet-6 stages", "ResNet-6 p1_1_1_1") and variant tags ("[e60]"), so runs
  of another reading or other settings are never averaged as seeds of one. Missing cells are "-" in
  results.md and empty in results.csv.
- When runs of reverse KD, DKD or KD via an assistant exist: a methods table (and methods.csv) with
  each method's test accuracy and paired difference against the baseline, the settings used and the
  assistant chain named from the lineage. When runs recorded ECE: a calibration and agreement table
  (and calibration.csv). Neither appears otherwise.
- curves/<run>.png (training and validation cross-entropy per epoch, a KD run's distillation term
  in a panel of its own) and curves_overview.png; depth_comparison.png (validation loss and
  accuracy, baseline vs KD, mean over seeds with a min-max band).
- accuracy_vs_depth.png (baseline and KD with seed std as error bars) and, when a sweep exists,
  kd_sweep_val_acc.png (alpha x T heatmap of mean validation accuracy per network).

Models are chosen on validation accuracy only: the KD column uses the plain KD runs (forward KL from
a teacher run) at alpha/T given by --alpha/--temperature (the config default), or with --kd-select
val the setting of best mean validation accuracy per network. The methods table takes each method's
default setting when present, else its only one, else the best on validation. Test accuracy is
reported, never used to choose.

The package is split by job so that the numbers can be imported and tested without matplotlib:
`stats` (statistics, what a record is, table rows), `methods` (the methods table's numbers),
`tables` and `method_tables` (results.md and the csv files), `curves` (the series the curve figures
draw), `figures` (every PNG) and `cli` (`make_report` and the command line). Runs are read through
`kd_lightning.run.record`.
"""
