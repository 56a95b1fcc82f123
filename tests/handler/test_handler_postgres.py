"""The handler's registry-dependent paths — seq windows and status batches, per-car command counters, command
transitions and expiry, idempotent requests, pushes after a restart — again over PostgreSQL (what a scaled-out
cloud shares)."""

from __future__ import annotations

import pytest
from handler_kit import Stack
from test_handler_batches import (
    test_a_store_failure_mid_batch_applies_nothing_and_acknowledges_nothing_until_it_heals,
    test_events_and_results_that_arrive_late_are_applied_replays_are_not,
    test_one_batch_drops_duplicates_takes_late_seqs_and_keeps_the_newest_then_acks_in_order,
)
from test_handler_car_messages import (
    test_duplicate_status_is_dropped_not_applied_twice,
    test_forged_signature_is_refused_and_changes_nothing,
    test_replayed_result_is_refused,
)
from test_handler_commands import (
    test_command_reaches_the_car_signed_and_verifiable_with_the_cloud_jwks,
    test_lifecycle_as_the_app_sees_it,
    test_same_request_id_creates_one_command,
    test_timed_out_on_the_virtual_clock_when_no_car_answers,
)
from test_handler_pushes import test_pushes_survive_a_cloud_restart
from test_handler_reliability import test_two_cloud_processes_share_the_work

pytestmark = pytest.mark.postgres

__all__ = [
    "test_a_store_failure_mid_batch_applies_nothing_and_acknowledges_nothing_until_it_heals",
    "test_command_reaches_the_car_signed_and_verifiable_with_the_cloud_jwks",
    "test_duplicate_status_is_dropped_not_applied_twice",
    "test_events_and_results_that_arrive_late_are_applied_replays_are_not",
    "test_forged_signature_is_refused_and_changes_nothing",
    "test_lifecycle_as_the_app_sees_it",
    "test_one_batch_drops_duplicates_takes_late_seqs_and_keeps_the_newest_then_acks_in_order",
    "test_pushes_survive_a_cloud_restart",
    "test_replayed_result_is_refused",
    "test_same_request_id_creates_one_command",
    "test_timed_out_on_the_virtual_clock_when_no_car_answers",
    "test_two_cloud_processes_share_the_work",
]


@pytest.fixture
def registry_url(pg_registry_url: str) -> str:
    """Every test of this module runs over PostgreSQL."""
    return pg_registry_url


async def test_the_stack_runs_over_postgresql(stack: Stack) -> None:
    assert stack.services.registry.dialect == "postgresql"
