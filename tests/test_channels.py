"""The bus's registry of local subscribers by channel, on its own: it tells
the bus when Redis must be asked for a channel and when it may forget one."""

from __future__ import annotations

from hub.delivery.channels import Channels


def test_the_first_member_of_a_channel_asks_for_it_and_the_last_lets_it_go() -> None:
    channels: Channels[str] = Channels()
    assert channels.add("job:1", "alice") is True
    assert channels.add("job:1", "bob") is False
    assert channels.add("job:2", "alice") is True
    assert len(channels) == 2
    assert channels.remove("job:1", "alice") is False
    assert channels.members("job:1") == ("bob",)
    assert channels.remove("job:1", "bob") is True
    assert "job:1" not in channels and len(channels) == 1


def test_adding_a_member_twice_or_removing_a_stranger_changes_nothing() -> None:
    channels: Channels[str] = Channels()
    channels.add("c", "alice")
    assert channels.add("c", "alice") is False
    assert channels.members("c") == ("alice",)
    assert channels.remove("c", "mallory") is False
    assert channels.remove("elsewhere", "alice") is False
    assert channels.remove("c", "alice") is True


def test_members_is_a_snapshot_that_survives_members_leaving_while_visited() -> None:
    channels: Channels[int] = Channels()
    for member in range(5):
        channels.add("c", member)
    visited = []
    for member in channels.members("c"):
        visited.append(member)
        channels.remove("c", member)
    assert sorted(visited) == [0, 1, 2, 3, 4]
    assert len(channels) == 0


def test_clear_hands_over_each_member_once_per_channel_and_empties_the_registry() -> None:
    channels: Channels[str] = Channels()
    channels.add("a", "x")
    channels.add("a", "y")
    channels.add("b", "x")
    members = sorted(channels.clear())
    assert members == ["x", "x", "y"]
    assert len(channels) == 0 and channels.members("a") == ()
