"""The input -> source prefix of the sub-network, computed once per attribute call.

Every evaluation of ``g_x(a')`` runs the model on (copies of) the call's inputs ``x`` with the source value
replaced by ``a'``. The modules that finish before the source layer starts cannot depend on ``a'``: their outputs
are the same in every evaluation. ``PrefixCache.record`` runs the model once on ``x`` up to the source and keeps the
input and output of each such module (and of the source module itself, whose output is replaced anyway); inside
``PrefixCache.applied()`` a recorded module called with rows of its recorded input returns the matching rows of
its recorded output instead of computing them, so an evaluation runs only from the source to the target. Paths that
skip the source (residual connections) read the recorded values, exactly as they would compute them.

A module is served from the record only when that is safe:

* it returned before the source module was called, and it and its submodules are in eval mode;
* it returned a tensor that does not share memory with its inputs, from tensor arguments only;
* at the call: its input equals rows of the recorded input, element for element (the rows Captum expanded, in any
  order); none of its submodules has hooks (they would not run); no global module hooks are registered; while
  gradients are recorded, neither its input nor its parameters require one (its output would need a graph).

Otherwise it runs as usual. As Captum's batching does, this assumes that a module in eval mode computes each
example independently of the others in the batch.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_globals

from captum_layerpair.layers import LayerPair

__all__ = ["PrefixCache"]

_VERIFY_ROWS = 32  # rows compared at a time when checking that a module received recorded rows


class _StopPrefix(Exception):
    """Raised once the source module has been recorded, to end the recording forward."""


def _project(rows: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows [B, ...] projected on random weights: [B], the weights)``; equal rows give (nearly) equal values."""
    flat = rows.flatten(1)
    if not flat.is_floating_point():
        flat = flat.double()
    if weights is None:
        generator = torch.Generator().manual_seed(flat.shape[1])  # private generator: no global RNG is touched
        weights = torch.rand(flat.shape[1], generator=generator, dtype=torch.float64)
        weights = weights.to(dtype=flat.dtype, device=flat.device)
    return flat @ weights, weights


@dataclass
class _Record:
    """One module's first call before the source: its (cloned) input ``[N, ...]`` and output ``[N, ...]``."""

    module: nn.Module
    arg: torch.Tensor
    out: torch.Tensor
    weights: torch.Tensor  # a random projection of one input row: matches evaluated rows to recorded rows
    signature: torch.Tensor  # [N]: the recorded rows projected

    @classmethod
    def of(cls, module: nn.Module, arg: torch.Tensor, out: torch.Tensor) -> _Record:
        signature, weights = _project(arg)
        return cls(module, arg.clone(), out.clone(), weights, signature)

    def rows(self, arg: torch.Tensor) -> torch.Tensor | None:
        """``idx [B]`` with ``arg == recorded_input[idx]`` exactly, or ``None`` if ``arg`` is not made of its rows."""
        if arg.dim() == 0 or arg.shape[1:] != self.arg.shape[1:] or arg.dtype != self.arg.dtype \
                or arg.device != self.arg.device:
            return None
        signature, _ = _project(arg, self.weights)
        idx = (signature[:, None] - self.signature[None, :]).abs().argmin(1)
        for start in range(0, len(arg), _VERIFY_ROWS):
            block = idx[start:start + _VERIFY_ROWS]
            if not torch.equal(arg[start:start + _VERIFY_ROWS], self.arg.index_select(0, block)):
                return None
        return idx

    def servable(self) -> bool:
        """No submodule hooks (they would not run) and no parameter graph wanted (checked at each call)."""
        for sub in self.module.modules():
            if sub is not self.module and _has_hooks(sub):
                return False
        return not (torch.is_grad_enabled() and any(p.requires_grad for p in self.module.parameters()))


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or getattr(module, "_backward_pre_hooks", None))


def _global_hooks() -> bool:
    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
             "_global_backward_pre_hooks")
    return any(getattr(module_globals, name, None) for name in names)


