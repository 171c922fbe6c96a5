"""MONAI Label's server (``monailabel.app:app``) behind this project's guard (``server_guard.py``).

``scripts/serve_monailabel.sh`` starts MONAI Label with ``--uvicorn_app guarded_server:app``. The guard's policy
comes from the environment the script sets:

* ``MAE_MONAILABEL_HOSTS``: comma-separated host names or addresses the server answers to (``Host`` header);
* ``MAE_MONAILABEL_ORIGINS``: comma-separated browser origins (``http[s]://host[:port]``) that may call it;
* ``MAE_MONAILABEL_TOKEN_FILE``: a file holding the bearer token every request needs (mode 0600, owned by this
  user; refused otherwise); unset: no token;
* ``MAE_MONAILABEL_MAX_UPLOAD_MB``: the largest upload (default 1024);
* ``TMPDIR``: where uploads are spooled while checked.

What is served (models, trainers, datastore ids) is read from the running app at each request.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile

import requests
from dicomweb_proxy import PacsReader
from fastapi import HTTPException
from monailabel.app import app as monailabel_server
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import device_list, device_map
from request_checks import TaskFacts
from server_guard import Guard, Policy, Refusal

MODEL_FILE = "model.pt"


class MonaiLabelView:
    """The running MONAI Label app as the guard sees it."""

    def _info(self) -> dict:
        return app_instance().info()

    def models(self) -> list[str]:
        return list(self._info().get("models", {}))

    def classifiers(self) -> list[str]:
        return [m for m, info in self._info().get("models", {}).items() if info.get("type") == "classification"]

    def trainers(self) -> list[str]:
        return list(self._info().get("trainers", {}))

    def strategies(self) -> list[str]:
        return list(self._info().get("strategies", {}))

    def scoring_methods(self) -> list[str]:
        return list(self._info().get("scoring", {}))

    def has_image(self, image_id: str) -> bool:
        try:  # a PACS datastore lists its series with QIDO-RS (cached by MONAI Label)
            return image_id in set(app_instance().datastore().list_images())
        except requests.RequestException as e:
            raise Refusal(503, f"The PACS does not answer: {type(e).__name__}.") from None
        except HTTPException as e:  # pacs_datastore.pacs_errors: the PACS down, timed out or failing
            raise Refusal(e.status_code, str(e.detail)) from None

    def has_label(self, image_id: str, tag: str) -> bool:
        return self.has_image(image_id) and tag in app_instance().datastore().get_labels_by_image_id(image_id)

    def dicomweb(self) -> bool:
        return isinstance(app_instance().datastore(), DICOMWebDatastore)

    def pacs_reader(self) -> PacsReader | None:
        return getattr(app_instance().datastore(), "reader", None)  # set by pacs_datastore.pacs_datastore

    def dicom_seg_writer(self) -> bool:
        return shutil.which("itkimage2segimage") is not None

    def facts(self, model: str) -> TaskFacts:
        """What a request's fields are checked against. ``bundle_path`` (MONAI Label's public ``bundle_path``: a
        trainer's folder) matters only to the tasks: the guard refuses the field from clients."""
        return TaskFacts(
            bundle_path=app_instance().bundle_path(model) or "",
            model_files=(MODEL_FILE,),
            devices=[*device_list(), *device_map()],
            tracking_uri=settings.MONAI_LABEL_TRACKING_URI,
        )


def _token(path: str) -> str:
    """The token in ``path``, a regular file of this user that no one else may read or write."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise SystemExit(f"{path}: the token file must be a regular file of this user with mode 0600.")
    token = open(path, encoding="ascii").read().strip()
    if len(token) < 32:
        raise SystemExit(f"{path}: the token must be at least 32 characters.")
    return token


def policy_from_environment() -> Policy:
    names = lambda var: [v.strip() for v in os.environ.get(var, "").split(",") if v.strip()]  # noqa: E731
    hosts = {"127.0.0.1", "localhost", "::1", *(h.strip("[]").lower() for h in names("MAE_MONAILABEL_HOSTS"))}
    token_file = os.environ.get("MAE_MONAILABEL_TOKEN_FILE", "")
    return Policy(
        hosts=frozenset(hosts),
        origins=frozenset(o.rstrip("/") for o in names("MAE_MONAILABEL_ORIGINS")),
        token=_token(token_file) if token_file else "",
        max_upload=int(os.environ.get("MAE_MONAILABEL_MAX_UPLOAD_MB", "1024")) << 20,
        monai_auth=bool(settings.MONAI_LABEL_AUTH_ENABLE),
        tmpdir=tempfile.gettempdir(),
    )


app = Guard(monailabel_server, MonaiLabelView(), policy_from_environment())
