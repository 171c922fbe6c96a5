"""Loading images in a workflow with errors that name the file: :class:`CheckedLoadImaged` and :class:`ImageReadError`.

MONAI's ``LoadImaged`` lets a reader's error through as it comes: a truncated ``.nii.gz`` met during training gives
``EOFError: Compressed file ended before the end-of-stream marker was reached`` under a long chain of exceptions, and
no line of it names the file. :class:`CheckedLoadImaged` is ``LoadImaged`` (same arguments, same output) whose errors
are an :class:`ImageReadError` naming the file and the key::

    - _target_: shared_networks.CheckedLoadImaged
      keys: [image, label]
      ...the arguments of LoadImaged...
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.data import ImageReader
from monai.transforms import LoadImaged

__all__ = ["CheckedLoadImaged", "ImageReadError"]


class ImageReadError(RuntimeError):
    """An image file could not be read; the message names the file and the reader's error.

    Attributes:
        path: the file (or DICOM series folder, or list of files) that failed.
        key: the datalist key of the file (``"image"``, ``"label"``), when known.
    """

    def __init__(self, message: str, path: Any = None, key: Hashable | None = None) -> None:
        # one positional argument, so that torch's DataLoader can re-raise it from a worker with its message
        super().__init__(message)
        self.path = path
        self.key = key

    @classmethod
    def from_error(cls, path: Any, error: BaseException, key: Hashable | None = None) -> ImageReadError:
        where = f" (key '{key}')" if key is not None else ""
        cause = str(error).strip().splitlines()[0] if str(error).strip() else ""
        cause = f"{type(error).__name__}: {cause}" if cause else type(error).__name__
        return cls(f"cannot read '{_path_text(path)}'{where}: {cause}", path, key)


def _path_text(path: Any) -> str:
    if isinstance(path, (list, tuple)):
        return ", ".join(str(p) for p in path)
    return str(path)


class CheckedLoadImaged(LoadImaged):
    """``monai.transforms.LoadImaged`` whose errors name the file: any error while reading one key's file(s) is
    re-raised as :class:`ImageReadError` ``cannot read '<path>' (key 'image'): <error type>: <message>`` (the
    original error chained as its cause). Memory errors from a header declaring a huge image are named too.
    Takes the arguments of ``LoadImaged``.
    """

    def __call__(self, data: Mapping[Hashable, Any], reader: ImageReader | None = None) -> dict[Hashable, Any]:
        d = dict(data)
        for key, meta_key, meta_key_postfix in self.key_iterator(d, self.meta_keys, self.meta_key_postfix):
            try:
                loaded = self._loader(d[key], reader)
            except Exception as err:  # every reader error (OSError, EOFError, zlib.error, MemoryError, ...)
                raise ImageReadError.from_error(d[key], err, key) from err
            if self._loader.image_only:
                d[key] = loaded
                continue
            if not isinstance(loaded, (tuple, list)) or not isinstance(loaded[1], dict):
                raise ValueError(f"loader must return (image, metadata) with image_only=False, got {type(loaded)}.")
            d[key] = loaded[0]
            meta_key = meta_key or f"{key}_{meta_key_postfix}"
            if meta_key in d and not self.overwriting:
                raise KeyError(f"Metadata with key {meta_key} already exists and overwriting=False.")
            d[meta_key] = loaded[1]
        return d
