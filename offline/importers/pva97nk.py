"""pva97nk (KDD Cup 1998 derived) -> donor world: one profile per donor and the mailing response."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from models.contracts import AgeBand
from models.worlds import WorldKind, WorldManifest

from ._csv import Column, CsvSpec, read_bytes, read_csv
from ._world import (
    event_ids,
    event_table,
    label_table,
    nullable,
    nullable_floats,
    repeated,
    timestamps,
    to_us,
    validate_events,
    write_world,
)

SOURCE = "pva97nk"
DONOR_PREFIX = "pva-"
# The 1997 mailing whose response TargetB records; every profile is a snapshot taken then.
SNAPSHOT_TIME = datetime(1997, 6, 1, tzinfo=timezone.utc)
SPEC = CsvSpec(
    (
        Column("TargetB", "int"),
        Column("ID"),
        Column("TargetD", "float", required=False),
        Column("GiftCntAll", "int"),
        Column("GiftAvgAll", "float"),
        Column("GiftTimeLast", "float"),
        Column("GiftTimeFirst", "float"),
        Column("PromCnt12", "int"),
        Column("DemCluster", required=False),
        Column("DemAge", "float", required=False),
        Column("DemHomeOwner", required=False),
        Column("DemMedHomeValue", "float", required=False),
    )
)
# Lower edges of AgeBand's bands; below MIN_AGE an age is taken as a data-entry error.
AGE_EDGES = [25, 35, 45, 55, 65, 75]
AGE_BANDS = [b.value for b in AgeBand if b is not AgeBand.UNKNOWN]
MIN_AGE = 18


def import_pva97nk(path: Path, out: Path, progress: bool = True) -> WorldManifest:
    path = Path(path)
    rows = read_csv(read_bytes(path, SPEC.expected()), str(path), SPEC)
    ids = rows["ID"].astype(str)
    rows.check(repeated(ids), lambda i: f"ID {str(ids[i])!r} appears twice; expected one row per donor")
    target_b = rows["TargetB"]
    owner = np.array([(v or "").upper() for v in rows["DemHomeOwner"]], dtype=object)
    rows.check(~np.isin(target_b, (0, 1)), lambda i: f"column TargetB is {target_b[i]}; expected 0 or 1")
    rows.check(~np.isin(owner, ("H", "U", "")), lambda i: f"column DemHomeOwner is {owner[i]!r}; expected H, U or blank")

    age = rows["DemAge"]
    implausible_age = age < MIN_AGE  # NaN compares False: blank stays blank
    known_age = ~np.isnan(age) & ~implausible_age
    band = np.full(len(rows), AgeBand.UNKNOWN.value, dtype=object)
    band[known_age] = np.array(AGE_BANDS, dtype=object)[np.searchsorted(AGE_EDGES, age[known_age], side="right")]

    home_value = rows["DemMedHomeValue"]
    wealth = wealth_index(home_value)
    cluster = rows["DemCluster"]
    # KDD Cup 98 clusters are numbered 1-53; "00" is how the sample writes "no cluster".
    has_cluster = np.array([c is not None and c.strip("0") != "" for c in cluster])
    count, average = rows["GiftCntAll"], rows["GiftAvgAll"]
    n = len(rows)
    profiles = {
        "event_id": event_ids(SOURCE, rows.line, header_lines=1),
        "event_time": timestamps(np.full(n, to_us(SNAPSHOT_TIME))),
        "donor_id": np.char.add(DONOR_PREFIX, ids).astype(object),
        "tenure_years": rows["GiftTimeFirst"] / 12,
        "age_band": band,
        "wealth_index": nullable_floats(wealth),
        "home_owner": nullable(owner == "H", owner != "H", pa.bool_()),
        "region": np.where(has_cluster, np.char.add("cluster-", cluster.astype(str)), None),
        "promotions_received_12m": rows["PromCnt12"],
        "prior_gift_count": count,
        # Cents: count x average carries float noise (10 x 12.49 = 124.90000000000001).
        "prior_gift_total": np.round(count * average, 2),
        "months_since_last_gift": rows["GiftTimeLast"],
        "months_since_first_gift": rows["GiftTimeFirst"],
    }
    table = event_table("donor_profiles", profiles)
    validate_events("donor_profiles", table, rows.line, str(path), progress)

    response = label_table(
        "donor_response",
        {"donor_id": profiles["donor_id"], "responded": target_b == 1, "response_amount": nullable_floats(rows["TargetD"])},
    )
    counts = {
        "age_unknown_blank": int(np.isnan(age).sum()),
        "age_unknown_below_18": int(implausible_age.sum()),
        "home_value_missing_or_zero": int(np.isnan(wealth).sum()),
        "home_owner_unknown": int((owner != "H").sum()),
        "region_missing": int((~has_cluster).sum()),
    }
    manifest = WorldManifest(
        kind=WorldKind.DONORS,
        synthetic=False,
        source="pva97nk (KDD Cup 1998, Paralyzed Veterans of America)",
        description="Lapsed donors of a US veterans charity: one donor profile snapshot per donor at the 1997 "
        "mailing, labelled with whether (TargetB) and how much (TargetD) they gave in response.",
        parameters={
            "input": str(path),
            "rows_read": n,
            "snapshot_time": SNAPSHOT_TIME.isoformat(),
            "responders": int((target_b == 1).sum()),
            "missing": counts,
            "mapping": {
                "age_band": f"DemAge banded; blank or below {MIN_AGE} -> unknown",
                "home_owner": "DemHomeOwner H -> true, U or blank -> null",
                "wealth_index": "percentile rank of DemMedHomeValue among donors with a value > 0, in (0, 1]; 0 or blank -> null",
                "region": "cluster-<DemCluster>; blank or 00 -> null",
                "tenure_years": "GiftTimeFirst / 12",
                "promotions_received_12m": "PromCnt12",
                "prior_gift_count": "GiftCntAll",
                "prior_gift_total": "GiftCntAll x GiftAvgAll, rounded to cents",
                "months_since_last_gift": "GiftTimeLast",
                "months_since_first_gift": "GiftTimeFirst",
            },
        },
        notes=[
            "Donor level only: a single profile snapshot per donor at 1997-06-01 (the mailing). There are no gift "
            "events and no donor network in this data set, so gift-sequence and graph models cannot use it and "
            "the five segment targets cannot be computed; donor_response holds the one label it has.",
            "The sample is balanced 50/50 on TargetB (the original mailing response rate was about 5%); "
            "rescale probabilities before reading them as response rates.",
            f"Ages below {MIN_AGE} ({counts['age_unknown_below_18']} donors, several under 8) are taken as data-entry "
            f"errors and written as unknown, as are {counts['age_unknown_blank']} blank ages.",
            f"DemCluster is 00 or blank (no cluster; KDD Cup 98 clusters are 1-53) for {counts['region_missing']} donors: "
            "their region is null.",
            f"DemMedHomeValue is 0 for {counts['home_value_missing_or_zero']} donors; 0 is read as missing, so their "
            "wealth_index is null.",
            "No cut-off or horizon is set: features are the snapshot, the target is the response to that mailing.",
            "KDD Cup 1998 terms of use apply.",
        ],
    )
    return write_world(out, {"donor_profiles": table}, {"donor_response": response}, manifest)


def wealth_index(home_value: np.ndarray) -> np.ndarray:
    """Empirical CDF of the values > 0 (the share of them <= each), NaN for 0 or NaN.

    >>> wealth_index(np.array([100.0, 0.0, 300.0, np.nan, 100.0, 200.0])).tolist()
    [0.5, nan, 1.0, nan, 0.5, 0.75]
    """
    present = home_value > 0  # NaN compares False
    known = np.sort(home_value[present])
    out = np.full(len(home_value), np.nan)
    out[present] = np.searchsorted(known, home_value[present], side="right") / len(known)
    return out
