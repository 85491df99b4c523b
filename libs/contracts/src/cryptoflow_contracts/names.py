"""Open vocabularies: names that are registered, not enumerated.

`Dataset` and `Stage` were closed enums, so a new dataset or stage meant editing the contracts.
A `RegisteredName` behaves like a `StrEnum` member where code reads it (`Dataset.OHLCV`,
`.value`, `is`, iteration over the class, an unknown name is a ValueError), but the set grows
with `register`: a dataset or stage is declared where it is built (its registry entry), and
every event, subject and JSON Schema accepts it from then on.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Self

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

_FORBIDDEN = (".", "*", ">", "/", " ")


class _Registry(type):
    _members: dict[str, Any]

    def __iter__(cls) -> Iterator[Any]:
        return iter(list(cls._members.values()))

    def __len__(cls) -> int:
        return len(cls._members)

    def __contains__(cls, value: object) -> bool:
        return value in cls._members


class RegisteredName(str, metaclass=_Registry):
    """A name from its class's registry; `Cls("x")` returns the registered member or raises."""

    _members: ClassVar[dict[str, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._members = {}

    def __new__(cls, value: str) -> Self:
        member = cls._members.get(value)
        if member is None:
            known = ", ".join(cls._members)
            raise ValueError(f"{value!r} is not a known {cls.__name__} (known: {known})")
        return member  # type: ignore[no-any-return]

    @classmethod
    def register(cls, value: str) -> Self:
        """The member named `value`, added when new (a name is one subject token)."""
        if value in cls._members:
            return cls._members[value]  # type: ignore[no-any-return]
        if not value or any(ch in value for ch in _FORBIDDEN):
            raise ValueError(f"{value!r} cannot name a {cls.__name__} (empty, or contains one of {_FORBIDDEN})")
        member = str.__new__(cls, value)
        cls._members[value] = member
        return member

    @classmethod
    def unregister(cls, value: str) -> None:
        """Forget a registered name (a test's throwaway one)."""
        cls._members.pop(value, None)

    @property
    def value(self) -> str:
        return str.__str__(self)

    def __str__(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__repr__(self)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.value,))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls._validate,
            core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(
                str.__str__, return_schema=core_schema.str_schema()
            ),
            ref=cls.__name__,
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The names registered when the schema is generated, as an enum: what a StrEnum gave.
        return {"enum": [member.value for member in cls], "title": cls.__name__, "type": "string"}

    @classmethod
    def _validate(cls, value: str) -> Self:
        return cls(value)
