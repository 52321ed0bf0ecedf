"""The scikit-learn parameter protocol shared by every crowdmed estimator."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Self

__all__ = ["ParamsMixin"]


class ParamsMixin:
    """``get_params`` / ``set_params`` / ``repr`` from the keyword arguments of ``__init__``.

    Subclasses store their hyperparameters unchanged in ``__init__`` (so ``sklearn.base.clone``
    works) and list their checks in ``_parameter_constraints``.
    """

    _parameter_constraints: ClassVar[Mapping[str, Callable[[Any], str | None]]] = {}

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD
        ]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the hyperparameters (for ``sklearn.base.clone``)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Set hyperparameters; unknown names raise ``ValueError``."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(
                    f"`{name}` is not a parameter of {type(self).__name__}; valid ones are {valid}."
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        changed = []
        for name, value in self.get_params().items():
            default = sig.parameters[name].default
            same = default is value
            if not same and not isinstance(value, np.ndarray):
                same = type(default) is type(value) and default == value
            if not same:
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"
