"""The artifact manifest of an optimized folder: what was built, and the checks on its files.

``manifest.json`` (an :class:`ArtifactManifest`, with ``manifest.schema.json`` beside it) lists
every artifact the optimize stage built, with its backend, precision, input and output
signature, file, sha256, size, library versions and parity result, and names the one that
ships. Nothing is trusted on its word: :func:`verify_file` re-hashes the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import Field, model_validator

from pipelines.core.contracts import Contract, read_contract, write_contract
from pipelines.core.errors import InputError
from pipelines.core.io import sha256_file
from pipelines.model.training.metrics import ScoringProtocol

MANIFEST = "manifest.json"
# 1 was the untyped manifest (its version field was called ``format``)
MANIFEST_VERSION: Final = 3

Backend = Literal["onnxruntime", "tensorrt", "torch-compile"]
Precision = Literal["fp32", "fp16", "bf16", "int8"]
ArtifactStatus = Literal["shipped", "candidate", "rejected"]


class ArtifactError(InputError):
    """An optimized artifact is missing, tampered with, unloadable or answers out of contract."""


class HistoryInput(Contract):
    """The one input of every artifact: a batch of left-padded histories."""

    name: Literal["history"]
    """The input's name in the graph or engine."""
    dtype: Literal["int64"]
    shape: tuple[Literal["batch"], int]
    """``["batch", max_len]``: any number of rows of ``max_len`` steps, oldest first."""
    steps: Literal["items", "tokens"]
    """``items``: each step is an item index (1..n_items, 0 is padding); ``tokens``: each step
    is ``item + (n_items + 1) * event`` with event 0 view, 1 add to cart, 2 purchase."""


class OutputTensor(Contract):
    """One output of an artifact."""

    name: Literal["scores", "top_items", "top_scores"]
    """``scores``: every item's score (column 0 is padding, ``-inf``); ``top_items``: the
    best ``top_k`` item indices, best first; ``top_scores``: their scores."""
    dtype: Literal["float32", "int64"]
    shape: tuple[Literal["batch"], int]
    """``["batch", n_items + 1]`` for scores, ``["batch", top_k]`` for the top lists."""


class CpuDevice(Contract):
    """An artifact that runs on the CPU."""

    type: Literal["cpu"] = "cpu"
    int8_kernels: Literal["u8s8", "u8u8"] | None = None
    """For an INT8 artifact: ``u8s8`` (signed weights, fast with VNNI or AMX) or ``u8u8``."""


class CudaDevice(Contract):
    """An artifact built for a CUDA GPU; engines only load on the GPU kind they were built on."""

    type: Literal["cuda"] = "cuda"
    gpu: str | None
    """The GPU's name as CUDA reports it."""
    compute_capability: tuple[int, int] | None
    """The GPU's compute capability, e.g. ``[9, 0]``."""
    tensorrt: str | None = None
    """The TensorRT version a TensorRT engine was built with (it loads only under it)."""


Device = Annotated[CpuDevice | CudaDevice, Field(discriminator="type")]


class ParityThresholds(Contract):
    """The parity an artifact of its precision had to reach."""

    max_abs_error: float
    """Largest allowed difference of any item score from the fp32 PyTorch model."""
    min_top10_overlap: float
    """Smallest allowed mean share of the PyTorch model's top 10 that the artifact's holds."""


class ParityRecord(Contract):
    """How close the artifact's scores are to the fp32 PyTorch model on held-out histories."""

    passed: bool
    max_abs_error: float | None
    """Largest score difference; null when the artifact gave NaN or infinite scores."""
    top10_overlap: float
    """Mean share of the PyTorch model's top 10 items that the artifact's top 10 holds."""
    sequences: int
    """How many held-out histories were compared."""
    reason: str | None
    """Why parity failed; null when it passed."""
    thresholds: ParityThresholds


