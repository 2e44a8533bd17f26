"""Load a Hugging Face folder (config, model, tokenizer) without ever running code from it.

    from shapedce.data.pretrained import load_auto_config, load_causal_lm, load_auto_tokenizer
    config = load_auto_config("runs/x/final")          # UserError if the folder asks for its own code
    model = load_causal_lm("runs/x/final", config=config)
    tok = load_auto_tokenizer("runs/x/final")

    python -m pytest -q tests/test_pretrained.py       # a hostile folder through every command

Every `from_pretrained` of the project goes through this module. Before transformers sees the folder,
its small JSON files are read as plain data (depth- and size-limited, `data/userjson.py`) and the
folder is refused, with one line naming the file and the key, when
  - any of them holds `auto_map` or `custom_pipelines` (code shipped in the folder);
  - `config.json` has a `model_type` the installed transformers does not know;
  - a `tokenizer_class` (in tokenizer_config.json or config.json) is not a transformers class;
  - an `attn_implementation` names a hub kernel ("org/repo"): code fetched from outside transformers.
Then transformers is called with `trust_remote_code=False` and `local_files_only=True`: it never
asks "Do you wish to run the custom code?" (the prompt a `yes |` pipe would answer) and never goes
to the network. A path that is not a local folder is refused (no hub names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import UserError
from .userjson import parse_json_bytes

CODE_KEYS = ("auto_map", "custom_pipelines")
"""Keys with which a folder asks transformers to import Python files it ships."""
ATTN_KEYS = ("attn_implementation", "_attn_implementation")
"""Keys naming the attention code; a hub kernel ("kernels-community/...") would be downloaded and run."""
MAX_JSON_BYTES = 64 << 20
"""Largest small JSON file read for the check; tokenizer.json (large, no code keys) is not read."""
SKIPPED = {"tokenizer.json", "model.safetensors.index.json"}
"""JSON files transformers parses as data only (vocabularies, weight maps): not scanned."""

__all__ = [
    "available_memory",
    "check_fits_memory",
    "check_model_folder",
    "load_auto_config",
    "load_auto_tokenizer",
    "load_causal_lm",
    "model_from_config",
]


def _read(file: Path) -> Any:
    size = file.stat().st_size
    if size > MAX_JSON_BYTES:
        raise UserError(f"{file} is {size} bytes; a model folder's settings file is at most {MAX_JSON_BYTES}")
    return parse_json_bytes(file.read_bytes(), where=str(file))


def _find_key(value: Any, keys: tuple[str, ...], path: str = "") -> str | None:
    """Dotted path of the first key of `keys` anywhere in nested dicts/lists (the parser bounds depth)."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if key in keys:
                    return f"{where}{key}"
                stack.append((item, f"{where}{key}."))
        elif isinstance(node, list):
            stack.extend((item, f"{where}{i}.") for i, item in enumerate(node))
    return None


def _hub_kernel(value: Any) -> tuple[str, str] | None:
    """(key path, value) of an `attn_implementation` naming a hub kernel ("org/repo", "repo:fn")."""
    stack = [(value, "")]
    while stack:
        node, where = stack.pop()
        if isinstance(node, dict):
            for key, item in node.items():
                if key in ATTN_KEYS and isinstance(item, str) and ("/" in item or ":" in item):
                    return f"{where}{key}", item
                stack.append((item, f"{where}{key}."))
        elif isinstance(node, list):
            stack.extend((item, f"{where}{i}.") for i, item in enumerate(node))
    return None


def _known_tokenizer_class(name: str) -> bool:
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    if name in ("PreTrainedTokenizerFast", "TokenizersBackend"):
        return True
    for candidate in (name, name.removesuffix("Fast"), name + "Fast"):
        try:
            cls = tokenizer_class_from_name(candidate)
        except Exception:  # noqa: BLE001 - a name transformers cannot resolve is simply unknown
            cls = None
        if cls is not None and getattr(cls, "__module__", "").startswith("transformers."):
            return True
    return False


