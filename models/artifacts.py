"""Versioned model artifacts: weights (tensors only, or a model's own text format) plus a JSON manifest.

Layout: ROOT/<model name>/<version>/{manifest.json, weights.pt and/or model.txt}. Weights are
a state dict saved with `torch.save` and loaded with `weights_only=True`; a tree model is
LightGBM's text format, checked against the sha256 its manifest records. So loading an
artifact never unpickles arbitrary objects. The manifest carries everything needed to
rebuild and trust the model: hyper-parameters, the feature schema and its hash (an
artifact built for other features is refused), threshold, metrics, what data it was
trained on, and the reference distributions the drift monitor compares against.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from models.errors import TributaryError

MANIFEST = "manifest.json"
WEIGHTS = "weights.pt"
FORMAT_VERSION = 1


class ArtifactError(TributaryError):
    """An artifact that cannot be used; the message says why and what to do."""


class ArtifactManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    name: str = Field(description="model family and variant, e.g. fusion-gated")
    task: str = Field(description="fraud | donors")
    version: str = Field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ"))
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    hyperparameters: dict = Field(default_factory=dict)
    feature_schema: dict
    feature_schema_hash: str
    threshold: float | dict[str, float] | None = None
    metrics: dict = Field(default_factory=dict)
    training_data: dict = Field(default_factory=dict)
    reference_distributions: dict = Field(default_factory=dict)
    normalisation: dict = Field(
        default_factory=dict,
        description="input normalisation the model applies (also in the weights as buffers), for humans and audits",
    )
    model_file: dict = Field(
        default_factory=dict,
        description="a model kept in its own text format instead of weights: {format, files: {name: sha256}}",
    )


def normalisation_summary(module: torch.nn.Module) -> dict:
    """The model's normalisation buffers (per-feature mean/std, quantile edges) as lists."""
    return {
        name: buffer.detach().cpu().tolist()
        for name, buffer in module.named_buffers()
        if name.endswith(("_mean", "_std", "edges"))
    }


def save_artifact(root: str | Path, manifest: ArtifactManifest, state_dict: dict[str, torch.Tensor]) -> Path:
    """Write weights then manifest into a fresh version directory; return that directory.

    The directory appears under its final name only when complete (written to a
    temporary name, then renamed), so a worker watching for new versions never sees a
    half-written artifact.
    """
    return _write_version(root, manifest, lambda partial: torch.save(
        {k: v.detach().cpu() for k, v in state_dict.items()}, partial / WEIGHTS))


