"""The public-shape importers read a header line where their help says it is optional,
whatever the header calls the columns."""

from __future__ import annotations

import pytest

from models.worlds import open_world
from offline.importers import run_importer

BTC_ROWS = "6,2,4,1289241911.72836\n6,5,-2,1289241941.53378\n1,6,-1,1289243140.39049\n"
CDNOW_ROWS = " 00001 19970101  1   11.77\n 00002 19970112  1   12.00\n 00002 19980330  5   77.00\n"


@pytest.mark.parametrize("header", ["", "SOURCE,TARGET,RATING,TIME\n", "source,target,weight,timestamp\n"],
                         ids=["none", "the help's names", "SNAP's names"])
def test_bitcoin_otc_reads_the_same_rows_with_any_header(header, tmp_path):
    (tmp_path / "b.csv").write_text(header + BTC_ROWS)
    manifest = run_importer("bitcoin-otc", tmp_path / "b.csv", tmp_path / "w", progress=False)
    assert manifest.counts["transactions"] == 3
    ids = open_world(tmp_path / "w").read_labels("transactions").column("event_id").to_pylist()
    assert sorted(ids) == ["bitcoin-otc-000001", "bitcoin-otc-000002", "bitcoin-otc-000003"]


@pytest.mark.parametrize("header", ["", "customer_id date number_of_cds dollar_value\n", "id day cds value\n"])
def test_cdnow_reads_the_same_rows_with_any_header(header, tmp_path):
    (tmp_path / "c.txt").write_text(header + CDNOW_ROWS)
    manifest = run_importer("cdnow", tmp_path / "c.txt", tmp_path / "w", progress=False)
    assert manifest.counts["gifts"] == 3


def test_a_first_line_with_numbers_is_data_not_a_header(tmp_path):
    (tmp_path / "b.csv").write_text("7,8,1,1289241900\n" + BTC_ROWS)
    assert run_importer("bitcoin-otc", tmp_path / "b.csv", tmp_path / "w", progress=False).counts["transactions"] == 4
