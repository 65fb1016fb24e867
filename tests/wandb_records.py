"""What an offline W&B run was initialised with, read back from its own `run-<id>.wandb` file.

The file is W&B's record log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks of
chunks (crc32 4 bytes, length 2, type 1: full, first, middle, last), each record a protobuf
`Record`. wandb 0.31 ships the protobuf classes but no reader, so the tests read it here (a dozen
lines) instead of trusting what sublim passed to wandb.init.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path):
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, buf = HEADER, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if n == 0 and kind == 0:
            pos += left
            continue
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):  # full, or the last chunk of a record
            r = pb.Record()
            r.ParseFromString(buf)
            buf = b""
            yield r


def run_record(run_dir: Path) -> dict:
    """{tags, group, job_type, name, config} of the offline run in `run_dir` (offline-run-*)."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    for r in records(path):
        if r.WhichOneof("record_type") == "run":
            run = r.run
            return {"tags": list(run.tags), "group": run.run_group, "job_type": run.job_type,
                    "name": run.display_name,
                    "config": {u.key: json.loads(u.value_json) for u in run.config.update}}
    raise AssertionError(f"no run record in {path}")
