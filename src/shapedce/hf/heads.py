"""Reads a `*ForCausalLM`'s own forward to learn how it turns the decoder output into logits.

    from shapedce.hf.heads import read_head
    spec = read_head(model)   # HeadSpec(decoder="model", head="lm_head", logit_scale=1.0, softcap=None, ...)

The fused loss needs the logits as `softcap * tanh((hidden @ W.T + b) * logit_scale / softcap)`.
Rather than trusting a list of config fields, this parses the source of the class's `forward`
(Python's `ast`) and accepts only statements it understands between the decoder call and the
loss: reading `last_hidden_state` / `outputs[0]`, `slice_logits_to_keep`, the head call, a
multiplication or division of the logits (or, for a bias-free head, of the hidden states) by a
number found on the model or its config (Granite, Cohere, Falcon-H1, MiniCPM3), casts to float,
and the Gemma `x / c; tanh(x); x * c` softcap block. Anything else raises a one-line `UserError`:
a loss the model would not compute is refused, never approximated. To list which `*ForCausalLM`
classes of the installed transformers pass this reading (without building them):

    PYTHONPATH=src python -c "import shapedce.hf.heads as h; h._survey()"
"""

from __future__ import annotations

import ast
import inspect
import numbers
import textwrap
from dataclasses import dataclass

import torch

from ..errors import UserError


@dataclass(frozen=True, slots=True)
class HeadSpec:
    """Where the decoder and the output head live, and the logit post-processing to reproduce."""

    decoder: str
    """Attribute path of the decoder (`model`, `transformer`, `gpt_neox`, `model.decoder`, ...)."""
    head: str
    """Attribute holding the output `nn.Linear` (`lm_head`, `embed_out`, ...)."""
    logit_scale: float = 1.0
    """Logits are multiplied by this before the softcap (Cohere's logit_scale, 1 / Granite's
    logits_scaling)."""
    softcap: float | None = None
    """final-logit softcapping value (Gemma 2 / 3), or None."""
    moe: bool = False
    """The forward adds a router load-balancing loss (`load_balancing_loss_func`)."""
    router: tuple[int, int, str] | None = None
    """(num_experts, experts per token, attribute path of the coefficient) of that router loss."""


class _Refuse(Exception):
    """Internal: a statement this reader does not understand (becomes a UserError naming the class)."""


def _name(node: ast.AST) -> str:
    return ast.unparse(node)


def _number(model, node: ast.AST) -> float:
    """Value of `self.a.b`, a literal, or * / of those; must be a real number, not a tensor."""
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, numbers.Real)
        and not isinstance(node.value, bool)
    ):
        return float(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        a, b = _number(model, node.left), _number(model, node.right)
        return a * b if isinstance(node.op, ast.Mult) else a / b
    if isinstance(node, ast.Attribute):
        parts = _name(node).split(".")
        if parts[0] == "self":
            value = model
            for part in parts[1:]:
                if not hasattr(value, part):
                    raise _Refuse(f"{_name(node)} is not set")
                value = getattr(value, part)
            if isinstance(value, numbers.Real) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, _Stub):  # survey: a number we cannot see
                return 1.0
            raise _Refuse(f"{_name(node)} is {type(value).__name__}, not a number")
    raise _Refuse(f"cannot read {_name(node)!r} as a constant")


def _scaled(model, node: ast.AST, var: str):
    """If node is `var * c`, `c * var` or `var / c`, the factor; else None."""
    if not (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div))):
        return None
    if _name(node.left) == var:
        c = _number(model, node.right)
        return c if isinstance(node.op, ast.Mult) else 1.0 / c
    if isinstance(node.op, ast.Mult) and _name(node.right) == var:
        return _number(model, node.left)
    return None


def _is_float_cast(node: ast.AST, var: str) -> bool:
    return _name(node) in (f"{var}.float()", f"{var}.to(torch.float32)")


def _forward_body(cls) -> list[ast.stmt]:
    try:
        src = textwrap.dedent(inspect.getsource(cls.forward))
    except (OSError, TypeError) as err:
        raise _Refuse(f"its forward has no readable source ({err})") from None
    fn = ast.parse(src).body[0]
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        raise _Refuse("its forward is not a plain function")
    return fn.body


def _head_call(stmt: ast.stmt):
    """(head attribute, factor node or None, variable) when stmt is `logits = self.H(hidden...)[ * c]`."""
    if not (isinstance(stmt, ast.Assign) and [_name(t) for t in stmt.targets] in (["logits"], ["lm_logits"])):
        return None
    value, factor = stmt.value, None
    if isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Mult, ast.Div)):
        value, factor = value.left, value
    if isinstance(value, ast.Call) and _name(value.func).endswith(".float") and not value.args:
        value = value.func.value  # a float32 cast: the fused loss computes in float32 (or float64) anyway
    if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)):
        return None
    if _name(value.func.value) != "self" or len(value.args) != 1 or value.keywords:
        return None
    arg = _name(value.args[0])
    if arg not in ("hidden_states", "hidden_states[:, slice_indices, :]"):
        raise _Refuse(f"its head reads {arg!r}")
    return value.func.attr, factor, _name(stmt.targets[0])


