"""DDP through the real CLI: two CPU processes, each training on its own shard of the training set."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
from conftest import run_cli

# Loaded by every Python process of the run (the CLI and the rank Lightning relaunches): writes one
# line per training batch a rank actually received, naming the training images it holds.
RECORDER = textwrap.dedent(
    r"""
    import json, os
    from pathlib import Path
    from kd_lightning.data import BatchLoader

    _iter = BatchLoader.__iter__

    def _recorded(self):
        if not self.shuffle:  # evaluation batches
            yield from _iter(self)
            return
        index = {img.numpy().tobytes(): i for i, img in enumerate(self.images.cpu())}
        out = Path(os.environ["KD_SHARD_LOG"]) / f"rank{self.rank}-of{self.world_size}.jsonl"
        for images, labels in _iter(self):
            with open(out, "a") as f:
                f.write(json.dumps([index[img.numpy().tobytes()] for img in images.cpu()]) + "\n")
            yield images, labels

    BatchLoader.__iter__ = _recorded
    """
)


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_gives_each_rank_a_disjoint_shard_and_writes_one_run(tmp_path, monkeypatch):
    hook, log = tmp_path / "hook", tmp_path / "shards"
    hook.mkdir()
    log.mkdir()
    (hook / "sitecustomize.py").write_text(RECORDER)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("KD_SHARD_LOG", str(log))
    result = run_cli(
        "experiment=smoke",
        "mode=baseline",
        "student.depth=3",
        f"paths.root={tmp_path / 'out'}",
        "trainer.devices=2",
        "trainer.strategy=ddp",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "data.synthetic_train=400",
        "data.synthetic_test=100",
        "data.batch_size=32",
    )
    assert result.returncode == 0, result.stderr[-3000:]

    runs = list((tmp_path / "out" / "runs").iterdir())
    # the relaunched rank used the same run folder, named apart from the one-process run: another step count
    assert [r.name for r in runs] == ["baseline-r3-w8-s0-b32-e1-ws2"]
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["n_train"] == 320 and metrics["epochs"] == 1 and metrics["settings"]["trainer.world_size"] == 2

    shards = {}
    for rank in (0, 1):
        batches = [json.loads(line) for line in (log / f"rank{rank}-of2.jsonl").read_text().splitlines()]
        assert [len(b) for b in batches] == [32] * 5  # one epoch: 160 images per rank, in full batches
        shards[rank] = [i for b in batches for i in b]
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(range(320))
