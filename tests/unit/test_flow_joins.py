"""Flow joins (bus.flow_joins): parts gathered per run, the joined event, the timeout's error."""

from __future__ import annotations

import pytest

from bus.events import to_json_dict
from bus.flow_joins import (
    JOINED_TYPE,
    JoinSpec,
    Waiting,
    arrive,
    complete,
    decode_waiting,
    encode_waiting,
    join_error,
    joined_event,
    state_key,
    timeout_message,
)

SPEC = JoinSpec(flow="ml", step="model", function="train", parts=("features", "stats"), timeout=60.0)


def part(step: str, data: object) -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": f"res-{step}",
        "source": "s",
        "type": "bus.function.result",
        "data": data,
    }


def test_the_first_part_starts_the_join_with_its_deadline_and_offset() -> None:
    waiting = arrive(None, SPEC, "stats", part("stats", {"mean": 2}), run="r1", at_ms=1_000, offset=7)
    assert (waiting.run, waiting.deadline_ms, waiting.first_offset) == ("r1", 61_000, 7)
    assert list(waiting.parts) == ["stats"]
    assert not complete(SPEC, waiting)


def test_the_last_part_completes_it_and_the_joined_event_maps_steps_to_data() -> None:
    waiting = arrive(None, SPEC, "stats", part("stats", {"mean": 2}), run="r1", at_ms=1_000, offset=7)
    waiting = arrive(waiting, SPEC, "features", part("features", [1, 2]), run="r1", at_ms=5_000, offset=9)
    assert waiting.deadline_ms == 61_000  # from the first part
    assert complete(SPEC, waiting)
    joined = joined_event("p", SPEC, waiting, time="2026-12-03T00:00:00Z")
    assert joined.type == JOINED_TYPE
    assert joined.data == {"features": [1, 2], "stats": {"mean": 2}}
    assert joined.source == "bus://p/flows/ml"
    assert {k: joined.extensions[k] for k in ("busflow", "busflowstep", "busflowrun", "partitionkey")} == {
        "busflow": "ml",
        "busflowstep": "model",
        "busflowrun": "r1",
        "partitionkey": "r1",
    }
    again = joined_event("p", SPEC, waiting, time="2026-12-03T00:00:09Z")
    assert again.id == joined.id  # one join of one run, one id


def test_a_repeated_part_and_a_part_of_a_done_join_change_nothing() -> None:
    waiting = arrive(None, SPEC, "stats", part("stats", 1), run="r1", at_ms=0, offset=0)
    assert arrive(waiting, SPEC, "stats", part("stats", 2), run="r1", at_ms=1, offset=1) is waiting
    done = Waiting(flow="ml", step="model", run="r1", deadline_ms=5, done=True)
    assert arrive(done, SPEC, "features", part("features", 1), run="r1", at_ms=1, offset=2) is done
    assert not complete(SPEC, done)


def test_a_step_that_is_not_a_part_is_refused() -> None:
    with pytest.raises(ValueError, match=r"not a part of join ml\.model"):
        arrive(None, SPEC, "clean", part("clean", 1), run="r1", at_ms=0, offset=0)


def test_the_state_record_round_trips_and_a_done_join_keeps_no_parts() -> None:
    waiting = arrive(None, SPEC, "stats", part("stats", {"x": "ü"}), run="r1", at_ms=0, offset=3)
    assert decode_waiting(encode_waiting(waiting)) == waiting
    done = Waiting(flow="ml", step="model", run="r1", deadline_ms=5, parts={"stats": {}}, done=True)
    assert decode_waiting(encode_waiting(done)).parts == {}
    assert state_key("ml", "model", "r1") != state_key("ml", "model2", "r1")
    with pytest.raises(ValueError, match="not a join state"):
        decode_waiting(b"[1]")


def test_a_timeout_is_a_function_error_naming_the_missing_steps() -> None:
    waiting = arrive(None, SPEC, "stats", part("stats", 1), run="r1", at_ms=0, offset=4)
    message = timeout_message(SPEC, waiting)
    assert message == "join ml.model waited 60s for features (arrived: stats)"
    error = join_error(
        "p",
        SPEC,
        waiting,
        error_type="JoinTimeout",
        message=message,
        time="2026-12-03T00:01:00Z",
        topic="p.flows.joins",
        partition=2,
    )
    assert error.type == "bus.function.error"
    assert error.extensions["busflowstep"] == "model"
    assert error.extensions["busflowrun"] == "r1"
    data = error.data
    assert isinstance(data, dict)
    assert (data["function"], data["error_type"], data["attempts"]) == ("train", "JoinTimeout", 0)
    assert (data["topic"], data["partition"], data["offset"]) == ("p.flows.joins", 2, 4)
    assert data["event"]["data"] == {"stats": 1}
    assert data["event"] == to_json_dict(joined_event("p", SPEC, waiting, time="2026-12-03T00:01:00Z"))
