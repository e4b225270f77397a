"""Speed benchmark: how fast the training path is next to the usual alternatives, on this machine.

Run: `python -m kd_lightning.bench [--out PATH] [--data-root DIR] [--sizes auto|cpu|gpu|tiny] [--only A,B ...]`
(or `make bench`).

Comparisons, measured in one process on whatever machine runs it (5 in worker processes), one module each:
  1. pipeline: our device-resident batches vs torchvision's per-image transforms in a DataLoader;
  2. trainer: BaselineModule through the Lightning Trainer vs a plain PyTorch loop (same model,
     optimiser, schedule, batch, data and precision), ResNet-4 and ResNet-10;
  3. kd: one KD step vs one baseline step vs one teacher forward (same student, same batch);
  4. epoch: one epoch (train + validation) end to end, ours vs a naive Lightning + torchvision script;
  5. many: N short training processes in turn, side by side, and side by side under CUDA MPS;
  6. checkpoint: how long the training thread waits for a checkpoint, in place vs asynchronous;
  7. compile (on request, `--only compile`): the step eager and under torch.compile modes.
`harness` holds the sizes, data and timing they share; `table` the printed table; `cli` runs them,
prints the table with ratios and targets, and writes everything to a JSON file. Each timed figure of
1-3 is the best of `repeats` alternating measurements, which keeps a shared machine's noise out of
the ratios as far as possible. Sizes follow the device: full CIFAR-10 at width 64 on a GPU, a few
hundred to a few thousand images at width 16 on a CPU. docs/performance.md has the method and results.

Nothing is imported here: importing one module of the package does not load the comparisons or the CLI.
"""
