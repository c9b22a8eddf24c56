"""Property-based fuzz of the protocol loader and the manifest loader (in-process, for speed).

Protocols are made by mutating a valid one (keys dropped, duplicated or retyped; random scalars; deep
nesting; odd unicode; lines deleted, repeated or garbled; random bytes); manifests are random CSV
texts. The property: loading either succeeds or raises :class:`InputError` (or :class:`InputErrors`)
whose every problem names the file it is about. Any other exception is a crash the command line would
report as "could not complete" instead of a located message.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from validate.cohort import derive_subgroups, load_cohorts
from validate.errors import InputError, InputErrors
from validate.preflight import check_protocol_gates
from validate.protocol import load_protocol

from tests.adversarial.test_adv_protocol import DEV, EXT, TABULAR

FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
#: fewer examples where each one builds metrics blocks (the gate probe) or reads two manifests
FUZZ_SLOW = settings(FUZZ, max_examples=60)

ODD_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    [
        "",
        "..",
        ".",
        "a/b",
        "é",
        "\u202e",
        "\x00",
        "\t",
        "007",
        "1e999",
        ".nan",
        "on",
        "yes",
        "~",
        "null",
        "auroc",
        "each_site",
        "worst_subgroup:sex",
        "subgroup_gap:sex",
        "temperature",
        "case_id",
        "patient_id",
    ]
)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | ODD_TEXT
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ODD_TEXT, inner, max_size=3), max_leaves=8
)


def _paths(node, prefix=()):
    """Every key path of a nested dict/list structure."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _parent(data, path):
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def mutated_structures(draw):
    """The valid protocol with a few structural mutations, dumped back to YAML text."""
    data = yaml.safe_load(TABULAR)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = _paths(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(data, path)
        action = draw(st.sampled_from(["drop", "retype", "deepen", "copy"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "retype":
            parent[path[-1]] = draw(VALUES)
        elif action == "deepen":
            value = parent[path[-1]]
            for _ in range(draw(st.integers(min_value=1, max_value=80))):
                value = [value]
            parent[path[-1]] = value
        elif isinstance(parent, dict):
            parent[draw(ODD_TEXT)] = copy.deepcopy(parent[path[-1]])
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8")


@st.composite
def mutated_texts(draw):
    """The valid protocol text with lines repeated, dropped, garbled or random bytes inserted."""
    lines = TABULAR.splitlines(keepends=True)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        action = draw(st.sampled_from(["repeat", "drop", "garble", "insert"]))
        if action == "repeat":
            lines.insert(i, lines[i])
        elif action == "drop" and len(lines) > 1:
            del lines[i]
        elif action == "garble":
            line = lines[i]
            j = draw(st.integers(min_value=0, max_value=max(len(line) - 1, 0)))
            lines[i] = line[:j] + draw(ODD_TEXT) + line[j + 1 :]
        else:
            n = draw(st.integers(min_value=1, max_value=5000))
            lines.insert(
                i,
                draw(
                    st.sampled_from(
                        [
                            f"deep: {'[' * n}{']' * n}\n",
                            "&a [1, *a]\n",
                            "[[[[[[[[\n",
                            "- x\n",
                            ":\n",
                            "? [a]\n: 1\n",
                            "gates: *nope\n",
                            "<<: {}\n",
                            "!!python/object:os.system x\n",
                        ]
                    )
                ),
            )
    text = "".join(lines).encode("utf-8")
    if draw(st.booleans()):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        text = text[:at] + draw(st.binary(max_size=8)) + text[at:]
    return text


NAMES = st.text(alphabet="abcxyz_.-é 0", min_size=1, max_size=6)
METRIC_NAMES = (
    st.sampled_from(
        [
            "auroc",
            "aurc",
            "ece",
            "brier",
            "accuracy",
            "auroc_macro",
            "macro.auroc",
            "hosmer_lemeshow.p_value",
            "n",
            "sensitivity",
            "target_sensitivity.ppv",
            "classes.a.auroc",
            "labels.a.ece",
            "drift_windows_flagged",
            "shift_material_findings",
            "ici",
            "ece_classwise",
        ]
    )
    | NAMES
)


@st.composite
def gate_protocols(draw):
    """Schema-valid variations of the protocol (task, classes, metric settings, calibration, gates) that
    reach the pre-run gate checks and their probe of the metrics engine."""
    data = yaml.safe_load(TABULAR)
    task = draw(st.sampled_from(["binary", "multiclass", "multilabel"]))
    names = draw(st.lists(NAMES, min_size=2, max_size=4, unique=True))
    data["task"] = task
    data.pop("positive_class")
    if task == "multilabel":
        data.pop("classes")
        data["labels"] = names
    else:
        data["classes"] = names[:2] if task == "binary" else (names + ["a", "b", "c"])[: max(3, len(names))]
        if len(set(data["classes"])) != len(data["classes"]):
            data["classes"] = ["a", "b", "c"][: len(data["classes"])]
    data["metrics"] = {
        "bins": draw(st.integers(min_value=2, max_value=1000)),
        "n_bootstrap": draw(st.integers(min_value=0, max_value=20)),
        "ci_level": draw(st.floats(min_value=0.01, max_value=0.99)),
        "thresholds": draw(st.lists(st.floats(min_value=0, max_value=1), max_size=3)),
        "target_sensitivity": draw(st.none() | st.floats(min_value=0.01, max_value=0.99)),
        "min_events": draw(st.integers(min_value=0, max_value=50)),
    }
    data["calibration"] = {
        "methods": draw(
            st.lists(
                st.sampled_from(
                    [
                        "temperature",
                        "platt",
                        "isotonic",
                        "histogram",
                        "beta",
                        "vector",
                        "matrix",
                        "bbq",
                        "enir",
                        "none",
                        "temprature",
                    ]
                ),
                max_size=3,
            )
        )
    }
    data["gates"] = [
        {
            "metric": draw(METRIC_NAMES),
            "scope": draw(
                st.sampled_from(
                    [
                        "overall",
                        "each_site",
                        "each_subgroup:sex",
                        "worst_subgroup:age_band",
                        "subgroup_gap:sex",
                        "subgroup_gap:sex_x_age",
                    ]
                )
            ),
            draw(st.sampled_from(["min", "max"])): draw(st.floats(min_value=-1, max_value=2)),
            "on": draw(st.sampled_from(["estimate", "ci_low", "ci_high"])),
            **({"calibration": draw(st.sampled_from(["temperature", "platt", "none"]))} if draw(st.booleans()) else {}),
        }
        for _ in range(draw(st.integers(min_value=0, max_value=4)))
    ]
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False).encode("utf-8")


def _assert_located(exc: InputError, file: Path) -> None:
    problems = exc.problems if isinstance(exc, InputErrors) else [exc]
    assert problems, "an empty InputErrors"
    for p in problems:
        assert p.file, f"problem without a file: {p}"
        assert str(p), "an empty message"


def _load_everything(path: Path) -> None:
    """What `validate check` does: protocol, pre-run gate checks, every manifest, subgroups."""
    try:
        protocol = load_protocol(path)
        check_protocol_gates(protocol)
        for cohort in load_cohorts(protocol, check_files=True):
            derive_subgroups(cohort.cases, protocol)
    except InputError as exc:
        _assert_located(exc, path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "dev.csv").write_text(DEV)
    (folder / "ext.csv").write_text(EXT)
    return folder


def test_valid_protocol_loads(folder):
    path = folder / "valid.yaml"
    path.write_text(TABULAR)
    protocol = load_protocol(path)
    check_protocol_gates(protocol)
    assert [len(c.cases) for c in load_cohorts(protocol)] == [4, 2]


@FUZZ
@given(mutated_structures())
def test_fuzz_protocol_structures(folder, data):
    path = folder / "structure.yaml"
    path.write_bytes(data)
    _load_everything(path)


@FUZZ
@given(mutated_texts())
def test_fuzz_protocol_texts(folder, data):
    path = folder / "text.yaml"
    path.write_bytes(data)
    _load_everything(path)


@FUZZ_SLOW
@given(gate_protocols())
def test_fuzz_gate_protocols(folder, data):
    path = folder / "gates.yaml"
    path.write_bytes(data)
    _load_everything(path)


COLUMNS = [
    "case_id",
    "patient_id",
    "label",
    "age",
    "chol",
    "sex",
    "image",
    "acquired_at",
    "",
    " label",
    "label.1",
    "y",
    "é",
]
CELLS = st.sampled_from(
    [
        "",
        "NA",
        "nan",
        "?",
        "0",
        "1",
        "007",
        "7",
        "present",
        "absent",
        "maybe",
        "35",
        "-1",
        "1e999",
        "1234567890123456789",
        "F",
        "M",
        "2024-01-01",
        "not a date",
        '"',
        '""',
        "a,b",
        '"a,b"',
        "\\",
        "\u00e9",
        "\x00",
    ]
) | st.text(max_size=6)


@st.composite
def manifests(draw):
    header = draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=8))
    if draw(st.booleans()):  # mostly-valid headers reach the deeper checks
        header = ["case_id", "patient_id", "label", "age", "chol", "sex"] + header[:2]
    rows = draw(st.lists(st.lists(CELLS, min_size=len(header) - 1, max_size=len(header) + 1), max_size=6))
    text = ",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows)
    data = text.encode("utf-8")
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        data = data + draw(st.binary(max_size=8))
    return data


@pytest.fixture(scope="module")
def manifest_protocol(tmp_path_factory):
    folder = tmp_path_factory.mktemp("manifests")
    path = folder / "protocol.yaml"
    path.write_text(TABULAR)
    return load_protocol(path)


@settings(FUZZ, max_examples=120)
@given(manifests(), manifests())
def test_fuzz_manifests(manifest_protocol, dev, ext):
    folder = manifest_protocol.base_dir
    (folder / "dev.csv").write_bytes(dev)
    (folder / "ext.csv").write_bytes(ext)
    try:
        for cohort in load_cohorts(manifest_protocol, check_files=True):
            derive_subgroups(cohort.cases, manifest_protocol)
    except InputError as exc:
        _assert_located(exc, folder)
