"""Importing real data sets (or your own files of the same shape) into worlds.

`tributary import SOURCE PATH --out DIR` reads PATH and writes a world: events sorted by
event time, label files, and a `world.json` manifest that records the input, every rule
applied and every row dropped. Every event is checked against its wire contract before
anything is written; a line that cannot become a valid event stops the import with an
error naming the file, the line and the field. Files may be plain or gzip-compressed
(detected from their first bytes, whatever their name). Column names in a header are
matched case-insensitively and in any order; extra columns are ignored. Only the
columns described below as "may be blank" can hold empty values; any other blank, or a
non-number where a number belongs, is an error naming the line. Event ids are
`<source>-<data row number>` (`paysim-000001` is the first data row), so they are
stable across imports of the same file.

Your own data in these shapes
-----------------------------

**paysim**: a CSV with a header and the columns
`step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,newbalanceDest,isFraud`
(`isFlaggedFraud` and any other column are ignored).
`step` is a whole number of hours since the start (placed from 2025-01-01T00:00Z);
`type` one of PAYMENT, TRANSFER, CASH_OUT, CASH_IN, DEBIT; `amount` > 0 (rows with 0 are
dropped and counted); `nameOrig`/`nameDest` account ids (letters, digits, `_.:@-`, at
most 64 characters); the four balances may be blank; `isFraud` 0 or 1.
Writes `transactions` events and `transactions` and `accounts` labels.

**amlsim**: a `.tgz`/`.tar` archive, or a folder, holding two CSVs with headers:
`nodes.csv` with `nodeid,isFraud[,fraudStep]` (`fraudStep` may be absent or -1;
`init_balance` is ignored) and `transactions.csv` with
`sourceNodeId,targetNodeId,value,time`, where `time` is a whole number of days since
the start (placed from 2025-01-01T00:00Z) and every node id appears in `nodes.csv`.
Accounts become `aml-<nodeid>`; self-transfers and zero values are dropped and counted.
A transfer is labelled fraud when both of its accounts are.

**bitcoin-otc**: a CSV of `SOURCE,TARGET,RATING,TIME`, one rating per line, header
optional (SNAP's files have none, or `source,target,weight,timestamp`: a first line
with words where the numbers go is taken for a header, whatever its names); `TIME` is epoch seconds (fractions kept to the
microsecond); `RATING` a number, negative meaning distrust. Users become `btc-<id>`.
A rating becomes a transfer of amount 1.0 XBT over channel web; the rating itself only
goes into the labels (`rating < 0` per transaction; received ratings summing below zero
per account).

**cdnow**: whitespace-separated (commas work too) `customer_id date number_of_cds
dollar_value`, header optional, `date` as YYYYMMDD, `dollar_value` >= 0 (rows with 0
are dropped and counted). Customers become donors `cdnow-<customer_id>`, each purchase a gift at noon
UTC on its date. Targets are computed on the window from the midpoint of the data's
months (cut-off) to the first of the month after the last purchase (horizon).

**pva97nk**: a CSV with a header and the columns
`TargetB,ID,TargetD,GiftCntAll,GiftAvgAll,GiftTimeLast,GiftTimeFirst,PromCnt12,DemCluster,DemAge,DemHomeOwner,DemMedHomeValue`
(the other pva97nk columns are ignored). `TargetB` 0/1; `ID` unique per donor (becomes
`pva-<ID>`); `TargetD`, `DemCluster`, `DemAge` and `DemMedHomeValue` may be blank;
`DemHomeOwner` H, U or blank; `DemCluster` 00 means none; gift times are months
before the 1997-06-01 mailing. Writes one `donor_profiles` snapshot per donor and a `donor_response` label file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from models.worlds import WorldManifest

from ._csv import ImportFormatError
from .amlsim import import_amlsim
from .bitcoin_otc import import_bitcoin_otc
from .cdnow import import_cdnow
from .paysim import import_paysim
from .pva97nk import import_pva97nk

__all__ = ["IMPORTERS", "ImportFormatError", "run_importer"]

# Source name (as `tributary import` spells it) -> importer.
IMPORTERS: dict[str, Callable[[Path, Path, bool], WorldManifest]] = {
    "paysim": import_paysim,
    "amlsim": import_amlsim,
    "bitcoin-otc": import_bitcoin_otc,
    "cdnow": import_cdnow,
    "pva97nk": import_pva97nk,
}


def run_importer(source: str, path: Path, out: Path, progress: bool = True) -> WorldManifest:
    """Import `path` as data set `source` into a world at `out`; returns its manifest.

    Raises ValueError for an unknown source and ImportFormatError (a WorldError and a
    ValueError) for an input that cannot be imported.
    """
    try:
        importer = IMPORTERS[source]
    except KeyError:
        raise ValueError(f"unknown import source {source!r}; valid names: {', '.join(IMPORTERS)}") from None
    return importer(Path(path), Path(out), progress)