def check_model_folder(path: str | Path) -> Path:
    """The folder as a Path, after refusing (one UserError line) anything that would make transformers
    import code from it; see the module docstring."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a local model folder (hub names are not loaded)")
    for file in sorted(folder.glob("*.json")):
        if file.name in SKIPPED or not file.is_file():
            continue
        data = _read(file)
        key = _find_key(data, CODE_KEYS)
        if key is not None:
            raise UserError(
                f"{file} asks to run code shipped in the folder (key '{key}'); refusing: "
                "shapedce never loads remote code (remove the key to use transformers' own classes)"
            )
        kernel = _hub_kernel(data)
        if kernel is not None:
            raise UserError(
                f"{file}: key '{kernel[0]}' asks for the attention kernel {kernel[1]!r} from the hub "
                "(code from outside transformers); refusing: use eager, sdpa or flash_attention_2"
            )
        if not isinstance(data, dict):
            continue
        if file.name == "config.json":
            model_type = data.get("model_type")
            if model_type is not None and not (
                isinstance(model_type, str) and model_type in CONFIG_MAPPING_NAMES
            ):
                raise UserError(
                    f"{file}: key 'model_type' is {model_type!r}, which the installed transformers does "
                    "not know; refusing (it would need code from the folder)"
                )
        if file.name in ("config.json", "tokenizer_config.json"):
            name = data.get("tokenizer_class")
            if name is not None and not (isinstance(name, str) and _known_tokenizer_class(name)):
                raise UserError(
                    f"{file}: key 'tokenizer_class' is {name!r}, not a transformers tokenizer class; "
                    "refusing (it would need code from the folder)"
                )
    return folder


_SAFE = {"trust_remote_code": False, "local_files_only": True}


def load_auto_config(path: str | Path, **kwargs: Any):
    """`AutoConfig.from_pretrained` of a checked local folder; a load failure is one line."""
    from transformers import AutoConfig

    folder = check_model_folder(path)
    try:
        return AutoConfig.from_pretrained(str(folder), **kwargs, **_SAFE)
    except Exception as err:  # noqa: BLE001 - a missing or corrupt config.json
        raise UserError(f"cannot read the model config in {folder}: {_first_line(err)}") from None


def load_causal_lm(path: str | Path, **kwargs: Any):
    """`AutoModelForCausalLM.from_pretrained` of a checked local folder; a load failure is one line."""
    from transformers import AutoModelForCausalLM

    folder = check_model_folder(path)
    config = kwargs.get("config") or load_auto_config(folder)
    check_fits_memory(config, str(folder / "config.json"))
    try:
        return AutoModelForCausalLM.from_pretrained(str(folder), **kwargs, **_SAFE)
    except Exception as err:  # noqa: BLE001 - missing or corrupt weights
        raise UserError(f"cannot load model weights from {folder}: {_first_line(err)}") from None


def model_from_config(config):
    """`AutoModelForCausalLM.from_config`, remote code refused (the config is from `load_auto_config`)."""
    from transformers import AutoModelForCausalLM

    check_fits_memory(config, "checkpoint model config")
    return AutoModelForCausalLM.from_config(config, trust_remote_code=False)


def meta_model(config):
    """`AutoModelForCausalLM.from_config` on the meta device: the module tree and shapes, no memory
    (what the memory plan counts); remote code refused."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=False)


def generation_config_of(model_config):
    """A `GenerationConfig` derived from a model config in memory (no file is read)."""
    from transformers import GenerationConfig

    return GenerationConfig.from_model_config(model_config)


def load_auto_tokenizer(path: str | Path, **kwargs: Any):
    """`AutoTokenizer.from_pretrained` of a checked local folder; a load failure is one line."""
    from transformers import AutoTokenizer

    folder = check_model_folder(path)
    try:
        return AutoTokenizer.from_pretrained(str(folder), **kwargs, **_SAFE)
    except Exception as err:  # noqa: BLE001 - any loader failure becomes one line
        raise UserError(f"cannot load tokenizer from {str(folder)!r}: {_first_line(err)}") from None


def available_memory() -> int | None:
    """Bytes this process can still allocate on the host: MemAvailable, capped by a cgroup v2 limit
    (containers); None where neither can be read."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            found.append(max(int(limit) - used, 0))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


MAX_ROUGH_PARAMS = 10**13
"""Models estimated above this many parameters are refused before even a meta-device build."""


def _rough_params(config) -> int:
    """A quick upper-bound-ish parameter estimate from the config's size fields (no model is built), so
    that a config claiming 10**9 layers is refused before building 10**9 modules on the meta device."""

    def size(name: str) -> int:
        value = getattr(config, name, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    hidden, layers = size("hidden_size"), size("num_hidden_layers")
    inner = max(size("intermediate_size"), size("moe_intermediate_size") * max(size("num_experts"), 1))
    return size("vocab_size") * hidden + layers * (4 * hidden * hidden + 3 * hidden * inner)


def check_fits_memory(config, what: str, bytes_per_param: int = 4) -> int:
    """Parameters of the model `config` describes, counted on the meta device (no memory); one
    UserError line when their weights alone (`bytes_per_param` each) exceed the host's free memory,
    before anything is allocated (a vocabulary of 2e9 used to abort inside a native library)."""
    import torch
    from transformers import AutoModelForCausalLM

    free = available_memory()
    rough = _rough_params(config)
    if rough > MAX_ROUGH_PARAMS or (free is not None and rough * bytes_per_param > 4 * free):
        free_text = f"{free / 2**30:.1f} GiB free" if free is not None else f"the {MAX_ROUGH_PARAMS:.0e} cap"
        raise UserError(
            f"{what}: about {rough:,} parameters (vocab_size {getattr(config, 'vocab_size', '?')}, "
            f"hidden_size {getattr(config, 'hidden_size', '?')}, layers "
            f"{getattr(config, 'num_hidden_layers', '?')}) need about "
            f"{rough * bytes_per_param / 2**30:,.0f} GiB, far more than {free_text}"
        )
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - sizes the model class refuses
        raise UserError(f"{what}: cannot build this model config: {_first_line(err)}") from None
    n = sum(p.numel() for p in model.parameters())
    need = n * bytes_per_param
    if free is not None and need > free:
        raise UserError(
            f"{what}: {n:,} parameters need {need / 2**30:.1f} GiB for the weights alone, more than the "
            f"{free / 2**30:.1f} GiB of free memory (vocab_size {getattr(config, 'vocab_size', '?')}, "
            f"hidden_size {getattr(config, 'hidden_size', '?')})"
        )
    return n


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