def _post_ops(model, stmts: list[ast.stmt], var: str) -> tuple[float, float | None]:
    """Logit scale and softcap of the statements between the head call and the loss."""
    scale, softcap = 1.0, None
    for stmt in stmts:
        stmt = ast.parse(_name(stmt).replace(var, "logits")).body[0] if var != "logits" else stmt
        text = _name(stmt)
        if isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Compare) and not stmt.orelse:
            cap_expr = stmt.test.left
            body = [_name(s) for s in stmt.body]
            c = _name(cap_expr)
            if body != [f"logits = logits / {c}", "logits = torch.tanh(logits)", f"logits = logits * {c}"]:
                raise _Refuse(f"unknown logit post-processing {text.splitlines()[0]!r}")
            if not _name(stmt.test) == f"{c} is not None":
                raise _Refuse(f"unknown condition {_name(stmt.test)!r}")
            try:
                value = _number(model, cap_expr)
            except _Refuse:
                if _value_is_none(model, cap_expr):
                    continue
                raise
            if softcap is not None:
                raise _Refuse("two softcaps")
            softcap = value
            continue
        if not (isinstance(stmt, ast.Assign) and [_name(t) for t in stmt.targets] == ["logits"]):
            raise _Refuse(f"unknown logit post-processing {text.splitlines()[0]!r}")
        if _is_float_cast(stmt.value, "logits"):
            continue
        factor = _scaled(model, stmt.value, "logits")
        if factor is None:
            raise _Refuse(f"unknown logit post-processing {text!r}")
        if softcap is not None:
            raise _Refuse("a logit scale after the softcap")
        scale *= factor
    return scale, softcap


def _value_is_none(model, node: ast.AST) -> bool:
    value = model
    for part in _name(node).split(".")[1:]:
        value = getattr(value, part, None)
    return value is None


def _ends_post_ops(stmt: ast.stmt) -> bool:
    text = _name(stmt)
    return text.startswith("loss = None") or (isinstance(stmt, ast.If) and "labels" in _name(stmt.test))


_FLAGS = ("output_router_logits", "return_dict", "output_attentions", "output_hidden_states", "use_cache")


def _check_prelude(stmts: list[ast.stmt]) -> None:
    """Before the decoder call only flag defaults may happen (`x = x if x is not None else self.config.x`):
    anything done to the inputs there would be skipped by the patched forward."""
    for stmt in stmts:
        text = _name(stmt)
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # the docstring
        if any(text == f"{f} = {f} if {f} is not None else self.config.{f}" for f in _FLAGS):
            continue
        if text == "if labels is not None:\n    use_cache = False":
            continue
        raise _Refuse(f"unknown statement before the decoder call {text.splitlines()[0]!r}")


def module_at(model, path):
    """model.a.b for path ["a", "b"] (or a dotted string), None when missing."""
    for part in path.split(".") if isinstance(path, str) else path:
        model = getattr(model, part, None)
    return model


def _read(model) -> HeadSpec:
    body = _forward_body(type(model))
    decoder, start = None, None
    for i, stmt in enumerate(body):  # `outputs = self.D(...)`: the last such call before the head
        if decoder and _head_call(stmt):
            break
        if isinstance(stmt, (ast.Assign, ast.AnnAssign)) and isinstance(stmt.value, ast.Call):
            func = stmt.value.func
            path = _name(func).split(".")
            if (
                path[0] == "self"
                and len(path) in (2, 3)
                and isinstance(module_at(model, path[1:]), torch.nn.Module)
            ):
                target = stmt.targets[0] if isinstance(stmt, ast.Assign) else stmt.target
                decoder, start, outputs = ".".join(path[1:]), i + 1, _name(target)
    if decoder is None:
        raise _Refuse("no `outputs = self.<decoder>(...)` call found in its forward")
    _check_prelude(body[: start - 1])
    head, scale, i = None, 1.0, start
    allowed = {
        f"hidden_states = {outputs}.last_hidden_state",
        f"hidden_states = {outputs}[0]",
        "hidden_states = slice_logits_to_keep(hidden_states, logits_to_keep)",
        f"hidden_states = slice_logits_to_keep({outputs}.last_hidden_state, logits_to_keep)",
        f"hidden_states = slice_logits_to_keep({outputs}[0], logits_to_keep)",
        "slice_indices = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep",
    }
    while i < len(body):
        stmt = body[i]
        i += 1
        found = _head_call(stmt)
        if found:
            head, factor, var = found
            if factor is not None:
                scale *= _scaled(
                    model, ast.BinOp(left=ast.Name("logits"), op=factor.op, right=factor.right), "logits"
                )
            break
        text = _name(stmt)
        if text in allowed:
            continue
        if isinstance(stmt, ast.Assign) and [_name(t) for t in stmt.targets] == ["hidden_states"]:
            factor = _scaled(model, stmt.value, "hidden_states")
            if factor is not None:
                if getattr(getattr(model, _head_name_guess(model), None), "bias", None) is not None:
                    raise _Refuse("hidden states are scaled before a head with a bias")
                scale *= factor
                continue
        raise _Refuse(f"unknown statement before the head {text.splitlines()[0]!r}")
    if head is None:
        raise _Refuse("no `logits = self.<head>(hidden_states)` found after the decoder call")
    post = []
    while i < len(body) and not _ends_post_ops(body[i]):
        post.append(body[i])
        i += 1
    post_scale, softcap = _post_ops(model, post, var)
    router = _router_terms(model, body[i:], outputs)
    return HeadSpec(
        decoder=decoder,
        head=head,
        logit_scale=scale * post_scale,
        softcap=softcap,
        moe=router is not None,
        router=router,
    )


