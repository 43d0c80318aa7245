"""AllocationBlock logic: FIFO reuse, attribute reference counting, consistency."""

from __future__ import annotations

from pycalico.ipam.block import AllocationBlock


def test_new_block_matches_calico_shape() -> None:
    block = AllocationBlock.new("10.244.1.0/26", "host:n1")
    data = block.to_json()
    assert len(data["allocations"]) == 64 and data["unallocated"] == list(range(64))
    assert data["affinity"] == "host:n1" and data["deleted"] is False
    assert AllocationBlock.from_json(data).to_json() == data


def test_ordinal_zero_is_assignable_and_released_addresses_go_to_the_tail() -> None:
    block = AllocationBlock.new("10.244.1.0/30", "host:n1")
    assert block.assign(1, "h0", {}) == [0]
    assert str(block.address(0)) == "10.244.1.0"
    assert block.assign(1, "h1", {}) == [1]
    block.release([0])
    assert block.unallocated == [2, 3, 0]
    assert block.assign(2, "h2", {}) == [2, 3]
    assert block.assign(1, "h3", {}) == [0]
    assert block.problems() == []


def test_identical_attributes_are_shared_and_unused_ones_removed() -> None:
    block = AllocationBlock.new("10.244.1.0/29", "host:n1")
    block.assign(2, "a", {"node": "n1"})
    block.assign(1, "b", {"node": "n1"})
    assert len(block.attributes) == 2 and block.allocations[:3] == [0, 0, 1]
    freed = block.release(block.ordinals_of_handle("a"))
    assert freed == {"a": 2}
    assert block.attributes == [{"handle_id": "b", "secondary": {"node": "n1"}}]
    assert block.allocations[2] == 0 and block.problems() == []


def test_problems_reports_inconsistent_free_list() -> None:
    block = AllocationBlock.new("10.244.1.0/30", "host:n1")
    block.assign(1, "a", {})
    block.unallocated.append(0)
    assert any("unallocated" in p for p in block.problems())


def test_release_of_free_ordinal_is_a_no_op() -> None:
    block = AllocationBlock.new("10.244.1.0/30", None)
    seq = block.sequence_number
    assert block.release([1]) == {}
    assert block.sequence_number == seq and block.unallocated == [0, 1, 2, 3]
