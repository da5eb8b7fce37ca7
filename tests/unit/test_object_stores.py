"""`sources.object_stores` in the manifest and the webhook secrets the gateway derives from them."""

from __future__ import annotations

from typing import Any

import pytest

from bus.errors import ManifestError
from bus.manifest import ObjectStore, parse
from gateway.settings import webhook_secrets


def _stores(*items: dict[str, Any]) -> tuple[ObjectStore, ...]:
    return parse({"sources": {"object_stores": list(items)}}).object_stores


def test_object_stores_are_parsed_with_their_secret_variables() -> None:
    """Each declared store keeps its name, provider and secret variable."""
    stores = _stores(
        {"name": "uploads", "provider": "s3", "secret_env": "UPLOADS_WEBHOOK_SECRET"},
        {"name": "media", "provider": "minio"},
    )
    assert stores == (
        ObjectStore(name="uploads", provider="s3", secret_env="UPLOADS_WEBHOOK_SECRET"),
        ObjectStore(name="media", provider="minio", secret_env=None),
    )


@pytest.mark.parametrize(
    ("items", "path"),
    [
        ([{"provider": "s3"}], "sources.object_stores[0].name"),
        ([{"name": "a", "provider": "gcs"}], "sources.object_stores[0].provider"),
        (
            [{"name": "a", "provider": "s3", "secret_env": "lower-case"}],
            "sources.object_stores[0].secret_env",
        ),
        (
            [{"name": "a", "provider": "s3"}, {"name": "a", "provider": "oss"}],
            "sources.object_stores[1].name",
        ),
        ([{"name": "a", "provider": "s3", "token": "x"}], "sources.object_stores[0].token"),
    ],
)
def test_invalid_object_stores_name_the_path(items: list[dict[str, Any]], path: str) -> None:
    """A bad store entry is refused with the manifest path of the problem."""
    with pytest.raises(ManifestError) as caught:
        _stores(*items)
    assert caught.value.path == path


def test_secrets_are_gathered_per_provider_and_split_for_rotation() -> None:
    """Stores of one provider pool their secrets; a comma separates an old and a new secret."""
    stores = _stores(
        {"name": "a", "provider": "s3", "secret_env": "A_SECRET"},
        {"name": "b", "provider": "s3", "secret_env": "B_SECRET"},
        {"name": "c", "provider": "oss"},
    )
    secrets, missing = webhook_secrets({"A_SECRET": "new, old", "B_SECRET": "other"}, stores)
    assert secrets == {"s3": (b"new", b"old", b"other")}
    assert missing == {}


def test_a_missing_secret_variable_fails_that_provider_closed_naming_it() -> None:
    """Declaring secret_env without setting the variable leaves the provider with no secret but listed
    as missing one (its notifications are refused), naming the variable and where to set it."""
    stores = _stores(
        {"name": "uploads", "provider": "s3", "secret_env": "UPLOADS_WEBHOOK_SECRET"},
        {"name": "media", "provider": "minio", "secret_env": "MEDIA_SECRET"},
    )
    secrets, missing = webhook_secrets({"MEDIA_SECRET": "m"}, stores)
    assert secrets == {"minio": (b"m",)}
    (item,) = missing["s3"]
    assert item.variable == "UPLOADS_WEBHOOK_SECRET"
    assert item.missing
    assert "set UPLOADS_WEBHOOK_SECRET" in item.reason
    assert "gateway's environment" in item.reason