class Artifact(Contract):
    """One artifact the optimize stage tried to build, and what became of it."""

    name: str
    """``<backend>-<precision>``, e.g. ``onnxruntime-fp32``."""
    backend: Backend
    precision: Precision
    status: ArtifactStatus
    """``shipped``: the one serving uses; ``candidate``: passed parity, not shipped;
    ``rejected``: failed to build or failed parity (its file is not kept)."""
    reason: str | None = None
    """Why it was rejected; null otherwise."""
    inputs: tuple[HistoryInput]
    outputs: tuple[OutputTensor, ...]
    file: str | None = None
    """The artifact's file in the optimized folder; null when it could not be built."""
    sha256: str | None = None
    """sha256 of ``file``, checked before the file is opened."""
    size_bytes: int | None = None
    """Size of ``file`` in bytes."""
    device: Device | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    """Versions of python and of the libraries that built it."""
    parity: ParityRecord | None = None
    """Null when it could not be built."""
    kept_because: str | None = None
    """Why the file of a rejected artifact is still in the folder."""


class ModelSpecRecord(Contract):
    """The trained model's shape (the fields of ``pipelines.model.sasrec.ModelSpec``)."""

    n_items: int
    hidden: int
    layers: int
    heads: int
    max_len: int
    dropout: float
    n_categories: int
    """Categories of the category embedding; 0 when the model has none."""
    event_types: bool
    """True when the model reads step tokens with event types."""
    repeat_term: bool = False
    """True when the model adds its learned repeat offset to the history's items (absent, so
    false, in manifests written before the term existed)."""
    tie_embeddings: bool = True
    """False when the model scores with an output item table of its own (absent, so true, in
    manifests written before the option existed)."""


class ArtifactManifest(Contract):
    """``manifest.json`` of an optimized folder: every artifact built from one trained model."""

    schema_version: Literal[2, 3]
    """Version of this layout: 3, or 2 (written before the protocol was recorded, still read)."""
    model_sha256: str
    """sha256 of the train stage's ``model.pt`` the artifacts were built from."""
    spec: ModelSpecRecord
    protocol: ScoringProtocol | None = None
    """How the model's quality is measured (history masked or not, tie rule): the gate scores
    candidate and production under it and refuses to compare two different ones. Required from
    version 3, absent before."""
    max_len: int
    """Steps of history every artifact reads."""
    n_items: int
    """Items in the catalogue (indices 1..n_items; 0 is padding)."""
    top_k: int
    """Length of the lists ``top_items`` and ``top_scores``."""
    shipped: str
    """Name of the artifact serving uses."""
    skipped: dict[str, str]
    """Backends not built on this machine, each with the reason."""
    artifacts: tuple[Artifact, ...]

    @model_validator(mode="after")
    def _protocol_from_version_3(self) -> ArtifactManifest:
        if (self.schema_version == 3) != (self.protocol is not None):
            raise ValueError("protocol is required from schema version 3 and absent before")
        return self

    def artifact(self, name: str | None = None, *, folder: Path | None = None) -> Artifact:
        """The artifact named ``name`` (default: the shipped one).

        Raises:
            ArtifactError: No artifact has that name, or it was rejected.
        """
        wanted = name or self.shipped
        where = folder / MANIFEST if folder is not None else MANIFEST
        for entry in self.artifacts:
            if entry.name == wanted:
                if entry.status == "rejected":
                    raise ArtifactError(f"artifact {wanted} was rejected: {entry.reason}")
                return entry
        raise ArtifactError(f"{where} lists no artifact named {wanted!r}")


def write_manifest(folder: Path, manifest: ArtifactManifest) -> None:
    """Write ``manifest.json`` and ``manifest.schema.json`` into ``folder``."""
    write_contract(folder / MANIFEST, manifest)


def read_manifest(folder: Path) -> ArtifactManifest:
    """The manifest of an optimized folder.

    Raises:
        ArtifactError: It is missing, not JSON, of another schema version, or does not
            match :class:`ArtifactManifest` (the message names the fields).
    """
    return read_contract(
        folder / MANIFEST,
        ArtifactManifest,
        "artifact manifest",
        stage="optimize",
        error=ArtifactError,
    )


def verify_file(folder: Path, entry: Artifact) -> Path:
    """The artifact's file, after checking it exists and matches the manifest's sha256."""
    path = folder / (entry.file or "")
    if not entry.file or not path.is_file():
        raise ArtifactError(f"artifact {entry.name}: file {path} is missing")
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise ArtifactError(
            f"artifact {entry.name}: {path} has sha256 {digest[:12]}…, the manifest "
            f"says {str(entry.sha256)[:12]}…: the file was changed after it was built"
        )
    return path
