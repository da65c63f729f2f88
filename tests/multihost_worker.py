"""One process of a multi-process run on this machine (CPU backend, loopback), or the same run
in a single process, for ``tests/test_multihost.py``::

    python tests/multihost_worker.py WORKDIR PORT NUM_PROCESSES PROCESS_ID

With NUM_PROCESSES > 1 each process owns two fake CPU devices, the processes join one runtime
(``jax.distributed`` over 127.0.0.1:PORT) and train on the mesh over all their devices; with 1
the process trains alone on one device (no mesh, PORT unused). The run is ``experiments.run``'s:
the trainer with its checkpoints, early stopping and final test; process 0 writes the files.
"""

from __future__ import annotations

import os
import sys

LOCAL_DEVICES = 2 if int(sys.argv[3]) > 1 else 1
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={LOCAL_DEVICES}"

import jax  # noqa: E402

from darec_jax import config as config_lib  # noqa: E402
from darec_jax.parallel import initialize_distributed  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.toy import random_dataset  # noqa: E402


def main(workdir: str, port: int, num_processes: int, process_id: int) -> None:
    if num_processes > 1:
        initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id)
    assert jax.process_count() == num_processes
    assert jax.device_count() == LOCAL_DEVICES * num_processes, jax.devices()
    from darec_jax.train.trainer import train_and_evaluate

    cfg = config_lib.build_config(
        "synthetic",
        "lightgcn",
        "none",
        {
            "model.embedding_size": 16,
            "model.layer_num": 2,
            "train.batch_size": 256,
            "train.epochs": 5,
            "train.test_step": 2,
            "train.seed": 3,
            "eval.user_chunk": 64,
            # Across the two processes: a 2 x 2 mesh whose model axis splits the user and item
            # tables by rows (so each process holds half of each table, and checkpoints save it).
            **({"mesh.model": 2} if num_processes > 1 else {}),
        },
    )
    data = random_dataset(n_users=256, n_items=192, per_user=8)
    train_and_evaluate(cfg, workdir, data=data, progress=False, plots=False, log=print)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
