"""The registry knows every event, each under a unique, well-formed, versioned type."""

import re

from zhongshu.contracts.events import ALL_EVENTS, EVENT_TYPES, Event
from zhongshu.contracts.examples import all_examples


def _subclasses(cls: type[Event]) -> set[type[Event]]:
    found: set[type[Event]] = set()
    for sub in cls.__subclasses__():
        found |= {sub} | _subclasses(sub)
    return found


def test_every_event_class_is_registered_under_its_type() -> None:
    assert set(EVENT_TYPES.values()) == _subclasses(Event)
    for type_name, cls in EVENT_TYPES.items():
        assert type_name == cls.TYPE


def test_types_are_unique_and_follow_the_naming_rule() -> None:
    types = [cls.TYPE for cls in ALL_EVENTS]
    assert len(set(types)) == len(types)
    for type_name in types:
        assert re.fullmatch(r"zhongshu\.[a-z]+\.[a-z_]+\.v[0-9]+", type_name), type_name


def test_events_are_immutable_and_documented() -> None:
    for cls in ALL_EVENTS:
        assert cls.__struct_config__.frozen, cls.__name__
        assert cls.__struct_config__.omit_defaults, cls.__name__
        assert len(cls.__doc__ or "") > 40, cls.__name__


def test_every_event_has_an_example() -> None:
    assert {type(e) for e in all_examples()} == set(ALL_EVENTS)