def _router_terms(model, stmts: list[ast.stmt], outputs: str):
    """(num_experts, top_k, coefficient path) of
    `load_balancing_loss_func(outputs.router_logits, E, K, attention_mask)`
    and `loss += C * aux_loss...` in the rest of the forward; None without a router loss."""
    calls = [
        n
        for s in stmts
        for n in ast.walk(s)
        if isinstance(n, ast.Call) and _name(n.func) == "load_balancing_loss_func"
    ]
    if not calls:
        return None
    args = [_name(a) for a in calls[0].args]
    if (
        len(calls) > 1
        or len(args) != 4
        or calls[0].keywords
        or args[0] != f"{outputs}.router_logits"
        or args[3] != "attention_mask"
    ):
        raise _Refuse(f"unknown router loss call {_name(calls[0])!r}")
    coefs = [
        n.left
        for s in stmts
        for n in ast.walk(s)
        if isinstance(n, ast.BinOp)
        and isinstance(n.op, ast.Mult)
        and "router_aux_loss_coef" in _name(n.left)
        and _name(n.right).startswith("aux_loss")
    ]
    if len(coefs) != 1:
        raise _Refuse("no single `router_aux_loss_coef * aux_loss` term")
    experts, top_k = (_number(model, a) for a in calls[0].args[1:3])
    _number(model, coefs[0])
    if not _name(coefs[0]).startswith("self."):
        raise _Refuse(f"router loss coefficient {_name(coefs[0])!r} is not an attribute")
    return int(experts), int(top_k), _name(coefs[0]).removeprefix("self.")


def _head_name_guess(model) -> str:
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, child in model.named_children():
        if child is out:
            return name
    return "lm_head"


def read_head(model) -> HeadSpec:
    """The HeadSpec of a causal LM, or a one-line UserError saying why it cannot be fused exactly."""
    what = type(model).__name__
    try:
        spec = _read(model)
    except _Refuse as why:
        raise UserError(f"patch_causal_lm cannot fuse {what} exactly: {why}") from None
    head = getattr(model, spec.head, None)
    if type(head) is not torch.nn.Linear:
        kind = type(head).__name__
        raise UserError(f"patch_causal_lm needs {what}.{spec.head} to be a plain torch.nn.Linear; got {kind}")
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else head
    if out is not None and out is not head:
        raise UserError(f"patch_causal_lm: {what}.{spec.head} is not its get_output_embeddings()")
    if spec.softcap is not None and not spec.softcap > 0:
        raise UserError(f"patch_causal_lm: {what} has final-logit softcap {spec.softcap}; must be > 0")
    return spec


class _Stub(torch.nn.Module):
    """Survey only: stands for any attribute of a model that was not built (modules, numbers)."""

    def __getattr__(self, name):
        return _Stub()


def _survey() -> None:
    """Print, for every *ForCausalLM class of the installed transformers, what read_head makes of its
    forward without building the model (every attribute stands for a module or the number 1)."""
    import transformers

    names = sorted(n for n in dir(transformers) if n.endswith("ForCausalLM") or n.endswith("LMHeadModel"))
    accepted = []
    for name in names:
        try:
            cls = getattr(transformers, name)
            stub = _Stub()
            stub.__class__ = type(name, (_Stub,), {"forward": cls.forward})
            spec = _read(stub)
        except _Refuse as why:
            print(f"refused   {name}: {why}")
            continue
        except Exception as err:  # noqa: BLE001 - one survey line per class, whatever went wrong
            print(f"unread    {name}: {type(err).__name__}")
            continue
        accepted.append(name)
        extra = " softcap" if spec.softcap is not None else ""
        print(f"accepted  {name}: {spec.decoder}.{spec.head}{' moe' if spec.moe else ''}{extra}")
    print(f"{len(accepted)}/{len(names)} accepted by the static reading")
