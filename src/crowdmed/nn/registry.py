"""Networks built by name, so that a saved model can rebuild its network from its config.

:func:`build_network` builds a registered network and records how on the module
(:func:`network_spec`); :func:`crowdmed.nn.mlp_head`, :func:`crowdmed.nn.small_cnn` and
:func:`crowdmed.nn.segmentation_network` record it too. A model's ``save`` writes the spec into
its ``config.json`` and ``load`` calls :func:`build_network` with it. A network built any other
way saves its weights only and must be passed to ``load(path, network=...)``.

Examples:
    >>> net = build_network("mlp_head", in_features=4, n_classes=2, hidden=8)
    >>> network_spec(net)
    {'name': 'mlp_head', 'kwargs': {'in_features': 4, 'n_classes': 2, 'hidden': 8}}
    >>> rebuild = build_network(**network_spec(net))
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = ["build_network", "network_names", "network_spec", "register_network", "set_spec"]

_SPEC_ATTR = "crowdmed_spec"
_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def set_spec(module: nn.Module, name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Record on ``module`` that ``build_network(name, **kwargs)`` rebuilds it; returns it."""
    object.__setattr__(module, _SPEC_ATTR, {"name": name, "kwargs": copy.deepcopy(kwargs)})
    return module


def network_spec(module: nn.Module) -> dict[str, Any] | None:
    """``{"name", "kwargs"}`` that rebuild ``module`` with :func:`build_network`, or ``None``."""
    spec = getattr(module, _SPEC_ATTR, None)
    return copy.deepcopy(spec) if isinstance(spec, dict) else None


def register_network(name: str, builder: Callable[..., nn.Module]) -> None:
    """Make :func:`build_network` build ``name`` with ``builder(**kwargs)``.

    Args:
        name: The network's name in model configs.
        builder: Returns a new network; its keyword arguments must be JSON values.
    """
    if not callable(builder):
        raise TypeError(f"`builder` must be callable; got {type(builder).__name__}.")
    _BUILDERS[name] = builder


def network_names() -> list[str]:
    """Sorted names :func:`build_network` knows."""
    _register_defaults()
    return sorted(_BUILDERS)


def build_network(name: str, kwargs: dict[str, Any] | None = None, **more: Any) -> nn.Module:
    """Build a registered network and record its spec on it.

    Args:
        name: One of :func:`network_names`: ``"mlp_head"``, ``"small_cnn"``, ``"linear"``
            (``torch.nn.Linear(in_features, out_features)``) and the segmentation backbones
            ``"unet"``, ``"basic-unet"``, ``"deeplabv3-mobilenet"``, ``"deeplabv3-resnet50"``
            (:func:`crowdmed.nn.segmentation_network`).
        kwargs: Keyword arguments of the builder, as a dict (the form of a saved spec).
        **more: Keyword arguments of the builder.

    Returns:
        The network, with :func:`network_spec` set.

    Raises:
        ValueError: An unknown name (the closest known one is suggested).
    """
    _register_defaults()
    builder = _BUILDERS.get(name)
    if builder is None:
        import difflib

        close = difflib.get_close_matches(str(name), _BUILDERS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"`name` must be one of {sorted(_BUILDERS)}; got {name!r}.{hint} Register other "
            "networks with crowdmed.nn.register_network."
        )
    args = {**(kwargs or {}), **more}
    module = builder(**args)
    return set_spec(module, name, {k: v for k, v in args.items() if k != "random_state"})


def _linear(in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    return nn.Linear(in_features, out_features, bias=bias)


def _segmentation(name: str) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        from crowdmed.nn.backbones import segmentation_network

        return segmentation_network(name, **kwargs)

    return build


def _register_defaults() -> None:
    if "mlp_head" in _BUILDERS:
        return
    from crowdmed.nn.backbones import SegmentationBackbone
    from crowdmed.nn.models import mlp_head, small_cnn

    _BUILDERS.setdefault("mlp_head", mlp_head)
    _BUILDERS.setdefault("small_cnn", small_cnn)
    _BUILDERS.setdefault("linear", _linear)
    for backbone in SegmentationBackbone:
        _BUILDERS.setdefault(backbone.value, _segmentation(backbone.value))
