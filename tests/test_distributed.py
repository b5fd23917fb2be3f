"""A real two-process run: torch.distributed (gloo, CPU), each rank iterating its own
SmartBatchSampler; together they must cover every index exactly once, in equal steps."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import helpers

REPO = Path(helpers.__file__).resolve().parent
WORLD_SIZE = 2
N, EPOCHS = 301, 2  # 301: an odd count, so the last short batch and an uneven split happen

WORKER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import torch.distributed as dist
    import helpers

    dist.init_process_group("gloo", init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    lengths = np.random.default_rng(0).integers(1, 200, {n})
    result = {{}}
    for mode, kwargs in [("batch_size", dict(batch_size=16)),
                         ("max_tokens", dict(batch_size=None, max_tokens=1000))]:
        sampler = helpers.SmartBatchSampler(lengths, seed=42, num_replicas=world, rank=rank, **kwargs)
        for epoch in range({epochs}):
            sampler.set_epoch(epoch)
            mine = list(sampler)
            gathered = [None] * world
            dist.all_gather_object(gathered, mine)
            result[f"{{mode}}/{{epoch}}"] = gathered
    with open(os.path.join(sys.argv[1], f"rank{{rank}}.json"), "w") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()
""").format(n=N, epochs=EPOCHS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(tmp_path: Path) -> list[subprocess.CompletedProcess]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()),
               WORLD_SIZE=str(WORLD_SIZE), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"  # stay on the loopback interface
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path)],
                              env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(WORLD_SIZE)]
    results = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("the distributed run hung")
        results.append((proc.returncode, out))
    return results


def test_two_gloo_ranks_cover_every_index_once(tmp_path):
    pytest.importorskip("torch.distributed")
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    results = run_ranks(tmp_path)
    if any(code for code, _ in results) and "Address already in use" in "".join(o for _, o in results):
        results = run_ranks(tmp_path)  # the free port was taken in between: once more
    for rank, (code, out) in enumerate(results):
        assert code == 0, f"rank {rank} failed:\n{out}"

    views = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    assert views[0] == views[1]  # all_gather_object gave both ranks the same picture
    lengths = np.random.default_rng(0).integers(1, 200, N)
    for key, gathered in views[0].items():
        counts = [len(batches) for batches in gathered]
        assert len(set(counts)) == 1, f"{key}: unequal steps per rank {counts}"
        everything = sorted(i for batches in gathered for b in batches for i in b)
        assert everything == list(range(N)), f"{key}: not every index exactly once"
        if key.startswith("max_tokens"):
            assert all(len(b) * lengths[b].max() <= 1000 for batches in gathered for b in batches)
        # each rank saw what a local sampler for that rank gives
        mode, epoch = key.split("/")
        kwargs = dict(batch_size=16) if mode == "batch_size" else dict(batch_size=None, max_tokens=1000)
        for rank, batches in enumerate(gathered):
            local = helpers.SmartBatchSampler(lengths, seed=42, num_replicas=WORLD_SIZE, rank=rank,
                                              **kwargs)
            local.set_epoch(int(epoch))
            assert batches == list(local)
    # a new epoch, a new arrangement
    assert views[0]["batch_size/0"] != views[0]["batch_size/1"]
