"""``task: segmentation`` in the protocol (issue #20): the segmentation section, its defaults and what is
refused (classification keys, a missing section, labels without pixel values, a 3D or tabular input)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from validate.errors import InputErrors
from validate.metrics.segmentation import EmptyPolicy, case_metrics, nsd_key
from validate.protocol import load_protocol

BASE = """\
name: seg
task: segmentation
labels: [head]
input: {kind: image, size: [64, 64]}
sites:
  - {id: dev, manifest: dev.csv, role: development}
"""


def load(tmp_path: Path, text: str):
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text))
    return load_protocol(path)


def messages(tmp_path: Path, text: str) -> str:
    with pytest.raises(InputErrors) as info:
        load(tmp_path, text)
    return " | ".join(str(p) for p in info.value.problems)


def test_full_section_reads_back(tmp_path):
    p = load(
        tmp_path,
        BASE
        + """\
segmentation:
  mask_column: mask
  label_values: {head: 255}
  activation: softmax
  spacing_columns: [sy, sx]
  nsd_tolerances_mm: [2.0, 1.5]
  empty: {both: exclude, one: worst}
  biometry: ellipse_circumference
  threshold: 0.4
  pixel_sample: 100
  worst_cases: 3
""",
    )
    seg = p.segmentation
    assert p.task == "segmentation"
    assert seg.values_of(["head"]) == {"head": 255}
    assert seg.channels(1) == 2
    assert seg.spacing_columns == ("sy", "sx")
    assert seg.nsd_keys == ["nsd_2mm", "nsd_1p5mm"]
    assert (seg.empty.both, seg.empty.one) == ("exclude", "worst")
    assert seg.biometry == "ellipse_circumference"
    assert (seg.threshold, seg.pixel_sample, seg.worst_cases) == (0.4, 100, 3)


def test_defaults(tmp_path):
    p = load(tmp_path, BASE.replace("labels: [head]", "labels: [liver, tumour]") + "segmentation: {}\n")
    seg = p.segmentation
    assert seg.mask_column == "mask"
    assert seg.values_of(["liver", "tumour"]) == {"liver": 1, "tumour": 2}
    assert seg.activation == "sigmoid" and seg.channels(2) == 2
    assert seg.nsd_keys == ["nsd_2mm"]
    assert (seg.empty.both, seg.empty.one) == ("perfect", "worst")
    assert (seg.threshold, seg.pixel_sample, seg.worst_cases, seg.biometry) == (0.5, 512, 6, None)


@pytest.mark.parametrize(
    ("tau", "key"), [(2.0, "nsd_2mm"), (1.5, "nsd_1p5mm"), (0.25, "nsd_0p25mm"), (10, "nsd_10mm"), (1.0, "nsd_1mm")]
)
def test_nsd_keys(tau, key):
    assert nsd_key(tau) == key


def test_protocol_gates_and_metrics_name_an_nsd_tolerance_alike(tmp_path):
    """A tolerance with seven significant digits (0.1234567 mm): the protocol's keys, the gate columns
    and the metrics' own row must use one name, or a gate on that NSD finds no column — and the name
    must be this tolerance's alone (``{:g}`` would have cut it to 0.123457)."""
    import numpy as np

    from validate.segmentation_gates import protocol_metric_columns

    p = load(tmp_path, BASE + "segmentation: {nsd_tolerances_mm: [0.1234567]}\n")
    mask = np.zeros((8, 8), bool)
    mask[2:6, 2:6] = True
    row = case_metrics(mask, mask, (1.0, 1.0), nsd_tolerances_mm=[0.1234567])
    written = [k for k in row if k.startswith("nsd_")]
    assert written == ["nsd_0p1234567mm"]  # written out by hand: the tolerance's digits, dot as p
    assert p.segmentation.nsd_keys == written
    assert set(written) <= set(protocol_metric_columns(p))


@pytest.mark.parametrize(("both", "expected"), [("perfect", EmptyPolicy()), ("exclude", EmptyPolicy(both="exclude"))])
def test_empty_policy_of_the_protocol_section(tmp_path, both, expected):
    p = load(tmp_path, BASE + f"segmentation: {{empty: {{both: {both}}}}}\n")
    assert EmptyPolicy.of(p.segmentation.empty) == expected
    assert EmptyPolicy.of({"both": both, "one": "worst"}) == expected  # a bundle's protocol copy
    assert EmptyPolicy.of(None) == EmptyPolicy()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("classes: [a, b]\nsegmentation: {}\n", "`classes` does not apply to a segmentation task"),
        ("positive_class: head\nsegmentation: {}\n", "`positive_class` does not apply to a segmentation task"),
        ("", "needs the `segmentation` section"),
        ("segmentation: {label_values: {brain: 1}}\n", "no pixel value for label(s) head"),
        ("segmentation: {label_values: {head: 1, brain: 2}}\n", "names brain, which `labels` does not list"),
        ("segmentation: {label_values: {head: 0}}\n", "0 is the background"),
        ("segmentation: {nsd_tolerances_mm: [0]}\n", "positive distance"),
        ("segmentation: {nsd_tolerances_mm: [2, 2.0]}\n", "listed once each"),
        ("segmentation: {spacing_column: px, spacing_columns: [a, b]}\n", "not both"),
        ("segmentation: {threshold: 1.0}\n", "less than 1"),
        ("segmentation: {empty: {both: worst}}\n", "perfect"),
        ("segmentation: {activaton: sigmoid}\n", "did you mean `activation`"),
    ],
)
def test_refused(tmp_path, extra, needle):
    assert needle in messages(tmp_path, BASE + extra)


def test_labels_required(tmp_path):
    assert "`labels` is required for a segmentation task" in messages(
        tmp_path, BASE.replace("labels: [head]\n", "") + "segmentation: {}\n"
    )


def test_volume_input_refused(tmp_path):
    text = BASE.replace("{kind: image, size: [64, 64]}", "{kind: tabular, features: [a]}") + "segmentation: {}\n"
    assert "reads 2D images" in messages(tmp_path, text)


def test_section_refused_for_classification(tmp_path):
    text = BASE.replace("task: segmentation\nlabels: [head]", "task: binary\nclasses: [a, b]") + "segmentation: {}\n"
    assert "applies to task: segmentation only" in messages(tmp_path, text)


@pytest.mark.parametrize("column", ["label", "dice", "spacing_x_mm"])
def test_attribute_named_like_a_row_column_refused(tmp_path, column):
    text = BASE + f"segmentation: {{}}\nattributes: [{column}]\n"
    assert f"`{column}` is the name of a standard case column" in messages(tmp_path, text)


@pytest.mark.parametrize("tolerance", [1e-05, 2e-7, 1e16])
def test_a_tolerance_its_key_cannot_spell_is_refused(tolerance):
    # nsd_1e-05mm would not be read back as an NSD column (nsd_<digits>[p<digits>]mm)
    from validate.metrics.segmentation import nsd_key

    with pytest.raises(ValueError, match="plain decimal"):
        nsd_key(tolerance)


def test_tolerances_that_differ_get_different_keys():
    from validate.metrics.segmentation import nsd_key

    assert nsd_key(1.5) == "nsd_1p5mm" and nsd_key(1.500001) == "nsd_1p500001mm"
    assert nsd_key(0.1234567) == "nsd_0p1234567mm" and nsd_key(2.0) == "nsd_2mm"
