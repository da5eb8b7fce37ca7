"""Pure parts of the local broker manager."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path

import pytest

from bus import localkafka


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """An id that would start with '-' (read as an option by kafka-storage) is drawn again."""
    dash_first = uuid.UUID(bytes=base64.urlsafe_b64decode("-" + "A" * 21 + "=="))
    draws = iter([dash_first, uuid.UUID(int=1)])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(draws))
    cluster_id = localkafka.new_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(uuid.UUID(int=1).bytes).decode().rstrip("=")
    assert len(cluster_id) == 22


def test_port_free_sees_a_listening_socket() -> None:
    """A port with a listener is not free; a closed one is."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not localkafka.port_free(port)
    assert localkafka.port_free(localkafka.free_port())


def test_the_cluster_id_is_read_from_the_formatted_data_dir(tmp_path: Path) -> None:
    """`meta.properties` names the cluster the data dir was formatted for; none before formatting."""
    assert localkafka._cluster_id(tmp_path) is None
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "meta.properties").write_text("#\nnode.id=1\ncluster.id=AbC-12_xyz\nversion=1\n")
    assert localkafka._cluster_id(tmp_path) == "AbC-12_xyz"