def _write_version(root: str | Path, manifest: ArtifactManifest, write_model: Callable[[Path], None]) -> Path:
    """The model's files (`write_model(folder)`), then the manifest, into a hidden folder
    renamed to ROOT/<name>/<version> once complete."""
    final = Path(root) / manifest.name / manifest.version
    partial = final.with_name(f".{manifest.version}.partial")
    partial.mkdir(parents=True, exist_ok=False)
    write_model(partial)
    (partial / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    os.replace(partial, final)
    return final


def save_model_text(root: str | Path, manifest: ArtifactManifest, texts: dict[str, str], text_format: str,
                    state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Like `save_artifact`, for a model kept in its own text format (LightGBM's): the
    files (name -> text), and in the manifest their format and each one's sha256, checked
    when the model is loaded. `state_dict`: weights kept beside the texts (a hybrid's
    neural component), loaded with `load_artifact`."""
    data = {name: text.encode() for name, text in texts.items()}
    manifest = manifest.model_copy(update={"model_file": {
        "format": text_format, "files": {name: hashlib.sha256(d).hexdigest() for name, d in data.items()}}})

    def write_texts(folder: Path) -> None:
        for name, d in data.items():
            (folder / name).write_bytes(d)
        if state_dict is not None:
            torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, folder / WEIGHTS)

    return _write_version(root, manifest, write_texts)


SERVED = "served.json"


def record_served(root: str | Path, task: str, validation: dict[str, float], versions: dict[str, str],
                  trained_on: dict) -> dict:
    """Write ROOT/served.json: which model a worker serves by default for `task`, the one
    with the best validation PR-AUC. Models trained earlier on the same data (`trained_on`:
    the world and the partition count) stay in the running, so retraining one model does
    not make it the served one by default. Returns what it recorded (also `report.json`'s "served")."""
    path = Path(root) / SERVED
    try:
        recorded = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):  # none yet, or damaged: this run's choice is the record
        recorded = {}
    recorded = recorded if isinstance(recorded, dict) else {}
    earlier: dict = recorded[task] if isinstance(recorded.get(task), dict) else {}
    same_data = earlier.get("trained_on") == trained_on
    scores = {**(earlier.get("validation_pr_auc", {}) if same_data else {}),
              **{name: round(value, 6) for name, value in validation.items() if value == value}}  # NaN: unrankable
    all_versions = {**(earlier.get("versions", {}) if same_data else {}), **versions}
    if not scores:
        raise ArtifactError("no model could be ranked on the validation period (it has no positive): label more "
                            "of the data, or use a longer world")
    winner = max(scores, key=lambda name: scores[name])
    entry = {"model": winner, "version": all_versions[winner], "chosen_by": "validation PR-AUC",
             "trained_on": trained_on, "validation_pr_auc": scores, "versions": all_versions}
    recorded[task] = entry
    Path(root).mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{SERVED}.partial")
    partial.write_text(json.dumps(recorded, indent=2) + "\n")
    os.replace(partial, path)
    return entry


SERVED_CHOICE = "served"  # as a model name: the one `record_served` chose
DEFAULT_FRAUD_MODEL = "fusion-gated"  # served when no choice was recorded
DEFAULT_DONOR_MODEL = "multitarget"


def resolve_model_name(root: str | Path, task: str, name: str, fallback: str) -> str:
    """`name`, or for "served" the model `record_served` chose for `task` (else `fallback`)."""
    return served_name(root, task, fallback) if name == SERVED_CHOICE else name


def served_name(root: str | Path, task: str, fallback: str) -> str:
    """The model `record_served` chose for `task` under `root`, else `fallback`."""
    entry = served_entry(root, task)
    return str(entry["model"]) if entry else fallback


def served_entry(root: str | Path, task: str) -> dict | None:
    """What `record_served` wrote for `task` under `root` (None: nothing)."""
    path = Path(root) / SERVED
    try:
        recorded = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        recorded = None
    entry = recorded.get(task) if isinstance(recorded, dict) else {}
    if entry is not None and not (isinstance(entry, dict) and isinstance(entry.get("model"), str)):
        raise ArtifactError(f"{path} is damaged: retrain with `tributary train`, or name the model to serve "
                            "(--fraud-model NAME)")
    return entry


def served_root(model_dir: str | Path) -> Path:
    """The artifacts root a worker serves from: `model_dir/artifacts` when there is one
    (a `tributary train` output), else `model_dir` itself."""
    root = Path(model_dir)
    return root / "artifacts" if (root / "artifacts").is_dir() else root


def install_artifact(version_dir: str | Path, root: str | Path) -> Path:
    """Copy a trained version directory into the artifacts root a worker serves from.

    Atomic like `save_artifact`: copied under a hidden name, then renamed, so a running
    worker picks the version up whole at its next reload check (a model rollout).
    """
    manifest = read_manifest(version_dir)
    final = Path(root) / manifest.name / manifest.version
    if final.exists():
        raise ArtifactError(f"{final} exists already: version {manifest.version} of {manifest.name} is installed")
    partial = final.with_name(f".{manifest.version}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(version_dir, partial)
    os.replace(partial, final)
    return final


def latest_version(root: str | Path, name: str) -> Path:
    """Directory of the newest complete version of model `name` under `root`."""
    base = Path(root) / name
    versions = sorted(p for p in base.glob("*") if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).exists())
    if not versions:
        raise ArtifactError(f"no trained '{name}' model under {base}; train one with `tributary train`")
    return versions[-1]


def read_manifest(path: str | Path) -> ArtifactManifest:
    """The manifest of one artifact version directory, without loading its weights."""
    path = Path(path)
    if not (path / MANIFEST).exists():
        raise ArtifactError(f"{path} is not a model artifact ({MANIFEST} missing)")
    try:
        manifest = ArtifactManifest.model_validate(json.loads((path / MANIFEST).read_text()))
    except ValueError as error:  # bad JSON, or JSON that is not a manifest (pydantic's errors are ValueErrors)
        raise ArtifactError(
            f"{path} is not a readable model artifact ({MANIFEST}: {str(error).splitlines()[0]}); "
            "retrain it with `tributary train` or restore the directory"
        ) from None
    if manifest.format_version != FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format {manifest.format_version}, this code reads {FORMAT_VERSION}")
    return manifest


def load_artifact(path: str | Path, expected_schema_hash: str | None = None) -> tuple[ArtifactManifest, dict]:
    """Manifest and state dict of one artifact version directory.

    Refuses an artifact whose feature schema hash differs from `expected_schema_hash`
    (the features this code computes), since its scores would be silently wrong.
    """
    path = Path(path)
    manifest = _checked_manifest(path, expected_schema_hash)
    state = torch.load(path / WEIGHTS, map_location="cpu", weights_only=True)
    return manifest, state


def load_model_text(path: str | Path, expected_schema_hash: str | None = None) -> tuple[ArtifactManifest, dict[str, str]]:
    """Manifest and model texts (file name -> text) of a version saved by `save_model_text`;
    refuses a file whose sha256 is not the manifest's (changed or damaged since training)."""
    path = Path(path)
    manifest = _checked_manifest(path, expected_schema_hash)
    files = manifest.model_file.get("files")
    if not isinstance(files, dict) or not files:
        raise ArtifactError(f"{path} keeps weights, not a model text; it is not a tree model")
    texts = {}
    for name, sha256 in files.items():
        data = (path / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise ArtifactError(f"{path / name} is not the file that was trained (its sha256 differs from the "
                                "manifest's): restore the artifact or retrain it with `tributary train`")
        texts[name] = data.decode()
    return manifest, texts


def _checked_manifest(path: Path, expected_schema_hash: str | None) -> ArtifactManifest:
    manifest = read_manifest(path)
    if expected_schema_hash is not None and manifest.feature_schema_hash != expected_schema_hash:
        raise ArtifactError(
            f"{path} was trained on feature schema {manifest.feature_schema_hash}, but this code computes "
            f"{expected_schema_hash}: its scores would be wrong. Retrain it with `tributary train` "
            "(or run the Tributary version it was trained with)."
        )
    return manifest
