"""Memory: estimate what a run needs before allocating anything, and refuse what cannot fit.

The estimate counts the tensors that dominate a run, in bytes: the parameters with Adam's two moments and
their gradient, the float64 copies made at initialisation, one training batch with the activations that
autograd keeps for the backward pass, the held-out validation batch, and the pilot paths. It is an estimate
(within a factor of about two), used only to refuse runs that clearly cannot fit: a run needing more than
the memory available is refused with :class:`ResourceError` (the command line's exit code 2) before any
allocation.
"""

from __future__ import annotations

import os

import torch

from .errors import ConfigError

__all__ = ["ResourceError", "available_bytes", "check_memory", "format_bytes"]


class ResourceError(ConfigError):
    """The run needs more memory than the device has."""


def format_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"


def available_bytes(device: torch.device) -> tuple[float, str]:
    """Memory available to the run on ``device`` and where the figure comes from."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return float(free), f"free on {device} (of {format_bytes(total)})"
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")), "available physical pages"
    except (ValueError, OSError, AttributeError):  # pragma: no cover - platforms without sysconf
        return float("inf"), "unknown"


def check_memory(needed: float, device: torch.device, what: str) -> None:
    """Raise :class:`ResourceError` when ``needed`` bytes exceed what ``device`` has available."""
    have, source = available_bytes(device)
    if needed > have:
        raise ResourceError(
            f"{what}: this run needs about {format_bytes(needed)} of memory, and {device} has "
            f"{format_bytes(have)} available ({source}); nothing was allocated. Lower the dimension, "
            f"train.batch_size, method.num_steps or the network width (method.hidden), or run on a larger machine.")
