"""The fitted pipeline: streaming equals batch scoring, and model files round-trip or fail loudly."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import make_series
from tinywarden.detectors import make_detector
from tinywarden.errors import DataError, ModelFileError
from tinywarden.modelfile import FORMAT_VERSION, MAGIC, load_pipeline, save_pipeline
from tinywarden.pipeline import Pipeline
from tinywarden.telemetry import Series

SMALL = {"ewma": {}, "kmeans": {"n_clusters": 3}, "dense_ae": {"hidden": (6, 3), "max_steps": 200},
         "conv_ae": {"channels": (4, 2), "kernel_size": 3, "max_steps": 100}}


@pytest.fixture(scope="module", params=sorted(SMALL))
def fitted(request: pytest.FixtureRequest) -> Pipeline:
    return Pipeline(make_detector(request.param, **SMALL[request.param]), window=32, stride=16).fit(make_series())


def test_streaming_scores_equal_batch(fitted: Pipeline) -> None:
    s = make_series(seed=3, n=1500)
    batch = fitted.score(s)
    stream = fitted.stream()
    out = [r for x in s.values if (r := stream.push(x)) is not None]
    np.testing.assert_allclose([r[0] for r in out], batch.scores, rtol=1e-6, atol=1e-9)
    assert [int(r[2]) for r in out] == batch.alarms.tolist()


def test_model_file_round_trip(fitted: Pipeline, tmp_path: Path) -> None:
    path = tmp_path / "m.twb"
    save_pipeline(fitted, path)
    again = load_pipeline(path)
    s = make_series(seed=4, n=1200)
    np.testing.assert_array_equal(again.score(s).scores, fitted.score(s).scores)
    assert again.threshold_ == fitted.threshold_ and again.channels_ == fitted.channels_
    assert again.detector.get_params() == fitted.detector.get_params()


def test_calibration_holds_out_normal_data(fitted: Pipeline) -> None:
    t = fitted.train_summary_
    assert t["calibration_windows"] > 0 and t["fit_windows"] > t["calibration_windows"]
    assert t["calibration_fpr"] <= fitted.target_fpr


def test_anomaly_raises_alarm() -> None:
    s = make_series(n=8000)
    p = Pipeline(make_detector("ewma"), window=32, stride=16).fit(s.slice(0, 5000))
    vals = s.values.copy()
    vals[6000:6400, 0] += 25.0
    scored = p.score(Series(s.timestamps, vals, s.channels))
    in_attack = (scored.end_rows >= 6000) & (scored.end_rows < 6400 + 32)
    assert scored.alarms[in_attack].mean() > 0.8
    assert scored.alarms[~in_attack].mean() < 0.05


def test_labelled_windows_are_not_learned() -> None:
    s = make_series(n=6000)
    vals = s.values.copy()
    vals[2000:2600] += 50.0
    labels = np.zeros(len(s), dtype=np.int8)
    labels[2000:2600] = 1
    p = Pipeline(make_detector("ewma"), window=32, stride=16).fit(Series(s.timestamps, vals, s.channels, labels))
    assert p.train_summary_["normal_windows"] < (6000 - 32) // 16 + 1 - 30
    assert p.score(Series(s.timestamps, vals, s.channels)).alarms[130:160].all()


def test_missing_channel_and_short_data_errors(fitted: Pipeline) -> None:
    s = make_series(n=500)
    with pytest.raises(DataError, match="missing channel"):
        fitted.score(Series(s.timestamps, s.values[:, :2], ("c0", "x")))
    with pytest.raises(DataError, match="fewer than one window"):
        fitted.score(s.slice(0, 10))
    with pytest.raises(DataError, match="need at least"):
        Pipeline(make_detector("ewma"), window=32, stride=16).fit(s.slice(0, 100))


def _saved(tmp_path: Path) -> bytes:
    p = Pipeline(make_detector("ewma"), window=32, stride=16).fit(make_series())
    save_pipeline(p, tmp_path / "m.twb")
    return (tmp_path / "m.twb").read_bytes()


def test_every_flipped_bit_region_is_detected(tmp_path: Path) -> None:
    data = _saved(tmp_path)
    for pos in (0, 9, 20, len(data) // 2, len(data) - 40, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        (tmp_path / "bad.twb").write_bytes(bytes(bad))
        with pytest.raises(ModelFileError):
            load_pipeline(tmp_path / "bad.twb")


def test_truncated_and_foreign_files(tmp_path: Path) -> None:
    data = _saved(tmp_path)
    (tmp_path / "t.twb").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="corrupted or truncated"):
        load_pipeline(tmp_path / "t.twb")
    (tmp_path / "f.twb").write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ModelFileError, match="bad magic"):
        load_pipeline(tmp_path / "f.twb")
    with pytest.raises(ModelFileError, match="no such model file"):
        load_pipeline(tmp_path / "none.twb")


def test_unknown_format_version_is_refused(tmp_path: Path) -> None:
    import hashlib

    data = _saved(tmp_path)
    body = bytearray(data[:-32])
    struct.pack_into("<H", body, len(MAGIC), FORMAT_VERSION + 1)
    (tmp_path / "v.twb").write_bytes(bytes(body) + hashlib.sha256(bytes(body)).digest())
    with pytest.raises(ModelFileError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        load_pipeline(tmp_path / "v.twb")


def test_calibration_blocks_are_spread_over_the_period_and_held_out() -> None:
    from tinywarden.pipeline import CALIBRATION_BLOCKS

    p = Pipeline(make_detector("ewma"), window=16, stride=4, calibration_fraction=0.2)
    fit, cal = p.split_index(1000)
    assert len(cal) == 200 and len(np.intersect1d(fit, cal)) == 0
    # the detector learns from the start and the end of the period, and the threshold is set on
    # blocks from every part of it
    assert fit.min() == 0 and fit.max() == 999
    blocks = np.split(cal, np.flatnonzero(np.diff(cal) > 1) + 1)
    assert len(blocks) == CALIBRATION_BLOCKS
    centres = np.array([b.mean() for b in blocks])
    assert np.allclose(centres, (np.arange(CALIBRATION_BLOCKS) + 0.5) * 1000 / CALIBRATION_BLOCKS, atol=1)
    # a fit window sharing rows with a calibration window (3 neighbours at stride 4 of 16) is left out
    gaps = np.abs(fit[:, None] - cal[None, :]).min(axis=1)
    assert gaps.min() == 4 and len(fit) == 1000 - 200 - 2 * 3 * CALIBRATION_BLOCKS
    # few windows: fewer blocks, no gap rather than too few to train
    fit, cal = Pipeline(make_detector("ewma"), window=16, stride=1).split_index(40)
    assert len(cal) == 10 and len(fit) == 30
    with pytest.raises(DataError, match="need at least"):
        p.split_index(10)


def test_likelihood_survives_the_model_file_and_old_files_have_none(tmp_path: Path) -> None:
    from tinywarden.detectors import EWMAZScore
    from tinywarden.modelfile import decode, encode, load_pipeline, save_pipeline
    from tinywarden.pipeline import Pipeline
    from tinywarden.telemetry.series import Series

    rng = np.random.default_rng(0)
    s = Series(np.arange(3000.0), rng.normal(size=(3000, 2)), ("a", "b"))
    p = Pipeline(EWMAZScore(), window=32, stride=16).fit(s)
    path = tmp_path / "m.twb"
    save_pipeline(p, path)
    scores = p.score(s).scores
    np.testing.assert_array_equal(load_pipeline(path).confidence(scores), p.confidence(scores))
    header, arrays = decode(path.read_bytes())
    del header["likelihood"]
    old = tmp_path / "old.twb"
    old.write_bytes(encode(header, arrays))
    assert load_pipeline(old).confidence(scores) is None


def _rewritten(data: bytes, path: Path, threshold: object = None, arrays: dict | None = None) -> Path:
    """The model file ``data`` with an edited threshold or arrays and a recomputed, valid checksum."""
    from tinywarden.modelfile import decode, encode

    header, arrs = decode(data)
    header.pop("arrays")
    if threshold is not None:
        header["pipeline"]["threshold"] = threshold
    path.write_bytes(encode(header, {**arrs, **(arrays or {})}))
    return path


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), "high"])
def test_non_finite_threshold_is_refused_even_with_a_valid_checksum(tmp_path: Path, value: object) -> None:
    # score > nan is never true: a NaN threshold would silently switch float detection off
    path = _rewritten(_saved(tmp_path), tmp_path / "edited.twb", threshold=value)
    with pytest.raises(ModelFileError) as err:
        load_pipeline(path)
    msg = str(err.value)
    assert str(path) in msg and "field pipeline.threshold" in msg and "\n" not in msg


@pytest.mark.parametrize(("name", "edit", "needle"), [
    ("scaler/scale", lambda a: np.where(np.arange(a.size) == 0, np.nan, a), "holds NaN or infinity"),
    ("scaler/offset", lambda a: np.full_like(a, np.inf), "holds NaN or infinity"),
    ("scaler/scale", lambda a: np.zeros_like(a), "holds a value <= 0"),
    ("scaler/scale", lambda a: np.concatenate([a, a]), "differ in shape"),
    ("scaler/offset", lambda a: a[:1], "one value per input"),
])
def test_broken_scaler_is_refused_even_with_a_valid_checksum(tmp_path: Path, name: str, edit, needle: str) -> None:
    from tinywarden.modelfile import decode

    data = _saved(tmp_path)
    arr = decode(data)[1][name]
    path = _rewritten(data, tmp_path / "edited.twb", arrays={name: edit(arr)})
    with pytest.raises(ModelFileError, match=needle):
        load_pipeline(path)


def test_rewriting_an_unchanged_file_still_loads(tmp_path: Path) -> None:
    # the helper above re-encodes faithfully, so the refusals come from the edits alone
    p = load_pipeline(_rewritten(_saved(tmp_path), tmp_path / "same.twb"))
    assert np.isfinite(p.threshold_)


def test_crossings_block_survives_the_model_file_and_old_files_count_over_the_window(tmp_path: Path) -> None:
    # crossings are counted per block of gcd(window, stride) rows since issue 16; a file written before kept
    # no block and counted crossings of the window's mean: it must load with that definition, not the new one
    from tinywarden.detectors import EWMAZScore
    from tinywarden.modelfile import decode, encode, load_pipeline, save_pipeline
    from tinywarden.pipeline import Pipeline
    from tinywarden.telemetry.series import Series

    rng = np.random.default_rng(0)
    s = Series(np.arange(3000.0), np.cumsum(rng.normal(size=(3000, 2)), axis=0), ("a", "b"))
    assert Pipeline(EWMAZScore(), window=64, stride=32).crossings_block == 64  # the default: the whole window
    p = Pipeline(EWMAZScore(), window=64, stride=32, crossings_block=32).fit(s)
    assert p.crossings_block == 32
    path = tmp_path / "m.twb"
    save_pipeline(p, path)
    assert load_pipeline(path).crossings_block == 32
    header, arrays = decode(path.read_bytes())
    header.pop("arrays")
    del header["pipeline"]["crossings_block"]
    old = tmp_path / "old.twb"
    old.write_bytes(encode(header, arrays))
    loaded = load_pipeline(old)
    assert loaded.crossings_block == 64
    whole = Pipeline(EWMAZScore(), window=64, stride=32, crossings_block=64)
    np.testing.assert_array_equal(loaded._raw_inputs(s.values)[1], whole._raw_inputs(s.values)[1])
    assert not np.array_equal(loaded._raw_inputs(s.values)[1], p._raw_inputs(s.values)[1])


def test_trained_crossings_level_survives_the_model_file_and_is_required(tmp_path: Path) -> None:
    # issue 16: crossings_trained counts the crossings of each channel's trained mean (so the C keeps no raw
    # ring); the level is learnt at fit, stored in the file, and a file that lost it is refused in one line
    from tinywarden.detectors import EWMAZScore
    from tinywarden.errors import ConfigError, ModelFileError
    from tinywarden.features import extract
    from tinywarden.modelfile import CROSSINGS_LEVEL, decode, encode, load_pipeline, save_pipeline
    from tinywarden.pipeline import Pipeline
    from tinywarden.telemetry.series import Series

    rng = np.random.default_rng(0)
    s = Series(np.arange(3000.0), np.cumsum(rng.normal(size=(3000, 2)), axis=0), ("a", "b"))
    with pytest.raises(ConfigError, match="not both"):
        Pipeline(EWMAZScore(), window=64, stride=32, crossings_block=32, crossings_trained=True)
    p = Pipeline(EWMAZScore(), window=64, stride=32, crossings_trained=True).fit(s)
    np.testing.assert_allclose(p.crossings_level_, s.values.mean(axis=0))
    raw = p._raw_inputs(s.values)[1]
    col = list(p.features).index("crossings")
    win = s.values[:64][None]
    above = win[0] > p.crossings_level_
    assert raw[0, col] == pytest.approx((above[1:] != above[:-1]).sum(axis=0)[0] / 63)
    np.testing.assert_array_equal(raw[0], extract(win, p.features, level=p.crossings_level_)[0])
    path = tmp_path / "m.twb"
    save_pipeline(p, path)
    loaded = load_pipeline(path)
    assert loaded.crossings_block is None and loaded.crossings_trained
    np.testing.assert_array_equal(loaded._raw_inputs(s.values)[1], raw)
    header, arrays = decode(path.read_bytes())
    header.pop("arrays")
    del arrays[CROSSINGS_LEVEL]
    lost = tmp_path / "lost.twb"
    lost.write_bytes(encode(header, arrays))
    with pytest.raises(ModelFileError, match="crossings/level"):
        load_pipeline(lost)


def test_saving_over_a_folder_names_the_model_path_not_the_temporary_file(tmp_path: Path) -> None:
    # the OSError of the rename named the temporary file: "error: /.tmp.foe36khm.tmp: Is a directory"
    p = Pipeline(make_detector("ewma"), window=16, stride=8).fit(make_series(400, 2))
    (tmp_path / "m.twb").mkdir()
    with pytest.raises(ModelFileError, match=r"m\.twb: cannot write the model file \(Is a directory\)"):
        save_pipeline(p, tmp_path / "m.twb")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.twb"]