@contextmanager
def _forwards_wrapped(modules: list[nn.Module], wrap: Callable[[nn.Module, Callable[..., Any]], Callable[..., Any]]
                      ) -> Iterator[None]:
    """Replace ``module.forward`` by ``wrap(module, forward)`` on each module; restore every one on exit."""
    wrapped = []
    try:
        for module in modules:
            if "forward" in vars(module):  # someone already set an instance forward: leave it alone
                continue
            module.forward = wrap(module, module.forward)
            wrapped.append(module)
        yield
    finally:
        for module in wrapped:
            del module.forward


class PrefixCache:
    """The recorded outputs of the modules that finish before the source (see the module docstring)."""

    def __init__(self, records: list[_Record]) -> None:
        self.records = records

    @classmethod
    def record(cls, pair: LayerPair, inputs: tuple[Any, ...], to_source_input: bool = False,
               source_value: torch.Tensor | None = None) -> PrefixCache | None:
        """Run ``pair.model(*inputs)`` up to the source and keep what later evaluations can reuse.

        ``source_value``: the source layer's output on ``inputs`` where already known (the forward then stops
        before the source runs). ``None`` when nothing can be reused (no module finishes before the source, a model
        that is not an ``nn.Module``, global module hooks).
        """
        model, source = pair.model, pair.source.module
        if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule) or _global_hooks():
            return None
        finished: list[_Record] = []
        state = {"source_started": False}
        # the known source value is the module's whole output only when no selector picks a part of it
        whole = pair.source.selector is None
        known = None if to_source_input or _has_hooks(source) or not whole else source_value

        def wrap(module: nn.Module, forward: Callable[..., Any]) -> Callable[..., Any]:
            def recording(*args: Any, **kwargs: Any) -> Any:
                if module is source:
                    state["source_started"] = True
                    if to_source_input and pair.stop_at_target:
                        raise _StopPrefix
                    if known is not None and pair.stop_at_target:
                        arg = args[0] if len(args) == 1 and not kwargs else None
                        if _recordable(module, arg, known):
                            finished.append(_Record.of(module, arg, known))
                        raise _StopPrefix
                out = forward(*args, **kwargs)
                if not state["source_started"] or (module is source and not to_source_input):
                    arg = args[0] if len(args) == 1 and not kwargs else None
                    if _recordable(module, arg, out) and all(r.module is not module for r in finished):
                        finished.append(_Record.of(module, arg, out))
                if module is source and pair.stop_at_target:
                    raise _StopPrefix
                return out
            return recording

        modules = [m for m in model.modules() if not isinstance(m, torch.jit.ScriptModule)]
        with torch.no_grad(), _forwards_wrapped(modules, wrap):
            try:
                model(*inputs)
            except _StopPrefix:
                pass
        records = _outermost(finished)
        return cls(records) if records else None

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Serve the recorded modules from the record during the forward passes run inside."""
        if _global_hooks():
            yield
            return
        by_module = {id(r.module): r for r in self.records if r.servable()}

        def wrap(module: nn.Module, forward: Callable[..., Any]) -> Callable[..., Any]:
            record = by_module[id(module)]

            def served(*args: Any, **kwargs: Any) -> Any:
                if len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor) \
                        and not (torch.is_grad_enabled() and args[0].requires_grad):
                    idx = record.rows(args[0])
                    if idx is not None:
                        return record.out.index_select(0, idx)
                return forward(*args, **kwargs)
            return served

        with _forwards_wrapped([r.module for r in self.records if id(r.module) in by_module], wrap):
            yield


def _recordable(module: nn.Module, arg: Any, out: Any) -> bool:
    if not isinstance(arg, torch.Tensor) or not isinstance(out, torch.Tensor) or arg.dim() == 0 or out.dim() == 0:
        return False
    if out.shape[0] != arg.shape[0] or any(m.training for m in module.modules()):
        return False
    return out.untyped_storage().data_ptr() != arg.untyped_storage().data_ptr()


def _outermost(records: list[_Record]) -> list[_Record]:
    """Drop the records of modules inside another recorded module (the outer one serves them all)."""
    inner = set()
    for record in records:
        inner.update(id(m) for m in record.module.modules() if m is not record.module)
    return [r for r in records if id(r.module) not in inner]
