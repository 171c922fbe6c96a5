"""The prepared chest X-ray store (:mod:`shared_networks.data.prepared`): written once from the PNGs, read instead of
them with the same images within the stored type's precision; stale, mismatched or incomplete stores refused."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureTyped, NormalizeIntensityd
from PIL import Image

from shared_networks.cli.prepare import main as prepare_main
from shared_networks.data.loading import ImageReadError
from shared_networks.data.prepared import (
    IMAGES_FILE,
    INDEX_FILE,
    LoadPreparedRadiographd,
    PreparedRadiographs,
    check_prepared_images,
    prepared_transforms,
    radiograph_steps,
    write_cxr14_store,
)

SIZE = 32
MEAN, STD = 0.5, 0.225
REAL_PICKS = 12  # real images linked into a small NIH-layout folder (the 1024^2 and RGBA ones among them)


def _write_png(path: Path, shape: tuple[int, int], bits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    if bits == 8:
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode="L").save(path)
    elif bits == 16:  # values only a 16-bit type holds: an 8-bit store would lose them
        Image.fromarray(rng.integers(0, 65536, shape, dtype=np.uint16)).save(path)
    else:
        rgba = rng.integers(0, 256, (*shape, 4), dtype=np.uint8)
        Image.fromarray(rgba, mode="RGBA").save(path)


def write_nih_layout(root: Path, bits: tuple[int, ...] = (8, 8, 32, 8), n_test: int = 1) -> Path:
    """A small NIH layout: ``images/`` with PNGs of the given bit depths (32: RGBA) and shapes that need padding,
    ``train_val_list.txt`` and ``test_list.txt``."""
    (root / "images").mkdir(parents=True)
    names = []
    for i, b in enumerate(bits):
        name = f"{i + 1:08d}_000.png"
        _write_png(root / "images" / name, (40 + 7 * i, 53 - 5 * i), b, seed=i)
        names.append(name)
    (root / "train_val_list.txt").write_text("\n".join(names[n_test:]) + "\n")
    (root / "test_list.txt").write_text("\n".join(names[:n_test]) + "\n")
    return root


def plain_images(paths: list[Path], size: int) -> list[torch.Tensor]:
    steps = Compose(radiograph_steps(size))
    return [torch.as_tensor(steps({"image": str(p)})["image"]) for p in paths]


def stored_images(store: Path, paths: list[Path], size: int) -> list[torch.Tensor]:
    load = LoadPreparedRadiographd("image", store, img_size=[size, size])
    return [load({"image": str(p)})["image"] for p in paths]


def pngs(root: Path) -> list[Path]:
    return sorted((root / "images").glob("*.png"))


@pytest.mark.parametrize(
    "bits, dtype, stored, tolerance",
    [
        ((8, 8, 32, 8), "auto", "uint8", 0.5 / 255),
        ((8, 16, 32, 16), "auto", "uint16", 0.5 / 65535),
        ((8, 16, 32, 16), "uint8", "uint8", 0.5 / 255),  # chosen by the user: 16-bit sources rounded to 8 bits
    ],
)
def test_store_gives_the_plain_pipeline_images(tmp_path, bits, dtype, stored, tolerance):
    data = write_nih_layout(tmp_path / "data", bits)
    store = write_cxr14_store(data, tmp_path / "store", SIZE, dtype=dtype)
    index = json.loads((store / INDEX_FILE).read_text())
    assert index["dtype"] == stored and index["cache_size"] == SIZE and index["shape"] == [len(bits), 1, SIZE, SIZE]
    array = np.load(store / IMAGES_FILE, mmap_mode="r")
    assert array.dtype == np.dtype(stored) and array.shape == (len(bits), 1, SIZE, SIZE)
    plain, read = plain_images(pngs(data), SIZE), stored_images(store, pngs(data), SIZE)
    for p, r, path in zip(plain, read, pngs(data), strict=True):
        assert r.dtype == torch.float32 and r.shape == p.shape == (1, SIZE, SIZE)
        assert float((p - r).abs().max()) <= tolerance + 1e-7, path
        assert r.meta["filename_or_obj"] == str(path)  # the PNG named in error messages
    if bits[1] == 16 and stored == "uint16":  # the 16-bit content really is finer than 8 bits
        assert max(float((p * 255 - (p * 255).round()).abs().max()) for p in plain) > 0.01


def test_bundle_transforms_from_the_store_match_the_pngs_after_normalisation(tmp_path):
    data = write_nih_layout(tmp_path / "data")
    store = write_cxr14_store(data, tmp_path / "store", SIZE)
    tail = [NormalizeIntensityd("image", subtrahend=MEAN, divisor=STD), EnsureTyped("label", allow_missing_keys=True)]
    png = [*radiograph_steps(SIZE), *tail]
    assert prepared_transforms(png, None, [SIZE, SIZE]) == png and prepared_transforms(png, "none", SIZE) == png
    switched = prepared_transforms(png, store, [SIZE, SIZE])
    assert [type(t).__name__ for t in switched] == ["LoadPreparedRadiographd", "NormalizeIntensityd", "EnsureTyped"]
    for path in pngs(data):
        item = {"image": str(path), "label": [0.0, 1.0]}
        a, b = Compose(png)(dict(item)), Compose(switched)(dict(item))
        assert float((a["image"] - b["image"]).abs().max()) <= 0.5 / 255 / STD + 1e-6
        assert torch.equal(torch.as_tensor(a["label"]), torch.as_tensor(b["label"]))


def test_real_radiographs(tmp_path, shared_data):
    source = shared_data("chestxray14")
    by_kind: dict[tuple[str, tuple[int, int]], list[Path]] = {}
    for path in sorted((source / "images").glob("*.png")):
        with Image.open(path) as image:
            by_kind.setdefault((image.mode, image.size), []).append(path)
    picks = [p for paths in by_kind.values() for p in paths[:4]][:REAL_PICKS]  # every mode and size present
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    for p in picks:
        (data / "images" / p.name).symlink_to(p)
    (data / "train_val_list.txt").write_text("\n".join(p.name for p in picks[1:]) + "\n")
    (data / "test_list.txt").write_text(picks[0].name + "\n")
    store = write_cxr14_store(data, tmp_path / "store", 64)
    assert json.loads((store / INDEX_FILE).read_text())["dtype"] == "uint8"  # NIH PNGs are 8-bit (grey or RGBA)
    paths = pngs(data)
    for p, r in zip(plain_images(paths, 64), stored_images(store, paths, 64), strict=True):
        assert float((p - r).abs().max()) <= 0.5 / 255 + 1e-7


def test_a_changed_or_unknown_image_is_refused_by_name(tmp_path):
    data = write_nih_layout(tmp_path / "data")
    store = write_cxr14_store(data, tmp_path / "store", SIZE)
    changed = pngs(data)[1]
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    load = LoadPreparedRadiographd("image", store)
    with pytest.raises(ValueError, match=f"'{changed}' changed since the prepared store"):
        load({"image": str(changed)})
    load({"image": str(pngs(data)[0])})  # the others still read
    items = [{"image": str(p)} for p in pngs(data)] + [{"image": str(tmp_path / "elsewhere" / "99999999_000.png")}]
    with pytest.raises(ValueError, match=r"2 of 5 images .* changed since.*99999999_000.png' is not in the prepared"):
        check_prepared_images(store, items)
    check_prepared_images(None, items)  # no store: nothing checked
    # run again: the store is rewritten from the current files and reads again
    write_cxr14_store(data, tmp_path / "store", SIZE)
    check_prepared_images(store, items[:-1])


def test_a_store_of_another_size_is_refused_naming_both(tmp_path):
    data = write_nih_layout(tmp_path / "data")
    store = write_cxr14_store(data, tmp_path / "store", SIZE)
    with pytest.raises(ValueError, match=rf"holds {SIZE} x {SIZE} images .*img_size is \[64, 64\].*--cache_size 64"):
        LoadPreparedRadiographd("image", store, img_size=[64, 64])
    png = [*radiograph_steps(64), NormalizeIntensityd("image", subtrahend=MEAN, divisor=STD)]
    with pytest.raises(ValueError, match=r"img_size is \[64, 64\]"):
        prepared_transforms(png, store, [64, 64])


def test_other_loading_steps_are_refused(tmp_path):
    data = write_nih_layout(tmp_path / "data")
    store = write_cxr14_store(data, tmp_path / "store", SIZE)
    steps = radiograph_steps(SIZE)
    norm = NormalizeIntensityd("image", subtrahend=MEAN, divisor=STD)
    with pytest.raises(ValueError, match="before the normalisation are"):
        prepared_transforms([steps[0], steps[1], steps[3], norm], store, SIZE)
    with pytest.raises(ValueError, match="no NormalizeIntensityd"):
        prepared_transforms(steps, store, SIZE)


def test_an_incomplete_or_mismatched_store_is_refused(tmp_path):
    data = write_nih_layout(tmp_path / "data")
    store = write_cxr14_store(data, tmp_path / "store", SIZE)
    index = (store / INDEX_FILE).read_text()
    (store / INDEX_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="has no index.json: it is incomplete"):
        PreparedRadiographs(store)
    (store / INDEX_FILE).write_text(index.replace(f'"cache_size": {SIZE}', '"cache_size": 16'))
    np.save(store / IMAGES_FILE, np.zeros((2, 1, SIZE, SIZE), np.uint8))
    with pytest.raises(ValueError, match=r"images.npy holds \(2, 1, 32, 32\) uint8, its index"):
        PreparedRadiographs(store)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PreparedRadiographs(tmp_path / "nothing")


def test_a_missing_or_unreadable_image_is_named_and_the_rerun_continues(tmp_path, caplog):
    data = write_nih_layout(tmp_path / "data", bits=(8,) * 6)
    absent = "00000099_000.png"
    with (data / "train_val_list.txt").open("a") as f:
        f.write(absent + "\n")
    with pytest.raises(FileNotFoundError, match=absent):
        write_cxr14_store(data, tmp_path / "store", SIZE)
    assert not (tmp_path / "store" / IMAGES_FILE).exists()
    store = write_cxr14_store(data, tmp_path / "skipped", SIZE, missing="skip")
    assert len(PreparedRadiographs(store)) == 6

    (data / "train_val_list.txt").write_text("".join(f"{p.name}\n" for p in pngs(data)[1:]))
    broken = pngs(data)[4]
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ImageReadError, match=str(broken)):
        write_cxr14_store(data, tmp_path / "store", SIZE, dtype="uint8")
    assert not (tmp_path / "store" / IMAGES_FILE).exists() and not (tmp_path / "store" / INDEX_FILE).exists()
    progress = json.loads((tmp_path / "store" / "progress.json.partial").read_text())
    assert progress["rows_done"] == 3  # the rows before the broken image (train_val_list.txt, then test_list.txt)
    broken.write_bytes(good)
    caplog.set_level("INFO")
    store = write_cxr14_store(data, tmp_path / "store", SIZE, dtype="uint8")
    assert "Continuing the prepared store" not in caplog.text  # a changed source: written again from row 0
    plain, read = plain_images(pngs(data), SIZE), stored_images(store, pngs(data), SIZE)
    assert max(float((p - r).abs().max()) for p, r in zip(plain, read, strict=True)) <= 0.5 / 255 + 1e-7
    assert not (store / "progress.json.partial").exists() and not (store / "images.npy.partial").exists()


def test_an_interrupted_run_continues_where_it_stopped(tmp_path, caplog, monkeypatch):
    import shared_networks.data.prepared as prepared

    data = write_nih_layout(tmp_path / "data", bits=(8,) * 6)
    monkeypatch.setattr(prepared, "_FLUSH_ROWS", 2)
    real, calls = prepared._prepare_one, []

    def interrupted(task):
        calls.append(task[0])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(prepared, "_prepare_one", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_cxr14_store(data, tmp_path / "store", SIZE)
    monkeypatch.setattr(prepared, "_prepare_one", real)
    caplog.set_level("INFO")
    store = write_cxr14_store(data, tmp_path / "store", SIZE)
    assert "from row 3 of 6" in caplog.text
    plain, read = plain_images(pngs(data), SIZE), stored_images(store, pngs(data), SIZE)
    assert max(float((p - r).abs().max()) for p, r in zip(plain, read, strict=True)) <= 0.5 / 255 + 1e-7
    mtime = (store / IMAGES_FILE).stat().st_mtime_ns
    caplog.clear()
    write_cxr14_store(data, tmp_path / "store", SIZE)  # up to date: kept
    assert "is up to date" in caplog.text and (store / IMAGES_FILE).stat().st_mtime_ns == mtime


def test_worker_processes_write_the_same_store(tmp_path):
    data = write_nih_layout(tmp_path / "data", bits=(8, 16, 32, 8, 8))
    one = write_cxr14_store(data, tmp_path / "one", SIZE)
    two = write_cxr14_store(data, tmp_path / "two", SIZE, num_workers=2)
    assert np.array_equal(np.load(one / IMAGES_FILE), np.load(two / IMAGES_FILE))


def test_the_transform_pickles_without_the_images(tmp_path):
    data = write_nih_layout(tmp_path / "data")
    store = write_cxr14_store(data, tmp_path / "store", SIZE)
    load = LoadPreparedRadiographd("image", store)
    first = load({"image": str(pngs(data)[0])})["image"]
    copy = pickle.loads(pickle.dumps(load))  # what a spawned loader worker receives: no copy of the array
    assert copy.store._array is None and len(pickle.dumps(load)) < 10_000
    assert torch.equal(copy({"image": str(pngs(data)[0])})["image"], first)


def test_the_command_line(tmp_path, capsys):
    data = write_nih_layout(tmp_path / "data")
    prepare_main(
        ["cxr14", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "store"), "--cache_size", str(SIZE)]
        + ["--validate", "false"]
    )
    assert len(PreparedRadiographs(tmp_path / "store")) == 4
    for argv, message in [
        (["cxr14", "--dataset_dir", str(data)], "give --output_json"),
        (["cxr14", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "s")], "--cache_size must be"),
        (["cxr14", "--dataset_dir", str(data), "--output_dir", str(tmp_path / "no" / "s"), "--cache_size", "8"], "no"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            prepare_main(argv)
        assert exit_info.value.code == 1
        assert message in capsys.readouterr().err
