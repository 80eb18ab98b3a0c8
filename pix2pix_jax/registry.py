"""Registries: a name in the config -> the function that builds it.

Each extensible choice (generators, discriminators, norms, GAN objectives,
generator loss terms, learning-rate schedules) is a `Registry`; adding an
option is one function plus one `@REGISTRY.register("name")` line, and the
config's validation, the error messages and the README's option lists read
the names from the registry.
"""

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from pix2pix_jax.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries for the config field `field` (e.g. 'model.generator')."""

    def __init__(self, field: str):
        self.field = field
        self._entries: dict[str, T] = {}

    def register(self, *names: str) -> Callable[[T], T]:
        """Decorator: register the decorated object under each of `names`."""

        def add(entry: T) -> T:
            for name in names:
                if name in self._entries:
                    raise KeyError(f"{self.field}: {name!r} is registered twice")
                self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """The entry of `name`; a ConfigError naming the field and the choices otherwise."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ConfigError(f"{self.field}={name!r} is not one of {self.names()}") from None

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)
