"""The arithmetic a run computes in: bfloat16 autocast where the device has bf16 units, fp32 elsewhere.

bf16 autocast pays where convolutions and matmuls run on bf16 hardware: CUDA GPUs from Ampere on,
and x86 CPUs with AVX512-BF16 (Cooper Lake, Zen 4 and later) or AMX (Sapphire Rapids and later).
Elsewhere oneDNN emulates it with fp32 instructions and conversions: a training step of
``vgg_airbench`` runs about 10x slower than in fp32 on an AVX2 CPU. ``amp="auto"`` chooses for the
device; True and False force bf16 and fp32.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Literal

import torch

Amp = bool | Literal["auto"]


@dataclass(frozen=True)
class Precision:
    """A run's resolved precision, as config.json and summary.json record it."""
    amp: bool             # bfloat16 autocast on
    reason: str           # one line: the choice and why
    cpu_capability: str   # torch.backends.cpu.get_cpu_capability(): the instruction set of ATen's kernels
    device: str

    @property
    def dtype(self) -> str:
        return "bfloat16" if self.amp else "float32"

    def record(self) -> dict[str, Any]:
        return dict(amp=self.amp, dtype=self.dtype, reason=self.reason, cpu_capability=self.cpu_capability,
                    device=self.device)


def native_bf16(device: str | torch.device) -> tuple[bool, str]:
    """(whether ``device`` computes bf16 natively, the reason in words)."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False, "torch sees no CUDA GPU here"
        name = torch.cuda.get_device_name(device)
        with torch.cuda.device(device):
            if torch.cuda.is_bf16_supported(including_emulation=False):
                return True, f"{name} computes bf16 natively"
        return False, f"{name} has no native bf16; bf16 would be emulated"
    if device.type != "cpu":
        return False, f"no native bf16 known for device type {device.type}"
    # mkldnn's own bf16 flag is also true on plain AVX-512, where bf16 is emulated: the CPU's
    # flags come first; mkldnn's then says whether ONEDNN_MAX_CPU_ISA lets oneDNN use them.
    found = "AMX" if torch.cpu._is_amx_tile_supported() else (
        "AVX512-BF16" if torch.cpu._is_avx512_bf16_supported() else None)
    if found is None:
        return False, (f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16; bf16 would be "
                       f"emulated, ~10x slower")
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False, f"this CPU has {found}, but oneDNN is held below it (ONEDNN_MAX_CPU_ISA); bf16 would be emulated"
    return True, f"this CPU has {found} (native bf16)"


def resolve_precision(amp: Amp, device: str | torch.device, recorded: dict[str, Any] | None = None) -> Precision:
    """bf16 autocast or fp32 for ``amp`` (True, False or "auto": bf16 where ``device`` has it
    natively) on ``device``; with ``recorded`` (a run's ``Precision.record()``), that run's choice,
    whatever this machine has, so that a resumed run keeps its arithmetic. bf16 where the device
    would emulate it still runs, with a warning."""
    if recorded is None and not (isinstance(amp, bool) or amp == "auto"):
        raise ValueError(f"amp must be True, False or 'auto', got {amp!r}")
    native, why = native_bf16(device)
    if recorded is not None:
        use = bool(recorded["amp"])
        reason = f"{'bf16 autocast' if use else 'fp32'}, as recorded when the run started ({recorded['reason']})"
    elif amp == "auto":
        use = native
        reason = f"{'bf16 autocast' if use else 'fp32'}: {why}"
    else:
        use = amp
        reason = f"{'bf16 autocast' if use else 'fp32'}: asked for ({'--amp' if use else '--no-amp'})"
        if use and not native:
            reason += f"; {why}"
    if use and not native:
        how = "the run started in bf16 and keeps it" if recorded else "--amp auto or --no-amp train in fp32"
        warnings.warn(f"bf16 autocast on {device}: {why} ({how})", stacklevel=2)
    return Precision(use, reason, torch.backends.cpu.get_cpu_capability(), str(device))
