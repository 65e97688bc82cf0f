"""Regenerate the Python modules of Verso's extension protos (run from anywhere):

    python protos/generate.py            # writes protos/*_pb2.py, *_pb2_grpc.py, *_pb2.pyi
    python protos/generate.py --out DIR  # writes them under DIR/protos/ instead (the test compares)

The generated files are checked in; tests/unit/test_protos.py fails when they differ from a
fresh generation. Only Verso's own ``.proto`` files live here: TF Serving's protocol comes from
the tensorflow-serving-api package and is never generated a second time.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate(out: str = ROOT) -> list[str]:
    from grpc_tools import protoc

    os.makedirs(os.path.join(out, "protos"), exist_ok=True)
    sources = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "protos", "*.proto")))
    include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
    args = ["protoc", f"-I{ROOT}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *sources]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return sources


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=ROOT)
    print("generated from", ", ".join(generate(ap.parse_args().out)), file=sys.stderr)
