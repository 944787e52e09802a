"""Locate the tritonserver binary shipped in the `nvidia-pytriton` wheel and prepare what it needs.

Recipe (docs/operations.md, "Export and launch by hand"): the Python backend and the stub for this
interpreter's version are copied into a backends folder of our own; the bundled shared libraries go on LD_LIBRARY_PATH,
after this interpreter's own libpython; this venv's bin/ goes first on PATH, because the stub
finds `python3` there and through its pyvenv.cfg sees the venv's site-packages (PYTHONPATH
alone is ignored by the stub).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from configuration import threads


class RuntimeMissing(RuntimeError):
    """The Triton runtime cannot be found or prepared; the message says what to install."""


@dataclass(frozen=True)
class TritonRuntime:
    binary: Path
    backend_dir: Path
    cache_dir: Path
    library_dir: Path

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [_interpreter_libdir(), str(self.library_dir), env.get("LD_LIBRARY_PATH", "")])
        )
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        threads.pin(env)  # the stubs' numpy: one BLAS thread (configuration.threads says why)
        return env


def _interpreter_libdir() -> str:
    """The folder of this interpreter's own libpython, when it was built shared.

    The stub links `libpython3.X.so.1.0` and takes the standard library of the `python3` on PATH.
    A libpython of another patch release (Debian's 3.11.2 beside a pyenv 3.11.7) then fails on
    extension modules such as _ssl ("undefined symbol: _PyModule_Add"), so ours must win.
    """
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    library = sysconfig.get_config_var("INSTSONAME") or ""
    return libdir if library and (Path(libdir) / library).is_file() else ""


def locate(work_dir: Path) -> TritonRuntime:
    """Find the wheel's server and build `work_dir/backends/python` for this Python version."""
    try:
        import pytriton
    except ImportError as error:
        raise RuntimeMissing("the nvidia-pytriton wheel is not installed (pip install nvidia-pytriton)") from error
    package = Path(pytriton.__file__).parent / "tritonserver"
    library_dir = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = package / "python_backend_stubs" / version / "triton_python_backend_stub"
    binary = package / "bin" / "tritonserver"
    for required in (binary, stub, package / "backends" / "python"):
        if not required.exists():
            raise RuntimeMissing(f"{required} is missing from the nvidia-pytriton wheel")
    backend_dir = work_dir / "backends"
    python_backend = backend_dir / "python"
    if not (python_backend / "triton_python_backend_stub").exists():
        shutil.rmtree(python_backend, ignore_errors=True)
        shutil.copytree(package / "backends" / "python", python_backend, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(stub, python_backend / "triton_python_backend_stub")
    return TritonRuntime(binary=binary, backend_dir=backend_dir, cache_dir=package / "caches", library_dir=library_dir)
