"""Importers: the real data sets become valid, time-ordered worlds; bad inputs fail clearly."""

from __future__ import annotations

import gzip
import io
import re
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from models.contracts import from_record
from models.worlds import EVENT_STREAMS, LABEL_FILES, World, open_world
from offline.importers import IMPORTERS, ImportFormatError, run_importer
from offline.importers._world import spread_within
from offline.importers.cdnow import donor_targets

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL = {
    "paysim": DATA / "paysim" / "paysim_prefix_first19999rows_steps1-8.csv.gz",
    "amlsim": DATA / "amlsim" / "20K_fanin200cycle200.tgz",
    "bitcoin-otc": DATA / "bitcoin_otc" / "soc-sign-bitcoinotc.csv.gz",
    "cdnow": DATA / "donors" / "CDNOW_master.txt.gz",
    "pva97nk": DATA / "donors" / "pva97nk.csv.gz",
}
STREAM = {"paysim": "transactions", "amlsim": "transactions", "bitcoin-otc": "transactions", "cdnow": "gifts", "pva97nk": "donor_profiles"}
ID_PATTERN = re.compile(r"^[A-Za-z0-9_.:@\-]+$")
UTC = timezone.utc


# ---------------------------------------------------------------- real data sets


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Import each real data set once per module, on first use."""
    worlds: dict[str, World] = {}

    def get(source: str) -> World:
        if source not in worlds:
            if not REAL[source].exists():
                pytest.skip(f"real data set missing: {REAL[source]} (expected the shared data folder at {DATA})")
            out = tmp_path_factory.mktemp(source)
            run_importer(source, REAL[source], out, progress=False)
            worlds[source] = open_world(out)
        return worlds[source]

    return get


def _fraction(table, column: str) -> int:
    return int(pc.sum(table.column(column)).as_py() or 0)


@pytest.mark.parametrize("source", list(REAL))
def test_real_world_is_ordered_unique_and_valid(imported, source):
    world = imported(source)
    stream = STREAM[source]
    assert world.manifest.synthetic is False
    assert world.manifest.parameters["input"] == str(REAL[source])
    assert world.manifest.notes
    assert world.streams == [stream]
    events = world.read_events(stream)
    assert events.schema.names == EVENT_STREAMS[stream].schema.names

    times = events.column("event_time").cast("int64").to_numpy()
    assert (np.diff(times) >= 0).all()
    ids = events.column("event_id").to_pylist()
    assert len(set(ids)) == len(ids)
    assert all(ID_PATTERN.match(i) and len(i) <= 64 for i in ids)

    # The importer validates every row; check a sample independently, as the worker would.
    rows = np.random.default_rng(0).choice(events.num_rows, size=min(2_000, events.num_rows), replace=False)
    contract = EVENT_STREAMS[stream].contract
    for record in events.take(np.sort(rows)).to_pylist():
        from_record(record, contract)

    for name in ("transactions", "accounts", "donor_targets", "donor_response"):
        if world.has_labels(name):
            assert world.read_labels(name).schema.equals(LABEL_FILES[name])


def test_paysim_counts(imported):
    world = imported("paysim")
    events, labels = world.read_events("transactions"), world.read_labels("transactions")
    dropped = world.manifest.parameters["rows_dropped"]
    assert events.num_rows == 19_999 - sum(dropped.values()) == 19_999
    assert labels.column("event_id").equals(events.column("event_id"))
    assert _fraction(labels, "is_fraud") == 81
    assert set(events.column("type").to_pylist()) == {"payment", "transfer", "cash_out", "cash_in", "debit"}
    first, last = world.manifest.time_range
    assert first == datetime(2025, 1, 1, 1, tzinfo=UTC) and last < datetime(2025, 1, 1, 9, tzinfo=UTC)
    accounts = world.read_labels("accounts")
    fraud = accounts.filter(accounts.column("is_fraud"))
    assert fraud.num_rows == 81  # every sender appears once in this prefix
    assert fraud.column("fraud_since").null_count == 0
    assert accounts.filter(pc.invert(accounts.column("is_fraud"))).column("fraud_since").null_count == accounts.num_rows - 81


def test_amlsim_counts(imported):
    world = imported("amlsim")
    events, labels = world.read_events("transactions"), world.read_labels("transactions")
    dropped = world.manifest.parameters["rows_dropped"]
    assert dropped == {"zero_amount": 0, "self_transfer": 15}
    assert events.num_rows == 120_558 - 15
    # 7,885 transfers have two fraud ends; 9 of them are self-transfers, dropped.
    assert _fraction(labels, "is_fraud") == 7_885 - 9
    accounts = world.read_labels("accounts")
    assert accounts.num_rows == 20_000
    assert _fraction(accounts, "is_fraud") == 1_804
    assert accounts.filter(accounts.column("is_fraud")).column("fraud_since").null_count == 0
    assert events.column("source_account")[0].as_py().startswith("aml-")


def test_bitcoin_otc_counts(imported):
    world = imported("bitcoin-otc")
    events, labels = world.read_events("transactions"), world.read_labels("transactions")
    assert events.num_rows == 35_592
    assert _fraction(labels, "is_fraud") == 3_563
    assert set(labels.filter(labels.column("is_fraud")).column("pattern_type").to_pylist()) == {"negative_rating"}
    assert set(events.column("amount").to_pylist()) == {1.0}  # the rating must not leak into events
    assert set(events.column("currency").to_pylist()) == {"XBT"}
    accounts = world.read_labels("accounts")
    assert accounts.num_rows == 5_881
    assert _fraction(accounts, "is_fraud") == 814
    first, last = world.manifest.time_range
    assert first.year == 2010 and last.year == 2016
    assert any("ICDM 2016" in note for note in world.manifest.notes)


def test_cdnow_counts_and_targets(imported):
    world = imported("cdnow")
    manifest = world.manifest
    gifts = world.read_events("gifts")
    assert manifest.parameters["rows_dropped"] == {"zero_amount": 80}
    assert gifts.num_rows == 69_659 - 80
    assert manifest.parameters["customers_read"] == 23_570
    assert len(pc.unique(gifts.column("donor_id"))) == 23_502  # 68 customers bought only $0 items
    assert (manifest.cutoff, manifest.horizon) == (datetime(1997, 10, 1, tzinfo=UTC), datetime(1998, 7, 1, tzinfo=UTC))
    targets = world.read_labels("donor_targets")
    n = targets.num_rows
    assert n == 23_500
    assert _fraction(targets, "high_engagement") == _fraction(targets, "network_influence") == 0
    for name, share in {"giving_consistency": 0.20, "high_value": 0.15, "recent_engagement": 0.25}.items():
        assert 0 < _fraction(targets, name) <= round(share * n)
    assert set(manifest.parameters["targets_unavailable"]) == {"high_engagement", "network_influence"}


def test_pva97nk_counts(imported):
    world = imported("pva97nk")
    profiles, response = world.read_events("donor_profiles"), world.read_labels("donor_response")
    assert profiles.num_rows == response.num_rows == 9_686
    assert response.column("donor_id").equals(profiles.column("donor_id"))
    assert _fraction(response, "responded") == 4_843
    assert response.column("response_amount").null_count == 9_686 - 4_843
    wealth = profiles.column("wealth_index")
    assert 0 < pc.min(wealth).as_py() and pc.max(wealth).as_py() == 1.0
    assert wealth.null_count == 103  # DemMedHomeValue 0
    assert set(profiles.column("home_owner").to_pylist()) == {True, None}


# ---------------------------------------------------------------- small inputs

PAYSIM_HEADER = "step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,newbalanceDest,isFraud,isFlaggedFraud"
PAYSIM_ROWS = [
    "1,PAYMENT,9839.64,C1,170136,160296.36,M1,0,0,0,0",
    "1,TRANSFER,181,C2,181,0,C3,0,0,1,0",
    "2,CASH_OUT,0,C4,181,0,C5,21182,0,0,0",
    "1,CASH_IN,50,C6,,,C7,,,0,0",
]
NODES = "nodeid,isFraud,init_balance,fraudStep\n0,0,100,-1\n1,1,100,3\n2,1,100,-1\n3,0,100,-1\n"
TRANSACTIONS = "sourceNodeId,targetNodeId,value,time\n0,1,10,1\n1,2,20,1\n2,2,5,2\n2,3,7,2\n1,2,9,5\n"
BTC = "6,2,4,1289241911.72836\n6,5,-2,1289241941.53378\n1,6,-1,1289243140.39049\n2,6,-3,1289243150.5\n"
CDNOW = " 00001 19970101  1   11.77\r\n 00002 19970112  1   12.00\r\n 00002 19970112  5   77.00\r\n 00003 19971102  2   0.00\r\n 00003 19980330  2   20.76\r\n"
PVA = (
    "TargetB,ID,TargetD,GiftCntAll,GiftAvgAll,GiftTimeLast,GiftTimeFirst,PromCnt12,DemCluster,DemAge,DemHomeOwner,DemMedHomeValue\n"
    "0,00014974,,4,9.25,21,66,8,00,,U,0\n1,00046110,4,41,3.73,18,111,12,23,67,H,87600\n1,00000007,10,3,12.49,9,93,14,5,5,U,139200\n"
)


def _write(path: Path, text: str, compress: bool = False) -> Path:
    data = text.encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _amlsim_dir(root: Path, nodes: str = NODES, transactions: str = TRANSACTIONS) -> Path:
    root.mkdir()
    _write(root / "nodes.csv", nodes)
    _write(root / "transactions.csv", transactions)
    return root


def _small_input(source: str, tmp_path: Path) -> Path:
    if source == "paysim":
        return _write(tmp_path / "paysim.csv", "\n".join([PAYSIM_HEADER, *PAYSIM_ROWS]) + "\n")
    if source == "amlsim":
        return _amlsim_dir(tmp_path / "aml")
    if source == "bitcoin-otc":
        return _write(tmp_path / "btc.csv", BTC)
    if source == "cdnow":
        return _write(tmp_path / "cdnow.txt", CDNOW)
    return _write(tmp_path / "pva.csv", PVA)


@pytest.mark.parametrize("source", list(IMPORTERS))
def test_small_input_round_trip(source, tmp_path):
    manifest = run_importer(source, _small_input(source, tmp_path), tmp_path / "world", progress=False)
    world = open_world(tmp_path / "world")
    assert world.manifest.source == manifest.source and manifest.synthetic is False
    events = world.read_events(STREAM[source])
    times = events.column("event_time").cast("int64").to_numpy()
    assert (np.diff(times) >= 0).all() and events.num_rows > 0


def test_paysim_small_rules(tmp_path):
    path = _write(tmp_path / "p.csv.gz", "\n".join([PAYSIM_HEADER, *PAYSIM_ROWS]) + "\n", compress=True)
    manifest = run_importer("paysim", path, tmp_path / "w", progress=False)
    world = open_world(tmp_path / "w")
    events = world.read_events("transactions").to_pydict()
    # Step 1 rows in file order (rows 1, 2, 4), spread over the hour; the 0 amount is dropped.
    assert events["event_id"] == ["paysim-000001", "paysim-000002", "paysim-000004"]
    assert [t.minute for t in events["event_time"]] == [0, 20, 40]
    assert events["old_balance_source"] == [170136.0, 181.0, None]
    assert manifest.parameters["rows_dropped"]["zero_amount"] == 1
    accounts = world.read_labels("accounts").to_pydict()
    assert [a for a, f in zip(accounts["account_id"], accounts["is_fraud"]) if f] == ["C2"]


def test_amlsim_small_rules(tmp_path):
    folder = _amlsim_dir(tmp_path / "aml")
    archive = tmp_path / "aml.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in ("nodes.csv", "transactions.csv"):
            tar.add(folder / name, arcname=f"sample/{name}")
    for path, out in ((folder, tmp_path / "w1"), (archive, tmp_path / "w2")):
        manifest = run_importer("amlsim", path, out, progress=False)
        assert manifest.parameters["rows_dropped"] == {"zero_amount": 0, "self_transfer": 1}
        world = open_world(out)
        labels = world.read_labels("transactions").to_pydict()
        assert labels["is_fraud"] == [False, True, False, True]
        accounts = world.read_labels("accounts").to_pydict()
        since = dict(zip(accounts["account_id"], accounts["fraud_since"]))
        # Account 1's first fraud-to-fraud transfer (day 1) comes before its fraudStep (3);
        # account 2 has no fraudStep, so its first such transfer counts too.
        assert since["aml-1"] == since["aml-2"] == datetime(2025, 1, 2, 12, tzinfo=UTC)
        assert since["aml-0"] is None and since["aml-3"] is None


def test_bitcoin_otc_small_account_labels(tmp_path):
    run_importer("bitcoin-otc", _write(tmp_path / "b.csv", "SOURCE,TARGET,RATING,TIME\n" + BTC), tmp_path / "w", progress=False)
    accounts = open_world(tmp_path / "w").read_labels("accounts").to_pydict()
    by_id = {a: (f, s) for a, f, s in zip(accounts["account_id"], accounts["is_fraud"], accounts["fraud_since"])}
    # btc-6 received -1 then -3: below zero from the first of them.
    assert by_id["btc-6"][0] is True and by_id["btc-6"][1].timestamp() == pytest.approx(1289243140.39049)
    assert by_id["btc-5"][0] is True and by_id["btc-2"] == (False, None)


def test_donor_targets_tie_break_and_window():
    day = 86_400_000_000
    cutoff, horizon = datetime(1970, 1, 11, tzinfo=UTC), datetime(1970, 3, 1, tzinfo=UTC)
    ids = np.array(["d", "c", "b", "a", "a", "b", "c", "e", "b", "f"])
    times = np.array([0, 0, 0, 0, 15, 15, 20, 15, 40, 1]) * day  # e: first gift after the cut-off
    amounts = np.array([1.0, 1, 1, 1, 10, 5, 1, 99, 5, 1])
    shares = {"high_value": 0.2, "giving_consistency": 0.4, "recent_engagement": 0.8}
    t = donor_targets(ids, times, amounts, cutoff, horizon, shares)
    assert t["donor_id"].tolist() == ["a", "b", "c", "d", "f"]
    # a and b both gave 10 in the window: the lower id wins.
    assert t["high_value"].tolist() == [True, False, False, False, False]
    # b gave in both window months; a and c in one, a gave more.
    assert t["giving_consistency"].tolist() == [True, True, False, False, False]
    # b's last gift is in February; a, c, d, f in January, tie broken by window count,
    # then amount, then id: round(0.8 * 5) = 4 reaches d, who gave nothing in the window.
    assert t["recent_engagement"].tolist() == [True, True, True, False, False]
    assert not t["high_engagement"].any() and not t["network_influence"].any()


def test_cli_import_reports_counts(tmp_path):
    from click.testing import CliRunner

    from offline.cli import import_data

    result = CliRunner().invoke(import_data, ["bitcoin-otc", str(_small_input("bitcoin-otc", tmp_path)), "--out", str(tmp_path / "w")])
    assert result.exit_code == 0, result.output
    assert "wrote fraud world (imported from SNAP Bitcoin OTC" in result.output
    assert open_world(tmp_path / "w").manifest.parameters["rows_read"] == 4


def test_spread_within_keeps_order_inside_a_slot():
    order, times = spread_within(np.array([5, 0, 5, 0]), 10)
    assert order.tolist() == [1, 3, 0, 2] and times.tolist() == [0, 5, 5, 10]


# ---------------------------------------------------------------- bad inputs


def test_unknown_source_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="valid names: paysim, amlsim, bitcoin-otc, cdnow, pva97nk"):
        run_importer("kaggle", tmp_path / "x.csv", tmp_path / "w")


@pytest.mark.parametrize("source", list(IMPORTERS))
def test_missing_file(source, tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(ImportFormatError, match=r"nope\.csv: (file )?not found; expected .*tributary import --help"):
        run_importer(source, path, tmp_path / "w", progress=False)
    assert not (tmp_path / "w" / "world.json").exists()


@pytest.mark.parametrize("source", list(IMPORTERS))
def test_empty_file(source, tmp_path):
    if source == "amlsim":
        path = _amlsim_dir(tmp_path / "aml", transactions="")
        shown = "transactions.csv"
    else:
        path, shown = _write(tmp_path / "empty.csv.gz", "", compress=True), "empty.csv.gz"
    with pytest.raises(ImportFormatError, match=rf"{re.escape(shown)}: file is empty; expected columns "):
        run_importer(source, path, tmp_path / "w", progress=False)


WRONG_COLUMNS = "name,when,how_much\nx,2020-01-01,3\n"


@pytest.mark.parametrize("source", list(IMPORTERS))
def test_wrong_columns(source, tmp_path):
    if source == "amlsim":
        path = _amlsim_dir(tmp_path / "aml", nodes=WRONG_COLUMNS)
    else:
        path = _write(tmp_path / "wrong.csv", WRONG_COLUMNS)
    with pytest.raises(ImportFormatError) as caught:
        run_importer(source, path, tmp_path / "w", progress=False)
    message = str(caught.value)
    assert ("nodes.csv" if source == "amlsim" else "wrong.csv") in message
    assert "expected" in message and "found" in message and "name,when,how_much" in message
    assert "tributary import --help" in message


def test_wrong_columns_names_the_missing_ones(tmp_path):
    path = _write(tmp_path / "p.csv", PAYSIM_HEADER.replace("amount", "amt") + "\n" + PAYSIM_ROWS[0] + "\n")
    with pytest.raises(ImportFormatError, match=r"p\.csv: expected columns step,type,amount,.*; found .*amt.*\(missing amount\)"):
        run_importer("paysim", path, tmp_path / "w", progress=False)


@pytest.mark.parametrize(
    "source, text, where",
    [
        ("paysim", PAYSIM_HEADER + "\n" + PAYSIM_ROWS[0] + "\n" + PAYSIM_ROWS[1].replace("181,C2", "lots,C2", 1) + "\n", "line 3: column amount is 'lots'"),
        ("bitcoin-otc", BTC.replace("-2,", "bad,"), "line 2: column RATING is 'bad'"),
        ("cdnow", CDNOW.replace("77.00", "7x7"), "line 3: column dollar_value is '7x7'"),
        ("pva97nk", PVA.replace("3.73", "n/a"), "line 3: column GiftAvgAll is 'n/a'"),
    ],
)
def test_non_numeric_value_names_line_and_column(source, text, where, tmp_path):
    path = _write(tmp_path / "input.txt", text)
    with pytest.raises(ImportFormatError, match=rf"input\.txt: {re.escape(where)}, not a number; expected columns "):
        run_importer(source, path, tmp_path / "w", progress=False)


def test_amlsim_non_numeric_value(tmp_path):
    path = _amlsim_dir(tmp_path / "aml", transactions=TRANSACTIONS.replace("20,1", "twenty,1"))
    with pytest.raises(ImportFormatError, match=r"transactions\.csv: line 3: column value is 'twenty', not a number"):
        run_importer("amlsim", path, tmp_path / "w", progress=False)


@pytest.mark.parametrize(
    "source, text, where",
    [
        # An account id with a space cannot go on the wire.
        ("paysim", PAYSIM_HEADER + "\n" + PAYSIM_ROWS[0].replace("C1", "C 1") + "\n", "line 2: .* field source_account: String should match pattern"),
        # Milliseconds instead of seconds: the time lands in the far future.
        ("bitcoin-otc", "1,2,3,1289241911728\n", "line 1: .* field event_time: is outside years 1-9999; is the timestamp in the wrong unit"),
        ("bitcoin-otc", "1,2,3,4000000000\n", "line 1: the transactions event bitcoin-otc-000001 it becomes breaks the contract: field event_time: .*in the future"),
        ("cdnow", " 00001 19970230  1   11.77\n", "line 1: column date is 19970230; expected a date as YYYYMMDD"),
        ("paysim", PAYSIM_HEADER + "\n" + PAYSIM_ROWS[0].replace("PAYMENT", "REFUND") + "\n", "line 2: column type is 'REFUND'; expected one of PAYMENT"),
        ("pva97nk", PVA.replace("00046110", "00014974"), "line 3: ID '00014974' appears twice"),
    ],
)
def test_bad_values_name_the_line(source, text, where, tmp_path):
    path = _write(tmp_path / "input.txt", text)
    with pytest.raises(ImportFormatError, match=rf"input\.txt: {where}"):
        run_importer(source, path, tmp_path / "w", progress=False)


def test_ragged_line_is_reported(tmp_path):
    path = _write(tmp_path / "btc.csv", BTC + "7,8\n")
    with pytest.raises(ImportFormatError, match=r"btc\.csv: line 5: expected 4 fields, found 2"):
        run_importer("bitcoin-otc", path, tmp_path / "w", progress=False)


def test_amlsim_archive_without_nodes(tmp_path):
    archive = tmp_path / "a.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        data = TRANSACTIONS.encode()
        info = tarfile.TarInfo("x/transactions.csv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ImportFormatError, match=r"a\.tgz: has no nodes\.csv \(archive holds: x/transactions\.csv\)"):
        run_importer("amlsim", archive, tmp_path / "w", progress=False)
