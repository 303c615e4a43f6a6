"""Learning from a deployment (issue 17): a randomised deployment appended to the decisions history
is estimated by its own treatment-control contrast (sim.response), not pooled with every "none".

The constructed book: customers the plan contacts are busy (3 transactions a period), the others
quiet (0.3); 20 % of the planned customers are held out as controls; the action multiplies the
treated customers' rate by 1 + LIFT for its duration. Pooling the deployment's "none" rows (its
controls and its quiet uncontacted customers, propensity 1) into one arm compares busy treated
customers with mostly quiet ones; the experiment's contrast compares them with their controls.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from sim.calibrate import calibrate
from sim.catalogue import STAGES, default_bank_catalogue
from sim.errors import HistoryError
from sim.history import load_history
from sim.response import DecisionData, deployment_plan, estimate_response, load_priors, prior_response

LIFT = 0.3
ACTION = "push_cashback"  # duration 4 in the bundled priors
STAGE = STAGES.index("maturity")
N_BUSY, N_QUIET, W, T0 = 1500, 2500, 40, 20
CATALOGUE = default_bank_catalogue()
A = CATALOGUE.names.index(ACTION)
PRIORS = load_priors()
PRIOR = prior_response(CATALOGUE, PRIORS)
D = PRIOR.duration[A]


def deployment_book(seed: int = 0, logged: bool = False):
    """(counts, DecisionData) of the constructed book; `logged` adds a uniformly randomised
    logged decision (the action or none, 1/2 each) for every customer at period 5."""
    rng = np.random.default_rng(seed)
    n = N_BUSY + N_QUIET
    rate = np.where(np.arange(n) < N_BUSY, 3.0, 0.3)
    planned = np.where(np.arange(n) < N_BUSY, A, 0)
    control = (planned > 0) & (rng.random(n) < 0.2)
    action = np.where(control, 0, planned)
    prop = np.where(planned == 0, 1.0, np.where(control, 0.2, 0.8))
    mult = np.ones((n, W))
    mult[action > 0, T0 : T0 + D] *= 1 + LIFT
    cust, period, act, weight, plan, gap = [np.arange(n)], [np.full(n, T0)], [action], [1 / prop], [planned], []
    gap.append(np.full(n, 10_000))
    if logged:
        early = np.where(rng.random(n) < 0.5, A, 0)
        mult[early > 0, 5 : 5 + D] *= 1 + LIFT
        cust.insert(0, np.arange(n))
        period.insert(0, np.full(n, 5))
        act.insert(0, early)
        weight.insert(0, np.full(n, 2.0))
        plan.insert(0, np.full(n, -1))
        gap.insert(0, np.full(n, T0 - 5))
    counts = rng.poisson(rate[:, None] * mult).astype(np.int16)
    k = sum(len(c) for c in cust)
    dec = DecisionData(
        cust=np.concatenate(cust),
        period=np.concatenate(period),
        action=np.concatenate(act).astype(np.int16),
        weight=np.concatenate(weight),
        stage=np.full(k, STAGE),
        fatigue=np.ones(k),
        gap=np.concatenate(gap).astype(np.int64),
        clean=np.ones(k, bool),
        planned=np.concatenate(plan).astype(np.int64),
    )
    return counts, dec


def estimate(counts, dec):
    mu = np.full(len(STAGES), 0.02)
    return estimate_response(PRIOR, CATALOGUE, dec, counts, None, mu, W, [], seed=0, priors=PRIORS)


def subset(dec: DecisionData, keep: np.ndarray, planned: bool = True) -> DecisionData:
    return DecisionData(
        **{f: (getattr(dec, f)[keep] if f != "planned" or planned else None) for f in DecisionData.__dataclass_fields__}
    )


def test_the_experiment_contrast_is_unbiased_where_pooling_the_none_arm_is_not():
    counts, dec = deployment_book()
    _, rep = estimate(counts, dec)
    _, pooled = estimate(counts, subset(dec, np.ones(dec.cust.size, bool), planned=False))
    est, se = rep["raw"]["activity_lift"][A][STAGE], rep["se"]["activity_lift"][A][STAGE]
    # within 4 standard errors of the true lift, and the standard error is that of ~300 controls
    assert abs(est - LIFT) < 4 * se and se < 0.05, (est, se)
    # the pooled "none" arm is mostly quiet customers: busy treated against them is a lift near 2
    assert pooled["raw"]["activity_lift"][A][STAGE] > LIFT + 1.0
    cell = next(c for c in rep["deployment"]["cells"] if c["effect"] == "activity_lift")
    assert (cell["action"], cell["stage"], cell["experiment_weight"]) == (ACTION, "maturity", 1.0)
    n_control = int(((dec.planned == A) & (dec.action == 0)).sum())
    assert (cell["treated"], cell["control"]) == (N_BUSY - n_control, n_control)
    assert cell["observational"] is None and cell["source_without_deployment"] == "prior"
    assert f"activity_lift {ACTION} x maturity" in rep["deployment"]["moved_from_prior"]


def test_a_deployment_is_combined_with_the_other_decisions_by_inverse_variance():
    counts, dec = deployment_book(seed=1, logged=True)
    _, rep = estimate(counts, dec)
    # the observational estimate is that of the other logged decisions alone, exactly
    _, alone = estimate(counts, subset(dec, dec.planned < 0))
    cell = next(c for c in rep["deployment"]["cells"] if c["effect"] == "activity_lift")
    assert cell["observational"] == alone["raw"]["activity_lift"][A][STAGE]
    assert cell["observational_se"] == alone["se"]["activity_lift"][A][STAGE]
    pe, se_e, po, se_o = cell["experiment"], cell["experiment_se"], cell["observational"], cell["observational_se"]
    we = se_e**-2 / (se_e**-2 + se_o**-2)
    assert cell["experiment_weight"] == pytest.approx(we, rel=1e-12)
    assert rep["raw"]["activity_lift"][A][STAGE] == pytest.approx(we * pe + (1 - we) * po, rel=1e-12)
    # the combination is more precise than either, and both estimate the one true lift
    assert cell["se"] < min(se_e, se_o)
    assert abs(cell["estimate"] - LIFT) < 4 * cell["se"]
    assert rep["decisions_per_cell"][A][STAGE] == int((dec.action[dec.planned < 0] == A).sum())


def test_deployment_columns_without_a_deployment_row_leave_the_estimate_unchanged():
    counts, dec = deployment_book(seed=2, logged=True)
    logged = subset(dec, dec.planned < 0)
    model_c, with_columns = estimate(counts, logged)
    model, without = estimate(counts, subset(logged, np.ones(logged.cust.size, bool), planned=False))
    # NaN marks the cells without an estimate: compared as JSON text, where NaN equals NaN
    assert json.dumps(with_columns) == json.dumps(without) and "deployment" not in without
    assert json.dumps(model_c.__dict__) == json.dumps(model.__dict__)
    assert np.isfinite(without["raw"]["activity_lift"][A][STAGE])


def _frame(**columns) -> pd.DataFrame:
    base = {
        "customer_id": ["c1", "c2", "c3"],
        "date": pd.to_datetime(["2024-07-01"] * 3),
        "action": ["push_cashback", "none", "none"],
        "propensity": [0.8, 0.2, 1.0],
        "group": ["treatment", "control", "treatment"],
        "planned_action": ["push_cashback", "push_cashback", "none"],
    }
    base.update(columns)
    return pd.DataFrame(base)


def test_deployment_plan_reads_the_plan_and_leaves_other_rows_out():
    f = _frame(group=["treatment", "control", ""], planned_action=["push_cashback", "push_cashback", np.nan])
    assert deployment_plan(f, CATALOGUE, "decisions.csv").tolist() == [A, A, -1]
    assert deployment_plan(f.drop(columns="planned_action"), CATALOGUE, "decisions.csv") is None


@pytest.mark.parametrize(
    "columns, column, message",
    [
        (
            {"group": ["treatment", "holdout", "treatment"]},
            "group",
            "group 'holdout' is not treatment, control or explore",
        ),
        (
            {"planned_action": ["push_cashback", "push_cash", "none"]},
            "planned_action",
            "unknown planned action 'push_cash'",
        ),
        ({"planned_action": ["push_cashback", "", "none"]}, "planned_action", "planned_action is empty"),
        ({"group": ["treatment", None, "treatment"]}, "planned_action", "group is empty"),
        (
            {"action": ["push_cashback", "sms_activation_bonus", "none"]},
            "action",
            "a control row must have action 'none'",
        ),
        ({"action": ["email_card_offer", "none", "none"]}, "action", "gets its planned action 'push_cashback'"),
    ],
)
def test_a_deployment_row_that_contradicts_the_randomisation_is_refused(columns, column, message):
    with pytest.raises(HistoryError) as err:
        deployment_plan(_frame(**columns), CATALOGUE, "hist/decisions.csv")
    assert err.value.column == column and err.value.file == "hist/decisions.csv"
    assert message in str(err.value) and "the decision of customer" in str(err.value)


def _write_history(folder, five_columns: bool = False, bad_control: bool = False, seed: int = 5):
    """A history folder: 60 weekly periods of a busy (1.5 a week) / quiet (0.15) book as transaction rows,
    the deployment in week T0 appended to the decisions as its file is (nine columns)."""
    rng = np.random.default_rng(seed)
    n = 2000
    busy = np.arange(n) < 800
    planned = np.where(busy, ACTION, "none")
    control = busy & (rng.random(n) < 0.25)
    action = np.where(control, "none", planned)
    prop = np.where(~busy, 1.0, np.where(control, 0.25, 0.75))
    weeks = 60
    rate = np.where(busy, 1.5, 0.15)[:, None] * np.ones((n, weeks))
    rate[action != "none", T0 : T0 + D] *= 1 + LIFT
    # at most one transaction a day, on a week's first days: the panel counts what the book did
    # (calibration merges same-day rows); at these rates a week of more than 7 has chance < 0.001
    counts = np.minimum(rng.poisson(rate), 7)
    counts[:, 0] = np.maximum(counts[:, 0], 1)  # everyone is born in week 0
    c, w = np.nonzero(counts)
    rep = counts[c, w]
    start = pd.Timestamp("2023-01-02")
    day = np.concatenate([np.arange(k) for k in rep])
    tx = pd.DataFrame(
        {
            "customer_id": np.repeat([f"C{i:05d}" for i in c], rep),
            "date": start + pd.to_timedelta(np.repeat(w * 7, rep) + day, unit="D"),
            "amount": 20.0,
        }
    )
    tx.to_csv(folder / "transactions.csv", index=False)
    group = np.where(control, "treatment", "treatment").astype(object)
    group[control] = "control"
    dep = pd.DataFrame(
        {
            "customer_id": [f"C{i:05d}" for i in range(n)],
            "date": (start + pd.Timedelta(days=7 * T0)).date(),
            "action": action,
            "propensity": prop,
            "cost": np.where(action == "none", 0.0, 0.1),
            "group": group,
            "planned_action": planned,
        }
    )
    if bad_control:
        dep.loc[np.flatnonzero(control)[0], "action"] = ACTION
    (dep.iloc[:, :5] if five_columns else dep).to_csv(folder / "decisions.csv", index=False)
    return tx["date"].max()


def test_calibrate_learns_the_lift_from_a_deployment_appended_to_the_history(tmp_path):
    (tmp_path / "nine").mkdir()
    (tmp_path / "five").mkdir()
    end = _write_history(tmp_path / "nine")
    _write_history(tmp_path / "five", five_columns=True)
    world, _, _ = calibrate(load_history(tmp_path / "nine"), end)
    pooled, _, _ = calibrate(load_history(tmp_path / "five"), end)
    cells = [c for c in world.fit["response"]["deployment"]["cells"] if c["effect"] == "activity_lift"]
    assert cells and all(c["action"] == ACTION for c in cells)
    for c in cells:
        assert abs(c["experiment"] - LIFT) < 4 * c["experiment_se"], c
        s = STAGES.index(c["stage"])
        # the same rows read as ordinary logged decisions: the quiet customers make the lift large
        assert pooled.fit["response"]["raw"]["activity_lift"][A][s] > LIFT + 0.5
    said = [a for a in world.assumptions if "randomised deployment" in a]
    assert len(said) == 1 and f"activity_lift {ACTION} x {cells[0]['stage']}" in said[0]
    assert "moved from priors to data by it" in said[0]
    assert "deployment" not in pooled.fit["response"]
    assert not any("randomised deployment" in a for a in pooled.assumptions)


def test_calibrate_names_the_decisions_file_of_a_contradictory_deployment_row(tmp_path):
    end = _write_history(tmp_path, bad_control=True)
    with pytest.raises(HistoryError, match=r"decisions\.csv, column 'action': the decision of customer 'C\d+' on"):
        calibrate(load_history(tmp_path), end)
