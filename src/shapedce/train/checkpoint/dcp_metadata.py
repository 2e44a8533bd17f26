"""The metadata of a sharded (DCP) checkpoint as JSON, so that loading never unpickles a file.

    from shapedce.train.checkpoint.dcp_metadata import write_metadata_json, read_metadata_json
    write_metadata_json(dcp.save(state, checkpoint_id=path), path)   # beside DCP's own .metadata
    metadata = read_metadata_json(path)                               # what the safe reader hands DCP

`torch.distributed.checkpoint` stores its `Metadata` (tensor shapes, chunks, file offsets) as a
pickle, `.metadata`, which its reader `pickle.load`s: a crafted file would run code. We write the
same object as `metadata.json` and read only that. Decoding builds nothing but the DCP metadata
dataclasses named in `CLASSES` (by their fields), torch.Size, torch dtypes / layouts / memory
formats, tuples and dicts; any other tag is refused with one line. A checkpoint without
`metadata.json` (written before this file existed) is refused, never unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import metadata as dcp_md
from torch.distributed.checkpoint.filesystem import _StorageInfo

from ...errors import UserError

FILE = "metadata.json"
CLASSES = {
    cls.__name__: cls
    for cls in (
        dcp_md.Metadata,
        dcp_md.TensorStorageMetadata,
        dcp_md.BytesStorageMetadata,
        dcp_md.ChunkStorageMetadata,
        dcp_md.TensorProperties,
        dcp_md.MetadataIndex,
        dcp_md.StorageMeta,
        _StorageInfo,
    )
}
"""The only classes a metadata.json may name."""
_TORCH_KINDS = (torch.dtype, torch.layout, torch.memory_format)


def _encode(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Size):
        return {"size": list(obj)}
    if isinstance(obj, _TORCH_KINDS):
        return {"torch": str(obj).removeprefix("torch.")}
    if isinstance(obj, os.PathLike):
        return {"path": os.fspath(obj)}
    if isinstance(obj, tuple):
        return {"tuple": [_encode(v) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v) for v in obj]
    if isinstance(obj, dict):
        return {"dict": [[_encode(k), _encode(v)] for k, v in obj.items()]}
    name = type(obj).__name__
    if dataclasses.is_dataclass(obj) and CLASSES.get(name) is type(obj):
        return {
            "class": name,
            "fields": {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)},
        }
    raise TypeError(f"checkpoint metadata holds a {name}, which metadata.json cannot store")


def _decode(obj: Any, where: Path) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [_decode(v, where) for v in obj]
    if not isinstance(obj, dict) or len(obj) not in (1, 2):
        raise UserError(f"{where}: not checkpoint metadata (unexpected {str(obj)[:60]!r})")
    if "size" in obj:
        return torch.Size(int(v) for v in obj["size"])
    if "torch" in obj:
        value = getattr(torch, str(obj["torch"]), None)
        if not isinstance(value, _TORCH_KINDS):
            raise UserError(
                f"{where}: refusing torch.{obj['torch']}, which is no dtype, layout or memory format"
            )
        return value
    if "path" in obj:
        return str(obj["path"])
    if "tuple" in obj:
        return tuple(_decode(v, where) for v in obj["tuple"])
    if "dict" in obj:
        return {_decode(k, where): _decode(v, where) for k, v in obj["dict"]}
    if "class" in obj:
        cls = CLASSES.get(obj["class"])
        if cls is None:
            raise UserError(
                f"{where}: refusing to build {obj['class']!r}, which checkpoint metadata never holds"
            )
        return cls(**{k: _decode(v, where) for k, v in obj.get("fields", {}).items()})
    raise UserError(f"{where}: not checkpoint metadata (unexpected {str(obj)[:60]!r})")


def write_metadata_json(metadata: dcp_md.Metadata, dcp_dir: Path) -> None:
    """Write `metadata` (what `dcp.save` returned) as DCP_DIR/metadata.json."""
    (Path(dcp_dir) / FILE).write_text(json.dumps(_encode(metadata)))


def read_metadata_json(dcp_dir: Path) -> dcp_md.Metadata:
    """The metadata of DCP_DIR from metadata.json, or a one-line UserError; never unpickles."""
    path = Path(dcp_dir) / FILE
    if not path.is_file():
        raise UserError(
            f"{path} is missing; a sharded checkpoint without it is not loaded (its .metadata "
            "is a pickle, which loading never reads)"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as err:
        raise UserError(f"{path} is corrupt ({type(err).__name__})") from None
    try:
        metadata = _decode(data, path)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - fields that do not fit the classes: a crafted or garbled file
        raise UserError(f"{path} is not checkpoint metadata ({type(err).__name__})") from None
    if not isinstance(metadata, dcp_md.Metadata):
        raise UserError(f"{path} does not hold checkpoint metadata")
    return metadata
