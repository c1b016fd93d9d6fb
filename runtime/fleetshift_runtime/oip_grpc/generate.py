"""Regenerate ``grpc_predict_v2_pb2.py`` and its ``.pyi`` from ``grpc_predict_v2.proto``.

``python -m fleetshift_runtime.oip_grpc.generate`` (needs ``grpcio-tools``, a development
tool: the runtime itself needs only ``protobuf`` and ``grpcio``). Three changes are made to
protoc's output, so the checked-in module works with any ``protobuf`` from 5.26 on and
beside any other copy of the protocol:

- the protobuf runtime version check is dropped: protoc pins the module to its own
  protobuf release, while the module only builds messages from a serialized descriptor,
  which every release since 5.26 reads the same way;
- the messages are built in a descriptor pool of their own, not the process's default
  one: ``tritonclient.grpc`` (or a user's copy of KServe's proto) defines the same
  ``inference.*`` names, and two definitions of a name in one pool fail at import;
- a header tells ruff and mypy to leave the generated text alone (``protobuf`` ships
  no type stubs, so its ``Message`` is ``Any`` to mypy).

The header also names the grpcio-tools release that wrote them.
``tests/runtime/test_oip_grpc.py`` regenerates them and checks the result is what is
checked in, when that release of ``grpcio-tools`` is installed (another release may word
the same messages differently, so the test skips).
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "grpc_predict_v2.proto"
OUTPUTS = ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2.pyi")
HEADER = (
    "# ruff: noqa\n# fmt: off\n# mypy: ignore-errors\n"
    "# Generated from grpc_predict_v2.proto by fleetshift_runtime.oip_grpc.generate\n"
    "# with grpcio-tools {version}.\n"
)
_TOOLS_VERSION = re.compile(r"^# with grpcio-tools (\S+)\.$", re.MULTILINE)


def tools_version() -> str:
    """The installed grpcio-tools release ("" when it is not installed)."""
    try:
        return importlib.metadata.version("grpcio-tools")
    except importlib.metadata.PackageNotFoundError:
        return ""


def checked_in_version() -> str:
    """The grpcio-tools release the checked-in module was generated with: another release
    may write the same messages in other words, so only that release's output is compared."""
    found = _TOOLS_VERSION.search((HERE / OUTPUTS[0]).read_text())
    return found.group(1) if found else ""


_VERSION_CHECK = re.compile(
    r"^from google\.protobuf import runtime_version as _runtime_version\n"
    r"|^_runtime_version\.ValidateProtobufRuntimeVersion\(\n(?:.*\n)*?\)\n"
    r"|^# Protobuf Python Version: .*\n",
    re.MULTILINE,
)


def _adapt(name: str, text: str) -> str:
    if name.endswith(".py"):
        text = _VERSION_CHECK.sub("", text)
        text = text.replace(
            "_descriptor_pool.Default().AddSerializedFile(",
            "_descriptor_pool.DescriptorPool().AddSerializedFile(",
        )
    return HEADER.format(version=tools_version()) + text


def generate() -> dict[str, str]:
    """The generated files' names and texts (nothing is written)."""
    from grpc_tools import protoc  # noqa: PLC0415 - dev only (not installed by CI: untyped anyway)

    with tempfile.TemporaryDirectory() as out:
        code = protoc.main(
            ["protoc", f"-I{HERE}", f"--python_out={out}", f"--pyi_out={out}", str(HERE / PROTO)]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}")
        return {name: _adapt(name, (Path(out) / name).read_text()) for name in OUTPUTS}


def main() -> int:
    """Write the generated files beside the proto."""
    for name, text in generate().items():
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
