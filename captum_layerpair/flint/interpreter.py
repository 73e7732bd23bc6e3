"""The FLINT interpreter: predictor f, attribute dictionary Psi, linear head h and decoder d in one module.

FLINT (Parekh, Mozharovskyi, d'Alche-Buc, NeurIPS 2021) learns an interpreter ``g = h o Phi`` next to a classifier
``f``. ``Phi(x) = Psi(f_I(x)) in R^J`` is the attribute dictionary, computed from the outputs ``f_I(x)`` of
selected hidden layers of ``f``; ``h(Phi) = W Phi + b`` is a linear classifier (the softmax lives in the loss), and
a decoder ``d: R^J -> X`` reconstructs the input (input fidelity). The hidden layers are read with one full forward
pass of ``f`` with the graph kept (``captum_layerpair._hooks.capture_layers``), so joint training back-propagates
from Psi into ``f``.

Post-hoc mode (paper section 5; the authors' code has no post-hoc path, so this one is ours): ``f`` is frozen. It
runs in eval mode in every forward (its BatchNorm statistics and dropout are frozen), its parameters, buffers,
``requires_grad`` flags and train/eval flags are never changed, and ``trainable_parameters()`` leaves it out.
The plain ``forward`` still builds the graph through ``f``, so gradient methods (Captum, ``LayerPairAttribution``,
activation maximisation) differentiate through a post-hoc interpreter; only the training step runs ``f`` under
``no_grad`` (``forward(x, grad_to_predictor=False)``).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any, Literal, NamedTuple

import torch
from torch import nn

from captum_layerpair._checks import check_choice, check_positive_int, check_probability
from captum_layerpair._hooks import capture_layers
from captum_layerpair._model_state import model_state_preserved
from captum_layerpair._random import seeded
from captum_layerpair._typing import LayerSpec
from captum_layerpair.layers import Layer, resolve_layer

__all__ = ["Interpreter", "InterpreterOutput", "AttributeDictionary", "ATTRIBUTE_ACTIVATIONS"]

ATTRIBUTE_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "leaky_relu": nn.LeakyReLU,  # the authors' MNIST Psi (attr_MNIST): attributes may be slightly negative
    "relu": nn.ReLU,  # the authors' ResNet Psi (attr_RN18_multi: QuickDraw, CIFAR10, CUB)
}
"""The activations of the default Psi (after each conv and after the final Linear), by name."""


class InterpreterOutput(NamedTuple):
    """What one forward pass of an :class:`Interpreter` gives.

    predictor_logits: ``[N, C]`` the predictor's output ``f(x)``.
    attributes: ``[N, J]`` the attribute dictionary ``Phi(x)``.
    logits: ``[N, C]`` the interpreter's logits ``h(Phi(x))`` (before the softmax).
    reconstruction: ``[N, *input_shape]`` the decoder's ``d(Phi(x))``, ``None`` without a decoder.
    """

    predictor_logits: torch.Tensor
    attributes: torch.Tensor
    logits: torch.Tensor
    reconstruction: torch.Tensor | None


class AttributeDictionary(nn.Module):
    """The default Psi: hidden layers ``[f_i1(x), ..., f_iT(x)]`` to attributes ``[N, J]``.

    It generalises the authors' ``attr_MNIST`` (one layer) and ``attr_RN18_multi`` (two layers); ``act`` is
    ``activation`` (LeakyReLU in ``attr_MNIST``, ReLU in ``attr_RN18_multi``):

    * each 4-D layer ``[N, C_l, H, W]``: 3x3 conv ``C_l -> hidden_channels`` -> act -> AdaptiveAvgPool(pool_size);
      any other layer ``[N, *shape]``: flatten -> Linear ``-> hidden_channels`` -> act;
    * with several 4-D layers, the branches are concatenated along channels -> 3x3 conv -> act ->
      AdaptiveAvgPool(pool_size) (the authors instead bring layer3 to layer4's size with a strided conv and pool
      after the merge); otherwise the flattened branches are concatenated;
    * -> Linear ``-> J`` -> act.

    With one 4-D layer and the default ``"leaky_relu"`` this is ``attr_MNIST`` exactly (up to initialisation).

    Parameters
    ----------
    layer_shapes:
        The shape of each hidden layer's output without the batch dimension.
    n_attributes:
        J.
    hidden_channels, pool_size:
        Width of each branch and side of the pooled map (authors: 64 and 3).
    activation:
        A name of :data:`ATTRIBUTE_ACTIVATIONS`.
    """

    def __init__(self, layer_shapes: Sequence[Sequence[int]], n_attributes: int, hidden_channels: int = 64,
                 pool_size: int = 3, activation: str = "leaky_relu") -> None:
        super().__init__()
        check_positive_int("n_attributes", n_attributes)
        check_positive_int("hidden_channels", hidden_channels)
        check_positive_int("pool_size", pool_size)
        act = check_choice("attribute_activation", activation, ATTRIBUTE_ACTIVATIONS)
        if not layer_shapes:
            raise ValueError("AttributeDictionary needs at least one hidden layer shape")
        self.layer_shapes = [tuple(int(d) for d in s) for s in layer_shapes]
        spatial = [len(s) == 3 for s in self.layer_shapes]
        pooled = hidden_channels * pool_size**2
        self.branches = nn.ModuleList(
            nn.Sequential(nn.Conv2d(s[0], hidden_channels, 3, padding=1), act(), nn.AdaptiveAvgPool2d(pool_size))
            if is_map else nn.Sequential(nn.Flatten(), nn.Linear(math.prod(s), hidden_channels), act())
            for s, is_map in zip(self.layer_shapes, spatial))
        self.merge: nn.Module | None = None
        if len(spatial) > 1 and all(spatial):
            self.merge = nn.Sequential(nn.Conv2d(len(spatial) * hidden_channels, hidden_channels, 3, padding=1),
                                       act(), nn.AdaptiveAvgPool2d(pool_size))
            features = pooled
        else:
            features = sum(pooled if is_map else hidden_channels for is_map in spatial)
        self.fc = nn.Linear(features, n_attributes)
        self.activation = act()

    def forward(self, values: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[N, J]`` attributes of the hidden-layer values (one tensor per layer, in the order of the layers)."""
        if len(values) != len(self.branches):
            raise ValueError(f"Psi expects {len(self.branches)} hidden-layer values, got {len(values)}")
        outs = [branch(v) for branch, v in zip(self.branches, values)]
        merged = self.merge(torch.cat(outs, 1)) if self.merge is not None else torch.cat(
            [o.flatten(1) for o in outs], 1)
        return self.activation(self.fc(merged.flatten(1)))


