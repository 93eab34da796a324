"""Named factories (models, backends), one convention for every registry of the project.

    BACKENDS = Registry("backend", error=BackendError)

    @BACKENDS.register("onnxruntime")
    class OnnxRuntimeBackend: ...

    BACKENDS.names("onnx*")      # ["onnxruntime"]: sorted, shell-style pattern (timm's list_models)
    BACKENDS.get("fpga")         # BackendError: unknown backend 'fpga'; known backends: ...

A name registered twice is an error, not an overwrite: which factory a name means must
not depend on import order, and no registry here has a use for replacing an entry (a
test or a plug-in that wants another factory registers it under its own name).

It lives in fedcore, the package every other one imports (the board's device/ and
fedlink/, the coordinator, training/), and needs nothing but the standard library.
"""

import fnmatch
from typing import Any, Callable, Dict, Generic, Iterator, List, Type, TypeVar

__all__ = ["Registry"]

Factory = TypeVar("Factory", bound=Callable[..., Any])


class Registry(Generic[Factory]):
    """Factories by name; `kind` names them in messages ("backend", "model"). `Registry[F]`
    holds factories of type F (say `Callable[..., Backbone]`, or a class)."""

    def __init__(self, kind: str, error: Type[Exception] = LookupError, hint: str = "",
                 plural: str = ""):
        self.kind = kind
        self.plural = plural or kind + "s"
        self.error = error  # raised for an unknown name: the caller's own error class
        self.hint = hint  # appended to the unknown-name message, e.g. where else to look
        self._factories: Dict[str, Factory] = {}

    def register(self, name: str) -> Callable[[Factory], Factory]:
        """Decorator: make a class or function creatable by `name`."""
        if not isinstance(name, str) or not name:
            raise ValueError("a %s name must be a non-empty string, not %r" % (self.kind, name))

        def add(factory: Factory) -> Factory:
            if name in self._factories:
                raise ValueError("%s %r is registered twice: by %s and by %s" % (
                    self.kind, name, _qualified(self._factories[name]), _qualified(factory)))
            self._factories[name] = factory
            return factory
        return add

    def get(self, name: object) -> Factory:
        """The factory registered as `name`; an unknown name (or not a string) raises `error`, listing the known."""
        try:
            return self._factories[name]  # type: ignore[index]  # a non-string: KeyError or TypeError
        except (KeyError, TypeError):
            message = "unknown %s %r; known %s: %s" % (self.kind, name, self.plural,
                                                      ", ".join(self.names()) or "none")
            raise self.error(message + (" (%s)" % self.hint if self.hint else "")) from None

    def names(self, pattern: str = "*") -> List[str]:
        """Registered names matching a shell-style pattern (case-sensitive), sorted."""
        return sorted(n for n in self._factories if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._factories)

    def __repr__(self) -> str:
        return "Registry(%r: %s)" % (self.kind, ", ".join(self.names()))


def _qualified(factory: Callable[..., object]) -> str:
    return "%s.%s" % (getattr(factory, "__module__", "?"), getattr(factory, "__qualname__",
                                                                   repr(factory)))
