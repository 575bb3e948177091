"""One advance operator per provider, and the DAG has an advance task for each."""
from __future__ import annotations

from outreach.operators.advance import (
    OPERATORS,
    EmailAdvanceOperator,
    LinkedInAdvanceOperator,
    TwitterAdvanceOperator,
    XmtpAdvanceOperator,
)
from outreach.providers.registry import IMPLEMENTED
from outreach.store.db import PROJECT_ROOT


def test_operator_per_provider():
    assert OPERATORS == {"x": TwitterAdvanceOperator, "linkedin": LinkedInAdvanceOperator,
                         "xmtp": XmtpAdvanceOperator, "email": EmailAdvanceOperator}
    assert set(OPERATORS) == set(IMPLEMENTED)
    assert all(op.provider == p for p, op in OPERATORS.items())


def test_dag_has_an_advance_task_per_provider():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags"))
    dag = bag.dags["outreach_sequences"]
    for p in OPERATORS:
        assert f"advance_{p}" in dag.task_ids and f"plan_advance_{p}" in dag.task_ids
        assert isinstance(dag.get_task(f"advance_{p}"), OPERATORS[p]) or \
            dag.get_task(f"advance_{p}").__class__.__name__ == "MappedOperator"
