"""What a context uses of the bus is exported by ``messaging`` itself (import-linter
forbids contexts its submodules); what needs the models is imported on first use."""

import pytest

import messaging


@pytest.mark.parametrize("name", messaging.__all__)
def test_every_public_name_resolves_to_the_thing_it_names(name):
    value = getattr(messaging, name)

    assert getattr(value, "__name__", name) == name


def test_a_name_the_bus_does_not_export_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Relay'"):
        messaging.Relay  # noqa: B018
