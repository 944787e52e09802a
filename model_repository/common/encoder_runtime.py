"""Runs an exported encoder inside a Python-backend model: the artifact the exporter chose (the
`artifact` parameter): the image tower as OpenVINO IR (model.xml) where it measured faster there,
the compiled AOTInductor package (model.pt2), or the TorchScript model.pt. Imported only by the two
encoder models, so numpy-only stubs never load torch.

A package holds machine code for the instruction set it was compiled on (the `compiled_for`
parameter, torch's capability name); on a CPU below it the model refuses to load with a message
saying what to do, instead of dying on an illegal instruction mid-request. An OpenVINO tower was
timed and gated on its export machine's class and is held to the same rule. An int8 tower with
full-range activations refuses a CPU whose int8 kernels saturate on them (int8_kernels.py). Which
path runs, and why, goes to Triton's log at load.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import compiled_package
import int8_kernels
import numpy as np
import openvino_tower
import torch
import triton_python_backend_utils as pb_utils
from capability import runs_code_for
from numpy.typing import NDArray
from triton_model_utils import cancelled, model_config, parameter

from clip_contract import artifacts, parameters


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: nothing to do
        return None


_TRIM = _malloc_trim()


def release_free_heap() -> None:
    """Give freed activation memory back to the OS: glibc keeps it otherwise, and a ViT-B/16 stub
    would sit on the freed activations of its largest batch (the benchmark's memory rows show the
    difference) for a small part of a batch's time."""
    if _TRIM is not None:
        _TRIM(0)


def share_weights(module: torch.jit.ScriptModule, weights: Path) -> None:
    """Point every parameter and buffer at a read-only memory map of weights.pt, freeing the copy
    torch.jit.load made: the instances of a tower then share one copy in the page cache instead of
    holding one each. Refuses a file that does not match."""
    mapped = torch.load(weights, mmap=True, weights_only=True)
    tensors = [*module.named_parameters(), *module.named_buffers()]
    for name, tensor in tensors:
        source = mapped.get(name)
        if source is None or source.shape != tensor.shape or source.dtype != tensor.dtype:
            raise pb_utils.TritonModelException(f"{weights} does not match model.pt at {name}")
    with torch.no_grad():
        for name, tensor in tensors:
            tensor.set_(mapped[name])


class Encoder:
    """Subclasses name their input and output tensors; `load` and `run_*` do the rest."""

    input_name: str
    output_name: str

    def load(self, args: dict[str, str]) -> None:
        config = model_config(args)
        # Threads per instance are a setting: instances x threads above the core count thrash.
        torch.set_num_threads(int(parameter(config, parameters.TORCH_THREADS)))
        if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
            self.device = torch.device("cuda", int(args.get("model_instance_device_id", "0")))
        else:
            self.device = torch.device("cpu")
        folder = Path(args["model_repository"]) / args["model_version"]
        name = args["model_name"]
        artifact = parameter(config, parameters.ARTIFACT, "torchscript")
        if artifact in ("aoti", "openvino"):
            compiled_for = parameter(config, parameters.COMPILED_FOR, "")
            here = str(torch.backends.cpu.get_cpu_capability())
            if not runs_code_for(compiled_for, here):
                made = "model.pt2 was compiled" if artifact == "aoti" else "model.xml was timed and gated"
                raise pb_utils.TritonModelException(
                    f"{name}: {made} for {compiled_for} and this CPU is {here}; export the repository on a "
                    f"machine of this class, or with --compile none (TorchScript runs anywhere)"
                )
            full_range = parameter(config, parameters.INT8_ACTIVATIONS, "") == "full-range"
            if full_range and not int8_kernels.full_range_is_exact():
                raise pb_utils.TritonModelException(
                    f"{name}: the int8 tower was quantized with full-range activations for VNNI kernels, and this "
                    f"CPU's int8 kernels saturate on them (no VNNI): its embeddings would be wrong. Export the "
                    f"repository on a machine of this class (it takes 7-bit activations here), or export fp32"
                )
        if artifact == "openvino":
            precision = parameter(config, parameters.OPENVINO_PRECISION, "f32")
            self.numpy_module: Any = openvino_tower.compile_model(
                folder / artifacts.OPENVINO, torch.get_num_threads(), precision
            )
            made = f"{precision}; made for {compiled_for}, this CPU {here}"
            path = f"OpenVINO {openvino_tower.version()} IR model.xml ({made})"
        elif artifact == "aoti":
            self.module: Any = compiled_package.load(folder / artifacts.COMPILED)
            beside = artifacts.compiled_weights(folder / artifacts.COMPILED)
            weights = f"weights memory-mapped from {beside.name}" if beside.is_file() else "weights inside"
            path = f"AOTInductor package model.pt2 ({weights}; compiled for {compiled_for}, this CPU {here})"
        else:
            script = torch.jit.load(str(folder / artifacts.TORCHSCRIPT), map_location=self.device).eval()  # type: ignore[no-untyped-call]
            weights_file = folder / artifacts.TORCHSCRIPT_WEIGHTS
            if self.device.type == "cpu" and weights_file.is_file():
                share_weights(script, weights_file)
            self.module = script
            path = "TorchScript model.pt"
        threads = torch.get_num_threads()
        why = parameter(config, parameters.EXECUTION, "")
        pb_utils.Logger.log_info(f"{name}: running {path} on {self.device}, {threads} threads; {why}")

    numpy_module: Any = None  # the OpenVINO tower: numpy in, numpy out

    def _encode(self, batch: NDArray[Any]) -> NDArray[Any]:
        if self.numpy_module is not None:
            encoded: NDArray[Any] = self.numpy_module(batch)
            return encoded
        with torch.inference_mode():
            embeds = self.module(torch.from_numpy(batch).to(self.device))
        result: NDArray[Any] = embeds.float().cpu().numpy()
        if self.device.type == "cpu":
            release_free_heap()
        return result

    def run_batched(self, requests: list[Any]) -> list[Any]:
        """One forward pass for every live request the dynamic batcher gathered."""
        live = [request for request in requests if not request.is_cancelled()]
        if not live:
            return [cancelled() for _ in requests]
        inputs = [pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy() for request in live]
        outputs = iter(np.split(self._encode(np.concatenate(inputs)), np.cumsum([len(x) for x in inputs])[:-1]))
        live_ids = {id(request) for request in live}
        return [
            pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, next(outputs))])
            if id(request) in live_ids
            else cancelled()
            for request in requests
        ]
