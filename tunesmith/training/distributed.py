"""How a run is spread over processes: the setting (:class:`Distributed`), and which process
this is in a run trained on several (torchrun's environment; the recipes ask it so that only
rank 0 writes the run's files). Launching: training/launch.py."""
from __future__ import annotations

import os
from dataclasses import dataclass

from tunesmith.errors import TunesmithError


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Distributed:
    """How many processes train one run, through torchrun: ``nproc`` per machine (one per GPU,
    or per CPU core group), ``nnodes`` machines meeting at ``rdzv_endpoint``; a multi-machine
    run needs the same ``run_id`` on every machine."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int | None = None
    rdzv_endpoint: str | None = None
    run_id: str | None = None

    @property
    def enabled(self) -> bool:
        return self.nproc > 1 or self.nnodes > 1

    def check(self) -> None:
        """Refuse an incomplete multi-machine setting before any directory is made."""
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise TunesmithError("training on several machines needs --rdzv-endpoint HOST:PORT "
                                 "(the same on every machine)")
