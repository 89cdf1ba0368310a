"""st_io.py - minimal safetensors reader/writer for pollen's Python tools (no safetensors package).

Format (same as proto/safetensors.h): 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then
the data section, row-major little-endian. The header is padded with spaces to a multiple of 8
so every tensor starts 8-byte aligned, as the official writer does.
"""
import json
import os
import struct
import sys

import numpy as np
import torch

_TO_ST = {torch.float32: "F32", torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
          torch.uint8: "U8", torch.bfloat16: "BF16", torch.float16: "F16"}
_FROM_ST = {v: k for k, v in _TO_ST.items()}
_SIZE = {"F32": 4, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "BF16": 2, "F16": 2}

assert sys.byteorder == "little", "safetensors data is little-endian; this tool assumes a little-endian host"


def save(path, tensors, metadata=None):
    """tensors: ordered {name: torch.Tensor}; metadata: {str: str}. Atomic: temp, fsync, rename."""
    header, blobs, off = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype not in _TO_ST:
            raise ValueError(f"{name}: dtype {t.dtype} not supported")
        raw = t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": _TO_ST[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    js = json.dumps(header, separators=(",", ":")).encode()
    js += b" " * ((8 - (len(js) % 8)) % 8)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path):
    """Returns ({name: torch.Tensor}, metadata). Raises ValueError naming the file on bad input."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100 * 1024 * 1024:
        raise ValueError(f"{path}: header length {n} is impossible for a {len(data)}-byte file")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: header is not valid JSON: {e}")
    body = memoryview(data)[8 + n:]
    meta = header.pop("__metadata__", {}) or {}
    out, spans = {}, []
    for name, info in header.items():
        dt = info.get("dtype")
        if dt not in _FROM_ST:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {dt}")
        shape = info["shape"]
        b, e = info["data_offsets"]
        numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if not (0 <= b <= e <= len(body)) or e - b != numel * _SIZE[dt]:
            raise ValueError(f"{path}: tensor {name} has bad data_offsets [{b}, {e}]")
        spans.append((b, e, name))
        raw = bytes(body[b:e])
        if dt == "BF16":
            t = torch.frombuffer(bytearray(raw), dtype=torch.int16).view(torch.bfloat16) if raw else torch.empty(0, dtype=torch.bfloat16)
        else:
            t = torch.from_numpy(np.frombuffer(raw, dtype=_np_dtype(dt)).copy())
        out[name] = t.reshape(shape)
    spans.sort()
    at = 0
    for b, e, name in spans:
        if b != at:
            raise ValueError(f"{path}: tensor {name} overlaps or leaves a gap at offset {b}")
        at = e
    if at != len(body):
        raise ValueError(f"{path}: {len(body) - at} trailing bytes not described by the header")
    return out, meta


def _np_dtype(dt):
    return {"F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "u1", "F16": "<f2"}[dt]