def _mlp_decoder(n_attributes: int, input_shape: tuple[int, ...], hidden: int = 64) -> nn.Module:
    return nn.Sequential(nn.Linear(n_attributes, hidden), nn.ReLU(), nn.Linear(hidden, math.prod(input_shape)),
                         nn.Unflatten(1, input_shape))


class Interpreter(nn.Module):
    """A FLINT interpreter ``g = h o Psi o f_I`` with its decoder, around a predictor ``f``.

    Parameters
    ----------
    model:
        The predictor ``f``: an ``nn.Module`` mapping ``x [N, *input_shape]`` to logits ``[N, C]`` (one tensor).
    layers:
        The hidden layers that feed Psi: one or a list of modules of ``model`` or dotted names (relative to
        ``model``). Each must run exactly once per forward and output one tensor.
    n_attributes:
        J, the size of the attribute dictionary (authors: 25 on MNIST, 24 QuickDraw, 36 CIFAR10).
    example_inputs:
        A small batch ``[n, *input_shape]``, run once here (``f`` in eval mode, no gradient, state restored) to
        find the layers' shapes, C and the input shape. New modules take its device and floating dtype.
    posthoc:
        Freeze ``f`` (see the module docstring): interpret a trained predictor without changing it.
    n_classes:
        C; checked against ``f``'s output when given.
    psi:
        Any module ``list[Tensor] -> [N, J]`` to use instead of :class:`AttributeDictionary`.
    decoder:
        ``"mlp"`` (Linear J -> 64 -> ReLU -> Linear -> prod(input_shape), reshaped), any module ``[N, J] ->
        [N, *input_shape]``, or ``None`` (no input fidelity).
    hidden_channels, pool_size, attribute_activation:
        Options of the default Psi (:class:`AttributeDictionary`): ``"leaky_relu"`` as the authors' MNIST Psi
        (attributes may be slightly negative; the entropy terms act on ``|Phi|``), ``"relu"`` as their ResNet Psi.
    head_dropout:
        Dropout before the head, as the authors' ``explainer`` (p = 0.01).
    seed:
        Seeds the initialisation of the new modules (``None``: the caller's global RNG); the caller's RNG states
        are restored.

    Attributes
    ----------
    model, psi, head (``nn.Linear(J, C)``), head_dropout, decoder: the parts; ``layers``: the tapped
    ``layers.Layer``s; ``n_attributes``, ``n_classes``, ``input_shape``, ``posthoc``.

    Examples
    --------
    >>> interp = Interpreter(net, "features", n_attributes=25, example_inputs=x[:8])
    >>> out = interp(x)                     # InterpreterOutput(predictor_logits, attributes, logits, reconstruction)
    >>> LayerPairAttribution(interp, "model.features.0", "psi", IntegratedGradients).attribute(x)  # [N, J, C, H, W]
    """

    def __init__(self, model: nn.Module, layers: LayerSpec | Sequence[LayerSpec], n_attributes: int,
                 example_inputs: torch.Tensor, *, posthoc: bool = False, n_classes: int | None = None,
                 psi: nn.Module | None = None, decoder: nn.Module | Literal["mlp"] | None = "mlp",
                 hidden_channels: int = 64, pool_size: int = 3, attribute_activation: str = "leaky_relu",
                 head_dropout: float = 0.01, seed: int | None = 0) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module (the predictor f), got {type(model).__name__}")
        if not isinstance(example_inputs, torch.Tensor) or example_inputs.dim() < 2:
            raise TypeError("example_inputs must be a tensor batch [n, *input_shape]")
        check_positive_int("n_attributes", n_attributes)
        check_probability("head_dropout", head_dropout, open_interval=False)
        specs = [layers] if isinstance(layers, (str, nn.Module)) else list(layers)
        if not specs:
            raise ValueError("layers must name at least one hidden layer of the model")
        self.model = model
        self.layers: list[Layer] = [resolve_layer(model, spec, "interpreted") for spec in specs]
        self.posthoc = bool(posthoc)
        self.n_attributes = n_attributes
        self.input_shape = tuple(example_inputs.shape[1:])
        with torch.no_grad(), model_state_preserved(model):
            model.eval()
            output, values = capture_layers(model, (example_inputs,), self.layers)
        logits = self._check_predictor_output(output)
        if n_classes is not None and n_classes != logits.shape[1]:
            raise ValueError(f"n_classes={n_classes}, but the predictor outputs {logits.shape[1]} logits")
        self.n_classes = int(logits.shape[1])
        dtype = example_inputs.dtype if example_inputs.is_floating_point() else None
        with seeded(seed):
            if psi is None:
                psi = AttributeDictionary([v.shape[1:] for v in values], n_attributes, hidden_channels, pool_size,
                                          attribute_activation).to(example_inputs.device, dtype)
            self.psi = psi
            self.head_dropout = nn.Dropout(head_dropout)
            self.head = nn.Linear(n_attributes, self.n_classes).to(example_inputs.device, dtype)
            if isinstance(decoder, str):
                check_choice("decoder", decoder, ("mlp",))
                decoder = _mlp_decoder(n_attributes, self.input_shape).to(example_inputs.device, dtype)
            elif decoder is not None and not isinstance(decoder, nn.Module):
                raise TypeError(f"decoder must be 'mlp', an nn.Module or None, got {type(decoder).__name__}")
            self.decoder = decoder
        with torch.no_grad():
            phi = self.psi(values)
        if not isinstance(phi, torch.Tensor) or phi.shape != (len(example_inputs), n_attributes):
            shape = tuple(phi.shape) if isinstance(phi, torch.Tensor) else type(phi).__name__
            raise ValueError(f"psi must map the hidden-layer values to [N, J] = [{len(example_inputs)}, "
                             f"{n_attributes}]; it returned {shape}")

    @staticmethod
    def _check_predictor_output(output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor) or output.dim() != 2:
            got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise TypeError(f"the predictor must return one tensor of logits [N, C]; it returned {got}. Wrap a "
                            "model that returns (logits, features) so that it returns the logits only.")
        return output

    def hidden_layers(self, inputs: torch.Tensor, grad_to_predictor: bool = True
                      ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One forward of ``f``: ``(logits [N, C], [value of each tapped layer])``.

        Post-hoc: ``f`` runs in eval mode and its state is restored; ``grad_to_predictor=False`` runs it under
        ``no_grad`` (the training step of post-hoc mode).
        """
        grad = nullcontext() if grad_to_predictor else torch.no_grad()
        state = model_state_preserved(self.model) if self.posthoc else nullcontext()
        with state, grad:
            if self.posthoc:
                self.model.eval()
            output, values = capture_layers(self.model, (inputs,), self.layers)
        return self._check_predictor_output(output), values

    def attributes(self, inputs: torch.Tensor) -> torch.Tensor:
        """``Phi(x)``: ``[N, J]`` (a forward function for Captum: ``Saliency(interp.attributes)``, ``target=j``)."""
        return self.psi(self.hidden_layers(inputs)[1])

    def interpreter_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """``h(Phi(x))``: ``[N, C]`` (a forward function for Captum methods that explain g's decision)."""
        return self.head(self.head_dropout(self.attributes(inputs)))

    def forward(self, inputs: torch.Tensor, grad_to_predictor: bool = True) -> InterpreterOutput:
        """Run ``f`` once, read its hidden layers, and compute Phi, ``h(Phi)`` and ``d(Phi)``.

        Parameters
        ----------
        inputs:
            ``[N, *input_shape]``.
        grad_to_predictor:
            ``False`` runs ``f`` under ``no_grad`` (post-hoc training); leave it ``True`` otherwise.

        Returns
        -------
        InterpreterOutput(predictor_logits [N, C], attributes [N, J], logits [N, C], reconstruction
        [N, *input_shape] or None).
        """
        predictor_logits, values = self.hidden_layers(inputs, grad_to_predictor)
        phi = self.psi(values)
        logits = self.head(self.head_dropout(phi))
        reconstruction = self.decoder(phi) if self.decoder is not None else None
        return InterpreterOutput(predictor_logits, phi, logits, reconstruction)

    def interpreter_modules(self) -> list[nn.Module]:
        """Psi, the head dropout, h and d (whatever is not the predictor)."""
        return [m for m in (self.psi, self.head_dropout, self.head, self.decoder) if m is not None]

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters a FLINT fit optimises: Psi, h, d, and ``f`` too unless post-hoc."""
        frozen = {id(p) for p in self.model.parameters()} if self.posthoc else set()
        seen: set[int] = set()
        for p in self.parameters():
            if id(p) not in frozen and id(p) not in seen:
                seen.add(id(p))
                yield p

    def train(self, mode: bool = True) -> Interpreter:
        """Set train/eval mode; post-hoc, the predictor's own mode is left as it is (it runs in eval mode)."""
        if not self.posthoc:
            return super().train(mode)
        self.training = mode
        for module in self.interpreter_modules():
            module.train(mode)
        return self

    def extra_repr(self) -> str:
        names = ", ".join(layer.name for layer in self.layers)
        return (f"layers=[{names}], n_attributes={self.n_attributes}, n_classes={self.n_classes}, "
                f"posthoc={self.posthoc}")
